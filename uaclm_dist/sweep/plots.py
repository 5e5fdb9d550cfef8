"""The sweep's plots (PNG, next to sweep.md): what changes with model size and cluster size.

- ``throughput.png``: training tokens/s (all workers) and MFU against total parameters;
- ``memory.png``: peak memory of the busiest worker against total parameters;
- ``scaling.png`` (a sweep over ``distributed.num_workers``): scaling efficiency
  ``tokens/s(W) / (W / W0 * tokens/s(W0))`` against workers W (W0: the fewest), one line per
  setting; *strong* where the global batch stays the same as W grows, *weak* where it grows
  with W (the legend says which);
- ``quality.png`` (an evaluating sweep): accuracy and each score's hallucination AUROC with
  their 95% intervals against total parameters, one line per method / objective, with the
  class counts of the smallest cell beside each point.

A *series* (one line) is one combination of the axis values other than the model's own keys
(``model.*``: those are what moves along the x axis), the keys that change only with the model
(zipped with it, e.g. each model's prompt template) and, for ``scaling.png``, the worker count.
Over seeds a point is the mean; its bar spans the lowest low to the highest high of the seeds'
intervals. Each plot is written only when the table has what it needs; the function returns
the paths written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from uaclm_dist.evaluate.scores import SCORES
from uaclm_dist.sweep.collect import Collected

__all__ = ["WORKERS_KEY", "write_plots"]

WORKERS_KEY = "distributed.num_workers"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
MARKERS = "osD^v<>"


def _series_keys(collected: Collected, frame: pd.DataFrame,
                 without: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    """The axis keys that tell the lines of ``frame`` apart: not the model's, not ``without``,
    and not one with a single value per model (it moves along the x axis with the model)."""
    model_keys = [k for k in collected.axis_columns if k.startswith("model.") and k in frame]
    keys = []
    for k in collected.axis_columns:
        if k.startswith("model.") or k in without or k not in frame:
            continue
        if model_keys and frame.groupby(model_keys, dropna=False)[k].nunique(
                dropna=False).max() <= 1:  # fmt: skip
            continue
        keys.append(k)
    return keys


def _label(keys: list[str], values: tuple) -> str:
    if not keys:
        return "all cells"
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))


def _groups(frame: pd.DataFrame, keys: list[str]):
    if not keys:
        yield (), frame
        return
    for values, group in frame.groupby(keys, dropna=False, sort=False):
        yield (values if isinstance(values, tuple) else (values,)), group


def _trained_cells(collected: Collected) -> pd.DataFrame:
    frame = collected.frame.drop_duplicates("cell")
    if "params_total" not in frame:
        return frame.iloc[0:0]
    return frame[pd.to_numeric(frame["params_total"], errors="coerce").notna()]


def _by_size(group: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean of ``column`` per total-parameter count (over seeds), sorted by size."""
    values = group.assign(_y=pd.to_numeric(group[column], errors="coerce"))
    return values.groupby("params_total", sort=True)["_y"].mean().dropna().reset_index()


def _params_label(n: float, _pos=None) -> str:
    """``135M``, ``1.5B``: a parameter count for a tick."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


#: at most this many sizes get a tick each (more: log-scale decades)
MAX_SIZE_TICKS = 8


def _size_axis(ax, ylabel: str, sizes, log_y: bool = False) -> None:
    """Log x axis of total parameters, ticked at the sizes of the cells (``135M``, ``273M``)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    sizes = sorted({float(x) for x in pd.to_numeric(pd.Series(sizes), errors="coerce").dropna()})
    if 0 < len(sizes) <= MAX_SIZE_TICKS:
        ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_major_formatter(FuncFormatter(_params_label))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if log_y:
        ax.set_yscale("log")
    ax.set(xlabel="total parameters", ylabel=ylabel)
    ax.grid(alpha=0.3)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def plot_throughput(collected: Collected, path: Path) -> Path | None:
    cells = _trained_cells(collected)
    if cells.empty:
        return None
    keys = _series_keys(collected, cells)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_tps, ax_mfu = fig.subplots(1, 2)
    fig.suptitle("Training throughput vs model size")
    for i, (values, group) in enumerate(_groups(cells, keys)):
        style = {"color": COLORS[i % len(COLORS)], "marker": MARKERS[i % len(MARKERS)],
                 "label": _label(keys, values)}  # fmt: skip
        tps = _by_size(group, "tokens_per_s")
        ax_tps.plot(tps["params_total"], tps["_y"], **style)
        mfu = _by_size(group, "mfu")
        ax_mfu.plot(mfu["params_total"], 100 * mfu["_y"], **style)
    _size_axis(ax_tps, "tokens / s (all workers)", cells["params_total"], log_y=True)
    _size_axis(ax_mfu, "MFU (%)", cells["params_total"])
    ax_tps.legend(fontsize=8)
    return _save(fig, path)


