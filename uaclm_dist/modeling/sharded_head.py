"""A frozen, vocabulary-sharded copy of the LM head that computes the loss without logits.

Each rank of the vocab-parallel group keeps rows ``[vocab_start, vocab_end)`` of the ``[V, H]``
head as a *buffer* (not a parameter): DeepSpeed ZeRO-3 neither partitions nor gathers it, and it is
not part of the model's state dict or checkpoints (it is rebuilt from the base model). The
full-vocabulary head is then removed from the model with :func:`replace_lm_head`, so no
``[tokens, V]`` logits can be computed by accident during training.

Typical use on every rank, before ``deepspeed.initialize``::

    head = ShardedLMHead.from_model(model, rank, world_size)
    replace_lm_head(model, head)
    ...
    hidden = final_hidden_states(model, input_ids, attention_mask)[:, :-1]   # [B, T-1, H]
    out = head(hidden.reshape(-1, H), labels[:, 1:].reshape(-1), group=group,
               objective=build_objective("ua_clm"), step=step, total_steps=n_steps)
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

from uaclm_dist.losses import token_stats as ts
from uaclm_dist.losses.fused import FusedTokenStats, fused_loss
from uaclm_dist.losses.objectives.base import Objective
from uaclm_dist.losses.types import LossOutput
from uaclm_dist.losses.vocab_parallel import (
    VocabParallelTokenStats,
    vocab_parallel_loss,
    vocab_shard_range,
)
from uaclm_dist.modeling.hidden import lm_head_weight, output_head, unwrap_model

__all__ = ["LMHeadRemoved", "ShardedLMHead", "replace_lm_head", "vocab_shard_range"]


def _gathered(tensors: list[torch.Tensor]):
    """Context that materializes ZeRO-3 partitioned parameters (a no-op for plain tensors)."""
    partitioned = [t for t in tensors if t is not None and hasattr(t, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)


class ShardedLMHead(torch.nn.Module):
    """Rows ``[vocab_start, vocab_end)`` of a frozen LM head, plus the loss over the full vocab.

    Buffers:
        weight_shard: ``[vocab_end - vocab_start, H]``, a private copy in the head's dtype.
        bias_shard: ``[vocab_end - vocab_start]`` or None (Llama heads have no bias).
    """

    def __init__(
        self,
        weight_shard: torch.Tensor,
        *,
        vocab_start: int,
        vocab_size: int,
        rank: int = 0,
        world_size: int = 1,
        bias_shard: torch.Tensor | None = None,
    ):
        super().__init__()
        if weight_shard.dim() != 2:
            raise ValueError(f"weight_shard must be [V_shard, H], got {tuple(weight_shard.shape)}")
        expected = vocab_shard_range(vocab_size, rank, world_size)
        if (vocab_start, vocab_start + weight_shard.shape[0]) != expected:
            raise ValueError(
                f"rank {rank}/{world_size} of a {vocab_size}-row head should hold rows "
                f"{expected}, got [{vocab_start}, {vocab_start + weight_shard.shape[0]})"
            )
        self.vocab_start = vocab_start
        self.vocab_end = vocab_start + weight_shard.shape[0]
        self.vocab_size = vocab_size
        self.rank = rank
        self.world_size = world_size
        self.register_buffer("weight_shard", weight_shard.detach().clone(), persistent=False)
        bias = None if bias_shard is None else bias_shard.detach().clone()
        self.register_buffer("bias_shard", bias, persistent=False)

    @property
    def hidden_size(self) -> int:
        return self.weight_shard.shape[1]

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, rank: int = 0, world_size: int = 1
    ) -> ShardedLMHead:
        """Copy this rank's vocabulary rows of ``model``'s LM head (tied, peft, 4-bit, ZeRO-3 ok).

        Call it before :func:`replace_lm_head`. The shard lives on the head's device; move the
        module with ``.to(device)`` if needed.
        """
        head = output_head(model)
        bias = getattr(head, "bias", None)
        raw_weight = getattr(head, "weight", None)
        with _gathered([raw_weight, bias]):
            weight = lm_head_weight(model)  # [V, H]
            vocab_size = weight.shape[0]
            start, end = vocab_shard_range(vocab_size, rank, world_size)
            weight_shard = weight[start:end].detach().clone()
            bias_shard = None if bias is None else bias[start:end].detach().clone()
        return cls(
            weight_shard,
            vocab_start=start,
            vocab_size=vocab_size,
            rank=rank,
            world_size=world_size,
            bias_shard=bias_shard,
        )

    def forward(
        self,
        hidden: torch.Tensor,
        labels: torch.Tensor,
        *,
        group: dist.ProcessGroup | None = None,
        objective: Objective,
        **loss_kwargs,
    ) -> LossOutput:
        """The objective of this rank's tokens over the full vocabulary.

        Args:
            hidden: ``[N, H]`` final hidden states (``[B, T, H]`` is flattened by the loss).
            labels: ``[N]`` aligned targets (row i predicts ``labels[i]``; -100 = ignored).
            group: the vocab-parallel process group (None = default group). Unused when
                ``world_size == 1``; otherwise every rank of the group must call this.
            objective: the :class:`~uaclm_dist.losses.objectives.Objective` to compute.
            loss_kwargs: ``step``, ``total_steps``, ``ignore_index``, ``chunk_tokens``,
                ``chunk_vocab``, ``chunk_mib``, ``sequence_ids``, ``kernel`` (see
                :func:`uaclm_dist.losses.fused.fused_loss`).
        """
        if hidden.shape[-1] != self.hidden_size:
            raise ValueError(
                f"hidden size {hidden.shape[-1]} does not match the head's {self.hidden_size}"
            )
        if self.world_size == 1:
            return fused_loss(
                hidden, self.weight_shard, labels, objective=objective, bias=self.bias_shard,
                **loss_kwargs,
            )  # fmt: skip
        return vocab_parallel_loss(
            hidden, self.weight_shard, labels, vocab_start=self.vocab_start, group=group,
            objective=objective, bias_shard=self.bias_shard, **loss_kwargs,
        )  # fmt: skip

    @torch.no_grad()
    def token_stats(
        self,
        hidden: torch.Tensor,
        labels: torch.Tensor,
        *,
        group: dist.ProcessGroup | None = None,
        chunk_tokens: int | None = None,
        chunk_vocab: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token full-vocabulary entropy and argmax, without logits and without gradients.

        Args:
            hidden: ``[N, H]`` final hidden states of supervised positions.
            labels: ``[N]`` their targets (not -100; only carried through the statistics).
            group: as in :meth:`forward`; every rank of the group must call this.

        Returns:
            ``(entropy [N] in nats (fp32 or fp64), pred [N] int64)``.
        """
        chunks = (chunk_tokens or ts.DEFAULT_CHUNK_TOKENS, chunk_vocab or ts.DEFAULT_CHUNK_VOCAB)
        if self.world_size == 1:
            _, _, entropy, pred = FusedTokenStats.apply(
                hidden, self.weight_shard, self.bias_shard, labels, *chunks
            )
        else:
            _, _, entropy, pred = VocabParallelTokenStats.apply(
                hidden, self.weight_shard, self.bias_shard, labels, self.vocab_start, group,
                *chunks,
            )  # fmt: skip
        return entropy, pred

    def extra_repr(self) -> str:
        return (
            f"rows=[{self.vocab_start}, {self.vocab_end}) of {self.vocab_size}, "
            f"hidden={self.hidden_size}, rank={self.rank}/{self.world_size}"
        )


