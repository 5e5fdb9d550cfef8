"""The report's plots (matplotlib, object API with the Agg canvas: no pyplot state, safe in
workers); each function writes one PNG and returns its path.

- ``roc.png``: hallucination-detection ROC per score (positive = incorrect), one curve per method;
- ``rejection.png``: accuracy-rejection curves per score, with oracle and random references;
- ``reliability.png``: reliability diagram per method (confidence = exp(mean token log p));
- ``hist_<method>.png``: per score, uncertainty histograms of correct vs incorrect answers;
- ``ood_roc.png``: OOD-detection ROC per score (only when some frame has OOD rows).

Every AUROC / AUARC in a legend shows the class counts it rests on (correct/incorrect, OOD:
in-domain/OOD).

Inputs are per-example frames (:func:`~.frame.example_frame`); titles and axis labels come from
the scores' :class:`~.scores.ScoreSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from uaclm_dist.evaluate.correctness import is_correct
from uaclm_dist.evaluate.metrics import in_domain, metric_inputs, rejection_curve, reliability_bins
from uaclm_dist.evaluate.scores import SCORES

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


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
            d = df if ood else in_domain(df)
            y = metric_inputs(d, threshold)["is_ood" if ood else "is_incorrect"]
            u = d[score].to_numpy(float)
            if y.all() or not y.any():
                continue
            fpr, tpr, _ = roc_curve(y, u)
            area = float(np.trapezoid(tpr, fpr))
            n = f"{(~y).sum()}/{y.sum()}"  # negatives/positives: correct/incorrect, ID/OOD
            ax.plot(fpr, tpr, color=color, lw=1.8, label=f"{method} ({area:.3f}; {n})")
        ax.set(
            title=SCORES.get(score).label,
            xlabel="false positive rate",
            ylabel="true positive rate",
            xlim=(0, 1),
            ylim=(0, 1.01),
            aspect="equal",
        )
        ax.grid(alpha=0.3)
        counts = "in-domain/OOD" if ood else "correct/incorrect"
        ax.legend(
            title=f"method (AUROC; {counts})", fontsize=8, title_fontsize=8, loc="lower right"
        )
    return _save(fig, path)


def plot_rejection(
    per_method: Mapping[str, pd.DataFrame], scores: Sequence[str], threshold: float, path: Path
) -> Path:
    """Accuracy of the retained answers vs the fraction rejected (most uncertain first).

    Oracle (reject incorrect answers first) and random rejection are drawn once in grey when
    all methods have the same correct/incorrect answers, else once per method in its colour.
    """
    correct = {
        m: is_correct(in_domain(df), threshold).astype(float) for m, df in per_method.items()
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
            rate, acc = rejection_curve(c, in_domain(per_method[method])[score].to_numpy(float))
            n = f"{int(c.sum())}/{int(c.size - c.sum())}"
            label = f"{method} (AUARC {acc.mean():.3f}; {n} correct/incorrect)"
            ax.plot(rate, acc, color=color, lw=1.8, label=label)
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
            title=SCORES.get(score).label,
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
        d = in_domain(df)
        conf = d["confidence"].to_numpy(float)
        correct = is_correct(d, threshold)
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
    d = in_domain(df)
    correct = is_correct(d, threshold)
    fig, axes = _grid(len(scores), size=(4.6, 3.6))
    fig.suptitle(
        f"{method}: uncertainty of correct vs incorrect answers "
        f"({int(correct.sum())} correct, {int((~correct).sum())} incorrect)"
    )
    for ax, score in zip(axes, scores, strict=False):
        u = d[score].to_numpy(float)
        spec = SCORES.get(score)
        log_x = bool(spec.log_x and u.size and u.min() > 0 and u.max() / u.min() > 20)
        _histogram(ax, u, correct, log_x)
        ax.set(title=spec.label, xlabel=spec.axis_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
