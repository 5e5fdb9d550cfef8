"""Metrics over per-example scores (METHOD.md sec. 3): numpy / scipy / scikit-learn only.

Inputs are 1-D arrays over the N test examples: ``score`` = uncertainty (higher = more uncertain),
``rouge`` = ROUGE-L in [0, 1], ``is_correct`` / ``is_incorrect`` / ``is_ood`` booleans,
``confidence`` in [0, 1]. A metric that is undefined on its input (one class only, constant
input) returns NaN and emits a :class:`MetricWarning`; :func:`compute_metrics` collects those
warnings and writes NaN as ``None`` so its output is strict JSON.

Rejection curves (AUARC, PRR) reject the most uncertain examples first. Tied scores are broken by
**expectation over random order** (each tied group contributes its mean quality), so a score with
many ties (``length``, ``dse``) is neither helped nor hurt by the sort order of the data.

Every per-score metric is one :class:`MetricSpec` in :data:`METRICS`: ``compute_metrics``
(``metrics.json``), the method comparison and the report read it from there, with the kind of
interval it gets (:attr:`MetricSpec.interval`) and the two classes whose counts go beside it
(:func:`class_counts`). Intervals are in :mod:`.intervals` (DeLong, t, Holm) and
:mod:`.bootstrap`, the aggregation into ``metrics.json`` in :mod:`.summary`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps
from sklearn.metrics import average_precision_score

from uaclm_dist.evaluate.correctness import is_correct
from uaclm_dist.registry import Registry

NAN = float("nan")


class MetricWarning(UserWarning):
    """A metric is undefined on its input and was reported as NaN."""


def _warn(message: str) -> float:
    warnings.warn(message, MetricWarning, stacklevel=3)
    return NAN


def _two_classes(labels: np.ndarray, what: str) -> bool:
    if labels.size == 0 or labels.all() or not labels.any():
        _warn(f"{what}: only one class present ({int(labels.sum())} of {labels.size} positive)")
        return False
    return True


# ------------------------------------------------------------------- hallucination / OOD detection


def _rank_auroc(positive: np.ndarray, score: Sequence[float]) -> float:
    """P(score_pos > score_neg) + P(tie) / 2 via the Mann-Whitney U statistic (average ranks).

    Equal to ``sklearn.metrics.roc_auc_score(positive, score)`` (tested), ~5-20x faster, which
    matters inside the bootstrap.
    """
    ranks = sps.rankdata(np.asarray(score, dtype=np.float64))
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc(is_incorrect: Sequence[bool], score: Sequence[float]) -> float:
    """AUROC of ``score`` for detecting incorrect answers (positive class = incorrect).

    Same value as ``roc_auc_score(is_incorrect, score)``. 1.0: every incorrect answer is more
    uncertain than every correct one; 0.5: chance; 0.0: the score is reversed. NaN (+
    MetricWarning) when all answers are correct or all incorrect.
    """
    y = np.asarray(is_incorrect, dtype=bool)
    if not _two_classes(y, "auroc"):
        return NAN
    return _rank_auroc(y, score)


def ood_auroc(is_ood: Sequence[bool], score: Sequence[float]) -> float:
    """AUROC of ``score`` for detecting out-of-distribution prompts (positive class = OOD)."""
    y = np.asarray(is_ood, dtype=bool)
    if not _two_classes(y, "ood_auroc"):
        return NAN
    return _rank_auroc(y, score)


def ood_aupr(is_ood: Sequence[bool], score: Sequence[float]) -> float:
    """Area under the precision-recall curve (average precision), positive class = OOD."""
    y = np.asarray(is_ood, dtype=bool)
    if not _two_classes(y, "ood_aupr"):
        return NAN
    return float(average_precision_score(y, np.asarray(score, dtype=np.float64)))


# ----------------------------------------------------------------------------- selective answering


def _sorted_quality(quality: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Quality ordered from most to least certain, tied groups replaced by their mean."""
    order = np.argsort(score, kind="stable")
    s, q = score[order], quality[order]
    _, starts, counts = np.unique(s, return_index=True, return_counts=True)
    return np.repeat(np.add.reduceat(q, starts) / counts, counts)


