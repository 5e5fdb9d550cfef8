"""Correctness of the greedy answer: ROUGE-L (METHOD.md sec. 3), exact match, and ECE confidence.

- ROUGE-L F-measure from the ``rouge-score`` package, **max over references**. Stemming is on by
  default (``use_stemmer=True``, Porter stemmer, as LM-Polygraph and the semantic-entropy code do)
  so "wins" matches "win"; the choice is a parameter and belongs in every run's record. Note
  the package's tokenizer lower-cases and keeps only ``[a-z0-9]`` runs, so answers in other
  scripts score 0; empty answers or references score 0.
- Correct iff ROUGE-L > threshold (default 0.3; strictly greater).
- Exact match: SQuAD normalization (lower-case, drop punctuation and the articles a/an/the,
  collapse whitespace), max over references.
"""

from __future__ import annotations

import math
import re
import string
from functools import lru_cache

import numpy as np
import pandas as pd

from uaclm_dist.evaluate.stats import ExampleStats

DEFAULT_THRESHOLD = 0.3

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalization: lower-case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


@lru_cache(maxsize=2)
def _scorer(use_stemmer: bool):
    """rouge-score's ROUGE-L scorer (imported here: training imports this module for the
    probe's AUROC and needs no ROUGE, and the GPU check's host has no rouge-score)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def _check_references(references: list[str]) -> None:
    if len(references) == 0:
        raise ValueError("no reference answers to score against")


def rouge_l(answer: str, references: list[str], use_stemmer: bool = True) -> float:
    """max over references of ROUGE-L F-measure(reference, answer), in [0, 1]."""
    _check_references(references)
    scorer = _scorer(use_stemmer)
    return max(scorer.score(ref, answer)["rougeL"].fmeasure for ref in references)


def is_correct(
    table: pd.DataFrame | np.ndarray | float, threshold: float = DEFAULT_THRESHOLD
) -> np.ndarray | bool:
    """The protocol's correctness: ROUGE-L strictly above ``threshold``. The one place it is
    written; everything else (metrics, comparison, plots) calls this.

    Args:
        table: a per-example frame with a ``rouge_l`` column (``[N]`` rows), a ``[N]`` array of
            ROUGE-L values, or one ROUGE-L value.
        threshold: the correctness threshold (``eval.correctness_threshold``).

    Returns:
        ``[N]`` bool array, or one ``bool`` for a scalar input.
    """
    ids = None
    if isinstance(table, pd.DataFrame):
        ids = table["id"].tolist() if "id" in table else table.index.tolist()
        table = table["rouge_l"]
    values = np.asarray(table, dtype=np.float64)
    _refuse_nan(values, ids)
    if values.ndim == 0:
        return bool(values > threshold)
    return values > threshold


def _refuse_nan(values: np.ndarray, ids: list | None) -> None:
    """A NaN ROUGE-L is a scoring fault, never an answer judged incorrect: raise naming it."""
    bad = np.flatnonzero(np.isnan(np.atleast_1d(values)))
    if bad.size == 0:
        return
    named = ", ".join(repr(ids[i]) if ids is not None else f"position {i}" for i in bad[:5])
    more = f" and {bad.size - 5} more" if bad.size > 5 else ""
    raise ValueError(f"ROUGE-L is NaN for {bad.size} example(s): {named}{more}; correctness "
                     "cannot be decided (NaN > threshold would silently count it incorrect)")


def exact_match(answer: str, references: list[str]) -> bool:
    """True iff the normalized answer equals some normalized reference."""
    _check_references(references)
    norm = normalize_answer(answer)
    return any(norm == normalize_answer(ref) for ref in references)


def confidence(stats: ExampleStats) -> float:
    """exp((1/T) sum_t log p(token_t)) of the greedy answer, in (0, 1] (= 1 / PPL); for ECE."""
    logprobs = stats.greedy_token_logprobs
    if len(logprobs) == 0:
        raise ValueError(f"example {stats.id!r}: greedy_token_logprobs is empty")
    return math.exp(sum(logprobs) / len(logprobs))


def correctness_row(
    stats: ExampleStats, threshold: float = DEFAULT_THRESHOLD, use_stemmer: bool = True
) -> dict[str, float | bool]:
    """``{rouge_l, is_correct, exact_match, confidence}`` of one example's greedy answer."""
    if len(stats.references) == 0:
        raise ValueError(f"example {stats.id!r}: no reference answers to score against")
    rouge = rouge_l(stats.greedy_text, stats.references, use_stemmer)
    return {
        "rouge_l": rouge,
        "is_correct": is_correct(rouge, threshold),
        "exact_match": exact_match(stats.greedy_text, stats.references),
        "confidence": confidence(stats),
    }
