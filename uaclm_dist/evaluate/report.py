"""The evaluation report: ``report.md`` with the protocol, tables and the PNG plots of
:mod:`.plots` (written to ``<out_dir>/plots/``).

Score rows are labelled by their :class:`~.scores.ScoreSpec`; metric columns follow the
:data:`~.metrics.METRICS` registry (display names, order, which ones need OOD rows).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uaclm_dist.evaluate.compare import Comparison, markdown_table
from uaclm_dist.evaluate.metrics import metric_specs
from uaclm_dist.evaluate.plots import plot_histograms, plot_rejection, plot_reliability, plot_roc
from uaclm_dist.evaluate.scores import SCORES


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _with_ci(res: Mapping[str, Any], key: str, classes: Sequence[str] = ()) -> str:
    """``value [low, high]``, then ``(a/b)`` with the counts of ``classes`` when recorded."""
    ci = res.get(f"{key}_ci") or [None, None]
    text = _fmt(res.get(key))
    if ci[0] is not None:
        text += f" [{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]"
    counts = [res.get(f"{key}_n_{c}") for c in classes]
    if classes and None not in counts:
        text += f" ({'/'.join(map(str, counts))})"
    return text


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
        *_chain_lines(protocol.get("examples") or {}),
        *_interval_lines(first),
    ]


def _chain_lines(selection: Mapping[str, Any]) -> list[str]:
    """Two-stage methods: where each started from; a warning where a parent's split is
    unknown."""
    lines = [f"- `{name}` starts from {chain} (two-stage; every ancestor's training questions "
             "are held out)" for name, chain in (selection.get("chains") or {}).items()]
    for name in selection.get("parent_split_unknown") or []:
        lines.append(f"- **`{name}`: parent split unknown** (an adapter from elsewhere): its "
                     "numbers may rest on questions its parent trained on.")
    return lines


def _interval_lines(m: Mapping[str, Any]) -> list[str]:
    """What each interval is (from the entry's ``intervals``), and what the counts mean."""
    counts = (
        "- `(a/b)` after a value: the correct/incorrect answers it rests on (OOD columns: "
        "in-domain/OOD prompts). With fewer than about 10 in a class no interval is reliable "
        "and methods are not judged (`too few to judge` in the comparison)."
    )
    if not m.get("n_bootstrap"):
        return ["- Intervals: none (no bootstrap resamples).", counts]
    names = {"accuracy": "accuracy", "ece": "ECE"}
    names.update({spec.name: spec.display for spec in metric_specs()})
    by_method: dict[str, list[str]] = {}
    for key, how in m.get("intervals", {}).items():
        by_method.setdefault(how, []).append(names.get(key, key))
    level = round(100 * (1 - (m.get("alpha") or 0.05)))
    lines = [f"- Intervals ({level}%, {m['n_bootstrap']} bootstrap resamples where resampled):"]
    lines += [f"  - {', '.join(keys)}: {how}." for how, keys in by_method.items()]
    return [*lines, counts]


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
                f"{m.get('n_correct', '?')}/{m.get('n_incorrect', '?')}",
                _with_ci(m, "accuracy"),
                _fmt(m.get("rouge_l_mean")),
                _fmt(m.get("exact_match")),
                _with_ci(m, "ece"),
                _fmt(m.get("auarc_oracle")),
            ]
        )
    headers = ["Method", "N", "Correct/incorrect", f"Accuracy{ci}", "Mean ROUGE-L",
               "Exact match", f"ECE{ci}", "AUARC oracle"]  # fmt: skip
    return markdown_table(headers, rows)


def _score_table(m: Mapping[str, Any], scores: Sequence[str]) -> str:
    """One row per score, one column per metric of :func:`~.metrics.metric_specs` (OOD ones only
    when computed), each cell ``value [interval] (class counts)``; the first metric's header
    names the interval level."""
    results = [m["scores"].get(s, {}) for s in scores]
    specs = [x for x in metric_specs() if not x.ood or any(x.name in r for r in results)]
    headers = ["Score"] + [
        spec.display + (_ci_label(m) if i == 0 else "") for i, spec in enumerate(specs)
    ]
    rows = [
        [SCORES.get(s).label] + [_with_ci(res, spec.name, spec.classes) for spec in specs]
        for s, res in zip(scores, results, strict=True)
    ]
    return markdown_table(headers, rows)


def _direction_note() -> str:
    """``"AUROC/AUARC/PRR: higher is better; Spearman/Pearson with ROUGE-L: more negative is
    better."`` from the registered in-domain metrics."""
    specs = [s for s in metric_specs() if not s.ood]
    higher = "/".join(s.display for s in specs if s.higher_is_better)
    lower = "/".join(s.display for s in specs if not s.higher_is_better)
    return f"{higher}: higher is better; {lower} with ROUGE-L: more negative is better."


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
        f"{_direction_note()} `Length (baseline)` is the answer-length-only score.",
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
