"""The entropy probe: token entropy on a fixed held-out batch, split by the base model's errors.

The per-step metrics report the mean entropy of the tokens the model *currently* gets right
(C) and wrong (C~). Those sets change as the model learns, which hides the method's effect: a
CLM run that memorizes the easy tokens is left with a C~ of hard, high-entropy tokens, so its
C~ entropy rises for a reason that has nothing to do with uncertainty awareness. The probe
fixes the token sets instead. Before the first step it runs the starting model over the first
``logging.probe_examples`` *held-out* (test-split) examples and records, per supervised token,
whether the argmax was right (``base_correct``) and its entropy. Every later measurement
reports the mean entropy on those same two sets, plus the model's own split and the AUROC of
token entropy as a detector of its own wrong tokens. UA-CLM's signature (METHOD.md section 1):
entropy on the base-incorrect set stays high relative to a CLM run (which drives it down while
learning to predict those tokens) while entropy on the base-correct set falls.

All ranks run the probe on the same batch (ZeRO-3 gathers and the vocab-parallel head are
collective); rank 0 logs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uaclm_dist.data.tokenize import IGNORE_INDEX, collate
from uaclm_dist.train.objective import batch_to, split_batch


@dataclass
class ProbeTokens:
    """Per supervised probe token (flattened over examples, in order): ``entropy [n]`` in nats
    and ``correct [n]`` (argmax == label)."""

    entropy: torch.Tensor
    correct: torch.Tensor

    def to_state(self) -> dict:
        return {"entropy": self.entropy.tolist(), "correct": self.correct.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> ProbeTokens:
        return cls(torch.tensor(state["entropy"], dtype=torch.float64),
                   torch.tensor(state["correct"], dtype=torch.bool))  # fmt: skip


@torch.no_grad()
def measure(
    module, examples, pad_token_id: int, device: torch.device, micro: int, *,
    image_spec=None, float_dtype: torch.dtype = torch.float32,
) -> ProbeTokens:  # fmt: skip
    """Entropy and correctness of every supervised token of ``examples``.

    Args:
        module: :class:`~uaclm_dist.train.objective.CausalLMWithLoss` (the DeepSpeed module);
            put in eval mode for the measurement (no LoRA dropout) and restored after.
        examples: tokenized probe examples (same on every rank).
        micro: examples per forward (bounds the ``[micro, T, H]`` hidden states).
        image_spec, float_dtype: image preprocessing of a vision-language model's image rows
            and the dtype its ``pixel_values`` are cast to (the model's).
    """
    was_training = module.training
    module.eval()
    entropies, correct = [], []
    try:
        for start in range(0, len(examples), micro):
            rows = examples[start : start + micro]
            batch = batch_to(collate(rows, pad_token_id, image_spec), device, float_dtype)
            labels, inputs = split_batch(batch)
            hidden = module.hidden_states(**inputs)[:, :-1]
            targets = labels[:, 1:].reshape(-1)
            keep = targets != IGNORE_INDEX
            flat = hidden.reshape(-1, hidden.shape[-1])[keep]
            entropy, pred = module.head.token_stats(flat, targets[keep])
            entropies.append(entropy.double().cpu())
            correct.append((pred == targets[keep]).cpu())
    finally:
        module.train(was_training)
    return ProbeTokens(torch.cat(entropies), torch.cat(correct))


def _mean(x: torch.Tensor) -> float | None:
    return float(x.mean()) if x.numel() else None


def summarize(base: ProbeTokens, now: ProbeTokens) -> dict:
    """Probe metrics of ``now`` on the token sets fixed by ``base`` (same tokens, same order)."""
    from uaclm_dist.evaluate.metrics import auroc

    if base.entropy.shape != now.entropy.shape:
        raise ValueError(f"probe token counts differ: {base.entropy.numel()} vs "
                         f"{now.entropy.numel()} (different probe examples?)")  # fmt: skip
    two_classes = 0 < int(now.correct.sum()) < now.correct.numel()
    return {
        "n_tokens": int(now.entropy.numel()),
        "n_base_correct": int(base.correct.sum()),
        "entropy_base_correct": _mean(now.entropy[base.correct]),
        "entropy_base_incorrect": _mean(now.entropy[~base.correct]),
        "token_accuracy": _mean(now.correct.double()),
        "entropy_correct": _mean(now.entropy[now.correct]),
        "entropy_incorrect": _mean(now.entropy[~now.correct]),
        "entropy_auroc": auroc((~now.correct).tolist(), now.entropy.tolist())
        if two_classes
        else None,
    }
