"""Dense reference implementations of the loss family (readable, mirrors the paper's equations).

Every fast path in :mod:`uaclm_dist.losses` (fused, vocab-parallel) is tested against this module.
It materializes full-vocabulary logits, softmax and entropy, so it is meant for tests, small models
and the ``ult`` baseline, not for 7B-13B training.

Shapes and conventions
----------------------
- ``logits``: ``[batch, seq, vocab]`` in any float dtype; all statistics are computed in float32
  (or float64 when the input is float64, so ``gradcheck`` works).
- ``labels``: ``[batch, seq]`` int64, **already aligned**: ``labels[b, t]`` is the target for
  ``logits[b, t]``. HF causal LMs predict token t+1 at position t; use :func:`shift_for_causal_lm`
  to turn ``(logits, input_ids-as-labels)`` into aligned pairs.
- Positions whose label equals ``ignore_index`` take no part in anything (loss or diagnostics).
- Entropies are in nats (natural log, full vocabulary, not normalized by ``log V``).

The UA-CLM loss (paper Eq. 2 and 3), per supervised position i::

    p_i = softmax(z_i)        H_i = -sum_v p_iv log p_iv      a_i = argmax_v z_i     P_i = p_i[a_i]
    C   = {i : a_i == y_i}    C~  = {i : a_i != y_i}
    L_UA = - 1/|C~| sum_{C~} P_i log(tanh H_i)  -  1/|C| sum_{C} (1 - P_i) log(1 - tanh H_i)

with the numerically stable forms (fp32 ``tanh`` saturates at H ~ 10 while ln V ~ 10.4 at 32k)::

    log(1 - tanh H) = log 2 - softplus(2H)
    log(tanh H)     = log(-expm1(-2H)) - softplus(-2H),   with tanh H clamped below at ``eps``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from uaclm_dist.losses.types import (  # re-exported: the reference is where readers look first
    IGNORE_INDEX,
    LossOutput,
    TokenStats,
    loss_output,
    masked_mean,
)

LOG_2 = math.log(2.0)


def shift_for_causal_lm(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Align HF-style causal-LM outputs: logits at t predict the token at t+1.

    Args:
        logits: ``[batch, seq, vocab]`` model outputs.
        labels: ``[batch, seq]`` token ids of the same sequence (``-100`` where not supervised).

    Returns:
        ``(logits[:, :-1], labels[:, 1:])``: ``[batch, seq-1, vocab]`` and ``[batch, seq-1]``.
    """
    return logits[:, :-1, :], labels[:, 1:]


# --------------------------------------------------------------------------------------------
# Per-token statistics (dense)
# --------------------------------------------------------------------------------------------


