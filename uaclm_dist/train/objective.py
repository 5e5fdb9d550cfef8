"""The training module DeepSpeed wraps: a (Q)LoRA model whose forward returns the loss.

``forward(labels=..., step=..., total_steps=..., **model_inputs)`` runs the model up to its final
hidden states and hands them, with the :class:`ShardedLMHead`, to the configured
:class:`~uaclm_dist.losses.objectives.Objective`: fused (or vocab-parallel over the data-parallel
group) from per-token statistics, so no full-vocabulary logits exist. Objectives that need the
whole distribution, and ``objective.implementation: reference``, run the objective's dense form on
``hidden @ W^T``.
"""

from __future__ import annotations

import torch

from uaclm_dist.losses.objectives import Objective
from uaclm_dist.losses.types import LossOutput
from uaclm_dist.modeling.hidden import final_hidden_states, final_hidden_states_with_images
from uaclm_dist.modeling.sharded_head import ShardedLMHead
from uaclm_dist.train.step_timing import NoClock, PhaseClock


def batch_to(
    batch: dict[str, torch.Tensor], device: torch.device, float_dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """A collated batch on ``device``; floating inputs (``pixel_values``) in the model's dtype
    (the vision tower's parameters are in ``model.dtype``), ids and masks unchanged."""
    return {k: v.to(device, float_dtype) if v.is_floating_point() else v.to(device)
            for k, v in batch.items()}  # fmt: skip


def split_batch(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(labels, model inputs)`` of a collated batch: every key but ``labels`` is a keyword
    input of the model (``input_ids``, ``attention_mask``, a family's extras)."""
    inputs = dict(batch)
    return inputs.pop("labels"), inputs


class CausalLMWithLoss(torch.nn.Module):
    """``model`` (peft-wrapped HF model, lm_head removed) + the head shard, for DeepSpeed.

    The head is kept out of ``self._modules`` so that DeepSpeed neither partitions, casts nor
    checkpoints its per-rank buffer.

    Args:
        objective: the objective to train with (``build_objective(cfg.objective)``).
        implementation: ``fused`` / ``vocab_parallel`` (statistics from the head shard, the
            shard decided when the head was built) or ``reference`` (dense logits).
        chunk_tokens, chunk_vocab, chunk_mib: chunk sizes of the fused kernels (None: their
            defaults; see :func:`uaclm_dist.losses.fused.fused_loss`).
        image_size: input side of a vision-language model's tower (None: text-only model).
            Hidden states then come from
            :func:`~uaclm_dist.modeling.hidden.final_hidden_states_with_images`: every
            micro-batch runs tower, projector, embeddings and language model in that order (a
            batch without images runs a black image at zero weight), so the ZeRO-3 parameter
            gathers of all ranks pair up (DeepSpeed issue 7170) and the projector's gradient
            is reduced on every rank.

    Attribute ``clock`` (a :class:`~uaclm_dist.train.step_timing.PhaseClock`, not a module):
    the training loop sets one to time ``forward`` (hidden states) and ``loss`` (head and
    objective) apart; by default nothing is timed.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        head: ShardedLMHead,
        objective: Objective,
        *,
        implementation: str = "fused",
        chunk_tokens: int | None = None,
        chunk_vocab: int | None = None,
        chunk_mib: float | None = None,
        image_size: int | None = None,
    ):
        super().__init__()
        self.image_size = image_size
        self.model = model
        object.__setattr__(self, "head", head)  # not a registered submodule (see class doc)
        self.objective = objective
        self.clock: PhaseClock = NoClock()
        self.dense = implementation == "reference" or objective.needs_full_vocab
        self.chunks = {
            "chunk_tokens": chunk_tokens, "chunk_vocab": chunk_vocab, "chunk_mib": chunk_mib
        }

    def forward(
        self, *, labels: torch.Tensor, step: int, total_steps: int, **model_inputs: torch.Tensor
    ) -> LossOutput:
        """Loss of a micro-batch.

        Args:
            labels: ``[B, T]`` *unshifted* (``labels[t]`` is token t, -100 = not supervised);
                shifted here so that hidden state t predicts label t+1.
            step, total_steps: 0-based optimizer step and run length (objective schedules).
            model_inputs: ``input_ids [B, T]``, ``attention_mask [B, T]`` and any family extras.
        """
        with self.clock.phase("forward"):
            hidden = self.hidden_states(**model_inputs)  # [B, T, H]
        hidden, targets = hidden[:, :-1], labels[:, 1:]
        with self.clock.phase("loss"):
            if self.dense:
                return self.objective.dense(
                    self.dense_logits(hidden), targets, step=step, total_steps=total_steps
                )
            return self.head(
                hidden, targets, objective=self.objective, step=step, total_steps=total_steps,
                **self.chunks,
            )  # fmt: skip

    def hidden_states(self, **model_inputs: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``[B, T, H]`` of the model for a batch (see ``image_size``)."""
        if self.image_size is not None:
            return final_hidden_states_with_images(self.model, image_size=self.image_size,
                                                   **model_inputs)  # fmt: skip
        return final_hidden_states(self.model, **model_inputs)

    def dense_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden [B, T, H] @ W^T (+ b)`` -> ``[B, T, V]`` (the head is whole: world 1)."""
        logits = hidden @ self.head.weight_shard.t()
        if self.head.bias_shard is not None:
            logits = logits + self.head.bias_shard
        return logits
