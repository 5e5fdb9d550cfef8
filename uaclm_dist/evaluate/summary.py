"""One method's ``metrics.json`` entry: accuracy, calibration and every registered metric of every
score (:data:`~.metrics.METRICS`), each with its interval and class counts; NaN written as ``None``.

Intervals (level 1 - alpha; none when ``n_bootstrap`` is 0), as recorded in the entry's
``intervals``: accuracy, ECE and metrics with ``interval="bootstrap"``: percentile bootstrap over
examples; ``"stratified"``: percentile bootstrap within each class; ``"delong"``: DeLong SE with a
t quantile (:mod:`.intervals`). With fewer than ~10 examples in a class no interval is reliable:
the counts beside each value say when.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from uaclm_dist.evaluate.bootstrap import bootstrap_ci
from uaclm_dist.evaluate.correctness import DEFAULT_THRESHOLD
from uaclm_dist.evaluate.intervals import INTERVAL_METHODS, delong_ci
from uaclm_dist.evaluate.metrics import (
    NAN,
    MetricSpec,
    MetricWarning,
    auarc,
    class_counts,
    class_labels,
    ece,
    in_domain,
    metric_inputs,
    metric_specs,
)


def to_jsonable(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays into Python ones and NaN/inf into None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _check_columns(df: pd.DataFrame, scores: Sequence[str]) -> None:
    missing = [c for c in ("rouge_l", "confidence", *scores) if c not in df.columns]
    if missing:
        raise KeyError(f"per-example frame lacks column(s) {missing}")
    for name in scores:
        if not np.all(np.isfinite(df[name].to_numpy(dtype=np.float64))):
            raise ValueError(f"score column {name!r} has NaN/inf values")


def _metric_ci(
    spec: MetricSpec,
    inputs: dict[str, np.ndarray],
    u: np.ndarray,
    *,
    n: int,
    seed: int,
    alpha: float,
) -> tuple[float, float]:
    """The interval of one metric of one score, of the kind ``spec.interval`` names."""
    if n <= 0:
        return NAN, NAN
    target = inputs[spec.input]
    if spec.interval == "delong":
        return delong_ci(target, u, alpha)
    strata = class_labels(spec, inputs) if spec.interval == "stratified" else None
    return bootstrap_ci(spec.fn, target, u, n=n, seed=seed, alpha=alpha, strata=strata)


def compute_metrics(
    df: pd.DataFrame,
    scores: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_bins: int = 10,
) -> dict[str, Any]:
    """All protocol metrics of one method's per-example frame (see :func:`~.frame.example_frame`).

    Correctness is recomputed from ``rouge_l`` (:func:`~.correctness.is_correct`). Rows with
    ``is_ood`` True (if the column exists) take part only in the OOD metrics; everything else
    uses the in-domain rows.

    Returns (strict-JSON-ready, NaN as None): ``n_examples``, ``n_ood``, ``n_correct``,
    ``n_incorrect`` (in-domain), ``threshold``, ``accuracy``, ``rouge_l_mean``, ``exact_match``
    (if the column exists), ``ece``, ``auarc_oracle`` (and ``*_ci`` = [low, high] for accuracy /
    ece), ``intervals`` = ``{what: how its interval is computed}``, ``scores`` =
    ``{name: {<metric>: value, <metric>_ci: [low, high], <metric>_n_<class>: count}}`` over
    :func:`~.metrics.metric_specs` (the OOD ones only when some rows are OOD; classes
    ``correct``/``incorrect`` or ``in_domain``/``ood``, see :attr:`~.metrics.MetricSpec.classes`),
    and ``warnings`` (every metric or interval reported as undefined).
    """
    _check_columns(df, scores)
    ind = in_domain(df)
    targets = metric_inputs(ind, threshold)
    everything = metric_inputs(df, threshold)
    is_ood = everything["is_ood"]
    rouge, correct = targets["rouge_l"], targets["is_correct"]
    conf = ind["confidence"].to_numpy(dtype=np.float64)
    caught: list[str] = []

    def run(label: str, fn: Callable[..., Any], *args: Any, empty: Any = NAN) -> Any:
        if len(ind) == 0:
            caught.append(f"{label}no in-domain examples")
            return empty
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always", MetricWarning)
            value = fn(*args)
        caught.extend(f"{label}{w.message}" for w in record if w.category is MetricWarning)
        return value

    kw = {"n": n_bootstrap, "seed": seed, "alpha": alpha}

    def ci(label: str, fn: Callable[..., float], *arrays: Any) -> list[float]:
        return list(run(f"{label} interval: ", lambda: bootstrap_ci(fn, *arrays, **kw),
                        empty=(NAN, NAN)))  # fmt: skip

    mean = lambda x: float(np.mean(x))
    specs = [s for s in metric_specs() if not s.ood or is_ood.any()]
    out: dict[str, Any] = {
        "n_examples": int(len(ind)),
        "n_ood": int(is_ood.sum()),
        "n_correct": int(correct.sum()),
        "n_incorrect": int((~correct).sum()),
        "threshold": threshold,
        "n_bootstrap": n_bootstrap,
        "alpha": alpha,
        "intervals": {
            "accuracy": INTERVAL_METHODS["bootstrap"],
            "ece": INTERVAL_METHODS["bootstrap"],
            **{s.name: INTERVAL_METHODS[s.interval] for s in specs},
        },
        "accuracy": run("accuracy: ", mean, correct),
        "accuracy_ci": ci("accuracy", mean, correct.astype(np.float64)),
        "rouge_l_mean": run("rouge_l: ", mean, rouge),
    }
    if "exact_match" in ind.columns:
        out["exact_match"] = run("exact_match: ", mean, ind["exact_match"].to_numpy(float))
    out["ece"] = run("", ece, conf, correct, n_bins)
    out["ece_ci"] = ci("ece", lambda c, y: ece(c, y, n_bins), conf, correct)
    out["auarc_oracle"] = run("oracle ", auarc, correct, ~correct)
    out["scores"] = {}
    for name in scores:
        res: dict[str, Any] = {}
        for spec in specs:
            inputs, rows = (everything, df) if spec.ood else (targets, ind)
            u = rows[name].to_numpy(dtype=np.float64)
            res[spec.name] = run(f"{name}: ", spec.fn, inputs[spec.input], u)
            label = f"{name}: {spec.name} interval: "
            interval = run(label, partial(_metric_ci, spec, inputs, u, **kw), empty=(NAN, NAN))
            res[f"{spec.name}_ci"] = list(interval)
            counts = class_counts(spec, inputs)
            res.update({f"{spec.name}_n_{cls}": k for cls, k in counts.items()})
        out["scores"][name] = res
    out["warnings"] = list(dict.fromkeys(caught))
    return to_jsonable(out)