def rejection_curve(
    quality: Sequence[float], score: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean quality of the retained examples when rejecting the most uncertain first.

    Returns:
        (rejection_rate, retained_quality): both ``[N]``; entry j rejects j examples
        (rate j / N) and keeps the N - j most certain.
    """
    q = np.asarray(quality, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    if q.size == 0:
        return np.zeros(0), np.zeros(0)
    prefix = np.cumsum(_sorted_quality(q, s)) / np.arange(1, q.size + 1)
    return np.arange(q.size) / q.size, prefix[::-1]


def _area(quality: np.ndarray, score: np.ndarray) -> float:
    """Mean over rejection levels of the retained mean quality (mean of the prefix means)."""
    prefix = np.cumsum(_sorted_quality(quality, score)) / np.arange(1, quality.size + 1)
    return float(prefix.mean())


def auarc(is_correct: Sequence[bool], score: Sequence[float]) -> float:
    """Area under the accuracy-rejection curve: mean retained accuracy over all rejection levels.

    Random rejection gives the accuracy; the oracle (reject incorrect first) gives the maximum.
    """
    y = np.asarray(is_correct, dtype=np.float64)
    if y.size == 0:
        return _warn("auarc: no examples")
    return _area(y, np.asarray(score, dtype=np.float64))


def prr(rouge: Sequence[float], score: Sequence[float]) -> float:
    """Prediction rejection ratio against continuous ROUGE-L.

    PRR = (AUC_unc - AUC_random) / (AUC_oracle - AUC_random), with AUC = area under the retained
    mean-ROUGE-L rejection curve, AUC_random = mean ROUGE-L, the oracle rejecting the lowest
    ROUGE-L first. 1 = oracle, 0 = random, < 0 worse than random; NaN if ROUGE-L is constant.
    """
    q = np.asarray(rouge, dtype=np.float64)
    if q.size == 0:
        return _warn("prr: no examples")
    random = float(q.mean())
    oracle = _area(q, -q)
    if oracle - random <= 1e-12:
        return _warn("prr: ROUGE-L is constant, the oracle equals random")
    return (_area(q, np.asarray(score, dtype=np.float64)) - random) / (oracle - random)


# ------------------------------------------------------------------------------------ calibration


def _correlation(kind: str, rouge: Sequence[float], score: Sequence[float]) -> float:
    x = np.asarray(score, dtype=np.float64)
    y = np.asarray(rouge, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return _warn(f"{kind}: constant input or fewer than 2 examples")
    fn = sps.spearmanr if kind == "spearman" else sps.pearsonr
    return float(fn(x, y)[0])


def spearman(rouge: Sequence[float], score: Sequence[float]) -> float:
    """Spearman rank correlation of score with ROUGE-L (more negative = better)."""
    return _correlation("spearman", rouge, score)


def pearson(rouge: Sequence[float], score: Sequence[float]) -> float:
    """Pearson correlation of score with ROUGE-L (more negative = better)."""
    return _correlation("pearson", rouge, score)


class ReliabilityBins(NamedTuple):
    """Equal-width confidence bins: ``[n_bins]`` arrays (mean NaN in empty bins)."""

    edges: np.ndarray  # [n_bins + 1]
    count: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray


def reliability_bins(
    confidence: Sequence[float], is_correct: Sequence[bool], n_bins: int = 10
) -> ReliabilityBins:
    """Bin b = [b/n, (b+1)/n) (the last bin includes 1.0)."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(is_correct, dtype=np.float64)
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidence must lie in [0, 1]")
    idx = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=ok, minlength=n_bins) / count
    return ReliabilityBins(np.linspace(0, 1, n_bins + 1), count, mean_conf, acc)


def ece(confidence: Sequence[float], is_correct: Sequence[bool], n_bins: int = 10) -> float:
    """Expected calibration error, equal-width bins: sum_b (n_b / N) |acc_b - conf_b|."""
    bins = reliability_bins(confidence, is_correct, n_bins)
    total = bins.count.sum()
    if total == 0:
        return _warn("ece: no examples")
    used = bins.count > 0
    gap = np.abs(bins.accuracy[used] - bins.mean_confidence[used])
    return float(np.sum(bins.count[used] / total * gap))