def _stat_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def token_statistics(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> TokenStats:
    """Dense per-token entropy, predicted-token and label log-probabilities (paper Eq. 3 inputs)."""
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [batch, seq, vocab] and labels [batch, seq]; got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    z = logits.to(_stat_dtype(logits))
    log_p = torch.log_softmax(z, dim=-1)  # [B, T, V]
    p = log_p.exp()
    entropy = -(p * log_p).sum(dim=-1)  # H_i

    pred = torch.argmax(z, dim=-1)  # lowest index among maxima
    log_prob_pred = log_p.gather(-1, pred.unsqueeze(-1)).squeeze(-1)

    valid = labels != ignore_index
    safe_labels = torch.where(valid, labels, torch.zeros_like(labels))
    log_prob_label = log_p.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    log_prob_label = torch.where(valid, log_prob_label, torch.zeros_like(log_prob_label))
    correct = valid & (pred == labels)
    return TokenStats(entropy, log_prob_pred, log_prob_label, pred, valid, correct)


# --------------------------------------------------------------------------------------------
# Stable log-tanh forms
# --------------------------------------------------------------------------------------------


def log_one_minus_tanh(h: torch.Tensor) -> torch.Tensor:
    """``log(1 - tanh h)`` computed as ``log 2 - softplus(2h)`` (finite for every h)."""
    return LOG_2 - F.softplus(2.0 * h)


def log_tanh(h: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``log(max(tanh h, eps))`` computed as ``log(-expm1(-2h)) - softplus(-2h)``.

    The clamp is applied to ``h`` (``tanh h >= eps  <=>  h >= atanh(eps)``) so that both the value
    and the gradient stay finite at h = 0 (the gradient is 0 below the clamp).
    """
    h = torch.clamp(h, min=math.atanh(eps))
    return torch.log(-torch.expm1(-2.0 * h)) - F.softplus(-2.0 * h)


# --------------------------------------------------------------------------------------------
# Diagnostics and objectives
# --------------------------------------------------------------------------------------------


def ua_terms(stats: TokenStats, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper Eq. 2 over one set of positions: (incorrect term, correct term), both >= 0."""
    incorrect = stats.valid & ~stats.correct
    prob_pred = stats.log_prob_pred.exp()  # P_i, differentiable
    h = stats.entropy
    # Incorrect predictions: push entropy up, weighted by the (over)confidence P_i.
    incorrect_term = -masked_mean(prob_pred * log_tanh(h, eps), incorrect)
    # Correct predictions: push entropy down, weighted by the under-confidence 1 - P_i.
    correct_term = -masked_mean((1.0 - prob_pred) * log_one_minus_tanh(h), stats.correct)
    return incorrect_term, correct_term


def _select(stats: TokenStats, mask: torch.Tensor) -> TokenStats:
    """Restrict the statistics to the positions in ``mask`` (others become ignored)."""
    return TokenStats(
        stats.entropy,
        stats.log_prob_pred,
        stats.log_prob_label,
        stats.pred,
        stats.valid & mask,
        stats.correct & mask,
    )


def ua_terms_pooled(
    stats: TokenStats, pooling: str = "batch", eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """UA-CLM (incorrect term, correct term) with ``batch`` or ``sequence`` pooling.

    ``batch``: C and C~ are pooled over all valid positions of the micro-batch (paper default).
    ``sequence``: Eq. 2 per sequence (its own C and C~), then the mean over sequences that have at
    least one supervised position.
    """
    if pooling == "batch":
        return ua_terms(stats, eps)
    if pooling != "sequence":
        raise ValueError(f"ua_pooling must be 'batch' or 'sequence', got {pooling!r}")
    batch, seq = stats.valid.shape
    incorrect_terms, correct_terms = [], []
    for b in range(batch):
        row = torch.zeros(batch, seq, dtype=torch.bool, device=stats.valid.device)
        row[b] = True
        if not bool((stats.valid & row).any()):
            continue
        inc, cor = ua_terms(_select(stats, row), eps)
        incorrect_terms.append(inc)
        correct_terms.append(cor)
    if not incorrect_terms:
        zero = stats.entropy.sum() * 0.0
        return zero, zero
    return torch.stack(incorrect_terms).mean(), torch.stack(correct_terms).mean()


def ua_clm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    pooling: str = "batch",
    eps: float = 1e-6,
) -> LossOutput:
    """UA-CLM loss alone (paper Eq. 2): the paper's objective for text LLMs.

    Args:
        logits: ``[batch, seq, vocab]``, aligned with ``labels``.
        labels: ``[batch, seq]`` target ids, ``ignore_index`` where not supervised.
        pooling: ``"batch"`` (default) or ``"sequence"``; see :func:`ua_terms_pooled`.
        eps: lower clamp on ``tanh H`` inside ``log tanh H``.
    """
    stats = token_statistics(logits, labels, ignore_index)
    incorrect_term, correct_term = ua_terms_pooled(stats, pooling, eps)
    ua = incorrect_term + correct_term
    return loss_output(
        ua, stats, {"ua": ua, "ua_incorrect": incorrect_term, "ua_correct": correct_term}
    )


def clm_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> LossOutput:
    """Standard causal-LM cross-entropy, mean over supervised positions (0 if there are none)."""
    stats = token_statistics(logits, labels, ignore_index)
    clm = masked_mean(-stats.log_prob_label, stats.valid)
    return loss_output(clm, stats, {"clm": clm})


def clm_plus_ua_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    beta: float,
    ignore_index: int = IGNORE_INDEX,
    pooling: str = "batch",
    eps: float = 1e-6,
) -> LossOutput:
    """``L_CLM + beta * L_UA``: the paper's objective for LLaVA (beta: :func:`beta_schedule`)."""
    stats = token_statistics(logits, labels, ignore_index)
    clm = masked_mean(-stats.log_prob_label, stats.valid)
    incorrect_term, correct_term = ua_terms_pooled(stats, pooling, eps)
    ua = incorrect_term + correct_term
    loss = clm + beta * ua
    terms = {"clm": clm, "ua": ua, "ua_incorrect": incorrect_term, "ua_correct": correct_term}
    return loss_output(loss, stats, terms)


def beta_schedule(
    step: int,
    total: int,
    *,
    beta_start: float = 0.2,
    beta_end: float = 0.8,
    switch_fraction: float = 0.2,
) -> float:
    """The paper's step schedule for ``clm+ua``: ``beta_start`` for the first ``switch_fraction``
    of the ``total`` optimizer steps, ``beta_end`` after (steps are 0-based)."""
    if total <= 0:
        raise ValueError(f"total steps must be positive, got {total}")
    if not 0.0 <= switch_fraction <= 1.0:
        raise ValueError(f"switch_fraction must be in [0, 1], got {switch_fraction}")
    return beta_start if step < switch_fraction * total else beta_end


def unlikelihood_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    min_one_minus_p: float = 1e-5,
) -> LossOutput:
    """Token-level unlikelihood training (Welleck et al. 2020), a baseline in the paper.

    Per supervised position t with target y_t, the negative candidates are the previous targets of
    the same sequence, ``C_t = {y_s : s < t, s supervised} minus {y_t}`` (each token once)::

        L_t = -log p(y_t) - alpha * sum_{c in C_t} log(1 - p(c))

    averaged over supervised positions. ``1 - p(c)`` is clamped below at ``min_one_minus_p`` as in
    the authors' fairseq code.
    """
    stats = token_statistics(logits, labels, ignore_index)
    z = logits.to(_stat_dtype(logits))
    vocab = z.shape[-1]
    p = torch.softmax(z, dim=-1)  # [B, T, V]

    safe_labels = torch.where(stats.valid, labels, torch.zeros_like(labels))
    onehot = F.one_hot(safe_labels, vocab) & stats.valid.unsqueeze(-1)  # [B, T, V]
    seen_before = (onehot.cumsum(dim=1) - onehot) > 0  # token occurred at an earlier position
    candidates = seen_before & ~onehot.bool()  # minus the current target
    ul_per_token = -(torch.log(torch.clamp(1.0 - p, min=min_one_minus_p)) * candidates).sum(-1)

    clm = masked_mean(-stats.log_prob_label, stats.valid)
    ul = masked_mean(ul_per_token, stats.valid)
    loss = clm + alpha * ul
    return loss_output(loss, stats, {"clm": clm, "ul": ul})
