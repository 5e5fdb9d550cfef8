"""Per-optimizer-step training metrics: summed on the device over micro-batches, reduced over
ranks without a host sync, read on the host only when a row is written."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from uaclm_dist.losses.types import LossOutput
from uaclm_dist.train.collectives import sum_over_ranks

# Token-weighted sums (numerators use the matching count as weight).
_WEIGHTED = {
    "entropy_correct": "n_correct",
    "entropy_incorrect": "n_incorrect",
    "prob_correct": "n_correct",
    "prob_incorrect": "n_incorrect",
}
_COUNTS = ("n_tokens", "n_correct", "n_incorrect")


class StepMetrics:
    """Sums of one optimizer step's micro-batch diagnostics on this rank, kept on ``device``.

    :meth:`add` stacks a micro-batch's values into one float64 vector on the device (no host
    sync); :meth:`reduce` appends host numbers (tokens, FLOPs) and SUM-all-reduces the vector
    on the device (:func:`~uaclm_dist.train.collectives.sum_over_ranks`); :meth:`metrics` turns
    a reduced vector, read once with ``.tolist()``, into the step's row: ``loss`` and
    ``loss_<term>`` are means over all micro-batches of all ranks (what the optimizer step
    minimized); entropies and probabilities are token-weighted means over the step's correct /
    incorrect tokens (NaN when there were none).

    The loss terms are whatever the objective reports (``LossOutput.terms``); an objective
    reports the same term names on every call, so every rank packs the same vector. Entropies an
    objective does not compute (None in its ``LossOutput``, e.g. ``clm``) are left out of the
    vector and the row.

    Args:
        device: where the sums live (the worker's device; None: the first output's device).
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.terms: list[str] = []
        self.weighted: list[str] = list(_WEIGHTED)  # those the objective reports
        self.sums: torch.Tensor | None = None  # [len(names)] float64 on self.device

    @property
    def names(self) -> list[str]:
        return ["micro_batches", "loss", *_COUNTS, *self.weighted,
                *(f"loss_{t}" for t in self.terms)]  # fmt: skip

    def add(self, out: LossOutput) -> None:
        if self.sums is None:
            self.terms = sorted(out.terms)
            self.weighted = [k for k in _WEIGHTED if getattr(out, k) is not None]
            self.device = self.device or out.loss.device
            self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)
        values = {"loss": out.loss.detach(), **{k: getattr(out, k) for k in (*_COUNTS,
                  *self.weighted)}, **{f"loss_{t}": out.terms[t] for t in self.terms}}  # fmt: skip
        for key in self.weighted:  # a mean over no token (NaN) adds nothing
            n = values[_WEIGHTED[key]].to(torch.float64)
            values[key] = torch.where(n > 0, values[key].to(torch.float64) * n, 0.0)
        row = [torch.ones((), dtype=torch.float64, device=self.device)]
        row += [values[n].to(self.device, torch.float64) for n in self.names[1:]]
        self.sums += torch.stack(row)

    def reduce(self, host_values: Sequence[float] = ()) -> torch.Tensor:
        """Collective: this rank's sums with ``host_values`` appended, SUM-reduced over the ranks
        on the device. Returns the reduced ``[len(names) + len(host_values)]`` float64 vector;
        nothing waits for the device here."""
        if self.sums is None:
            raise RuntimeError("StepMetrics.reduce before any micro-batch was added")
        extra = torch.tensor([float(v) for v in host_values], dtype=torch.float64)
        packed = torch.cat([self.sums, extra.to(self.device, non_blocking=True)])
        return sum_over_ranks(packed)

    def metrics(self, reduced: Sequence[float]) -> dict[str, float]:
        """The step's row from a reduced vector read on the host (its first ``len(names)``
        values; what :meth:`reduce` appended is the caller's)."""
        total = dict(zip(self.names, reduced[: len(self.names)], strict=True))
        micro = max(1.0, total["micro_batches"])
        out = {"loss": total["loss"] / micro}
        for key in _COUNTS:
            out[key] = total[key]
        for key in self.weighted:
            count = _WEIGHTED[key]
            out[key] = total[key] / total[count] if total[count] > 0 else math.nan
        out["token_accuracy"] = (
            total["n_correct"] / total["n_tokens"] if total["n_tokens"] > 0 else math.nan
        )
        for term in self.terms:
            out[f"loss_{term}"] = total[f"loss_{term}"] / micro
        return out

    def loss_index(self) -> int:
        """Position of the summed loss in the reduced vector (a device-side finiteness check)."""
        return self.names.index("loss")
