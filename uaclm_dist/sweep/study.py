"""The study table: the sweep table aggregated over seeds, one row per setting x method.

A *setting* is one combination of the axis values; its seeds are the cells that share it. Only
finished cells with metrics take part; ``seeds`` lists the seeds that did (compare
``n_seeds`` with the spec's seeds: a failed seed is missing here and listed in sweep.md).

Columns: the axis keys, ``method``, ``seeds`` (e.g. ``"0,1"``), ``n_seeds``; ``accuracy_mean`` /
``_min`` / ``_max`` over the seeds; per score ``s``: ``auroc_<s>_mean`` / ``_min`` / ``_max``
(seeds with an undefined AUROC left out of all three), ``auroc_<s>_per_seed`` (text: per seed
``s<seed> <AUROC> [<low>, <high>]``, its 95% interval); ``counts_per_seed`` (text: per seed
``s<seed> <n correct>/<n incorrect>``), ``n_correct_total`` / ``n_incorrect_total`` (summed
over seeds) and ``too_few_to_judge`` (True when any seed has fewer than
:data:`~uaclm_dist.evaluate.compare.MIN_CLASS_COUNT` correct or incorrect answers).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from uaclm_dist.evaluate.compare import MIN_CLASS_COUNT

__all__ = ["aggregate_over_seeds", "fmt"]


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``n/a`` for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _seed_text(seed: Any) -> str:
    return "-" if seed is None or (isinstance(seed, float) and math.isnan(seed)) else str(int(seed))


def _auroc_per_seed(group: pd.DataFrame, score: str) -> str:
    parts = []
    for _, row in group.iterrows():
        value, low, high = (row.get(f"auroc_{score}{suffix}") for suffix in ("", "_low", "_high"))
        interval = f" [{fmt(low)}, {fmt(high)}]" if fmt(low) != "n/a" else ""
        parts.append(f"s{_seed_text(row['seed'])} {fmt(value)}{interval}")
    return "; ".join(parts)


def _summary(group: pd.DataFrame, scores: list[str]) -> dict[str, Any]:
    accuracy = pd.to_numeric(group["accuracy"], errors="coerce")
    row: dict[str, Any] = {
        "seeds": ",".join(_seed_text(s) for s in group["seed"]),
        "n_seeds": len(group),
        "accuracy_mean": accuracy.mean(), "accuracy_min": accuracy.min(),
        "accuracy_max": accuracy.max(),
    }  # fmt: skip
    for score in scores:
        column = f"auroc_{score}"
        values = (pd.to_numeric(group[column], errors="coerce") if column in group
                  else pd.Series(dtype=float))  # fmt: skip
        row.update({f"{column}_mean": values.mean(), f"{column}_min": values.min(),
                    f"{column}_max": values.max(),
                    f"{column}_per_seed": _auroc_per_seed(group, score)})  # fmt: skip
    n_correct = pd.to_numeric(group["n_correct"], errors="coerce")
    n_incorrect = pd.to_numeric(group["n_incorrect"], errors="coerce")
    row["counts_per_seed"] = "; ".join(
        f"s{_seed_text(s)} {int(c)}/{int(i)}"
        for s, c, i in zip(group["seed"], n_correct, n_incorrect, strict=True)
        if not (math.isnan(c) or math.isnan(i))
    )
    row["n_correct_total"] = int(n_correct.sum())
    row["n_incorrect_total"] = int(n_incorrect.sum())
    row["too_few_to_judge"] = bool((pd.concat([n_correct, n_incorrect], axis=1).min(axis=1)
                                    < MIN_CLASS_COUNT).any())  # fmt: skip
    return row


def aggregate_over_seeds(frame: pd.DataFrame, axis_columns: list[str],
                         scores: list[str]) -> pd.DataFrame:  # fmt: skip
    """One row per setting x method over the finished rows of ``frame`` (the sweep table of
    :func:`~.collect.collect`); see the module docstring for the columns. Settings keep the
    order of their first cell."""
    keys = [*axis_columns, "method"]
    finished = frame[(frame["status"] == "done") & frame["method"].notna()]
    if finished.empty:
        return pd.DataFrame(columns=[*keys, "seeds", "n_seeds"])
    rows = []
    for values, group in finished.groupby(keys, dropna=False, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        rows.append({**dict(zip(keys, values, strict=True)), **_summary(group, scores)})
    return pd.DataFrame(rows)
