"""Fused loss from hidden states: the LM head and the loss without ``[tokens, vocab]`` logits.

Two kernels, chosen by :func:`fused_loss`:

- **single pass** (a frozen head, the (Q)LoRA case): token chunks of full vocabulary rows; each
  chunk's statistics and hidden-state gradient rows are computed while its logits are in memory
  (:mod:`uaclm_dist.losses.single_pass`). Memory above the inputs: a few ``[chunk, V]`` tensors
  (``chunk_mib``) plus ``K`` ``[N, H]`` gradient rows.
- **two pass** (a trainable head): the forward keeps five numbers per token over vocabulary
  chunks, the backward recomputes the logits chunk by chunk for the head's gradient
  (:mod:`uaclm_dist.losses.token_stats`). Memory: one ``chunk_tokens x chunk_vocab`` chunk.
"""

from __future__ import annotations

import torch

from uaclm_dist.losses import single_pass as sp
from uaclm_dist.losses import token_stats as ts
from uaclm_dist.losses.objectives.base import Objective
from uaclm_dist.losses.types import (
    IGNORE_INDEX,
    LossOutput,
    TokenStats,
    supervised_token_stats,
)


class FusedTokenStats(torch.autograd.Function):
    """``(hidden [N,H], weight [V,H], bias [V]|None, labels [N]) -> (log p_y, log P, H, pred)``.

    All outputs are ``[N]``; the first three are differentiable (stat dtype), ``pred`` is int64.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_tokens, chunk_vocab):
        state = ts.partial_state(
            hidden, weight, bias, labels, chunk_tokens=chunk_tokens, chunk_vocab=chunk_vocab
        )
        stats = ts.finalize(state)
        ctx.save_for_backward(hidden, weight, bias, labels, stats.lse, stats.mean_logit, stats.pred)
        ctx.chunks = (chunk_tokens, chunk_vocab)
        ctx.mark_non_differentiable(stats.pred)
        return stats.log_prob_label, stats.log_prob_pred, stats.entropy, stats.pred

    @staticmethod
    def backward(ctx, grad_label, grad_pred, grad_entropy, _grad_argmax):
        hidden, weight, bias, labels, lse, mean_logit, pred = ctx.saved_tensors
        stats = ts.FinalStats(None, None, None, pred, lse, mean_logit)
        grads = [
            torch.zeros_like(lse) if g is None else g for g in (grad_label, grad_pred, grad_entropy)
        ]
        need_weight_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        grad_hidden, grad_weight, grad_bias = ts.backward_chunks(
            hidden, weight, bias, labels, stats, *grads,
            need_weight_grad=need_weight_grad,
            chunk_tokens=ctx.chunks[0],
            chunk_vocab=ctx.chunks[1],
        )  # fmt: skip
        return (
            grad_hidden.to(hidden.dtype) if ctx.needs_input_grad[0] else None,
            grad_weight.to(weight.dtype) if ctx.needs_input_grad[1] else None,
            grad_bias.to(bias.dtype) if grad_bias is not None and ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
        )


class SinglePassTokenStats(torch.autograd.Function):
    """Frozen head: ``(hidden [N,H], weight [V,H], bias [V]|None, labels [N]) ->
    (log p_y, log P, H, pred)``, each ``[N]``, with ``dL/dhidden`` prepared in the forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, objective, chunk_tokens):
        final, directions, rows = sp.forward_rows(
            hidden, weight, bias, labels, objective.gradient_directions,
            chunk_tokens=chunk_tokens, with_entropy=objective.uses_entropy,
        )  # fmt: skip
        ctx.save_for_backward(directions, rows)
        ctx.objective_name = objective.name
        ctx.hidden_dtype = hidden.dtype
        ctx.mark_non_differentiable(final.pred)
        return final.log_prob_label, final.log_prob_pred, final.entropy, final.pred

    @staticmethod
    def backward(ctx, grad_label, grad_pred, grad_entropy, _grad_argmax):
        directions, rows = ctx.saved_tensors
        grad_hidden = sp.hidden_gradient(
            (grad_label, grad_pred, grad_entropy), directions, rows, objective=ctx.objective_name
        ).to(ctx.hidden_dtype)
        return grad_hidden, None, None, None, None, None


