"""Percentile-bootstrap intervals over examples: one method, and paired differences of two.

Inputs are equal-length per-example arrays (``[N]`` each, aligned by example); ``fn`` is any
metric of them, e.g. :func:`~.metrics.auroc`. Resamples where ``fn`` is undefined (NaN) are
dropped; a :class:`~.metrics.MetricWarning` inside a resample is silenced.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from uaclm_dist.evaluate.metrics import NAN, MetricWarning


class PairedDiff(NamedTuple):
    """fn(method a) - fn(method b) on the same examples, with a paired-bootstrap interval."""

    diff: float
    low: float
    high: float


def _percentiles(values: list[float], alpha: float) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return NAN, NAN
    low, high = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def _resampled(fn: Callable[..., float], groups, n: int, seed: int) -> list[list[float]]:
    """For each of n resamples of example indices, fn(*arrays[idx]) for every array group."""
    size = len(groups[0][0])
    rng = np.random.default_rng(seed)
    out: list[list[float]] = [[] for _ in groups]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        for _ in range(n):
            idx = rng.integers(0, size, size)
            for values, arrays in zip(out, groups, strict=True):
                values.append(fn(*(a[idx] for a in arrays)))
    return out


def _as_arrays(arrays: Iterable[Any]) -> list[np.ndarray]:
    out = [np.asarray(a) for a in arrays]
    if not out or len({len(a) for a in out}) != 1:
        raise ValueError(f"need equal-length arrays, got lengths {[len(a) for a in out]}")
    return out


def bootstrap_ci(
    fn: Callable[..., float], *arrays: Any, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` of ``fn(*arrays)`` at level 1 - alpha.

    Resamples examples (the same indices for every array) ``n`` times; resamples where ``fn`` is
    undefined (NaN) are dropped. ``(nan, nan)`` when n == 0 or no resample is defined.
    """
    arrs = _as_arrays(arrays)
    if n <= 0 or len(arrs[0]) == 0:
        return NAN, NAN
    return _percentiles(_resampled(fn, [arrs], n, seed)[0], alpha)


def paired_bootstrap_diff(
    fn: Callable[..., float],
    arrays_a: Sequence[Any],
    arrays_b: Sequence[Any],
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedDiff:
    """fn(*arrays_a) - fn(*arrays_b) with a paired percentile-bootstrap interval.

    Both methods are evaluated on the **same** resampled example indices in every resample (the
    arrays must be aligned by example), so per-example difficulty cancels out.
    """
    a, b = _as_arrays(arrays_a), _as_arrays(arrays_b)
    if len(a[0]) != len(b[0]):
        raise ValueError(f"paired arrays differ in length: {len(a[0])} vs {len(b[0])}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        diff = float(fn(*a) - fn(*b))
    if n <= 0:
        return PairedDiff(diff, NAN, NAN)
    va, vb = _resampled(fn, [a, b], n, seed)
    low, high = _percentiles(list(np.subtract(va, vb)), alpha)
    return PairedDiff(diff, low, high)
