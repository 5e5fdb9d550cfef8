"""Every cell's results in one table: one row per cell x evaluated method.

Reads ``run/summary.json`` (:func:`uaclm_dist.train.summary.summarize`), ``run/run_info.json``,
``eval/metrics.json`` (``{method: compute_metrics(...)}``, :mod:`uaclm_dist.evaluate.summary`)
and ``status.json``. A cell without metrics (failed, pending, or a spec that does not evaluate)
still gets one row, with ``method`` empty: nothing is dropped silently.

Columns (NaN / None where a value is missing or undefined):

- ``cell``, ``label``, one column per axis key (``objective.name``, ...), ``seed``, ``status``
  (:mod:`.status`), ``failed_phase``, ``reason``, ``train_s`` / ``eval_s`` (seconds, last
  attempt), ``run_id``, ``git_commit``, ``global_batch`` (sequences per optimizer step);
- training: ``train_steps_done``, ``train_total_steps``, ``train_<loss | token_accuracy |
  entropy_correct | entropy_incorrect>_<first | last>`` (means of the first / last 3 logged steps;
  entropies in nats), ``probe_entropy_auroc_<start | end>``, and the paper signature on the
  probe tokens: ``sig_n_base_<correct | incorrect>``, ``sig_entropy_base_<incorrect | correct>_
  <start | end | change>`` (nats), ``sig_incorrect_entropy_rose``, ``sig_correct_entropy_fell``;
- compute (:mod:`uaclm_dist.train.throughput`, steps after the first logged interval):
  ``world_size``, ``params_<total | trainable | matmul_frozen | matmul_trainable>``,
  ``tokens_seen``, ``tokens_per_s`` (all workers), ``tokens_per_s_per_worker``,
  ``step_seconds``, ``step_s_<data | forward | loss | backward | optimizer | comm | other>``
  (rank 0, seconds per step), ``flops_per_token``, ``peak_flops_per_device``, ``mfu`` (0..1),
  ``peak_memory_mb_max`` and ``peak_memory_mb_per_worker`` (MiB, space-separated);
- evaluation: ``method``, ``n_examples``, ``n_correct``, ``n_incorrect``, ``accuracy`` (+
  ``_low`` / ``_high``: its 95% interval), ``ece``, and per score ``s`` and metric ``m`` in
  :data:`TABLE_METRICS`: ``<m>_<s>``, ``<m>_<s>_low``, ``<m>_<s>_high`` and for AUROC the class
  counts it rests on, ``auroc_<s>_n_correct`` / ``auroc_<s>_n_incorrect``;
  ``too_few_to_judge``: fewer than :data:`~uaclm_dist.evaluate.compare.MIN_CLASS_COUNT` correct
  or incorrect answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from uaclm_dist.evaluate.compare import MIN_CLASS_COUNT
from uaclm_dist.sweep.cells import Cell
from uaclm_dist.sweep.layout import cell_paths, read_json
from uaclm_dist.sweep.overrides import value_text
from uaclm_dist.sweep.spec import SweepSpec
from uaclm_dist.sweep.status import cell_state, read_status
from uaclm_dist.train.step_timing import PHASES

__all__ = ["Collected", "TABLE_METRICS", "collect", "write_tables"]

#: per-score metrics of metrics.json copied into the table (value and interval each)
TABLE_METRICS = ("auroc", "auarc", "prr")
STEP_KEYS = ("loss", "token_accuracy", "entropy_correct", "entropy_incorrect")


@dataclass
class Collected:
    """The sweep table and what its columns are.

    Attributes:
        frame: one row per cell x method (see the module docstring).
        axis_columns: the axis keys, in spec order.
        scores: score names found in the metrics, in first-seen order.
    """

    frame: pd.DataFrame
    axis_columns: list[str]
    scores: list[str]


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def training_columns(summary: dict | None) -> dict[str, Any]:
    """The training numbers of one ``summary.json`` (all None without one)."""
    row: dict[str, Any] = {
        "train_steps_done": _dig(summary, "steps_done"),
        "train_total_steps": _dig(summary, "total_steps"),
    }
    for key in STEP_KEYS:
        row[f"train_{key}_first"] = _dig(summary, "first_steps", key)
        row[f"train_{key}_last"] = _dig(summary, "last_steps", key)
    for end in ("start", "end"):
        row[f"probe_entropy_auroc_{end}"] = _dig(summary, "probe", end, "entropy_auroc")
    signature = _dig(summary, "signature")
    row["sig_n_base_correct"] = _dig(signature, "n_base_correct")
    row["sig_n_base_incorrect"] = _dig(signature, "n_base_incorrect")
    for which in ("incorrect", "correct"):
        for part in ("start", "end", "change"):
            row[f"sig_entropy_base_{which}_{part}"] = _dig(signature, f"entropy_base_{which}",
                                                           part)  # fmt: skip
    row["sig_incorrect_entropy_rose"] = _dig(signature, "incorrect_entropy_rose")
    row["sig_correct_entropy_fell"] = _dig(signature, "correct_entropy_fell")
    row.update(throughput_columns(_dig(summary, "throughput")))
    return row


def throughput_columns(throughput: dict | None) -> dict[str, Any]:
    """The compute numbers of a run (:func:`uaclm_dist.train.throughput.throughput_summary`;
    all None without them)."""
    row: dict[str, Any] = {"world_size": _dig(throughput, "world_size")}
    for key in ("total", "trainable", "matmul_frozen", "matmul_trainable"):
        row[f"params_{key}"] = _dig(throughput, "parameters", key)
    for key in ("tokens_seen", "tokens_per_s", "tokens_per_s_per_worker", "step_seconds",
                "flops_per_token", "peak_flops_per_device", "mfu", "peak_memory_mb_max"):
        row[key] = _dig(throughput, key)
    for phase in (*PHASES, "other"):
        row[f"step_s_{phase}"] = _dig(throughput, "phase_seconds", phase)
    per_worker = _dig(throughput, "peak_memory_mb_per_worker")
    row["peak_memory_mb_per_worker"] = (" ".join(f"{x:g}" for x in per_worker)
                                        if per_worker else None)  # fmt: skip
    return row


def global_batch(run_info: dict | None) -> int | None:
    """Sequences per optimizer step: micro-batch x accumulation x workers (None if unknown)."""
    micro = _dig(run_info, "config", "optim", "micro_batch_size")
    accum = _dig(run_info, "config", "optim", "grad_accumulation")
    world = _dig(run_info, "world_size")
    return micro * accum * world if None not in (micro, accum, world) else None


def _interval(values: Any) -> tuple[Any, Any]:
    return tuple(values) if isinstance(values, list) and len(values) == 2 else (None, None)


def method_columns(method: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The evaluation numbers of one method's ``metrics.json`` entry."""
    n_correct, n_incorrect = metrics.get("n_correct"), metrics.get("n_incorrect")
    low, high = _interval(metrics.get("accuracy_ci"))
    row: dict[str, Any] = {
        "method": method, "n_examples": metrics.get("n_examples"), "n_correct": n_correct,
        "n_incorrect": n_incorrect, "accuracy": metrics.get("accuracy"), "accuracy_low": low,
        "accuracy_high": high, "ece": metrics.get("ece"),
        "too_few_to_judge": None if n_correct is None or n_incorrect is None
        else min(n_correct, n_incorrect) < MIN_CLASS_COUNT,
    }  # fmt: skip
    for score, values in (metrics.get("scores") or {}).items():
        for metric in TABLE_METRICS:
            low, high = _interval(values.get(f"{metric}_ci"))
            row.update({f"{metric}_{score}": values.get(metric), f"{metric}_{score}_low": low,
                        f"{metric}_{score}_high": high})  # fmt: skip
        for cls in ("correct", "incorrect"):
            row[f"auroc_{score}_n_{cls}"] = values.get(f"auroc_n_{cls}")
    return row


