"""The training module DeepSpeed wraps: a (Q)LoRA causal LM whose forward returns the loss.

``forward(input_ids, attention_mask, labels)`` runs the model up to its final hidden states and
computes the configured objective with the :class:`ShardedLMHead` (fused, or vocab-parallel over
the data-parallel group), so no full-vocabulary logits exist. ``ult`` needs the full distribution
and runs the dense reference on ``hidden @ W^T``.
"""

from __future__ import annotations

import torch

from uaclm_dist.config import ObjectiveConfig
from uaclm_dist.losses import reference as R
from uaclm_dist.losses.reference import LossOutput
from uaclm_dist.modeling.hidden import final_hidden_states
from uaclm_dist.modeling.sharded_head import ShardedLMHead


class CausalLMWithLoss(torch.nn.Module):
    """``model`` (peft-wrapped HF causal LM, lm_head removed) + the head shard, for DeepSpeed.

    The head is kept out of ``self._modules`` so that DeepSpeed neither partitions, casts nor
    checkpoints its per-rank buffer.
    """

    def __init__(self, model: torch.nn.Module, head: ShardedLMHead, objective: ObjectiveConfig):
        super().__init__()
        self.model = model
        object.__setattr__(self, "head", head)  # not a registered submodule (see class doc)
        self.objective = objective

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        beta: float | None = None,
    ) -> LossOutput:
        """Loss of a micro-batch.

        Args:
            input_ids, attention_mask: ``[B, T]``.
            labels: ``[B, T]`` *unshifted* (``labels[t]`` is token t, -100 = not supervised);
                shifted here so that hidden state t predicts label t+1.
            beta: UA weight for ``clm+ua`` at this step (:func:`R.beta_schedule`).
        """
        hidden = final_hidden_states(self.model, input_ids, attention_mask)  # [B, T, H]
        hidden, targets = hidden[:, :-1], labels[:, 1:]
        obj = self.objective
        if obj.name == "ult":
            weight = self.head.weight_shard  # full head: ult runs with world_size 1 heads
            logits = hidden @ weight.t()
            if self.head.bias_shard is not None:
                logits = logits + self.head.bias_shard
            return R.unlikelihood_loss(logits, targets, alpha=obj.ult_alpha)
        if obj.implementation == "reference":
            logits = hidden @ self.head.weight_shard.t()
            if obj.name == "clm":
                return R.clm_loss(logits, targets)
            if obj.name == "ua_clm":
                return R.ua_clm_loss(logits, targets, pooling=obj.ua_pooling, eps=obj.ua_eps)
            return R.clm_plus_ua_loss(
                logits, targets, beta=beta, pooling=obj.ua_pooling, eps=obj.ua_eps
            )
        kwargs = dict(pooling=obj.ua_pooling, eps=obj.ua_eps, chunk_tokens=obj.chunk_tokens,
                      chunk_vocab=obj.chunk_vocab)  # fmt: skip
        if obj.name == "clm+ua":
            kwargs["beta"] = beta
        return self.head(hidden, targets, objective=obj.name, **kwargs)


def beta_at(objective: ObjectiveConfig, step: int, total: int) -> float | None:
    """The UA weight of ``clm+ua`` at optimizer step ``step`` (None for other objectives)."""
    if objective.name != "clm+ua":
        return None
    return R.beta_schedule(
        step, total, beta_start=objective.beta_start, beta_end=objective.beta_end,
        switch_fraction=objective.beta_switch_fraction,
    )  # fmt: skip
