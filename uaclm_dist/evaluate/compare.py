"""Method comparison on the same test examples: the paper's Table 1 plus paired differences.

Input: ``{method: per-example frame}`` (see :func:`~.metrics.example_frame`), one frame per
fine-tuning method (e.g. ``clm``, ``ua_clm``), all over the same example ids. Only in-domain rows
(``is_ood`` False) are compared. Output: a :class:`Comparison` holding

- ``table``: rows = method, columns = accuracy and, per metric and score, e.g. ``AUROC te``;
- ``counts``: rows = method, columns ``n_correct``, ``n_incorrect`` (every metric of the table
  rests on these two counts);
- ``diffs``: one row per (method, quantity): ``method - baseline`` on the same examples, each
  method with its own correct/incorrect labels, with a t interval, a p-value, the unadjusted
  verdict and the Holm-adjusted one. Every method is compared with one ``baseline`` except those
  given their own in ``pairs`` (e.g. a two-stage ``clm_then_ua_clm`` against its control
  ``clm_then_clm``, which had the same total steps and the same optimizer restart); each row
  names the baseline it was taken against.

Differences (see :mod:`.intervals` for why t intervals, not percentile ones)
----------------------------------------------------------------------------
``d +- t(1 - alpha/2, df) * SE`` with ``df = k - 1``, ``k`` = the smallest of the four class counts
(correct / incorrect of the method and of the baseline). ``SE``: for AUROC (``interval="delong"``)
DeLong's variance over the joint classes ``(correct_A, correct_B)``, closed form; otherwise the
standard deviation of ``n_bootstrap`` paired resamples of the examples, over all examples
(``"bootstrap"``: AUARC and accuracy are defined on any resample and their variance includes the
class balance) or within the four joint classes (``"stratified"``: both methods' class counts
fixed). The stratified percentile bootstrap was measured first and rejected: with 3-4 correct
answers of 120 and no signal, its 95% interval for an AUROC difference excluded 0 in 11-33% of
null cases (``tests/unit/test_eval_intervals.py`` measures the chosen method).

- ``p_value``: two-sided, from the same t (``p < alpha`` exactly when the interval excludes 0).
- ``verdict``: ``"yes"`` / ``"no"``: the interval excludes 0, per comparison, **unadjusted**;
  ``"too few to judge"`` when either method has fewer than :data:`MIN_CLASS_COUNT` correct or
  incorrect answers; ``"n/a"`` without an interval (``n_bootstrap`` 0 or undefined).
- ``p_holm`` / ``verdict_holm``: Holm-Bonferroni over all comparisons of the table with a
  p-value (:attr:`Comparison.n_comparisons`), family-wise error rate alpha; "yes" when
  ``p_holm < alpha``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from uaclm_dist.evaluate.bootstrap import paired_bootstrap_diff
from uaclm_dist.evaluate.correctness import DEFAULT_THRESHOLD
from uaclm_dist.evaluate.intervals import Difference, delong_paired_diff, holm
from uaclm_dist.evaluate.metrics import METRICS, MetricSpec, in_domain, metric_inputs
from uaclm_dist.evaluate.summary import to_jsonable

ACCURACY = "Accuracy"
#: a comparison where either method has fewer correct or incorrect answers is not judged
MIN_CLASS_COUNT = 10
TOO_FEW = "too few to judge"


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


def _fmt_p(p: float | None) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _counts(n_correct: int, n_incorrect: int) -> str:
    return f"{n_correct}/{n_incorrect}"


#: how each kind of interval gets its SE, for the text above the differences
_SE_SOURCES = {
    "delong": "DeLong's variance over the joint classes (correct_A, correct_B)",
    "bootstrap": "the SD of {n} paired bootstrap resamples of the examples",
    "stratified": "the SD of {n} paired bootstrap resamples within the joint classes",
}


@dataclass
class Comparison:
    """Table-1-shaped comparison of methods (see the module docstring)."""

    table: pd.DataFrame
    counts: pd.DataFrame
    diffs: pd.DataFrame
    baseline: str
    pairs: dict[str, str]
    scores: list[str]
    metrics: list[str]
    n_examples: int
    threshold: float
    n_bootstrap: int
    alpha: float
    min_class_count: int = MIN_CLASS_COUNT

    @property
    def n_comparisons(self) -> int:
        """m, the comparisons with a p-value: the family of the Holm adjustment."""
        return int(self.diffs["p_value"].notna().sum())

    def _interval_kinds(self) -> dict[str, list[str]]:
        """interval kind -> the quantities (display names) that use it."""
        kinds: dict[str, list[str]] = {"bootstrap": [ACCURACY]}
        for spec in map(METRICS.get, self.metrics):
            kinds.setdefault(spec.interval, []).append(spec.display)
        return kinds

    def _table_markdown(self) -> str:
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
            n = self.counts.loc[method]
            cells = [method, _counts(n["n_correct"], n["n_incorrect"])]
            for col in cols:
                text = _fmt(rec[col])
                cells.append(f"**{text}**" if col in best and rec[col] == best[col] else text)
            rows.append(cells)
        return markdown_table(["Method", "Correct/incorrect", *cols], rows)

    def _diffs_markdown(self) -> list[str]:
        level = round(100 * (1 - self.alpha))
        m = self.n_comparisons
        sources = "; ".join(
            f"{_SE_SOURCES[kind].format(n=self.n_bootstrap)} ({', '.join(names)})"
            for kind, names in self._interval_kinds().items()
        )
        rows = [
            [
                r.method if r.baseline == self.baseline else f"{r.method} (vs {r.baseline})",
                r.quantity,
                f"{_counts(r.n_correct, r.n_incorrect)} vs "
                f"{_counts(r.baseline_n_correct, r.baseline_n_incorrect)}",
                _fmt(r.diff, signed=True),
                f"[{_fmt(r.low, True)}, {_fmt(r.high, True)}]",
                _fmt_p(r.p_value),
                r.verdict,
                _fmt_p(r.p_holm),
                r.verdict_holm,
            ]
            for r in self.diffs.itertuples()
        ]
        headers = ["Method", "Quantity", "Correct/incorrect (method vs baseline)", "Difference",
                   f"{level}% CI", "p", "CI excludes 0 (unadjusted)", "Holm p",
                   f"Holm: excludes 0 (m={m})"]  # fmt: skip
        own = "".join(f", `{a}` vs `{b}`" for a, b in self.pairs.items())
        return [
            f"Differences vs `{self.baseline}` (method - baseline{own}) on the same examples, "
            f"each method with its own correct/incorrect answers. **{m} comparisons** in this "
            "table.",
            "",
            f"- Interval: difference +- t({1 - self.alpha / 2:g}, df) x SE, df = the smallest "
            f"correct or incorrect count of the two methods - 1; SE: {sources}. p: two-sided, "
            "from the same t.",
            "- `CI excludes 0 (unadjusted)` judges each comparison alone: among many, some "
            f"exclude 0 by chance. `Holm` adjusts for all {m} comparisons (Holm-Bonferroni, "
            f"family-wise error rate {self.alpha:g}).",
            f"- `{TOO_FEW}`: the method or the baseline has fewer than {self.min_class_count} "
            "correct or incorrect answers; no verdict is drawn whatever the interval says.",
            "",
            markdown_table(headers, rows),
        ]

    def to_markdown(self) -> str:
        """Table 1 (best value per column in bold, class counts per method) and the differences
        vs the baseline with both verdicts."""
        parts = [
            f"Methods on the same {self.n_examples} in-domain examples (correct iff ROUGE-L > "
            f"{self.threshold}); best per column in bold ({_lower_is_better_note()}); every "
            "metric of a row rests on its correct/incorrect counts.",
            "",
            self._table_markdown(),
        ]
        if len(self.diffs):
            parts += ["", *self._diffs_markdown()]
        return "\n".join(parts) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as None)."""
        return to_jsonable(
            {
                "baseline": self.baseline,
                "pairs": self.pairs,
                "scores": self.scores,
                "metrics": self.metrics,
                "n_examples": self.n_examples,
                "threshold": self.threshold,
                "n_bootstrap": self.n_bootstrap,
                "alpha": self.alpha,
                "n_comparisons": self.n_comparisons,
                "min_class_count": self.min_class_count,
                "holm": f"Holm-Bonferroni over the n_comparisons rows with a p-value, "
                f"family-wise error rate {self.alpha:g}",
                "counts": {m: dict(r) for m, r in self.counts.iterrows()},
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


class _Quantity(NamedTuple):
    """One compared quantity: ``fn(*args(method))`` and the kind of its interval."""

    fn: Callable[..., float]
    args: Callable[[str], list[np.ndarray]]
    interval: str


def _paired(
    q: _Quantity, a: list[np.ndarray], b: list[np.ndarray], strata: np.ndarray, df: int, **kw: Any
) -> Difference:
    """``q`` of method minus baseline with the interval of its kind (module docstring)."""
    if q.interval == "delong" and kw["n"] > 0:
        return delong_paired_diff(a[0], a[1], b[0], b[1], alpha=kw["alpha"])
    joint = strata if q.interval == "stratified" else None
    return paired_bootstrap_diff(q.fn, a, b, df=df, strata=joint, **kw)


def verdict(judged: bool, p: float, alpha: float) -> str:
    """``TOO_FEW`` unless ``judged``; ``"n/a"`` without a finite p; else ``"yes"`` when
    p < alpha, ``"no"`` otherwise."""
    if not judged:
        return TOO_FEW
    if not np.isfinite(p):
        return "n/a"
    return "yes" if p < alpha else "no"


def baselines_of(methods: Sequence[str], baseline: str | None = None,
                 pairs: Mapping[str, str] | None = None) -> dict[str, str]:  # fmt: skip
    """``{method: the method it is compared with}`` for every method but the baseline.

    ``baseline``: the default reference (None: the first method); ``pairs``: methods with a
    reference of their own (``{method: its baseline}``); a method paired with itself is skipped.

    Raises:
        KeyError: the baseline, or a name in ``pairs``, is not among ``methods``.
    """
    methods = list(methods)
    baseline = baseline if baseline is not None else methods[0]
    pairs = dict(pairs or {})
    unknown = [n for n in (baseline, *pairs, *pairs.values()) if n not in methods]
    if unknown:
        raise KeyError(f"baseline(s) {unknown} not among the methods {methods}")
    against = {m: pairs.get(m, baseline) for m in methods}
    return {m: b for m, b in against.items() if m != b}


def compare_methods(
    per_method: Mapping[str, pd.DataFrame],
    scores: Sequence[str],
    baseline: str | None = None,
    pairs: Mapping[str, str] | None = None,
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
        pairs: methods compared with a reference of their own instead (``{method: baseline}``).
        metrics: names in :data:`~.metrics.METRICS` (default: those marked ``compared``).
        n_bootstrap: paired resamples for the bootstrap SEs; 0: no intervals, p-values or
            verdicts ("n/a") at all, DeLong included.
        alpha: 1 - the interval level, and the family-wise error rate of the Holm column.
    """
    frames = align_methods(per_method)
    baseline = baseline if baseline is not None else next(iter(frames))
    against = baselines_of(list(frames), baseline, pairs)
    specs = _resolve_metrics(metrics)
    inputs = {m: metric_inputs(df, threshold) for m, df in frames.items()}
    correct = {m: x["is_correct"] for m, x in inputs.items()}
    counts = pd.DataFrame(
        {m: {"n_correct": int(c.sum()), "n_incorrect": int((~c).sum())} for m, c in correct.items()}
    ).T

    quantities = {ACCURACY: _Quantity(_accuracy, lambda m: [correct[m]], "bootstrap")}
    for spec in specs:
        for score in scores:
            quantities[_column(spec, score)] = _Quantity(
                spec.fn,
                lambda m, kind=spec.input, score=score: [
                    inputs[m][kind],
                    frames[m][score].to_numpy(dtype=np.float64),
                ],
                spec.interval,
            )
    table = pd.DataFrame(
        {name: {m: q.fn(*q.args(m)) for m in frames} for name, q in quantities.items()}
    )
    rows = []
    for method, reference in against.items():
        base_counts = counts.loc[reference]
        smallest = int(min(counts.loc[method].min(), base_counts.min()))
        strata = 2 * correct[method].astype(np.int64) + correct[reference]
        for name, q in quantities.items():
            d = _paired(q, q.args(method), q.args(reference), strata, smallest - 1,
                        n=n_bootstrap, seed=seed, alpha=alpha)  # fmt: skip
            rows.append(
                {
                    "method": method,
                    "baseline": reference,
                    "quantity": name,
                    **d._asdict(),
                    "excludes_zero": bool(np.isfinite(d.low) and (d.low > 0 or d.high < 0)),
                    "verdict": verdict(smallest >= MIN_CLASS_COUNT, d.p_value, alpha),
                    "interval": q.interval,
                    "n_correct": counts.loc[method, "n_correct"],
                    "n_incorrect": counts.loc[method, "n_incorrect"],
                    "baseline_n_correct": base_counts["n_correct"],
                    "baseline_n_incorrect": base_counts["n_incorrect"],
                    "judged": smallest >= MIN_CLASS_COUNT,
                }
            )
    columns = ["method", "baseline", "quantity", *Difference._fields, "excludes_zero", "verdict",
               "interval", "n_correct", "n_incorrect", "baseline_n_correct",
               "baseline_n_incorrect", "judged"]  # fmt: skip
    diffs = pd.DataFrame(rows, columns=columns)
    diffs["p_holm"] = holm(diffs["p_value"].to_numpy(dtype=np.float64))
    diffs["verdict_holm"] = [
        verdict(j, p, alpha) for j, p in zip(diffs["judged"], diffs["p_holm"], strict=True)
    ]
    return Comparison(
        table=table,
        counts=counts,
        diffs=diffs.drop(columns="judged"),
        baseline=baseline,
        pairs={m: b for m, b in against.items() if b != baseline},
        scores=list(scores),
        metrics=[s.name for s in specs],
        n_examples=len(frames[baseline]),
        threshold=threshold,
        n_bootstrap=n_bootstrap,
        alpha=alpha,
    )
