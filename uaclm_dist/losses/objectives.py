"""Compose an objective from flat per-token statistics (used by the fused and sharded losses).

The fast paths produce, for the N supervised tokens of a micro-batch, differentiable ``[N]``
tensors ``log p_y``, ``log P`` and ``H`` plus hard ``pred``; this module turns them into the
objective and the :class:`~uaclm_dist.losses.reference.LossOutput` diagnostics using the same
Eq. 2 helpers as the dense reference.
"""

from __future__ import annotations

import torch

from uaclm_dist.losses.reference import (
    LossOutput,
    TokenStats,
    log_one_minus_tanh,
    log_tanh,
    loss_output,
    masked_mean,
    ua_terms,
)

OBJECTIVES = ("clm", "ua_clm", "clm+ua")


def _segment_mean(values: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor, n_seg: int):
    """Per-segment mean of ``values`` over ``mask`` ([n_seg], 0 for an empty segment set)."""
    zeros = torch.zeros(n_seg, dtype=values.dtype, device=values.device)
    total = zeros.index_add(0, segments, torch.where(mask, values, torch.zeros_like(values)))
    count = zeros.index_add(0, segments, mask.to(values.dtype))
    return total / count.clamp(min=1)


def ua_terms_by_sequence(
    stats: TokenStats, sequence_ids: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2 per sequence, then the mean over sequences with a supervised token (``sequence``
    pooling), vectorized over flat ``[N]`` statistics with ``sequence_ids [N]``."""
    seg_ids, segments = torch.unique(sequence_ids[stats.valid], return_inverse=True)
    n_seg = seg_ids.numel()
    if n_seg == 0:
        zero = stats.entropy.sum() * 0.0
        return zero, zero
    valid = stats.valid
    h = stats.entropy[valid]
    prob = stats.log_prob_pred[valid].exp()
    correct = stats.correct[valid]
    incorrect_term = -_segment_mean(prob * log_tanh(h, eps), ~correct, segments, n_seg)
    correct_term = -_segment_mean((1.0 - prob) * log_one_minus_tanh(h), correct, segments, n_seg)
    return incorrect_term.mean(), correct_term.mean()


def compose_objective(
    objective: str,
    stats: TokenStats,
    *,
    sequence_ids: torch.Tensor | None = None,
    pooling: str = "batch",
    eps: float = 1e-6,
    beta: float | None = None,
) -> LossOutput:
    """Loss and diagnostics of ``objective`` from flat statistics (all fields ``[N]``).

    Args:
        objective: ``clm``, ``ua_clm`` or ``clm+ua`` (``ult`` needs the full distribution: use the
            dense reference).
        sequence_ids: ``[N]`` sequence index of each token; required for ``pooling="sequence"``.
        beta: weight of the UA term for ``clm+ua``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(
            f"objective {objective!r} is not supported by the fused losses (choose from "
            f"{', '.join(OBJECTIVES)}; 'ult' runs through losses.reference)"
        )
    terms: dict[str, torch.Tensor] = {}
    loss = stats.entropy.sum() * 0.0
    if objective in ("clm", "clm+ua"):
        terms["clm"] = masked_mean(-stats.log_prob_label, stats.valid)
        loss = loss + terms["clm"]
    if objective in ("ua_clm", "clm+ua"):
        if pooling == "batch":
            incorrect_term, correct_term = ua_terms(stats, eps)
        elif pooling == "sequence":
            if sequence_ids is None:
                raise ValueError("ua_pooling='sequence' needs sequence_ids for every token")
            incorrect_term, correct_term = ua_terms_by_sequence(stats, sequence_ids, eps)
        else:
            raise ValueError(f"ua_pooling must be 'batch' or 'sequence', got {pooling!r}")
        ua = incorrect_term + correct_term
        terms.update(ua=ua, ua_incorrect=incorrect_term, ua_correct=correct_term)
        if objective == "clm+ua":
            if beta is None:
                raise ValueError("objective 'clm+ua' needs beta (see reference.beta_schedule)")
            loss = loss + beta * ua
        else:
            loss = loss + ua
    return loss_output(loss, stats, terms)
