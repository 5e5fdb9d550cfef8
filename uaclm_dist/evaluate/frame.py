"""The per-example table: correctness and uncertainty scores of each example, next to the raw
statistics they were computed from (what ``per_example/<method>.parquet`` holds)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from uaclm_dist.evaluate.correctness import DEFAULT_THRESHOLD, correctness_row
from uaclm_dist.evaluate.scores import score_all
from uaclm_dist.evaluate.stats import ExampleStats


def example_frame(
    examples: Iterable[ExampleStats],
    score_names: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    use_stemmer: bool = True,
) -> pd.DataFrame:
    """One row per example: id, question, greedy_text, rouge_l, is_correct, exact_match,
    confidence, is_ood, n_clusters (None before clustering) and one column per score name
    (any name registered in :data:`~.scores.SCORES`)."""
    rows = []
    for ex in examples:
        row: dict[str, Any] = {"id": ex.id, "question": ex.question, "greedy_text": ex.greedy_text}
        row.update(correctness_row(ex, threshold, use_stemmer))
        row["is_ood"] = ex.is_ood
        row["n_clusters"] = None if ex.cluster_ids is None else len(set(ex.cluster_ids))
        row.update(score_all(ex, score_names))
        rows.append(row)
    return pd.DataFrame(rows)


def score_frame(
    stats: pd.DataFrame, score_names: Sequence[str], threshold: float = DEFAULT_THRESHOLD
) -> pd.DataFrame:
    """Statistics rows (:meth:`ExampleStats.to_row` columns) -> :func:`example_frame`'s columns
    followed by the statistics it does not already hold, one row per example, same order."""
    examples = [ExampleStats.from_row(r) for r in stats.to_dict("records")]
    scored = example_frame(examples, score_names, threshold)
    raw = pd.DataFrame([ex.to_row() for ex in examples])
    raw = raw[["id", *(c for c in raw.columns if c not in scored.columns)]]
    return scored.merge(raw, on="id", how="left", validate="one_to_one")
