"""The results tables, rendered from what a measurement wrote (nothing typed by hand).

An evaluation folder (``uaclm eval --out DIR``) holds ``metrics.json`` (per method: class counts,
accuracy and every metric of every score with its interval) and ``comparison.json`` (paired
differences against the baseline, with unadjusted and Holm verdicts). From them:

- :func:`detection_table`: per method, correct / wrong, accuracy and the hallucination AUROC of
  each score (positive class: a wrong answer), 95% intervals; "too few to judge" where a class has
  fewer than ``MIN_CLASS_COUNT`` answers.
- :func:`ood_table`: per method, in-domain / OOD counts and the OOD AUROC of each score (positive
  class: an OOD prompt), the length-only baseline included.
- :func:`paired_table`: each method minus the baseline on the same questions, with the Holm mark
  (a method compared with a baseline of its own, ``uaclm eval --baseline METHOD=NAME``, says so).
- :func:`seeds_table`: the paired differences of several seeds side by side, and whether a
  difference holds (excludes 0, same sign) in every seed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from uaclm_dist.evaluate.compare import ACCURACY, MIN_CLASS_COUNT, TOO_FEW, markdown_table

__all__ = ["EvalResults", "detection_table", "ood_table", "paired_table", "seeds_table"]

#: The scores of the tables, in order, with their headers (the length-only baseline last).
SCORES: tuple[tuple[str, str], ...] = (
    ("te", "TE"),
    ("ppl", "PPL"),
    ("pe", "PE"),
    ("se", "SE"),
    ("length", "Length only"),
)


class EvalResults:
    """``metrics.json`` and ``comparison.json`` of one evaluation folder."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        for name in ("metrics.json", "comparison.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} not found: not a finished evaluation")
        self.folder = folder
        self.metrics: dict[str, Any] = json.loads((folder / "metrics.json").read_text())
        self.comparison: dict[str, Any] = json.loads((folder / "comparison.json").read_text())

    @property
    def methods(self) -> list[str]:
        return list(self.metrics)

    @property
    def baseline(self) -> str:
        return self.comparison["baseline"]

    @property
    def n_ood(self) -> int:
        return max(int(m.get("n_ood") or 0) for m in self.metrics.values())


def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _with_interval(value: float | None, interval: Sequence[float | None] | None,
                   signed: bool = False) -> str:  # fmt: skip
    text = _num(value, signed)
    if interval and interval[0] is not None and interval[1] is not None:
        text += f" [{_num(interval[0], signed)}, {_num(interval[1], signed)}]"
    return text


def _metric_cell(result: Mapping[str, Any], metric: str, classes: tuple[str, str]) -> str:
    """``value [low, high]``, or :data:`TOO_FEW` when either class is below MIN_CLASS_COUNT."""
    counts = [result.get(f"{metric}_n_{c}") for c in classes]
    if None in counts or min(counts) < MIN_CLASS_COUNT:
        return TOO_FEW
    return _with_interval(result.get(metric), result.get(f"{metric}_ci"))


def _label(method: str, suffix: str) -> str:
    return f"`{method}`{suffix}"


def detection_table(runs: Mapping[str, EvalResults]) -> str:
    """Accuracy and hallucination AUROC per method (rows of every run; the run's key, e.g.
    ``" (seed 1)"``, is appended to its method names)."""
    headers = ["method", "correct / wrong", "accuracy [95% CI]", *(h for _, h in SCORES)]
    rows = []
    for suffix, run in runs.items():
        for method, m in run.metrics.items():
            scores = m["scores"]
            rows.append([
                _label(method, suffix), f"{m['n_correct']} / {m['n_incorrect']}",
                _with_interval(m.get("accuracy"), m.get("accuracy_ci")),
                *(_metric_cell(scores.get(s, {}), "auroc", ("correct", "incorrect"))
                  for s, _ in SCORES),
            ])  # fmt: skip
    return markdown_table(headers, rows)


