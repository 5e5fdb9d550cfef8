"""The two UA terms of paper Eq. 2 from flat per-token statistics, pooled per batch or sequence.

Used by the UA objectives on the fused and vocab-parallel paths, where the kernels hand over
``[N]`` statistics of the supervised tokens only (see :class:`~uaclm_dist.losses.types.TokenStats`).
"""

from __future__ import annotations

import torch

from uaclm_dist.losses.reference import log_one_minus_tanh, log_tanh, ua_terms
from uaclm_dist.losses.types import TokenStats

POOLINGS = ("batch", "sequence")


def _segment_mean(values: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor, n_seg: int):
    """Per-segment mean of ``values`` over ``mask`` ([n_seg], 0 for an empty segment set)."""
    zeros = torch.zeros(n_seg, dtype=values.dtype, device=values.device)
    total = zeros.index_add(0, segments, torch.where(mask, values, torch.zeros_like(values)))
    count = zeros.index_add(0, segments, mask.to(values.dtype))
    return total / count.clamp(min=1)


def ua_token_directions(stats: TokenStats, eps: float) -> torch.Tensor:
    """``[n, 3]``: gradient of each token's own unnormalised Eq. 2 term with respect to its
    ``(log p_y, log P, H)``: ``-P log tanh H`` if incorrect, ``-(1 - P) log(1 - tanh H)`` if
    correct (the same functions as the loss, so the clamp at ``eps`` is the same too). Every
    pooling divides these terms by positive counts, so this is the direction of the token's UA
    gradient under any pooling."""
    log_prob_pred = stats.log_prob_pred.detach().requires_grad_(True)
    entropy = stats.entropy.detach().requires_grad_(True)
    with torch.enable_grad():
        prob = log_prob_pred.exp()
        per_token = torch.where(
            stats.correct,
            -(1.0 - prob) * log_one_minus_tanh(entropy),
            -prob * log_tanh(entropy, eps),
        )
        d_pred, d_entropy = torch.autograd.grad(per_token.sum(), (log_prob_pred, entropy))
    return torch.stack([torch.zeros_like(d_pred), d_pred, d_entropy], dim=1)


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


def ua_terms_flat(
    stats: TokenStats, *, pooling: str, eps: float, sequence_ids: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(incorrect term, correct term) of Eq. 2 over flat ``[N]`` statistics.

    Args:
        pooling: ``batch`` (C and C~ pooled over all tokens) or ``sequence`` (per sequence, then
            the mean over sequences; needs ``sequence_ids [N]``).
        eps: lower clamp on ``tanh H`` inside ``log tanh H``.
    """
    if pooling == "batch":
        return ua_terms(stats, eps)
    if pooling == "sequence":
        if sequence_ids is None:
            raise ValueError("ua_pooling='sequence' needs sequence_ids for every token")
        return ua_terms_by_sequence(stats, sequence_ids, eps)
    raise ValueError(f"ua_pooling must be one of {POOLINGS}, got {pooling!r}")
