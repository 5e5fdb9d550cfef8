"""Uncertainty scores: small pure functions of :class:`~.stats.ExampleStats` (METHOD.md sec. 3).

Every score is a float where **higher means more uncertain**. Log-probabilities and entropies are
the untempered ones the generator recorded (natural log); nothing here runs a model.

Empty answers
-------------
The token lists include the terminating EOS token (see :mod:`.stats`), so an empty answer *text*
has one scored token and every score is finite: TE is the entropy of the stop decision, PPL is
``1 / p(EOS)``, ``length`` is 1. A token list with no entries at all (nothing generated: a
generator bug, not a property of the answer) raises ``ValueError`` naming the example, rather than
inventing a value: averaging over zero tokens has no meaningful answer, and any filler (0 entropy,
PPL 1) would rank the broken example as the *most certain* one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
from scipy.special import logsumexp

from uaclm_dist.evaluate.stats import ExampleStats

Score = Callable[[ExampleStats], float]


def _mean(values: list[float], what: str, stats: ExampleStats) -> float:
    if len(values) == 0:
        raise ValueError(
            f"example {stats.id!r}: {what} is empty; the generator must record every generated "
            "token including the final EOS (see uaclm_dist.evaluate.stats)"
        )
    return float(np.mean(np.asarray(values, dtype=np.float64)))


def sample_mean_logprobs(stats: ExampleStats) -> np.ndarray:
    """``[N]`` length-normalized log-likelihood lbar_i = mean_t log p(token_t) of each sample."""
    if stats.num_samples == 0:
        raise ValueError(f"example {stats.id!r}: no samples (eval.num_samples must be >= 1)")
    return np.array(
        [
            _mean(lp, f"sample_token_logprobs[{i}]", stats)
            for i, lp in enumerate(stats.sample_token_logprobs)
        ]
    )


def _cluster_ids(stats: ExampleStats) -> np.ndarray:
    if stats.cluster_ids is None:
        raise ValueError(
            f"example {stats.id!r}: semantic entropy needs cluster_ids; run a clusterer "
            "(uaclm_dist.evaluate.clustering) over the samples first"
        )
    return np.asarray(stats.cluster_ids, dtype=np.int64)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(max(0.0, -np.sum(p * np.log(p))))


def token_entropy(stats: ExampleStats) -> float:
    """TE = (1/T) sum_t H_t: mean full-vocab entropy (nats) over the greedy answer's tokens."""
    return _mean(stats.greedy_token_entropies, "greedy_token_entropies", stats)


def perplexity(stats: ExampleStats) -> float:
    """PPL = exp(-(1/T) sum_t log p(token_t)) of the greedy answer (>= 1)."""
    return math.exp(-_mean(stats.greedy_token_logprobs, "greedy_token_logprobs", stats))


def predictive_entropy(stats: ExampleStats) -> float:
    """PE = -(1/N) sum_i lbar_i over the N samples, lbar_i = mean token log p of sample i."""
    return float(-np.mean(sample_mean_logprobs(stats)))


def semantic_entropy(stats: ExampleStats) -> float:
    """SE = -sum_C p(C) log p(C), likelihood-weighted over semantic clusters C of the samples.

    p(C) = sum_{i in C} exp(lbar_i) / sum_j exp(lbar_j)   (computed with log-sum-exp).
    0 when all samples share one cluster; log K for K equally likely singleton clusters.
    """
    ids = _cluster_ids(stats)
    lbar = sample_mean_logprobs(stats)
    log_total = logsumexp(lbar)
    log_p = np.array([logsumexp(lbar[ids == c]) for c in np.unique(ids)]) - log_total
    return _entropy(np.exp(log_p))


def discrete_semantic_entropy(stats: ExampleStats) -> float:
    """Discrete SE = -sum_C p(C) log p(C) with p(C) = |C| / N (cluster frequency)."""
    _, counts = np.unique(_cluster_ids(stats), return_counts=True)
    return _entropy(counts / counts.sum())


def answer_length(stats: ExampleStats) -> float:
    """Length-only baseline: number of generated tokens of the greedy answer (EOS included)."""
    return float(len(stats.greedy_token_logprobs))


#: score name (config ``eval.scores``) -> function
SCORES: dict[str, Score] = {
    "te": token_entropy,
    "ppl": perplexity,
    "pe": predictive_entropy,
    "se": semantic_entropy,
    "dse": discrete_semantic_entropy,
    "length": answer_length,
}

#: scores that read ``cluster_ids``
NEEDS_CLUSTERS = frozenset({"se", "dse"})


def score_all(stats: ExampleStats, names: Iterable[str] = tuple(SCORES)) -> dict[str, float]:
    """``{name: score}`` for the requested score names (default: all of :data:`SCORES`)."""
    names = list(names)
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise KeyError(f"unknown score(s) {unknown}; known: {sorted(SCORES)}")
    return {name: SCORES[name](stats) for name in names}