def choose_kernel(
    kernel: str, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> str:
    """The kernel ``auto`` means: ``single_pass`` when only the hidden states need a gradient
    (a frozen head, the (Q)LoRA case), else ``two_pass`` (a trainable head needs the recompute;
    without any gradient the two-pass forward is already a single sweep and prepares nothing).
    An explicit ``single_pass`` with a trainable head is refused: it cannot give the head's
    gradient."""
    if kernel not in ("auto", "single_pass", "two_pass"):
        raise ValueError(f"kernel must be auto, single_pass or two_pass, got {kernel!r}")
    grad_on = torch.is_grad_enabled()
    head_trainable = grad_on and (
        weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if kernel == "single_pass" and head_trainable:
        raise ValueError("the single-pass kernel needs a frozen LM head (weight and bias)")
    if kernel == "auto":
        hidden_grad = grad_on and hidden.requires_grad
        return "single_pass" if hidden_grad and not head_trainable else "two_pass"
    return kernel


def flatten_tokens(
    hidden: torch.Tensor, labels: torch.Tensor, sequence_ids: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Accept ``[B, T, H]`` / ``[B, T]`` (sequence ids = row index) or flat ``[N, H]`` / ``[N]``."""
    if hidden.dim() == 3:
        batch, seq, width = hidden.shape
        if labels.shape != (batch, seq):
            raise ValueError(
                f"labels {tuple(labels.shape)} do not match hidden {tuple(hidden.shape)}"
            )
        if sequence_ids is None:
            sequence_ids = torch.arange(batch, device=labels.device).repeat_interleave(seq)
        return hidden.reshape(batch * seq, width), labels.reshape(-1), sequence_ids.reshape(-1)
    if hidden.dim() != 2 or labels.shape != hidden.shape[:1]:
        raise ValueError(
            f"expected hidden [N, H] with labels [N] (or [B, T, H] with [B, T]); got "
            f"{tuple(hidden.shape)} and {tuple(labels.shape)}"
        )
    return hidden, labels, sequence_ids


def select_supervised(
    hidden: torch.Tensor, labels: torch.Tensor, sequence_ids: torch.Tensor | None, ignore_index: int
):
    """Keep only the rows whose label is not ``ignore_index`` (differentiable row selection)."""
    keep = torch.nonzero(labels != ignore_index, as_tuple=True)[0]
    ids = None if sequence_ids is None else sequence_ids.index_select(0, keep)
    return hidden.index_select(0, keep), labels.index_select(0, keep), ids


def token_stats_for(
    objective: Objective, outputs: tuple[torch.Tensor, ...], labels: torch.Tensor
) -> TokenStats:
    """:class:`TokenStats` of a kernel's ``(log p_y, log P, H, pred)`` outputs, without the
    entropy when the objective does not use it (the single-pass kernel left it NaN)."""
    log_prob_label, log_prob_pred, entropy, pred = outputs
    entropy = entropy if objective.uses_entropy else None
    return supervised_token_stats(log_prob_label, log_prob_pred, entropy, pred, labels)


def require_token_objective(objective: Objective) -> None:
    """Raise when ``objective`` cannot run from per-token statistics (it needs dense logits)."""
    if objective.needs_full_vocab:
        raise ValueError(
            f"objective {objective.name!r} needs the full vocabulary distribution: the fused and "
            f"vocab-parallel losses cannot run it (use objective.implementation: reference)"
        )


def fused_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    objective: Objective,
    step: int = 0,
    total_steps: int = 1,
    bias: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    chunk_tokens: int | None = None,
    chunk_vocab: int | None = None,
    sequence_ids: torch.Tensor | None = None,
    chunk_mib: float | None = None,
    kernel: str = "auto",
) -> LossOutput:
    """The objective computed from final hidden states and the LM head, without full logits.

    Args:
        hidden: ``[N, H]`` final (post-norm) hidden states, or ``[B, T, H]``.
        weight: ``[V, H]`` LM-head weight; its gradient is computed only if it requires grad.
        labels: ``[N]`` (or ``[B, T]``) targets aligned with ``hidden`` (row i predicts labels[i]).
        objective: an :class:`~uaclm_dist.losses.objectives.Objective` (``build_objective``).
        step, total_steps: 0-based optimizer step and run length (the objective's schedule).
        bias: optional ``[V]`` LM-head bias.
        chunk_tokens: tokens per chunk (default: single pass from ``chunk_mib``, two pass 1024).
        chunk_vocab: vocabulary columns per chunk of the two-pass kernel (default 4096).
        sequence_ids: ``[N]`` sequence of each token (``sequence`` pooling with flat inputs).
        chunk_mib: single pass: MiB of fp32 logits per token chunk (default
            :data:`~uaclm_dist.losses.single_pass.DEFAULT_CHUNK_MIB`).
        kernel: ``auto`` (single pass for a frozen head, two pass for a trainable one),
            ``single_pass`` or ``two_pass``.
    """
    require_token_objective(objective)
    hidden, labels, sequence_ids = flatten_tokens(hidden, labels, sequence_ids)
    hidden, labels, sequence_ids = select_supervised(hidden, labels, sequence_ids, ignore_index)
    if choose_kernel(kernel, hidden, weight, bias) == "single_pass":
        outputs = SinglePassTokenStats.apply(
            hidden, weight, bias, labels, objective,
            chunk_tokens or sp.chunk_tokens_for(weight.shape[0], chunk_mib),
        )  # fmt: skip
    else:
        outputs = FusedTokenStats.apply(
            hidden, weight, bias, labels,
            chunk_tokens or ts.DEFAULT_CHUNK_TOKENS, chunk_vocab or ts.DEFAULT_CHUNK_VOCAB,
        )  # fmt: skip
    stats = token_stats_for(objective, outputs, labels)
    return objective.from_stats(
        stats, step=step, total_steps=total_steps, sequence_ids=sequence_ids
    )
