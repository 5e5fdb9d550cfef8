"""The evaluation report: ``report.md`` with tables and embedded PNG plots.

Plots (matplotlib, object API with the Agg canvas: no pyplot state, safe in workers), written to
``<out_dir>/plots/``:

- ``roc.png``: hallucination-detection ROC per score (positive = incorrect), one curve per method;
- ``rejection.png``: accuracy-rejection curves per score, with oracle and random references;
- ``reliability.png``: reliability diagram per method (confidence = exp(mean token log p));
- ``hist_<method>.png``: per score, uncertainty histograms of correct vs incorrect answers;
- ``ood_roc.png``: OOD-detection ROC per score (only when some frame has OOD rows).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from uaclm_dist.evaluate.compare import Comparison, markdown_table
from uaclm_dist.evaluate.metrics import rejection_curve, reliability_bins

#: score name -> (short title, axis label with units)
SCORE_LABELS = {
    "te": ("TE", "token entropy (nats)"),
    "ppl": ("PPL", "perplexity"),
    "pe": ("PE", "predictive entropy (nats)"),
    "se": ("SE", "semantic entropy (nats)"),
    "dse": ("Discrete SE", "discrete semantic entropy (nats)"),
    "length": ("Length (baseline)", "answer length (tokens)"),
}
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


def _label(score: str) -> tuple[str, str]:
    return SCORE_LABELS.get(score, (score, score))


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _with_ci(res: Mapping[str, Any], key: str) -> str:
    ci = res.get(f"{key}_ci") or [None, None]
    if ci[0] is None:
        return _fmt(res.get(key))
    return f"{_fmt(res.get(key))} [{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]"


def _in_domain(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["is_ood"].astype(bool)] if "is_ood" in df.columns else df


def _grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.6, 4.0)):
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


# ------------------------------------------------------------------------------------------ plots


def plot_roc(
    per_method: Mapping[str, pd.DataFrame],
    scores: Sequence[str],
    threshold: float,
    path: Path,
    ood: bool = False,
) -> Path:
    """ROC per score; positive class = incorrect answer (or OOD prompt when ``ood``)."""
    fig, axes = _grid(len(scores))
    task = "OOD detection" if ood else "Hallucination detection"
    fig.suptitle(f"{task} ROC (positive = {'OOD prompt' if ood else 'incorrect answer'})")
    for ax, score in zip(axes, scores, strict=False):
        ax.plot([0, 1], [0, 1], ls=":", color="grey", label="chance (0.500)")
        for color, (method, df) in zip(COLORS, per_method.items(), strict=False):
            if ood:
                y = df["is_ood"].to_numpy(bool) if "is_ood" in df.columns else np.zeros(len(df))
                u = df[score].to_numpy(float)
            else:
                d = _in_domain(df)
                y, u = d["rouge_l"].to_numpy(float) <= threshold, d[score].to_numpy(float)
            if y.all() or not y.any():
                continue
            fpr, tpr, _ = roc_curve(y, u)
            area = float(np.trapezoid(tpr, fpr))
            ax.plot(fpr, tpr, color=color, lw=1.8, label=f"{method} ({area:.3f})")
        ax.set(
            title=_label(score)[0],
            xlabel="false positive rate",
            ylabel="true positive rate",
            xlim=(0, 1),
            ylim=(0, 1.01),
            aspect="equal",
        )
        ax.grid(alpha=0.3)
        ax.legend(title="method (AUROC)", fontsize=8, title_fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_rejection(
    per_method: Mapping[str, pd.DataFrame], scores: Sequence[str], threshold: float, path: Path
) -> Path:
    """Accuracy of the retained answers vs the fraction rejected (most uncertain first).

    Oracle (reject incorrect answers first) and random rejection are drawn once in grey when
    all methods have the same correct/incorrect answers, else once per method in its colour.
    """
    correct = {
        m: (_in_domain(df)["rouge_l"].to_numpy(float) > threshold).astype(float)
        for m, df in per_method.items()
    }
    correct = {m: c for m, c in correct.items() if c.size}
    vectors = list(correct.values())
    shared = all(v.shape == vectors[0].shape and (v == vectors[0]).all() for v in vectors)
    floor = max(0.0, min((c.mean() for c in vectors), default=0.0) - 0.1)
    fig, axes = _grid(len(scores))
    fig.suptitle("Accuracy-rejection curves (reject the most uncertain first)")
    for ax, score in zip(axes, scores, strict=False):
        for k, (color, method) in enumerate(zip(COLORS, correct, strict=False)):
            c = correct[method]
            rate, acc = rejection_curve(c, _in_domain(per_method[method])[score].to_numpy(float))
            ax.plot(rate, acc, color=color, lw=1.8, label=f"{method} (AUARC {acc.mean():.3f})")
            if shared and k > 0:
                continue
            ref_color, who = ("grey", "") if shared else (color, f"{method} ")
            _, oracle = rejection_curve(c, -c)
            ax.plot(
                rate,
                oracle,
                color=ref_color,
                lw=1,
                ls="--",
                label=f"{who}oracle ({oracle.mean():.3f})",
            )
            ax.axhline(
                c.mean(), color=ref_color, lw=1, ls=":", label=f"{who}random ({c.mean():.3f})"
            )
        ax.set(
            title=_label(score)[0],
            xlabel="fraction of answers rejected",
            ylabel="accuracy of retained answers",
            xlim=(0, 1),
            ylim=(floor, 1.02),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_reliability(
    per_method: Mapping[str, pd.DataFrame], threshold: float, path: Path, n_bins: int = 10
) -> Path:
    """Reliability diagram per method: accuracy per confidence bin vs the diagonal."""
    n = len(per_method)
    fig = Figure(figsize=(4.6 * n, 5.6), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False, height_ratios=[3, 1], sharex="col")
    fig.suptitle("Reliability diagram (confidence = exp(mean token log p) of the greedy answer)")
    for j, (color, (method, df)) in enumerate(zip(COLORS, per_method.items(), strict=False)):
        d = _in_domain(df)
        conf = d["confidence"].to_numpy(float)
        correct = d["rouge_l"].to_numpy(float) > threshold
        bins = reliability_bins(conf, correct, n_bins)
        centers, width = (bins.edges[:-1] + bins.edges[1:]) / 2, 1.0 / n_bins
        used = bins.count > 0
        top, bottom = axes[0, j], axes[1, j]
        top.bar(
            centers[used],
            bins.accuracy[used],
            width=width * 0.9,
            color=color,
            alpha=0.8,
            edgecolor="black",
            lw=0.5,
            label="accuracy in bin",
        )
        top.bar(
            centers[used],
            bins.mean_confidence[used] - bins.accuracy[used],
            bottom=bins.accuracy[used],
            width=width * 0.9,
            color="none",
            edgecolor="red",
            hatch="//",
            lw=0.8,
            label="gap to confidence",
        )
        top.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
        used_w = bins.count[used] / max(bins.count.sum(), 1)
        gaps = np.abs(bins.accuracy[used] - bins.mean_confidence[used])
        top.set(
            title=f"{method}: ECE {float(np.sum(used_w * gaps)):.4f}",
            ylabel="accuracy",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        top.grid(alpha=0.3)
        top.legend(fontsize=8, loc="upper left")
        bottom.bar(centers, bins.count, width=width * 0.9, color="grey", edgecolor="black", lw=0.5)
        bottom.set(xlabel="confidence", ylabel="answers")
        bottom.grid(alpha=0.3)
    return _save(fig, path)


def _histogram(ax, u: np.ndarray, correct: np.ndarray, log_x: bool) -> None:
    groups = ((correct, "correct", "#2ca02c"), (~correct, "incorrect", "#d62728"))
    values = np.unique(u)
    if 1 < values.size <= 15:  # discrete score (length, discrete SE): grouped bars of fractions
        width = 0.4 * float(np.min(np.diff(values)))
        for k, (mask, name, color) in enumerate(groups):
            if mask.any():
                frac = [np.mean(u[mask] == v) for v in values]
                ax.bar(
                    values + (k - 0.5) * width,
                    frac,
                    width=width,
                    color=color,
                    alpha=0.7,
                    label=f"{name} (mean {u[mask].mean():.3g})",
                )
        ax.set_ylabel("fraction of answers")
        return
    lo, hi = (float(u.min()), float(u.max())) if u.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    edges = np.geomspace(lo, hi, 31) if log_x else np.linspace(lo, hi, 31)
    for mask, name, color in groups:
        if mask.any():
            ax.hist(
                u[mask],
                bins=edges,
                density=True,
                alpha=0.5,
                color=color,
                edgecolor=color,
                label=f"{name} (mean {u[mask].mean():.3g})",
            )
    if log_x:
        ax.set_xscale("log")
    ax.set_ylabel("density")


def plot_histograms(
    df: pd.DataFrame, method: str, scores: Sequence[str], threshold: float, path: Path
) -> Path:
    """Per score, the distribution of uncertainty for correct vs incorrect answers."""
    d = _in_domain(df)
    correct = d["rouge_l"].to_numpy(float) > threshold
    fig, axes = _grid(len(scores), size=(4.6, 3.6))
    fig.suptitle(
        f"{method}: uncertainty of correct vs incorrect answers "
        f"({int(correct.sum())} correct, {int((~correct).sum())} incorrect)"
    )
    for ax, score in zip(axes, scores, strict=False):
        u = d[score].to_numpy(float)
        log_x = bool(score == "ppl" and u.size and u.min() > 0 and u.max() / u.min() > 20)
        _histogram(ax, u, correct, log_x)
        title, xlabel = _label(score)
        ax.set(title=title, xlabel=xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------- report


def _protocol_lines(protocol: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    def get(key: str, default: str = "not recorded") -> Any:
        return protocol.get(key, default)

    first = next(iter(metrics.values()), {})
    clusterer = get("clusterer")
    if clusterer == "embedding":
        clusterer = f"embedding (all-MiniLM-L6-v2, cosine >= {get('similarity_threshold', 0.85)})"
    elif clusterer == "nli":
        clusterer = f"NLI bidirectional entailment ({get('nli_model_path')})"
    return [
        "- Scored answer: greedy decoding; "
        f"samples for PE/SE: {get('num_samples')} (temperature {get('temperature')}).",
        "- Uncertainty from the raw, untempered logits (temperature 1, full vocabulary, nats), "
        "also for the samples; higher = more uncertain.",
        f"- Correct iff ROUGE-L F (max over references, rouge-score, Porter stemmer "
        f"{'on' if get('use_stemmer', True) else 'off'}) > "
        f"{first.get('threshold', get('correctness_threshold'))}.",
        f"- Semantic clusters: {clusterer}.",
        "- Hallucination AUROC: positive class = incorrect (`roc_auc_score(is_incorrect, u)`); "
        "AUARC/PRR reject the most uncertain first (ties broken by expectation).",
        "- ECE: confidence = exp(mean token log p) of the greedy answer, "
        f"{get('n_bins', 10)} equal-width bins.",
        "- The length-only baseline (`length`: greedy answer tokens) is reported beside every "
        "score: a score is only informative where it beats it.",
        f"- Intervals: percentile bootstrap over examples, {first.get('n_bootstrap')} "
        f"resamples, {round(100 * (1 - (first.get('alpha') or 0.05)))}%."
        if first.get("n_bootstrap")
        else "- Intervals: none (no bootstrap resamples).",
    ]


def _ci_label(m: Mapping[str, Any]) -> str:
    if not m.get("n_bootstrap"):
        return ""
    return f" [{round(100 * (1 - (m.get('alpha') or 0.05)))}% CI]"


def _summary_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    ci = _ci_label(next(iter(metrics.values()), {}))
    rows = []
    for method, m in metrics.items():
        rows.append(
            [
                method,
                m.get("n_examples", "?"),
                _with_ci(m, "accuracy"),
                _fmt(m.get("rouge_l_mean")),
                _fmt(m.get("exact_match")),
                _with_ci(m, "ece"),
                _fmt(m.get("auarc_oracle")),
            ]
        )
    return markdown_table(
        ["Method", "N", f"Accuracy{ci}", "Mean ROUGE-L", "Exact match", f"ECE{ci}", "AUARC oracle"],
        rows,
    )


def _score_table(m: Mapping[str, Any], scores: Sequence[str]) -> str:
    has_ood = any("ood_auroc" in m["scores"].get(s, {}) for s in scores)
    headers = ["Score", f"AUROC{_ci_label(m)}", "AUARC", "PRR", "Spearman", "Pearson"]
    if has_ood:
        headers += ["OOD AUROC", "OOD AUPR"]
    rows = []
    for s in scores:
        res = m["scores"].get(s, {})
        row = [
            _label(s)[0],
            _with_ci(res, "auroc"),
            _with_ci(res, "auarc"),
            _with_ci(res, "prr"),
            _with_ci(res, "spearman"),
            _with_ci(res, "pearson"),
        ]
        if has_ood:
            row += [_with_ci(res, "ood_auroc"), _with_ci(res, "ood_aupr")]
        rows.append(row)
    return markdown_table(headers, rows)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_report(
    out_dir: str | Path,
    per_method: Mapping[str, pd.DataFrame],
    metrics: Mapping[str, Mapping[str, Any]],
    comparison: Comparison | None = None,
    *,
    protocol: Mapping[str, Any] | None = None,
    scores: Sequence[str] | None = None,
    title: str = "UA-CLM uncertainty evaluation",
) -> Path:
    """Write ``report.md`` and ``plots/*.png`` under ``out_dir``; return the report path.

    Args:
        per_method: method -> per-example frame (:func:`~.metrics.example_frame`).
        metrics: method -> :func:`~.metrics.compute_metrics` output (same keys as per_method).
        comparison: optional :func:`~.compare.compare_methods` result (rendered as a section).
        protocol: the run's pinned choices, e.g. ``EvalConfig.model_dump()`` (num_samples,
            temperature, clusterer, similarity_threshold, nli_model_path, use_stemmer, n_bins).
        scores: score columns to show (default: those in the first method's metrics).
    """
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    protocol = dict(protocol or {})
    first = next(iter(metrics.values()))
    scores = list(scores if scores is not None else first["scores"])
    threshold = float(first["threshold"])
    n_bins = int(protocol.get("n_bins", 10))

    images = [
        (
            "Hallucination detection: ROC",
            plot_roc(per_method, scores, threshold, plots / "roc.png"),
        ),
        (
            "Selective answering: accuracy-rejection",
            plot_rejection(per_method, scores, threshold, plots / "rejection.png"),
        ),
        (
            "Calibration: reliability",
            plot_reliability(per_method, threshold, plots / "reliability.png", n_bins),
        ),
    ]
    for method, df in per_method.items():
        images.append(
            (
                f"Uncertainty histograms: {method}",
                plot_histograms(df, method, scores, threshold, plots / f"hist_{_slug(method)}.png"),
            )
        )
    if any(
        "is_ood" in df.columns and df["is_ood"].astype(bool).any() for df in per_method.values()
    ):
        images.append(
            (
                "OOD detection: ROC",
                plot_roc(per_method, scores, threshold, plots / "ood_roc.png", ood=True),
            )
        )

    lines = [f"# {title}", "", "## Protocol", "", *_protocol_lines(protocol, metrics), ""]
    lines += ["## Summary", "", _summary_table(metrics), ""]
    lines += [
        "## Uncertainty scores",
        "",
        "AUROC/AUARC/PRR: higher is better; Spearman/Pearson with ROUGE-L: more negative is "
        "better. `Length (baseline)` is the answer-length-only score.",
        "",
    ]
    for method, m in metrics.items():
        lines += [f"### {method}", "", _score_table(m, scores), ""]
    if comparison is not None:
        lines += ["## Method comparison", "", comparison.to_markdown(), ""]
    lines += ["## Plots", ""]
    for caption, path in images:
        lines += [f"### {caption}", "", f"![{caption}]({path.relative_to(out_dir).as_posix()})", ""]
    warnings = [f"{method}: {w}" for method, m in metrics.items() for w in m.get("warnings", [])]
    if warnings:
        lines += ["## Undefined metrics (reported as n/a)", "", *[f"- {w}" for w in warnings], ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