# ------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class MetricSpec:
    """A metric of one uncertainty score against one per-example target.

    Attributes:
        name: key in each score's ``metrics.json`` entry; ``<name>_ci`` holds its interval.
        fn: ``(target [N], score [N]) -> float``; NaN + :class:`MetricWarning` when undefined.
        input: the target ``fn`` reads, a key of :func:`metric_inputs`: ``is_incorrect``,
            ``is_correct``, ``rouge_l`` (in-domain rows) or ``is_ood`` (all rows; computed only
            when some rows are OOD).
        display: column header in the report and the comparison, e.g. ``"AUROC"``.
        higher_is_better: False where lower (more negative) is better, e.g. the correlations
            with ROUGE-L; the comparison bolds the best method by it.
        compared: one of the comparison's (Table 1) default metrics.
        interval: how its interval is computed, a key of
            :data:`~.intervals.INTERVAL_METHODS`: ``"bootstrap"`` (percentile, resampling all
            examples: for metrics defined on any resample, whose sampling variance includes the
            class balance itself, e.g. AUARC moves with the accuracy), ``"stratified"``
            (percentile, resampling each class separately: for metrics that need both classes,
            e.g. AUPR) or ``"delong"`` (only for an AUROC of its boolean ``input``).
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    input: str
    display: str
    higher_is_better: bool = True
    compared: bool = False
    interval: str = "bootstrap"

    def __post_init__(self) -> None:
        if self.interval not in ("bootstrap", "stratified", "delong"):
            raise ValueError(f"metric {self.name!r}: unknown interval {self.interval!r}")
        if self.interval != "bootstrap" and self.input == "rouge_l":
            raise ValueError(f"metric {self.name!r}: a {self.interval} interval needs classes")

    @property
    def ood(self) -> bool:
        """Computed over all rows (in-domain and OOD) instead of the in-domain ones."""
        return self.input == "is_ood"

    @property
    def classes(self) -> tuple[str, str]:
        """The two classes whose counts accompany the metric: ``("correct", "incorrect")`` or,
        for the OOD metrics, ``("in_domain", "ood")``; ``metrics.json`` keys
        ``<name>_n_<class>``."""
        return ("in_domain", "ood") if self.ood else ("correct", "incorrect")


#: every per-score metric, by name (:func:`metric_specs` gives them in output order)
METRICS: Registry[MetricSpec] = Registry("metric")
for _spec in (
    MetricSpec("auroc", auroc, "is_incorrect", "AUROC", compared=True, interval="delong"),
    MetricSpec("auarc", auarc, "is_correct", "AUARC", compared=True),
    MetricSpec("prr", prr, "rouge_l", "PRR"),
    MetricSpec("spearman", spearman, "rouge_l", "Spearman", higher_is_better=False),
    MetricSpec("pearson", pearson, "rouge_l", "Pearson", higher_is_better=False),
    MetricSpec("ood_auroc", ood_auroc, "is_ood", "OOD AUROC", interval="delong"),
    MetricSpec("ood_aupr", ood_aupr, "is_ood", "OOD AUPR", interval="stratified"),
):
    METRICS.register(_spec)


def metric_specs() -> list[MetricSpec]:
    """The registered metrics in ``metrics.json`` / report order: the in-domain ones, then the
    OOD ones, each in registration order."""
    return sorted(METRICS.values(), key=lambda spec: spec.ood)


def in_domain(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with ``is_ood`` False (all rows when the frame has no ``is_ood`` column)."""
    return df[~df["is_ood"].astype(bool)] if "is_ood" in df.columns else df


def metric_inputs(df: pd.DataFrame, threshold: float) -> dict[str, np.ndarray]:
    """The targets a :attr:`MetricSpec.input` names, ``[N]`` each over the rows of ``df``:
    ``rouge_l`` (float), ``is_correct`` / ``is_incorrect`` (:func:`~.correctness.is_correct` at
    ``threshold``) and ``is_ood`` (bool; all False without the column)."""
    rouge = df["rouge_l"].to_numpy(dtype=np.float64)
    correct = is_correct(rouge, threshold)
    ood = df["is_ood"].to_numpy(dtype=bool) if "is_ood" in df.columns else np.zeros(len(df), bool)
    return {"rouge_l": rouge, "is_correct": correct, "is_incorrect": ~correct, "is_ood": ood}


def class_labels(spec: MetricSpec, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """``[N]`` bool: the second of ``spec.classes`` (incorrect, or OOD) per row of ``inputs``
    (:func:`metric_inputs` of the rows the metric reads)."""
    return inputs["is_ood"] if spec.ood else ~inputs["is_correct"]


def class_counts(spec: MetricSpec, inputs: dict[str, np.ndarray]) -> dict[str, int]:
    """``{class: count}`` over ``spec.classes``, e.g. ``{"correct": 3, "incorrect": 117}``."""
    second = class_labels(spec, inputs)
    first_name, second_name = spec.classes
    return {first_name: int((~second).sum()), second_name: int(second.sum())}
