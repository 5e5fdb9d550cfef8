"""The training objective as an object: one registry, one dispatch.

An :class:`Objective` knows its name, whether it needs the full vocabulary distribution (then it
runs only on dense logits), how to turn per-token statistics into a loss (the fused and
vocab-parallel paths), how to compute itself on dense logits (the readable reference), and its own
weight schedule. Adding one = a file with a subclass and ``OBJECTIVES.register(MyObjective)``;
``objective.name`` in a config is validated against this registry.

The built-in objective modules import torch inside their methods, not at import time: loading a
config validates names against this registry and must stay quick (``uaclm config get`` runs in
Slurm scripts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from uaclm_dist.losses.constants import IGNORE_INDEX
from uaclm_dist.registry import Registry

if TYPE_CHECKING:
    import torch

    from uaclm_dist.config import ObjectiveConfig
    from uaclm_dist.losses.types import LossOutput, TokenStats



class Objective:
    """Base class of every training objective, built from an ``ObjectiveConfig``.

    Class attributes:
        name: the value of ``objective.name`` that selects it.
        needs_full_vocab: True when the loss needs the whole distribution (e.g. unlikelihood's
            candidate tokens), so only ``objective.implementation: reference`` can run it.
        summary: one line for docs and ``uaclm config reference``.
        uses_entropy: False when neither the loss nor its diagnostics need the token entropy
            (``clm``): the single-pass kernel then skips computing it (one pass over the logits
            fewer, and no entropy term in the gradient), ``TokenStats.entropy`` is None and the
            per-step ``entropy_correct`` / ``entropy_incorrect`` are not reported.
    """

    name: ClassVar[str]
    needs_full_vocab: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    uses_entropy: ClassVar[bool] = True

    def __init__(self, config: ObjectiveConfig):
        self.config = config

    def weight(self, step: int, total_steps: int) -> float | None:
        """The weight of the auxiliary (UA) term at 0-based optimizer ``step`` of
        ``total_steps``; None when the objective has no schedule."""
        return None

    def from_stats(
        self,
        stats: TokenStats,
        *,
        step: int,
        total_steps: int,
        sequence_ids: torch.Tensor | None = None,
    ) -> LossOutput:
        """The loss from flat ``[N]`` statistics of the supervised tokens (fused / sharded paths).

        Args:
            stats: entropy, log p of the argmax and of the label, argmax, masks; ``[N]`` each.
            step, total_steps: where training is (for weight schedules).
            sequence_ids: ``[N]`` sequence index of each token (sequence pooling).
        """
        raise ValueError(
            f"objective {self.name!r} needs the full vocabulary distribution and runs only on "
            f"dense logits (objective.implementation: reference)"
        )

    def gradient_directions(self, stats: TokenStats) -> torch.Tensor | None:
        """Per-token directions of the loss gradient, for the single-pass fused kernel.

        Returns ``[n, K, 3]``: for each token, K vectors over ``(log p_y, log P, H)`` such that
        the gradient of :meth:`from_stats`'s loss with respect to that token's three statistics
        is ``sum_k s_k d_k`` for some scalars ``s_k`` that may depend on the whole batch (the
        normalisers). Computed from the token's own statistics only (``stats`` holds one chunk
        of tokens, all supervised). None (the default) means "unknown": the kernel then uses
        the three unit vectors, exact for any objective but with three gradient matmuls instead
        of K. The kernel checks the span in the backward and raises if it is wrong.
        """
        return None

    def dense(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        *,
        step: int = 0,
        total_steps: int = 1,
        ignore_index: int = IGNORE_INDEX,
    ) -> LossOutput:
        """The loss on dense ``logits [B, T, V]`` with aligned ``labels [B, T]`` (the reference)."""
        raise NotImplementedError(f"objective {self.name!r} has no dense reference")

    @staticmethod
    def graph_anchor(stats: TokenStats) -> torch.Tensor:
        """A differentiable 0 tied to the statistics: the loss stays a graph node (every rank
        can call backward) even when no token is supervised."""
        return stats.log_prob_label.sum() * 0.0


#: Objective classes by name. Built-ins register in their own modules (clm.py, ua_clm.py, ...).
OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def build_objective(config: ObjectiveConfig | str, **fields) -> Objective:
    """The configured objective: ``build_objective(cfg.objective)``, or from a name and
    ``ObjectiveConfig`` fields, e.g. ``build_objective("clm+ua", beta_start=0.5, beta_end=0.5)``."""
    if isinstance(config, str):
        from uaclm_dist.config import ObjectiveConfig

        config = ObjectiveConfig(name=config, **fields)
    elif fields:
        config = config.model_copy(update=fields)
    return OBJECTIVES.get(config.name)(config)
