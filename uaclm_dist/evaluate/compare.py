"""Method comparison on the same test examples: the paper's Table 1 plus paired differences.

Input: ``{method: per-example frame}`` (see :func:`~.metrics.example_frame`), one frame per
fine-tuning method (e.g. ``clm``, ``ua_clm``), all over the same example ids. Only in-domain rows
(``is_ood`` False) are compared. Output: a :class:`Comparison` holding

- ``table``: rows = method, columns = accuracy and, per metric and score, e.g. ``AUROC te``;
- ``diffs``: one row per (method, quantity): ``method - baseline`` with a paired-bootstrap
  interval (the same resampled examples for both methods), and whether it excludes 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from uaclm_dist.evaluate.bootstrap import paired_bootstrap_diff
from uaclm_dist.evaluate.correctness import DEFAULT_THRESHOLD
from uaclm_dist.evaluate.metrics import METRICS, MetricSpec, in_domain, metric_inputs
from uaclm_dist.evaluate.summary import to_jsonable

ACCURACY = "Accuracy"


def _accuracy(is_correct: np.ndarray) -> float:
    return float(np.mean(is_correct))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table; cells are str()-ed; first column left-aligned, others right."""
    align = [":---"] + ["---:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


@dataclass
class Comparison:
    """Table-1-shaped comparison of methods (see the module docstring)."""

    table: pd.DataFrame
    diffs: pd.DataFrame
    baseline: str
    scores: list[str]
    metrics: list[str]
    n_examples: int
    threshold: float
    n_bootstrap: int
    alpha: float

    def to_markdown(self) -> str:
        """The table (best value per column in bold) and the differences vs the baseline."""
        cols = list(self.table.columns)
        higher_is_better = {ACCURACY: True}
        for spec in map(METRICS.get, self.metrics):
            higher_is_better.update({_column(spec, s): spec.higher_is_better for s in self.scores})
        best = {}
        for col in cols:
            values = self.table[col].astype(float)
            if values.notna().any() and values.nunique() > 1:
                best[col] = values.max() if higher_is_better[col] else values.min()
        rows = []
        for method, rec in self.table.iterrows():
            cells = [method]
            for col in cols:
                text = _fmt(rec[col])
                cells.append(f"**{text}**" if col in best and rec[col] == best[col] else text)
            rows.append(cells)
        level = round(100 * (1 - self.alpha))
        parts = [
            f"Methods on the same {self.n_examples} in-domain examples (correct iff ROUGE-L > "
            f"{self.threshold}); best per column in bold ({_lower_is_better_note()}).",
            "",
            markdown_table(["Method", *cols], rows),
        ]
        if len(self.diffs):
            diff_rows = [
                [
                    r.method,
                    r.quantity,
                    _fmt(r.diff, signed=True),
                    f"[{_fmt(r.low, True)}, {_fmt(r.high, True)}]",
                    "yes" if r.excludes_zero else "no",
                ]
                for r in self.diffs.itertuples()
            ]
            parts += [
                "",
                f"Differences vs `{self.baseline}` (method - baseline), paired bootstrap over "
                f"examples ({self.n_bootstrap} resamples, {level}% percentile interval):",
                "",
                markdown_table(
                    ["Method", "Quantity", "Difference", f"{level}% CI", "CI excludes 0"],
                    diff_rows,
                ),
            ]
        return "\n".join(parts) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as None)."""
        return to_jsonable(
            {
                "baseline": self.baseline,
                "scores": self.scores,
                "metrics": self.metrics,
                "n_examples": self.n_examples,
                "threshold": self.threshold,
                "n_bootstrap": self.n_bootstrap,
                "alpha": self.alpha,
                "table": {m: dict(r) for m, r in self.table.iterrows()},
                "diffs": self.diffs.to_dict(orient="records"),
            }
        )


def _column(spec: MetricSpec, score: str) -> str:
    """Table column of one metric of one score, e.g. ``"AUROC te"``."""
    return f"{spec.display} {score}"


def _lower_is_better_note() -> str:
    """``"Spearman/Pearson: lower is better"`` from the registered metrics."""
    lower = [s.display for s in METRICS.values() if not s.higher_is_better]
    return f"{'/'.join(lower)}: lower is better"


def align_methods(per_method: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """In-domain rows of every frame, in the first method's id order.

    Raises:
        ValueError: duplicate ids in a frame, or the methods cover different example ids.
    """
    if not per_method:
        raise ValueError("no methods to compare")
    out: dict[str, pd.DataFrame] = {}
    reference_ids = None
    for method, df in per_method.items():
        df = in_domain(df)
        if df["id"].duplicated().any():
            dupes = df.loc[df["id"].duplicated(), "id"].head(3).tolist()
            raise ValueError(f"method {method!r}: duplicate example ids, e.g. {dupes}")
        df = df.set_index("id", drop=False)
        if reference_ids is None:
            reference_ids = df.index
        elif set(df.index) != set(reference_ids):
            only_here = sorted(set(df.index) - set(reference_ids))[:3]
            only_first = sorted(set(reference_ids) - set(df.index))[:3]
            raise ValueError(
                f"method {method!r} covers different examples than {next(iter(per_method))!r} "
                f"(only here: {only_here}, missing: {only_first})"
            )
        out[method] = df.loc[reference_ids].reset_index(drop=True)
    return out


def _resolve_metrics(metrics: Sequence[str] | None) -> list[MetricSpec]:
    if metrics is None:
        return [s for s in METRICS.values() if s.compared]
    specs = [METRICS.get(m) for m in metrics]
    ood = [s.name for s in specs if s.ood]
    if ood:
        raise ValueError(f"metric(s) {ood} need OOD rows; the comparison uses in-domain rows only")
    return specs


def compare_methods(
    per_method: Mapping[str, pd.DataFrame],
    scores: Sequence[str],
    baseline: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    metrics: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Comparison:
    """Table 1 (accuracy + metric per score, per method) and paired differences vs ``baseline``.

    Args:
        per_method: method name -> per-example frame (columns id, rouge_l, is_ood?, scores).
        scores: score columns to compare, e.g. ``["te", "ppl", "pe", "se", "length"]``.
        baseline: the reference method (default: the first one).
        metrics: names in :data:`~.metrics.METRICS` (default: those marked ``compared``).
    """
    frames = align_methods(per_method)
    baseline = baseline if baseline is not None else next(iter(frames))
    if baseline not in frames:
        raise KeyError(f"baseline {baseline!r} is not among the methods {list(frames)}")
    specs = _resolve_metrics(metrics)
    inputs = {m: metric_inputs(df, threshold) for m, df in frames.items()}

    # quantity name -> (function, method -> argument arrays)
    quantities = {ACCURACY: (_accuracy, lambda m: [inputs[m]["is_correct"]])}
    for spec in specs:
        for score in scores:
            quantities[_column(spec, score)] = (
                spec.fn,
                lambda m, kind=spec.input, score=score: [
                    inputs[m][kind],
                    frames[m][score].to_numpy(dtype=np.float64),
                ],
            )
    table = pd.DataFrame(
        {q: {m: fn(*args(m)) for m in frames} for q, (fn, args) in quantities.items()}
    )
    rows = []
    for method in frames:
        if method == baseline:
            continue
        for q, (fn, args) in quantities.items():
            d = paired_bootstrap_diff(
                fn, args(method), args(baseline), n=n_bootstrap, seed=seed, alpha=alpha
            )
            excludes = bool(np.isfinite(d.low) and (d.low > 0 or d.high < 0))
            rows.append(
                {
                    "method": method,
                    "quantity": q,
                    "diff": d.diff,
                    "low": d.low,
                    "high": d.high,
                    "excludes_zero": excludes,
                }
            )
    diffs = pd.DataFrame(
        rows, columns=["method", "quantity", "diff", "low", "high", "excludes_zero"]
    )
    return Comparison(
        table=table,
        diffs=diffs,
        baseline=baseline,
        scores=list(scores),
        metrics=[s.name for s in specs],
        n_examples=len(frames[baseline]),
        threshold=threshold,
        n_bootstrap=n_bootstrap,
        alpha=alpha,
    )
