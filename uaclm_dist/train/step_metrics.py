"""Per-optimizer-step training metrics: accumulated over micro-batches, reduced over ranks."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from uaclm_dist.losses.types import LossOutput

# Token-weighted sums (numerators use the matching count as weight).
_WEIGHTED = {
    "entropy_correct": "n_correct",
    "entropy_incorrect": "n_incorrect",
    "prob_correct": "n_correct",
    "prob_incorrect": "n_incorrect",
}
_COUNTS = ("n_tokens", "n_correct", "n_incorrect")


class StepMetrics:
    """Sums of one optimizer step's micro-batch diagnostics on this rank.

    ``reduce()`` all-reduces them across the ranks (one packed SUM) and returns the global
    step metrics: ``loss`` and ``loss_<term>`` are means over all micro-batches of all ranks
    (what the optimizer step minimized); entropies and probabilities are token-weighted means
    over the step's correct / incorrect tokens (NaN when there were none).

    The loss terms are whatever the objective reports (``LossOutput.terms``); an objective
    reports the same term names on every call, so every rank packs the same vector.
    """

    def __init__(self) -> None:
        self.names = ["micro_batches", "loss", *_COUNTS, *_WEIGHTED]
        self.sums = dict.fromkeys(self.names, 0.0)
        self.terms: list[str] = []

    def add(self, out: LossOutput) -> None:
        values = out.as_floats()
        if not self.terms and out.terms:
            self.terms = sorted(out.terms)
            self.sums.update({f"loss_{t}": 0.0 for t in self.terms})
        self.sums["micro_batches"] += 1
        self.sums["loss"] += values["loss"]
        for key in _COUNTS:
            self.sums[key] += values[key]
        for key, count in _WEIGHTED.items():
            if values[count] > 0:
                self.sums[key] += values[key] * values[count]
        for term in self.terms:
            self.sums[f"loss_{term}"] += values[f"loss_{term}"]

    def reduce(self, group=None) -> dict[str, float]:
        names = self.names + [f"loss_{t}" for t in self.terms]
        packed = torch.tensor([self.sums[n] for n in names], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(packed, group=group)
        total = dict(zip(names, packed.tolist(), strict=True))
        out = {"loss": total["loss"] / max(1.0, total["micro_batches"])}
        for key in _COUNTS:
            out[key] = total[key]
        for key, count in _WEIGHTED.items():
            out[key] = total[key] / total[count] if total[count] > 0 else math.nan
        out["token_accuracy"] = (
            total["n_correct"] / total["n_tokens"] if total["n_tokens"] > 0 else math.nan
        )
        for term in self.terms:
            out[f"loss_{term}"] = total[f"loss_{term}"] / max(1.0, total["micro_batches"])
        return out
