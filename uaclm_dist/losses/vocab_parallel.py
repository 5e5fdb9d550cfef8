"""The fused loss with the LM head's vocabulary sharded across the ranks of a process group.

Training is data parallel: every rank has *its own* tokens but only rows ``[vocab_start,
vocab_start + V_r)`` of the head. Per micro-batch:

forward
  1. all-gather the supervised hidden states ``[n_r, H]`` (and labels) of the group -> ``[N, H]``
     (padded to the largest ``n_r``; the sizes are all-gathered first);
  2. each rank computes partial softmax states of all N tokens over its vocabulary shard;
  3. all-reduce MAX of the running max logit m;
  4. one packed all-reduce SUM of ``[s, t, z_y, has_label]`` rescaled to the global m;
  5. all-reduce MIN of the candidate argmax index (ranks whose shard holds the global max offer
     their lowest maximal index, the others offer +inf): the global lowest-index argmax;
  6. each rank keeps the statistics of its own tokens and composes its own loss.
backward
  7. all-gather the upstream per-token gradients ``(alpha, beta, gamma)`` -> ``[3, N]``;
  8. each rank computes its shard's contribution to ``dL/dh`` for all N tokens (chunked);
  9. reduce-scatter SUM returns each rank the full gradient of its own tokens.

Memory per rank: the gathered ``[N, H]`` hidden states and their gradient, plus one
``chunk_tokens x chunk_vocab`` logits chunk; the head shard is ``V / world`` rows. The weight-shard
gradient (when it requires grad) is d(sum over ranks of each rank's loss)/dW_shard.
The same code runs over gloo (CPU) and NCCL (GPU).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from uaclm_dist.losses import single_pass as sp
from uaclm_dist.losses import token_stats as ts
from uaclm_dist.losses.fused import (
    choose_kernel,
    flatten_tokens,
    fused_loss,
    require_token_objective,
    select_supervised,
    token_stats_for,
)
from uaclm_dist.losses.objectives.base import Objective
from uaclm_dist.losses.types import IGNORE_INDEX, LossOutput


def vocab_shard_range(vocab_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, end)`` of a ``vocab_size``-row head held by ``rank`` of ``world_size``:
    contiguous, in rank order, the first ``vocab_size % world_size`` shards one row longer."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a group of {world_size}")
    base, extra = divmod(vocab_size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _all_gather_padded(x: torch.Tensor, sizes: list[int], group) -> torch.Tensor:
    """All-gather ``x [n_r, ...]`` of uneven length: pad to max(sizes), gather, drop the padding."""
    n_max = max(sizes)
    padded = x.new_zeros((n_max, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


def _has_reduce_scatter(group) -> bool:
    """Whether the group's backend implements reduce-scatter (NCCL does, gloo does not).

    Decided from the backend, the same on every rank, never by catching a failed collective: a
    rank that retried with another collective would leave the group in mismatched collectives.
    """
    return dist.get_backend(group) not in ("gloo",)


def _reduce_scatter_rows(full: torch.Tensor, sizes: list[int], rank: int, group) -> torch.Tensor:
    """Sum ``full [N, H]`` over the group and return this rank's rows (offsets from sizes)."""
    n_max = max(sizes)
    chunks = full.split(sizes)
    padded = full.new_zeros((len(sizes), n_max, full.shape[1]))
    for i, c in enumerate(chunks):
        padded[i, : c.shape[0]] = c
    if _has_reduce_scatter(group):
        out = full.new_empty((n_max, full.shape[1]))
        # torch 2.13 renamed reduce_scatter_tensor to reduce_scatter_single; accept either.
        reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        reduce_scatter(out, padded.reshape(-1, full.shape[1]), group=group)
    else:  # gloo: all-reduce the (padded) whole and keep our rows
        dist.all_reduce(padded, group=group)
        out = padded[rank]
    return out[: sizes[rank]]


def reduce_state(state: ts.SoftmaxState, group) -> ts.SoftmaxState:
    """The softmax state over all columns from every rank's state over its shard (same tokens
    on every rank): MAX of the max logit, one packed SUM of (s, t, z_y, has_label) rescaled to
    it, MIN of the argmax candidates (lowest global index among the maxima)."""
    global_max = state.max_logit.clone()
    dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=group)
    sum_exp, moment = ts.rescale(state, global_max)
    packed = torch.stack([sum_exp, moment, state.label_logit, state.has_label.to(sum_exp.dtype)])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
    pred = torch.where(state.max_logit == global_max, state.pred, ts.NO_PRED)
    dist.all_reduce(pred, op=dist.ReduceOp.MIN, group=group)
    return ts.SoftmaxState(global_max, packed[0], packed[1], pred, packed[2], packed[3] > 0)


