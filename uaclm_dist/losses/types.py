"""Types every loss path shares: the per-token statistics, the loss output and masked means.

Defined once here; :mod:`.reference` (dense), :mod:`.fused`, :mod:`.vocab_parallel` and the
objectives in :mod:`.objectives` all speak in these terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch

from uaclm_dist.losses.constants import IGNORE_INDEX  # noqa: F401 (re-exported)


@dataclass
class LossOutput:
    """A loss value plus the per-micro-batch diagnostics every objective reports.

    ``loss`` is a differentiable scalar. All other fields are detached 0-d float tensors (float32,
    or float64 for float64 inputs). Means over an empty set are NaN (with the matching count 0),
    so a logger can tell "no such token" from "entropy 0".

    Attributes:
        loss: the objective's scalar loss.
        n_tokens: number of supervised (non-ignored) positions.
        n_correct: |C|, positions whose argmax equals the label.
        n_incorrect: |C~|.
        entropy_correct / entropy_incorrect: mean full-vocab entropy H (nats) over C / C~;
            None when the objective does not use the entropy (``clm``: the single-pass kernel
            skips computing it, and no implementation reports it).
        prob_correct / prob_incorrect: mean predicted-token probability P = p[argmax] over C / C~.
        token_accuracy: |C| / n_tokens (NaN when n_tokens == 0).
        terms: named detached loss components, e.g. ``clm``, ``ua``, ``ua_correct``,
            ``ua_incorrect``, ``ul`` (whatever the objective is made of).
    """

    loss: torch.Tensor
    n_tokens: torch.Tensor
    n_correct: torch.Tensor
    n_incorrect: torch.Tensor
    entropy_correct: torch.Tensor | None
    entropy_incorrect: torch.Tensor | None
    prob_correct: torch.Tensor
    prob_incorrect: torch.Tensor
    token_accuracy: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)

    def as_floats(self) -> dict[str, float]:
        """Flat ``{name: python float}`` view for logging (terms are prefixed ``loss_``)."""
        out = {}
        for f in fields(self):
            if f.name == "terms" or getattr(self, f.name) is None:
                continue
            out[f.name] = float(getattr(self, f.name).detach())
        for name, value in self.terms.items():
            out[f"loss_{name}"] = float(value.detach())
        return out


@dataclass
class TokenStats:
    """Per-position statistics, all of one shape: ``[batch, seq]`` from dense logits, or flat
    ``[N]`` (the supervised tokens only) from the fused and vocab-parallel kernels.

    ``entropy``, ``log_prob_pred`` and ``log_prob_label`` are differentiable w.r.t. the logits;
    ``pred``, ``valid`` and ``correct`` are hard (integer / boolean) quantities. ``entropy`` is
    None where it was not computed (an objective with ``uses_entropy`` False).
    """

    entropy: torch.Tensor | None  # H_i in nats
    log_prob_pred: torch.Tensor  # log P_i = log p_i[a_i]
    log_prob_label: torch.Tensor  # log p_i[y_i] (0 where the label is ignored)
    pred: torch.Tensor  # a_i, int64
    valid: torch.Tensor  # label != ignore_index
    correct: torch.Tensor  # valid & (a_i == y_i)


def supervised_token_stats(
    log_prob_label: torch.Tensor,
    log_prob_pred: torch.Tensor,
    entropy: torch.Tensor | None,
    pred: torch.Tensor,
    labels: torch.Tensor,
) -> TokenStats:
    """Flat ``[N]`` :class:`TokenStats` of supervised tokens only (every position valid), as the
    fused and vocab-parallel kernels produce them."""
    valid = torch.ones_like(labels, dtype=torch.bool)
    return TokenStats(entropy, log_prob_pred, log_prob_label, pred, valid, pred == labels)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ``mask`` (0 when the mask is empty; used for loss terms)."""
    count = mask.sum()
    total = torch.where(mask, x, torch.zeros_like(x)).sum()
    return total / count.clamp(min=1)


def masked_mean_or_nan(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Detached mean of ``x`` over ``mask``; NaN when the mask is empty (diagnostics only)."""
    mean = masked_mean(x.detach(), mask)
    # a tensor condition, not ``if mask.any()``: no wait for the device every micro-batch
    return torch.where(mask.any(), mean, torch.full_like(mean, math.nan))


def _entropy_means(
    entropy: torch.Tensor | None, correct: torch.Tensor, incorrect: torch.Tensor
) -> dict[str, torch.Tensor | None]:
    if entropy is None:  # not computed (an objective that does not use it)
        return {"entropy_correct": None, "entropy_incorrect": None}
    return {
        "entropy_correct": masked_mean_or_nan(entropy, correct),
        "entropy_incorrect": masked_mean_or_nan(entropy, incorrect),
    }


def diagnostics(stats: TokenStats) -> dict[str, torch.Tensor | None]:
    """The LossOutput diagnostic fields (everything but ``loss`` and ``terms``)."""
    dtype = stats.log_prob_label.dtype
    incorrect = stats.valid & ~stats.correct
    n_tokens = stats.valid.sum().to(dtype)
    n_correct = stats.correct.sum().to(dtype)
    prob_pred = stats.log_prob_pred.exp()
    accuracy = torch.where(n_tokens > 0, n_correct / n_tokens.clamp(min=1),
                           torch.full_like(n_tokens, math.nan))
    return dict(
        n_tokens=n_tokens,
        n_correct=n_correct,
        n_incorrect=incorrect.sum().to(dtype),
        **_entropy_means(stats.entropy, stats.correct, incorrect),
        prob_correct=masked_mean_or_nan(prob_pred, stats.correct),
        prob_incorrect=masked_mean_or_nan(prob_pred, incorrect),
        token_accuracy=accuracy,
    )


def loss_output(
    loss: torch.Tensor, stats: TokenStats, terms: dict[str, torch.Tensor]
) -> LossOutput:
    """``loss`` with the diagnostics of ``stats`` and the (detached) named ``terms``."""
    return LossOutput(
        loss=loss, terms={k: v.detach() for k, v in terms.items()}, **diagnostics(stats)
    )
