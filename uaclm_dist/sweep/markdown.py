"""``sweep.md``: the study table over seeds, the per-seed intervals, the paired differences
against the spec's baseline, every cell, the failures.

Scores are shown by their registered label (:data:`~uaclm_dist.evaluate.scores.SCORES`), the
uncertainty scores first and the answer-length baseline (``length``) last, beside them: a score
that does not beat answer length says little about uncertainty.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from uaclm_dist.evaluate.compare import MIN_CLASS_COUNT, TOO_FEW, markdown_table
from uaclm_dist.evaluate.scores import SCORES
from uaclm_dist.sweep.collect import Collected
from uaclm_dist.sweep.paired import PairedDifferences
from uaclm_dist.sweep.progress import format_duration
from uaclm_dist.sweep.spec import SweepSpec
from uaclm_dist.sweep.study import fmt

__all__ = ["BASELINE_SCORE", "ordered_scores", "render"]

#: the length-only baseline score, shown beside the uncertainty scores
BASELINE_SCORE = "length"


def ordered_scores(scores: list[str]) -> list[str]:
    """Uncertainty scores in their order, then the length baseline."""
    return [s for s in scores if s != BASELINE_SCORE] + [s for s in scores if s == BASELINE_SCORE]


def score_label(name: str) -> str:
    return SCORES.get(name).label if name in SCORES else name


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    return str(value)


def _range(row: pd.Series, prefix: str) -> str:
    """``mean (min..max)`` of ``<prefix>_mean/_min/_max``; the mean alone for one seed."""
    mean, low, high = (row.get(f"{prefix}_{part}") for part in ("mean", "min", "max"))
    if row.get("n_seeds", 0) > 1 and fmt(low) != "n/a":
        return f"{fmt(mean)} ({fmt(low)}..{fmt(high)})"
    return fmt(mean)


def _study_section(study: pd.DataFrame, axes: list[str], scores: list[str], n_seeds: int,
                   evaluate: bool) -> list[str]:  # fmt: skip
    lines = ["## Study: mean over seeds", ""]
    if study.empty:
        return lines + ["No finished cell with an evaluation yet." if evaluate else
                        "The spec does not evaluate (`evaluate: false`): training numbers only, "
                        "in the cell table.", ""]
    lines += [
        f"Each value: the mean over the seeds (min..max over them). Accuracy: share of "
        f"correct answers; score columns: hallucination AUROC of the score (positive class = "
        f"incorrect answer; 0.5 = chance). `{score_label(BASELINE_SCORE)}` ranks answers by "
        f"their length alone. Counts: correct/incorrect answers per seed; `{TOO_FEW}`: some seed "
        f"has fewer than {MIN_CLASS_COUNT} in a class. Seeds: those finished, of {n_seeds}.",
        "",
    ]
    headers = [*axes, "method", "seeds", "accuracy", *(score_label(s) for s in scores),
               "correct/incorrect", "judged"]  # fmt: skip
    rows = [[*(_text(r[a]) for a in axes), _text(r["method"]), f"{r['seeds']} ({r['n_seeds']})",
             _range(r, "accuracy"), *(_range(r, f"auroc_{s}") for s in scores),
             r["counts_per_seed"], TOO_FEW if r["too_few_to_judge"] else "yes"]
            for _, r in study.iterrows()]  # fmt: skip
    lines += [markdown_table(headers, rows), "", "### AUROC per seed, with 95% intervals", ""]
    headers = [*axes, "method", *(score_label(s) for s in scores)]
    rows = [[*(_text(r[a]) for a in axes), _text(r["method"]),
             *(r[f"auroc_{s}_per_seed"] for s in scores)] for _, r in study.iterrows()]
    return lines + [markdown_table(headers, rows), ""]


def _signed(value: Any) -> str:
    """``+0.012``; ``n/a`` for None / NaN."""
    return "n/a" if value is None or pd.isna(value) else f"{value:+.3f}"


def _quantity_label(quantity: str) -> str:
    """``AUROC te`` -> ``AUROC TE`` (the score's registered label)."""
    metric, _, score = quantity.partition(" ")
    return f"{metric} {score_label(score)}" if score else quantity


def _paired_text(paired: PairedDifferences) -> list[str]:
    """What the paired table holds and how its intervals and verdicts are made."""
    level = round(100 * (1 - paired.alpha))
    return [
        f"Each cell minus the cell with `{paired.key}={paired.baseline}` and the same other "
        "values and seed, on the same held-out questions (the example ids are checked), each "
        f"cell with its own correct/incorrect answers. Per seed: difference [{level}% interval, "
        "per comparison, unadjusted]: difference +- t x SE with df = the smallest of the four "
        "class counts (correct/incorrect of both cells) - 1; SE of accuracy: the SD of "
        "`eval.bootstrap_samples` paired bootstrap resamples of the questions; of AUROC "
        "(positive class = incorrect answer): DeLong's. `Holm` adjusts over the "
        f"**{paired.n_comparisons} comparisons with a p-value** in this table (family-wise "
        f"error rate {paired.alpha:g}): `yes` = Holm-adjusted p < {paired.alpha:g}. "
        f"`{TOO_FEW}`: a cell of the pair has fewer than {MIN_CLASS_COUNT} correct or "
        "incorrect answers; no verdict. A verdict is about these trained runs on these "
        "questions; the spread between training seeds is what the seeds' rows show, not the "
        "intervals. `mean over seeds`: the plain mean of the seeds' differences (no interval).",
        "",
    ]


def _seed_tag(seed: Any) -> str:
    """``s0 `` before a seed's value; nothing for a spec without seeds."""
    text = _text(seed)
    return "" if text == "-" else f"s{text} "


def _paired_rows(paired: PairedDifferences) -> list[list[str]]:
    """One row per setting x compared value x quantity, the seeds side by side."""
    keys = [*paired.other_axes, "value", "quantity"]
    rows = []
    for values, group in paired.frame.groupby(keys, dropna=False, sort=False):
        *setting, value, quantity = values
        per_seed = list(group.itertuples())
        rows.append([
            *(_text(v) for v in setting), value, _quantity_label(quantity),
            _signed(group["diff"].mean()),
            "; ".join(f"{_seed_tag(r.seed)}{_signed(r.diff)} [{_signed(r.low)}, "
                      f"{_signed(r.high)}]" for r in per_seed),
            "; ".join(f"{_seed_tag(r.seed)}{r.n_correct}/{r.n_incorrect} vs "
                      f"{r.baseline_n_correct}/{r.baseline_n_incorrect}" for r in per_seed),
            "; ".join(f"{_seed_tag(r.seed)}{r.verdict_holm}" for r in per_seed),
        ])  # fmt: skip
    return rows


def _paired_section(paired: PairedDifferences | None) -> list[str]:
    if paired is None:
        return []
    lines = [f"## Paired differences against `{paired.key}={paired.baseline}`", ""]
    if paired.frame.empty:
        lines.append("No pair of finished cells to compare yet.")
    else:
        headers = [*paired.other_axes, paired.key, "quantity", "mean over seeds",
                   "per seed [95% interval]", "correct/incorrect (cell vs baseline)",
                   "Holm"]  # fmt: skip
        lines += [*_paired_text(paired), markdown_table(headers, _paired_rows(paired))]
    if paired.skipped:
        lines += ["", "Not compared:", *(f"- {line}" for line in paired.skipped)]
    return lines + [""]


def _loss_text(row: pd.Series) -> str:
    first, last = row.get("train_loss_first"), row.get("train_loss_last")
    return "-" if fmt(first) == "n/a" else f"{fmt(first)} -> {fmt(last)}"


def _signature_text(row: pd.Series) -> str:
    a, b = row.get("sig_entropy_base_incorrect_change"), row.get("sig_entropy_base_correct_change")
    return "-" if fmt(a) == "n/a" and fmt(b) == "n/a" else f"{fmt(a, 2)} / {fmt(b, 2)}"


def _cells_section(frame: pd.DataFrame, axes: list[str], scores: list[str]) -> list[str]:
    headers = ["cell", *axes, "seed", "status", "method", "loss first -> last",
               "probe: entropy change incorrect / correct (nats)", "accuracy",
               "correct/incorrect", *(score_label(s) for s in scores)]  # fmt: skip
    rows = []
    for _, r in frame.iterrows():
        counts = ("-" if pd.isna(r.get("n_correct")) else
                  f"{int(r['n_correct'])}/{int(r['n_incorrect'])}")  # fmt: skip
        rows.append([f"`{r['cell']}`", *(_text(r[a]) for a in axes), _text(r["seed"]),
                     r["status"], _text(r.get("method")), _loss_text(r), _signature_text(r),
                     fmt(r.get("accuracy")), counts,
                     *(fmt(r.get(f"auroc_{s}")) for s in scores)])  # fmt: skip
    return ["## Cells", "", "One row per cell and evaluated method; the same numbers with "
            "intervals are in sweep.csv / sweep.parquet.", "", markdown_table(headers, rows), ""]


def _int_text(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{int(value):,}"


def _split_text(row: pd.Series) -> str:
    parts = [(p, row.get(f"step_s_{p}")) for p in ("data", "forward", "loss", "backward",
                                                   "optimizer", "comm", "other")]  # fmt: skip
    if all(v is None or pd.isna(v) for _, v in parts):
        return "-"
    return " / ".join(fmt(v) for _, v in parts)


def _compute_section(frame: pd.DataFrame, axes: list[str]) -> list[str]:
    cells = frame.drop_duplicates("cell")
    if "tokens_per_s" not in cells or cells["tokens_per_s"].isna().all():
        return []
    headers = ["cell", *axes, "seed", "workers", "parameters (trainable)", "tokens/s (per worker)",
               "s/step", "data / forward / loss / backward / optimizer / comm / other (s)",
               "MFU", "peak MiB per worker"]  # fmt: skip
    rows = []
    for _, r in cells.iterrows():
        tps, per = r.get("tokens_per_s"), r.get("tokens_per_s_per_worker")
        mfu = r.get("mfu")
        rows.append([f"`{r['cell']}`", *(_text(r[a]) for a in axes), _text(r["seed"]),
                     _int_text(r.get("world_size")),
                     f"{_int_text(r.get('params_total'))} ({_int_text(r.get('params_trainable'))})",
                     "-" if pd.isna(tps) else f"{tps:.1f} ({per:.1f})",
                     fmt(r.get("step_seconds")), _split_text(r),
                     "-" if mfu is None or pd.isna(mfu) else f"{100 * mfu:.2f}%",
                     _text(r.get("peak_memory_mb_per_worker"))])  # fmt: skip
    return ["## Compute", "",
            "Training steps after the first logged interval (warm-up left out); tokens are real "
            "(unpadded) tokens; the step split is rank 0's; MFU = training FLOPs (LoRA-aware: "
            "4 N_frozen + 6 N_trainable + 12 L H d_head T per token) / (seconds x workers x peak "
            "FLOP/s of one device, from `compute.json` of the run). Plots: throughput.png, "
            "memory.png, scaling.png (a worker-count axis), quality.png (evaluated sweeps).", "",
            markdown_table(headers, rows), ""]


def _problems_section(frame: pd.DataFrame, spec: SweepSpec) -> list[str]:
    unfinished = frame[frame["status"] != "done"].drop_duplicates("cell")
    lines = ["## Failed or missing cells", ""]
    if unfinished.empty:
        return lines + ["None: every cell finished.", ""]
    for _, r in unfinished.iterrows():
        reason = f": {r['reason']}" if isinstance(r.get("reason"), str) else ""
        phase = f" in {r['failed_phase']}" if isinstance(r.get("failed_phase"), str) else ""
        status_file = spec.output_dir / r["cell"] / "status.json"
        lines.append(f"- `{r['cell']}` ({r['label']}): {r['status']}{phase}{reason} "
                     f"({status_file})")  # fmt: skip
    return lines + [""]


def _header(spec: SweepSpec, frame: pd.DataFrame) -> list[str]:
    cells = frame.drop_duplicates("cell")
    counts = cells["status"].value_counts().to_dict()
    states = ", ".join(f"{n} {state}" for state, n in counts.items())
    shared = ", ".join(f"`{k}={v}`" for k, v in spec.overrides) or "none"
    seconds = pd.to_numeric(cells["train_s"], errors="coerce").fillna(0) + pd.to_numeric(
        cells["eval_s"], errors="coerce").fillna(0)
    lines = [f"# Sweep `{spec.name}`", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    return lines + [
        f"- spec: `{spec.path}`; base config: `{spec.base}`; shared overrides: {shared}",
        f"- cells: {len(cells)} ({states}); evaluated: {'yes' if spec.evaluate else 'no'}; "
        f"time spent in the last attempts: {format_duration(float(seconds.sum()))}",
        "- written by `uaclm sweep collect`; the full table (one row per cell x method, with "
        "intervals and class counts) is sweep.csv / sweep.parquet",
        "",
    ]


def render(spec: SweepSpec, collected: Collected, study: pd.DataFrame,
           paired: PairedDifferences | None = None) -> str:
    """The text of ``sweep.md``; ``paired``: the differences against the spec's baseline."""
    scores = ordered_scores(collected.scores)
    axes = collected.axis_columns
    n_seeds = len(spec.seeds) if spec.seeds else 1
    lines = [*_header(spec, collected.frame),
             *_study_section(study, axes, scores, n_seeds, spec.evaluate),
             *_paired_section(paired),
             *_cells_section(collected.frame, axes, scores),
             *_compute_section(collected.frame, axes),
             *_problems_section(collected.frame, spec)]  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"