def _gather_sizes(n_mine: int, chunk_mine: int, group, device) -> tuple[list[int], int]:
    """Every rank's supervised token count, and the smallest chunk any rank asked for (the
    single-pass kernel's per-chunk collectives need the same chunks on every rank)."""
    mine = torch.tensor([n_mine, chunk_mine], dtype=torch.int64, device=device)
    parts = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, mine, group=group)
    return [int(p[0]) for p in parts], min(int(p[1]) for p in parts)


class VocabParallelSinglePass(torch.autograd.Function):
    """Frozen head shard, one pass: ``(hidden [n_r,H], weight_shard [V_r,H], bias_shard,
    labels [n_r]) -> (log p_y, log P, H, pred)`` for this rank's tokens, each ``[n_r]``.

    Forward: all-gather the group's supervised hidden states; per token chunk, this shard's
    logits, the chunk's statistics reduced over the group (:func:`reduce_state`, three small
    collectives) and this shard's gradient rows (:mod:`uaclm_dist.losses.single_pass`); then one
    reduce-scatter hands each rank the summed rows of its own tokens. Backward: local only (it
    rescales the rows; no collective, no logits).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, vocab_start, group, objective, chunk_tokens):
        rank = dist.get_rank(group)
        sizes, chunk = _gather_sizes(hidden.shape[0], chunk_tokens, group, hidden.device)
        offset = sum(sizes[:rank])
        hidden_all = _all_gather_padded(hidden, sizes, group)  # [N, H]
        labels_all = _all_gather_padded(labels, sizes, group)  # [N]
        final, directions, rows = sp.forward_rows(
            hidden_all, weight, bias, labels_all, objective.gradient_directions,
            vocab_start=vocab_start, chunk_tokens=chunk,
            reduce=lambda state: reduce_state(state, group), with_entropy=objective.uses_entropy,
        )  # fmt: skip
        n_all, k_dirs, width = rows.shape
        mine = slice(offset, offset + sizes[rank])
        rows_mine = _reduce_scatter_rows(rows.reshape(n_all, k_dirs * width), sizes, rank, group)
        ctx.save_for_backward(directions[mine].clone(), rows_mine.reshape(-1, k_dirs, width))
        ctx.objective_name = objective.name
        ctx.hidden_dtype = hidden.dtype
        pred_mine = final.pred[mine].clone()
        ctx.mark_non_differentiable(pred_mine)
        return (
            final.log_prob_label[mine].clone(),
            final.log_prob_pred[mine].clone(),
            final.entropy[mine].clone(),
            pred_mine,
        )

    @staticmethod
    def backward(ctx, grad_label, grad_pred, grad_entropy, _grad_argmax):
        directions, rows = ctx.saved_tensors
        grad_hidden = sp.hidden_gradient(
            (grad_label, grad_pred, grad_entropy), directions, rows, objective=ctx.objective_name
        ).to(ctx.hidden_dtype)
        return grad_hidden, None, None, None, None, None, None, None


class VocabParallelTokenStats(torch.autograd.Function):
    """Sharded ``(hidden [n_r,H], weight_shard [V_r,H], bias_shard, labels [n_r]) ->
    (log p_y, log P, H, pred)`` for this rank's tokens, each ``[n_r]``."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, vocab_start, group, chunk_tokens, chunk_vocab):
        rank = dist.get_rank(group)
        sizes, _ = _gather_sizes(hidden.shape[0], chunk_tokens, group, hidden.device)
        offset = sum(sizes[:rank])

        hidden_all = _all_gather_padded(hidden, sizes, group)  # [N, H]
        labels_all = _all_gather_padded(labels, sizes, group)  # [N]
        state = ts.partial_state(
            hidden_all, weight, bias, labels_all,
            vocab_start=vocab_start, chunk_tokens=chunk_tokens, chunk_vocab=chunk_vocab,
        )  # fmt: skip

        merged = reduce_state(state, group)
        stats = ts.finalize(merged)
        ctx.save_for_backward(
            hidden_all, weight, bias, labels_all, stats.lse, stats.mean_logit, stats.pred
        )
        ctx.meta = (sizes, rank, vocab_start, group, chunk_tokens, chunk_vocab)
        mine = slice(offset, offset + sizes[rank])
        pred_mine = stats.pred[mine].clone()
        ctx.mark_non_differentiable(pred_mine)
        return (
            stats.log_prob_label[mine].clone(),
            stats.log_prob_pred[mine].clone(),
            stats.entropy[mine].clone(),
            pred_mine,
        )

    @staticmethod
    def backward(ctx, grad_label, grad_pred, grad_entropy, _grad_argmax):
        hidden_all, weight, bias, labels_all, lse, mean_logit, pred = ctx.saved_tensors
        sizes, rank, vocab_start, group, chunk_tokens, chunk_vocab = ctx.meta
        n_mine = sizes[rank]
        local = torch.stack(
            [
                torch.zeros(n_mine, dtype=lse.dtype, device=lse.device) if g is None else g
                for g in (grad_label, grad_pred, grad_entropy)
            ],
            dim=1,
        )  # [n_r, 3]
        # (7) every rank needs every token's (alpha, beta, gamma) for its vocabulary shard.
        grads_all = _all_gather_padded(local, sizes, group)  # [N, 3]
        stats = ts.FinalStats(None, None, None, pred, lse, mean_logit)
        need_weight_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        # (8) this shard's contribution to dL/dh for all gathered tokens.
        grad_hidden_all, grad_weight, grad_bias = ts.backward_chunks(
            hidden_all, weight, bias, labels_all, stats,
            grads_all[:, 0], grads_all[:, 1], grads_all[:, 2],
            vocab_start=vocab_start, need_weight_grad=need_weight_grad,
            chunk_tokens=chunk_tokens, chunk_vocab=chunk_vocab,
        )  # fmt: skip
        # (9) sum the shards' contributions; keep this rank's tokens.
        grad_hidden = _reduce_scatter_rows(grad_hidden_all, sizes, rank, group)
        return (
            grad_hidden.to(hidden_all.dtype) if ctx.needs_input_grad[0] else None,
            grad_weight.to(weight.dtype) if ctx.needs_input_grad[1] else None,
            grad_bias.to(bias.dtype) if grad_bias is not None and ctx.needs_input_grad[2] else None,
            None, None, None, None, None,
        )  # fmt: skip


