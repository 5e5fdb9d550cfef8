"""Paired differences between cells: every cell against its baseline cell, on the same questions.

A spec with ``baseline: {objective.name: clm}`` pairs each evaluated cell whose
``objective.name`` is not ``clm`` with the cell that has ``clm`` and the same other axis values
and seed. Both were evaluated on the test split their runs held out; when the data settings
match (same ``data.split_seed``, ...) that is the same questions, so the difference of two cells
is paired example by example, as in one ``uaclm eval`` with ``--baseline`` (accuracy and AUROC
only; the example ids are checked)
(:func:`~uaclm_dist.evaluate.compare.compare_methods`: accuracy with a paired bootstrap
interval, AUROC per uncertainty score with DeLong's, each cell with its own correct/incorrect
answers). The length baseline is not compared: it is no uncertainty score.

The family of the Holm adjustment is every comparison of the whole table (all pairs, seeds and
quantities): a verdict is drawn against all of them at once. Pairs that cannot be compared
(baseline cell unfinished, different questions, a missing per-example file) are listed with
the reason, never dropped silently.

Columns of :attr:`PairedDifferences.frame` (:data:`FRAME_COLUMNS`): the other axis keys,
``seed``, ``value`` (the
compared cell's value of the baseline key, as text), ``cell``, ``baseline_cell``,
``quantity`` (``Accuracy``, ``AUROC <score>``), ``diff``, ``low``, ``high``, ``se``, ``df``,
``p_value``, ``verdict`` (unadjusted), ``p_holm``, ``verdict_holm``, ``n_correct`` /
``n_incorrect`` and ``baseline_n_correct`` / ``baseline_n_incorrect``, ``n_examples``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uaclm_dist.evaluate.compare import TOO_FEW, compare_methods, verdict
from uaclm_dist.evaluate.correctness import DEFAULT_THRESHOLD
from uaclm_dist.evaluate.intervals import holm
from uaclm_dist.evaluate.method_files import PER_EXAMPLE
from uaclm_dist.sweep.cells import Cell
from uaclm_dist.sweep.layout import cell_paths, read_json
from uaclm_dist.sweep.overrides import value_text
from uaclm_dist.sweep.spec import SweepSpec

__all__ = ["PairedDifferences", "paired_differences", "write_paired"]

#: the answer-length score: a baseline of its own, not compared between cells
LENGTH_SCORE = "length"
#: columns of :attr:`PairedDifferences.frame` after the other axis keys
FRAME_COLUMNS = ("seed", "value", "cell", "baseline_cell", "quantity", "diff", "low", "high",
                 "se", "df", "p_value", "verdict", "n_correct", "n_incorrect",
                 "baseline_n_correct", "baseline_n_incorrect", "n_examples", "p_holm",
                 "verdict_holm")  # fmt: skip


@dataclass
class PairedDifferences:
    """Cell-vs-baseline-cell differences of one sweep (see the module docstring).

    Attributes:
        key: the axis key the cells differ in, e.g. ``objective.name``.
        baseline: its baseline value (text), e.g. ``clm``.
        other_axes: the other axis keys (the columns that name a setting).
        frame: one row per pair and quantity.
        skipped: one line per pair not compared, with the reason.
        alpha: 1 - the interval level, and the family-wise error rate of ``verdict_holm``.
    """

    key: str
    baseline: str
    other_axes: list[str]
    frame: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    alpha: float = 0.05

    @property
    def n_comparisons(self) -> int:
        """m, the rows with a p-value: the family of the Holm adjustment."""
        return int(self.frame["p_value"].notna().sum()) if len(self.frame) else 0


def _setting(cell: Cell, key: str) -> tuple[str, ...]:
    """The cell's values of every axis but ``key``, and its seed, as comparable text."""
    return (*(json.dumps(v, sort_keys=True, default=str) for k, v in cell.assignment
              if k != key), str(cell.seed))  # fmt: skip


def _hashable(value: Any) -> Any:
    """Lists and mappings as their one-line YAML (a table column groups by it)."""
    return value_text(value) if isinstance(value, list | dict) else value


@dataclass(frozen=True)
class _Evaluated:
    """What the comparison needs of one cell's evaluation."""

    method: str
    threshold: float
    bootstrap_samples: int
    seed: int


def _evaluated(spec: SweepSpec, cell: Cell) -> _Evaluated:
    """The cell's evaluated method (its adapter, not ``base``) and the settings it was scored
    with (from ``run/run_info.json``: the sweep evaluates with the training's config);
    ValueError naming the cell when it has no finished evaluation."""
    paths = cell_paths(spec, cell)
    metrics = read_json(paths.metrics_file)
    methods = [m for m in metrics if m != "base"] if isinstance(metrics, dict) else []
    if len(methods) != 1:
        raise ValueError(f"{cell.id} is not evaluated (no single adapter method in "
                         f"{paths.metrics_file})")  # fmt: skip
    config = ((read_json(paths.run_info_file) or {}).get("config")) or {}
    eval_cfg = config.get("eval") or {}
    return _Evaluated(methods[0], float(eval_cfg.get("correctness_threshold", DEFAULT_THRESHOLD)),
                      int(eval_cfg.get("bootstrap_samples", 1000)),
                      int((config.get("optim") or {}).get("seed", 0)))  # fmt: skip


