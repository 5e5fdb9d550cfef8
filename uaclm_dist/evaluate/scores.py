"""Uncertainty scores: small pure functions of :class:`~.stats.ExampleStats` (METHOD.md sec. 3).

Each score is one :class:`ScoreSpec` in the :data:`SCORES` registry; the config (``eval.scores``),
the pipeline (whether to cluster), the metrics and the report all read it from there, so a new
score is one function and one ``SCORES.register(ScoreSpec(...))``. Light to import: no Ray, no
torch.

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
from dataclasses import dataclass

import numpy as np

from uaclm_dist.evaluate.stats import ExampleStats
from uaclm_dist.registry import Registry

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
    from scipy.special import logsumexp  # here: keeps the registry light for the config

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


# ---------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ScoreSpec:
    """One uncertainty score: how to compute it and how to show it.

    Attributes:
        name: the key in ``eval.scores``, the per-example column and the ``metrics.json`` key.
        fn: ``ExampleStats -> float`` (higher = more uncertain); must be finite.
        label: short title in the report and plots, e.g. ``"TE"``.
        description: what the value is, for axis labels, e.g. ``"token entropy"``.
        unit: unit of the value (``""`` if unitless), e.g. ``"nats"``.
        needs_clusters: reads ``stats.cluster_ids``: the pipeline runs a clusterer first and the
            config asks for ``eval.num_samples >= 2``.
        log_x: histograms may use a log x axis when the values span a wide range.
    """

    name: str
    fn: Score
    label: str
    description: str
    unit: str = ""
    needs_clusters: bool = False
    log_x: bool = False

    @property
    def axis_label(self) -> str:
        """``"token entropy (nats)"``; just the description when unitless."""
        return f"{self.description} ({self.unit})" if self.unit else self.description


#: every known score, by name; extensions add theirs with ``SCORES.register(ScoreSpec(...))``
SCORES: Registry[ScoreSpec] = Registry("score")
for _spec in (
    ScoreSpec("te", token_entropy, "TE", "token entropy", "nats"),
    ScoreSpec("ppl", perplexity, "PPL", "perplexity", log_x=True),
    ScoreSpec("pe", predictive_entropy, "PE", "predictive entropy", "nats"),
    ScoreSpec("se", semantic_entropy, "SE", "semantic entropy", "nats", needs_clusters=True),
    ScoreSpec(
        "dse",
        discrete_semantic_entropy,
        "Discrete SE",
        "discrete semantic entropy",
        "nats",
        needs_clusters=True,
    ),
    ScoreSpec("length", answer_length, "Length (baseline)", "answer length", "tokens"),
):
    SCORES.register(_spec)

#: the built-in scores, the default of ``eval.scores``
DEFAULT_SCORES: tuple[str, ...] = ("te", "ppl", "pe", "se", "dse", "length")


def resolve_scores(names: Iterable[str]) -> list[ScoreSpec]:
    """The specs of ``names``, in order; :class:`~uaclm_dist.registry.UnknownNameError` on a
    name that is not registered."""
    return [SCORES.get(name) for name in names]


def scores_needing_clusters(names: Iterable[str]) -> list[str]:
    """The names among ``names`` whose score reads semantic clusters (empty: no clusterer)."""
    return [spec.name for spec in resolve_scores(names) if spec.needs_clusters]


def score_all(stats: ExampleStats, names: Iterable[str] = DEFAULT_SCORES) -> dict[str, float]:
    """``{name: score}`` for the requested score names (default: :data:`DEFAULT_SCORES`)."""
    return {spec.name: spec.fn(stats) for spec in resolve_scores(names)}
