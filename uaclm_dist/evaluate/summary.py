"""One method's ``metrics.json`` entry: accuracy, calibration and every registered metric of every
score (:data:`~.metrics.METRICS`), each with a bootstrap interval; NaN written as ``None``."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from uaclm_dist.evaluate.bootstrap import bootstrap_ci
from uaclm_dist.evaluate.correctness import DEFAULT_THRESHOLD
from uaclm_dist.evaluate.metrics import (
    NAN,
    MetricWarning,
    auarc,
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

    Returns (strict-JSON-ready, NaN as None): ``n_examples``, ``n_ood``, ``threshold``,
    ``accuracy``, ``rouge_l_mean``, ``exact_match`` (if the column exists), ``ece``,
    ``auarc_oracle`` (and ``*_ci`` = [low, high] for accuracy / ece), ``scores`` =
    ``{name: {<metric>: value, <metric>_ci: [low, high]}}`` over
    :func:`~.metrics.metric_specs` (the OOD ones only when some rows are OOD), and
    ``warnings`` (every metric reported as undefined).
    """
    _check_columns(df, scores)
    ind = in_domain(df)
    targets = metric_inputs(ind, threshold)
    is_ood = metric_inputs(df, threshold)["is_ood"]
    rouge, correct = targets["rouge_l"], targets["is_correct"]
    conf = ind["confidence"].to_numpy(dtype=np.float64)

    def ci(fn: Callable[..., float], *arrays: Any) -> list[float]:
        return list(bootstrap_ci(fn, *arrays, n=n_bootstrap, seed=seed, alpha=alpha))

    caught: list[str] = []

    def run(label: str, fn: Callable[..., float], *args: Any) -> float:
        if len(ind) == 0:
            caught.append(f"{label}no in-domain examples")
            return NAN
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always", MetricWarning)
            value = fn(*args)
        caught.extend(f"{label}{w.message}" for w in record if w.category is MetricWarning)
        return value

    mean = lambda x: float(np.mean(x))
    out: dict[str, Any] = {
        "n_examples": int(len(ind)),
        "n_ood": int(is_ood.sum()),
        "threshold": threshold,
        "n_bootstrap": n_bootstrap,
        "alpha": alpha,
        "accuracy": run("accuracy: ", mean, correct),
        "accuracy_ci": ci(mean, correct.astype(np.float64)),
        "rouge_l_mean": run("rouge_l: ", mean, rouge),
    }
    if "exact_match" in ind.columns:
        out["exact_match"] = run("exact_match: ", mean, ind["exact_match"].to_numpy(float))
    out["ece"] = run("", ece, conf, correct, n_bins)
    out["ece_ci"] = ci(lambda c, y: ece(c, y, n_bins), conf, correct)
    out["auarc_oracle"] = run("oracle ", auarc, correct, ~correct)
    out["scores"] = {}
    for name in scores:
        res: dict[str, Any] = {}
        for spec in metric_specs():
            if spec.ood and not is_ood.any():
                continue
            target, u = (is_ood, df[name]) if spec.ood else (targets[spec.input], ind[name])
            u = u.to_numpy(dtype=np.float64)
            res[spec.name] = run(f"{name}: ", spec.fn, target, u)
            res[f"{spec.name}_ci"] = ci(spec.fn, target, u)
        out["scores"][name] = res
    out["warnings"] = list(dict.fromkeys(caught))
    return to_jsonable(out)