def vocab_parallel_loss(
    hidden: torch.Tensor,
    weight_shard: torch.Tensor,
    labels: torch.Tensor,
    *,
    vocab_start: int,
    group: dist.ProcessGroup | None,
    objective: Objective,
    step: int = 0,
    total_steps: int = 1,
    bias_shard: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    chunk_tokens: int | None = None,
    chunk_vocab: int | None = None,
    sequence_ids: torch.Tensor | None = None,
    chunk_mib: float | None = None,
    kernel: str = "auto",
) -> LossOutput:
    """This rank's loss on its own tokens, with the head's vocabulary sharded over ``group``.

    Args:
        hidden: ``[n_r, H]`` (or ``[B, T, H]``) this rank's final hidden states.
        weight_shard: ``[V_r, H]`` rows ``[vocab_start, vocab_start + V_r)`` of the LM head. The
            shards of the group must tile ``[0, V)`` in rank order.
        labels: ``[n_r]`` (or ``[B, T]``) global vocabulary ids aligned with ``hidden``.
        group: process group over which the vocabulary is sharded (None = default group). Every
            rank of the group must call this, also with no supervised tokens.
        Other arguments as in :func:`uaclm_dist.losses.fused.fused_loss`.
    """
    require_token_objective(objective)
    if not dist.is_available() or not dist.is_initialized():
        if vocab_start != 0:
            raise RuntimeError(
                "vocab_parallel_loss with a shard needs an initialized process group"
            )
        return fused_loss(
            hidden, weight_shard, labels, objective=objective, step=step,
            total_steps=total_steps, bias=bias_shard, ignore_index=ignore_index,
            chunk_tokens=chunk_tokens, chunk_vocab=chunk_vocab, sequence_ids=sequence_ids,
            chunk_mib=chunk_mib, kernel=kernel,
        )  # fmt: skip
    hidden, labels, sequence_ids = flatten_tokens(hidden, labels, sequence_ids)
    hidden, labels, sequence_ids = select_supervised(hidden, labels, sequence_ids, ignore_index)
    if choose_kernel(kernel, hidden, weight_shard, bias_shard) == "single_pass":
        outputs = VocabParallelSinglePass.apply(
            hidden, weight_shard, bias_shard, labels, vocab_start, group, objective,
            chunk_tokens or sp.chunk_tokens_for(weight_shard.shape[0], chunk_mib),
        )  # fmt: skip
    else:
        outputs = VocabParallelTokenStats.apply(
            hidden, weight_shard, bias_shard, labels, vocab_start, group,
            chunk_tokens or ts.DEFAULT_CHUNK_TOKENS, chunk_vocab or ts.DEFAULT_CHUNK_VOCAB,
        )  # fmt: skip
    stats = token_stats_for(objective, outputs, labels)
    return objective.from_stats(
        stats, step=step, total_steps=total_steps, sequence_ids=sequence_ids
    )
