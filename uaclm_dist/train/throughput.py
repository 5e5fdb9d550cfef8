"""Throughput, MFU, step-time split and memory of a training run, from what the workers logged.

At set-up rank 0 writes ``RUN/compute.json`` (:func:`write_compute_setup`): world size, device,
parameter counts (total / trainable, and the GEMM weights of :mod:`uaclm_dist.train.flops`), the
attention shape and the peak FLOP/s per device (:mod:`uaclm_dist.train.peak_flops`). Every
logged row of ``metrics.jsonl`` carries running totals since the run started (kept across
resumes in the checkpoint's run state): ``cum_tokens`` (real tokens, all ranks), ``cum_flops``
(training FLOPs of those tokens), ``cum_seconds`` (wall time inside optimizer steps) and
``cum_<phase>_s`` (rank 0's phases, :mod:`uaclm_dist.train.step_timing`), ``cum_worker_seconds``
(seconds x workers) and ``cum_peak_flop`` (seconds x workers x peak FLOP/s): per-worker rates and
MFU divide by these, so a window across a resume on another world size stays right.

:func:`throughput_summary` takes the difference between the first and the last logged row, so
the first ``logging.log_every_steps`` steps (warm-up, allocator growth) are left out; with one
logged row the totals from step 0 are used and ``includes_warmup`` says so. Time spent outside
optimizer steps (checkpoints, the probe, logging) is not in these numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from uaclm_dist.train.step_timing import PHASES

__all__ = ["COMPUTE_FILE", "FLOPS_FORMULA", "read_compute_setup", "throughput_summary",
           "write_compute_setup"]  # fmt: skip

COMPUTE_FILE = "compute.json"
FLOPS_FORMULA = ("4 N_frozen + 6 N_trainable + 12 L H d_head T per real token (T: its "
                 "sequence's length); uaclm_dist/train/flops.py")  # fmt: skip


def write_compute_setup(out_dir: Path, setup: dict[str, Any]) -> None:
    (out_dir / COMPUTE_FILE).write_text(json.dumps({**setup, "flops_formula": FLOPS_FORMULA},
                                                   indent=2) + "\n")  # fmt: skip


def read_compute_setup(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / COMPUTE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _peak_memory_per_worker(rows: list[dict]) -> list[float] | None:
    lists = [r["peak_memory_mb_per_worker"] for r in rows if r.get("peak_memory_mb_per_worker")]
    if not lists:
        return None
    width = max(len(x) for x in lists)
    return [max(x[i] for x in lists if i < len(x)) for i in range(width)]


def throughput_summary(rows: list[dict], setup: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's throughput numbers (module docstring); None without totals or set-up."""
    rows = [r for r in rows if r.get("cum_tokens") is not None]
    if not rows or setup is None:
        return None
    last = rows[-1]
    includes_warmup = len(rows) < 2
    first = {"step": 0} if includes_warmup else rows[0]

    def delta(key: str) -> float:
        return float(last.get(key) or 0.0) - float(first.get(key) or 0.0)

    steps = last["step"] - first["step"]
    seconds, tokens, flops = delta("cum_seconds"), delta("cum_tokens"), delta("cum_flops")
    world = int(setup["world_size"])
    peak = setup.get("peak_flops_per_device")
    # seconds x workers and seconds x workers x peak over the window (a resume on another
    # world size changes both per step); rows without them: this run's world and peak
    worker_seconds = delta("cum_worker_seconds") or seconds * world
    peak_flop = delta("cum_peak_flop") or (seconds * world * peak if peak else 0.0)
    # phases are timed on logging steps only (cum_timed_steps); older rows timed every step
    timed = delta("cum_timed_steps") or steps
    phases = {p: delta(f"cum_{p}_s") / timed for p in PHASES} if timed else {}
    step_s = seconds / steps if steps else None
    if step_s is not None:
        phases["other"] = max(0.0, step_s - sum(phases.values()))
    per_worker = _peak_memory_per_worker(rows)
    return {
        "steps": [first["step"], last["step"]],
        "includes_warmup": includes_warmup,
        "world_size": world,
        "parameters": setup.get("parameters"),
        "tokens_seen": last["cum_tokens"],
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        "tokens_per_s_per_worker": tokens / worker_seconds if worker_seconds > 0 else None,
        "step_seconds": step_s,
        "phase_seconds": phases or None,
        "flops_per_token": flops / tokens if tokens > 0 else None,
        "peak_flops_per_device": peak,
        "peak_flops_source": setup.get("peak_flops_source"),
        "mfu": flops / peak_flop if peak_flop > 0 else None,
        "peak_memory_mb_per_worker": per_worker,
        "peak_memory_mb_max": max(per_worker) if per_worker else None,
        "device": setup.get("device"),
    }