def plot_memory(collected: Collected, path: Path) -> Path | None:
    cells = _trained_cells(collected)
    if cells.empty or cells["peak_memory_mb_max"].isna().all():
        return None
    keys = _series_keys(collected, cells)
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    ax.set_title("Peak memory of the busiest worker")
    for i, (values, group) in enumerate(_groups(cells, keys)):
        mem = _by_size(group, "peak_memory_mb_max")
        ax.plot(mem["params_total"], mem["_y"], color=COLORS[i % len(COLORS)],
                marker=MARKERS[i % len(MARKERS)], label=_label(keys, values))  # fmt: skip
    _size_axis(ax, "peak memory (MiB)", cells["params_total"])
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_scaling(collected: Collected, path: Path) -> Path | None:
    cells = _trained_cells(collected)
    if WORKERS_KEY not in collected.axis_columns or cells[WORKERS_KEY].nunique() < 2:
        return None
    keys = [*_series_keys(collected, cells, without=(WORKERS_KEY,)), "params_total"]
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    ax.set_title("Scaling efficiency (1 = linear)")
    for i, (values, group) in enumerate(_groups(cells, keys)):
        per_w = (group.assign(_t=pd.to_numeric(group["tokens_per_s"], errors="coerce"))
                 .groupby(WORKERS_KEY, sort=True)
                 .agg(tps=("_t", "mean"), batch=("global_batch", "first")).dropna()
                 .reset_index())  # fmt: skip
        if len(per_w) < 2:
            continue
        w0, t0, b0 = per_w.iloc[0][[WORKERS_KEY, "tps", "batch"]]
        efficiency = per_w["tps"] / (per_w[WORKERS_KEY] / w0 * t0)
        kind = "strong" if (per_w["batch"] == b0).all() else "weak"
        ax.plot(per_w[WORKERS_KEY], efficiency, color=COLORS[i % len(COLORS)],
                marker=MARKERS[i % len(MARKERS)],
                label=f"{_label(keys[:-1], values[:-1])}, {values[-1]:,.0f} params ({kind})")
    ax.axhline(1.0, ls=":", color="grey")
    ax.set(xlabel="workers", ylabel="efficiency", ylim=(0, None))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _quality_points(group: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per size: mean over seeds, lowest low, highest high, smallest class counts."""
    rows = []
    for size, at in group.groupby("params_total", sort=True):
        value = pd.to_numeric(at[column], errors="coerce")
        if value.isna().all():
            continue
        low = pd.to_numeric(at.get(f"{column}_low"), errors="coerce")
        high = pd.to_numeric(at.get(f"{column}_high"), errors="coerce")
        counts = [pd.to_numeric(at[c], errors="coerce").min() for c in ("n_correct",
                                                                           "n_incorrect")]
        rows.append({"size": size, "value": value.mean(), "low": low.min(), "high": high.max(),
                     "counts": "/".join("?" if pd.isna(c) else str(int(c)) for c in counts)})
    return pd.DataFrame(rows)


def plot_quality(collected: Collected, path: Path) -> Path | None:
    frame = collected.frame
    if "params_total" not in frame or "accuracy" not in frame:
        return None
    rows = frame[frame["method"].notna() & pd.to_numeric(frame["params_total"],
                                                          errors="coerce").notna()]  # fmt: skip
    if rows.empty:
        return None
    keys = [*_series_keys(collected, rows), "method"]
    panels = [("accuracy", "accuracy")] + [
        (f"auroc_{s}", f"AUROC: {SCORES.get(s).label if s in SCORES else s}")
        for s in collected.scores if f"auroc_{s}" in rows]  # fmt: skip
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.8 * ncols, 3.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    fig.suptitle("Quality vs model size (95% intervals; n correct/incorrect of the smallest cell)")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, (column, title) in zip(axes, panels, strict=False):
        for i, (values, group) in enumerate(_groups(rows, keys)):
            points = _quality_points(group, column)
            if points.empty:
                continue
            low = np.clip(points["value"] - points["low"], 0, None).fillna(0)
            high = np.clip(points["high"] - points["value"], 0, None).fillna(0)
            ax.errorbar(points["size"], points["value"], yerr=[low, high], capsize=3,
                        color=COLORS[i % len(COLORS)], marker=MARKERS[i % len(MARKERS)],
                        label=_label(keys, values))  # fmt: skip
            for _, p in points.iterrows():
                ax.annotate(p["counts"], (p["size"], p["value"]),
                            fontsize=6, xytext=(3, 3), textcoords="offset points")  # fmt: skip
        if column.startswith("auroc"):
            ax.axhline(0.5, ls=":", color="grey")
        ax.set_title(title)
        _size_axis(ax, title.split(":")[0], rows["params_total"])
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def write_plots(collected: Collected, out_dir: Path) -> list[Path]:
    """Every plot the table supports, as PNGs in ``out_dir``; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = ((plot_throughput, "throughput.png"), (plot_memory, "memory.png"),
             (plot_scaling, "scaling.png"), (plot_quality, "quality.png"))  # fmt: skip
    written = [plot(collected, out_dir / name) for plot, name in plots]
    return [p for p in written if p is not None]