def _cell_rows(spec: SweepSpec, cell: Cell, scores: list[str]) -> list[dict[str, Any]]:
    paths = cell_paths(spec, cell)
    status = read_status(paths)
    state = cell_state(paths, spec.evaluate)
    run_info = read_json(paths.run_info_file)
    durations = status.get("durations_s") or {}
    base: dict[str, Any] = {
        "cell": cell.id, "label": cell.label, **dict(cell.assignment), "seed": cell.seed,
        "status": state,
        "failed_phase": status.get("phase") if state == "failed" else None,
        "reason": status.get("reason") if state != "done" else None,
        "train_s": durations.get("train"), "eval_s": durations.get("eval"),
        "run_id": _dig(run_info, "run_id"), "git_commit": _dig(run_info, "git_commit"),
        "global_batch": global_batch(run_info),
        **training_columns(read_json(paths.summary_file)),
    }  # fmt: skip
    metrics = read_json(paths.metrics_file)
    if not isinstance(metrics, dict) or not metrics:
        return [{**base, "method": None}]
    rows = []
    for method, entry in metrics.items():
        for score in entry.get("scores") or {}:
            if score not in scores:
                scores.append(score)
        rows.append({**base, **method_columns(method, entry)})
    return rows


def _uniform_axis_column(values: pd.Series) -> pd.Series:
    """Scalars of one type stay as they are; lists, mappings or mixed types become YAML text
    (parquet needs one type per column)."""
    present = [v for v in values if v is not None]
    kinds = {type(v) for v in present}
    if len(kinds) <= 1 and not any(isinstance(v, list | dict) for v in present):
        return values
    return values.map(lambda v: None if v is None else value_text(v))


def collect(spec: SweepSpec, cells: list[Cell]) -> Collected:
    """The table of every cell of ``spec`` (see the module docstring)."""
    scores: list[str] = []
    rows = [row for cell in cells for row in _cell_rows(spec, cell, scores)]
    frame = pd.DataFrame(rows)
    for key in spec.axis_keys:
        frame[key] = _uniform_axis_column(frame[key])
    return Collected(frame, spec.axis_keys, scores)


def write_tables(collected: Collected, out_dir: Path) -> dict[str, Path]:
    """``sweep.parquet`` and ``sweep.csv`` in ``out_dir``; returns ``{format: path}``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"parquet": out_dir / "sweep.parquet", "csv": out_dir / "sweep.csv"}
    collected.frame.to_parquet(paths["parquet"], index=False)
    collected.frame.to_csv(paths["csv"], index=False)
    return paths