def ood_table(runs: Mapping[str, EvalResults]) -> str:
    """OOD AUROC per method and score (positive class: an OOD prompt); empty without OOD rows."""
    headers = ["method", "in-domain / OOD", *(h for _, h in SCORES)]
    rows = []
    for suffix, run in runs.items():
        for method, m in run.metrics.items():
            if not m.get("n_ood"):
                continue
            scores = m["scores"]
            rows.append([
                _label(method, suffix), f"{m['n_examples']} / {m['n_ood']}",
                *(_metric_cell(scores.get(s, {}), "ood_auroc", ("in_domain", "ood"))
                  for s, _ in SCORES),
            ])  # fmt: skip
    return markdown_table(headers, rows) if rows else ""


def _quantities(run: EvalResults) -> list[tuple[str, str]]:
    """(quantity in comparison.json, header): accuracy, then the AUROC of each table score."""
    present = {d["quantity"] for d in run.comparison["diffs"]}
    wanted = [(ACCURACY, "accuracy"), *((f"AUROC {s}", f"{h} AUROC") for s, h in SCORES)]
    return [(q, h) for q, h in wanted if q in present]


def _diff_cell(d: Mapping[str, Any]) -> str:
    if d["verdict"] == TOO_FEW:
        return TOO_FEW
    text = _with_interval(d["diff"], (d["low"], d["high"]), signed=True)
    return text + (" **H**" if d["verdict_holm"] == "yes" else "")


def _diffs_by_method(run: EvalResults) -> dict[str, dict[str, Mapping[str, Any]]]:
    by: dict[str, dict[str, Mapping[str, Any]]] = {}
    for d in run.comparison["diffs"]:
        by.setdefault(d["method"], {})[d["quantity"]] = d
    return by


def _paired_label(run: EvalResults, method: str, diffs: Mapping[str, Mapping[str, Any]],
                  suffix: str) -> str:  # fmt: skip
    """The method's label, with ``- `its baseline` `` when that is not the run's baseline
    (evaluations written before per-method baselines have none: the run's)."""
    reference = next(iter(diffs.values())).get("baseline", run.baseline)
    label = _label(method, suffix)
    return label if reference == run.baseline else f"{label} - `{reference}`"


def paired_table(run: EvalResults, suffix: str = "") -> str:
    """Each method minus the baseline (same questions, own labels): difference [95% CI], **H**
    when it excludes 0 after Holm over the comparison's ``n_comparisons``."""
    quantities = _quantities(run)
    headers = [f"method - `{run.baseline}`", *(h for _, h in quantities)]
    rows = [[_paired_label(run, method, diffs, suffix),
             *(_diff_cell(diffs[q]) for q, _ in quantities)]
            for method, diffs in _diffs_by_method(run).items()]  # fmt: skip
    return markdown_table(headers, rows)


def _holds(cells: Sequence[Mapping[str, Any]]) -> str:
    """``"higher in every seed"`` / ``"lower in every seed"`` when every unadjusted interval
    excludes 0 on the same side, else ``"no"`` (``TOO_FEW`` when a seed cannot be judged)."""
    if any(d["verdict"] == TOO_FEW for d in cells):
        return TOO_FEW
    if all(d["low"] is not None and d["low"] > 0 for d in cells):
        return "higher in every seed"
    if all(d["high"] is not None and d["high"] < 0 for d in cells):
        return "lower in every seed"
    return "no"


def seeds_table(runs: Mapping[str, EvalResults]) -> str:
    """One row per (method, quantity): the paired difference of each run (seed) and whether it
    holds in all of them. Every run must have the same baseline and methods."""
    first = next(iter(runs.values()))
    if any(r.baseline != first.baseline for r in runs.values()):
        raise ValueError("the runs compare against different baselines")
    per_run = {key: _diffs_by_method(r) for key, r in runs.items()}
    headers = [f"method - `{first.baseline}`", "quantity", *(k.strip(" ()") for k in runs),
               "interval excludes 0 in every seed (unadjusted)"]  # fmt: skip
    rows = []
    for method, diffs in _diffs_by_method(first).items():
        label = _paired_label(first, method, diffs, "")
        for quantity, header in _quantities(first):
            cells = [per_run[key][method][quantity] for key in runs]
            rows.append([label, header, *map(_diff_cell, cells), _holds(cells)])
    return markdown_table(headers, rows)