class LMHeadRemoved(torch.nn.Module):
    """Stand-in for a removed ``lm_head``: holds no weight and raises when called."""

    is_removed_lm_head = True

    def __init__(self, description: str = ""):
        super().__init__()
        self.description = description

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            "this model's full-vocabulary lm_head was removed by replace_lm_head() "
            f"({self.description}); compute the loss from final_hidden_states(model, ...) with "
            "the ShardedLMHead, or load a fresh model for generation / logits"
        )

    def extra_repr(self) -> str:
        return self.description


def replace_lm_head(model: torch.nn.Module, sharded_head: ShardedLMHead) -> torch.nn.Module:
    """Swap ``model``'s ``lm_head`` for an :class:`LMHeadRemoved` stub, in place.

    The input embeddings are untouched, also when the head was tied to them (the shared parameter
    stays registered in the embedding module). The sharded head is *not* registered inside the
    model: its per-rank buffer must stay out of DeepSpeed's module traversal and out of
    checkpoints. ``model(...)`` raises afterwards; :func:`final_hidden_states` still works.

    Returns:
        the removed head module (e.g. to free it explicitly).
    """
    base = unwrap_model(model)
    old_head = output_head(base)
    embeddings = base.get_input_embeddings()
    weight = getattr(old_head, "weight", None)
    if weight is not None:
        hidden = weight.ds_shape[1] if hasattr(weight, "ds_shape") else weight.shape[-1]
        if type(weight).__name__ != "Params4bit" and hidden != sharded_head.hidden_size:
            raise ValueError(
                f"sharded head has hidden size {sharded_head.hidden_size}, the model's lm_head "
                f"{hidden}"
            )
    base.set_output_embeddings(LMHeadRemoved(sharded_head.extra_repr()))
    if base.get_input_embeddings() is not embeddings:
        raise RuntimeError("replacing the lm_head changed the input embeddings")
    return old_head
