"""Bootstrap over examples: percentile intervals of one method, paired differences of two.

Inputs are equal-length per-example arrays (``[N]`` each, aligned by example); ``fn`` is any
metric of them, e.g. :func:`~.metrics.auarc`. A :class:`~.metrics.MetricWarning` inside a
resample is silenced.

- ``strata`` (``[N]`` integer labels, optional): resample **within** each stratum, keeping its
  size, e.g. the classes correct / incorrect, so every resample has the observed class counts
  and a metric that needs both classes is defined in every resample.
- Undefined resamples (``fn`` NaN: e.g. PRR when a resample's ROUGE-L is constant) are never
  dropped silently: a :class:`~.metrics.MetricWarning` gives their count; they are left out when
  at most :data:`MAX_UNDEFINED` of the resamples, otherwise the interval is NaN (not reported).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from uaclm_dist.evaluate.intervals import Difference, t_difference
from uaclm_dist.evaluate.metrics import NAN, MetricWarning

#: largest fraction of undefined resamples that may be left out of an interval
MAX_UNDEFINED = 0.01


def resample_indices(
    rng: np.random.Generator, size: int, n: int, strata: np.ndarray | None = None
) -> np.ndarray:
    """``[n, size]`` example indices drawn with replacement: over all examples, or (``strata``
    ``[size]``) within each stratum, as many as it holds (rows are grouped by stratum)."""
    if strata is None:
        return rng.integers(0, size, (n, size))
    columns = []
    for h in np.unique(strata):
        members = np.flatnonzero(strata == h)
        columns.append(members[rng.integers(0, members.size, (n, members.size))])
    return np.concatenate(columns, axis=1)


def _resampled(fn: Callable[..., float], groups, idx: np.ndarray) -> list[np.ndarray]:
    """``[n]`` values of fn(*arrays[row]) per array group, one per row of ``idx``."""
    out: list[list[float]] = [[] for _ in groups]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        for row in idx:
            for values, arrays in zip(out, groups, strict=True):
                values.append(fn(*(a[row] for a in arrays)))
    return [np.asarray(v, dtype=np.float64) for v in out]


def _defined(values: np.ndarray) -> np.ndarray | None:
    """The finite values; None (and a warning) when more than MAX_UNDEFINED are not."""
    finite = values[np.isfinite(values)]
    undefined = values.size - finite.size
    if undefined == 0:
        return finite
    usable = undefined <= MAX_UNDEFINED * values.size and finite.size > 1
    warnings.warn(
        f"{undefined} of {values.size} bootstrap resamples undefined; "
        + ("left out of the interval" if usable else "interval not reported"),
        MetricWarning,
        stacklevel=3,
    )
    return finite if usable else None


def _as_arrays(arrays: Iterable[Any]) -> list[np.ndarray]:
    out = [np.asarray(a) for a in arrays]
    if not out or len({len(a) for a in out}) != 1:
        raise ValueError(f"need equal-length arrays, got lengths {[len(a) for a in out]}")
    return out


def bootstrap_ci(
    fn: Callable[..., float],
    *arrays: Any,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    strata: Any = None,
) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` of ``fn(*arrays)`` at level 1 - alpha.

    Resamples examples (the same indices for every array) ``n`` times, within ``strata`` when
    given. ``(nan, nan)`` when n == 0, there are no examples, or too many resamples are undefined.
    """
    arrs = _as_arrays(arrays)
    if n <= 0 or len(arrs[0]) == 0:
        return NAN, NAN
    labels = None if strata is None else np.asarray(strata)
    idx = resample_indices(np.random.default_rng(seed), len(arrs[0]), n, labels)
    values = _defined(_resampled(fn, [arrs], idx)[0])
    if values is None:
        return NAN, NAN
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def paired_bootstrap_diff(
    fn: Callable[..., float],
    arrays_a: Sequence[Any],
    arrays_b: Sequence[Any],
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    df: float | None = None,
    strata: Any = None,
) -> Difference:
    """fn(*arrays_a) - fn(*arrays_b) with a paired-bootstrap t interval.

    Both methods are evaluated on the **same** resampled example indices in every resample (the
    arrays must be aligned by example), so per-example difficulty cancels out; ``strata``
    (e.g. the joint class ``2 * correct_a + correct_b``) keeps every stratum's size. The interval
    is ``d +- t(1 - alpha/2, df) * SE`` with SE = the standard deviation of the resampled
    differences and ``df`` (default N - 1) chosen by the caller, see :mod:`.intervals` for why
    not the percentile interval; ``p_value`` from the same t.
    """
    a, b = _as_arrays(arrays_a), _as_arrays(arrays_b)
    if len(a[0]) != len(b[0]):
        raise ValueError(f"paired arrays differ in length: {len(a[0])} vs {len(b[0])}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        diff = float(fn(*a) - fn(*b))
    df = len(a[0]) - 1 if df is None else df
    if n <= 0 or not np.isfinite(diff):
        return Difference(diff, NAN, NAN, NAN, df, NAN)
    labels = None if strata is None else np.asarray(strata)
    idx = resample_indices(np.random.default_rng(seed), len(a[0]), n, labels)
    va, vb = _resampled(fn, [a, b], idx)
    diffs = _defined(va - vb)
    se = NAN if diffs is None else float(np.std(diffs, ddof=1))
    return t_difference(diff, se, df, alpha)