def _per_example(spec: SweepSpec, cell: Cell, method: str) -> pd.DataFrame:
    """``eval/per_example/<method>.parquet`` of ``cell`` (FileNotFoundError naming it)."""
    path = cell_paths(spec, cell).eval_dir / PER_EXAMPLE / f"{method}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    return pd.read_parquet(path)


def _pair_rows(spec: SweepSpec, cell: Cell, base_cell: Cell, scores: Sequence[str],
               n_bootstrap: int | None, alpha: float,
               notes: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    """The compared quantities of one pair (ValueError / FileNotFoundError when it cannot be
    compared); a score missing from either cell is left out with a line in ``notes``."""
    this, base = _evaluated(spec, cell), _evaluated(spec, base_cell)
    if this.threshold != base.threshold:
        raise ValueError(f"scored with other correctness thresholds ({this.threshold} vs "
                         f"{base.threshold}): their correct answers differ in kind")
    frames = {"cell": _per_example(spec, cell, this.method),
              "baseline": _per_example(spec, base_cell, base.method)}  # fmt: skip
    present = [s for s in scores if all(s in f.columns for f in frames.values())]
    notes += [f"{cell.id} vs {base_cell.id}: score '{s}' is missing in one of them, not compared"
              for s in scores if s not in present]  # fmt: skip
    comparison = compare_methods(
        frames, present, baseline="baseline", metrics=["auroc"], threshold=this.threshold,
        n_bootstrap=this.bootstrap_samples if n_bootstrap is None else n_bootstrap,
        seed=this.seed, alpha=alpha)  # fmt: skip
    dropped = ["method", "baseline", "p_holm", "verdict_holm", "interval", "excludes_zero"]
    rows = comparison.diffs.drop(columns=dropped).to_dict(orient="records")
    return [{**row, "n_examples": comparison.n_examples} for row in rows]


def paired_differences(spec: SweepSpec, cells: list[Cell], scores: Sequence[str], *,
                       n_bootstrap: int | None = None,
                       alpha: float = 0.05) -> PairedDifferences | None:  # fmt: skip
    """Every finished cell against its baseline cell (module docstring); None when the spec
    names no ``baseline``.

    Args:
        scores: the score columns of the evaluations (the length baseline is left out).
        n_bootstrap: resamples for the accuracy interval; default each cell's
            ``eval.bootstrap_samples``.
    """
    if spec.baseline is None:
        return None
    key, baseline_value = spec.baseline
    baseline_text = value_text(baseline_value)
    other_axes = [k for k in spec.axis_keys if k != key]
    compared = [s for s in scores if s != LENGTH_SCORE]
    assignment_of = {cell.id: dict(cell.assignment) for cell in cells}
    baselines = {_setting(c, key): c for c in cells
                 if value_text(assignment_of[c.id][key]) == baseline_text}  # fmt: skip
    rows, skipped = [], []
    for cell in cells:
        value = value_text(assignment_of[cell.id][key])
        if value == baseline_text:
            continue
        base_cell = baselines[_setting(cell, key)]  # the grid is a full product
        try:
            pair = _pair_rows(spec, cell, base_cell, compared, n_bootstrap, alpha, skipped)
        except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
            skipped.append(f"{cell.id} vs {base_cell.id}: {exc}")
            continue
        setting = {k: _hashable(assignment_of[cell.id][k]) for k in other_axes}
        rows += [{**setting, "seed": cell.seed, "value": value, "cell": cell.id,
                  "baseline_cell": base_cell.id, **row} for row in pair]  # fmt: skip
    frame = pd.DataFrame(rows, columns=[*other_axes, *FRAME_COLUMNS[:-2]])
    frame["p_holm"] = holm(frame["p_value"].to_numpy(dtype=np.float64))
    frame["verdict_holm"] = [  # the unadjusted verdict says whether the pair is judged at all
        verdict(v != TOO_FEW, p, alpha)
        for v, p in zip(frame["verdict"], frame["p_holm"], strict=True)
    ]
    return PairedDifferences(key, baseline_text, other_axes, frame, skipped, alpha)


def write_paired(paired: PairedDifferences, out_dir: Path) -> Path:
    """``sweep_paired.csv`` in ``out_dir``; returns its path."""
    path = out_dir / "sweep_paired.csv"
    paired.frame.to_csv(path, index=False)
    return path
