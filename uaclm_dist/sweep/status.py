"""``<cell>/status.json``: what happened to a cell, for people and for ``sweep plan`` / ``collect``.

    {
      "cell": "clm-all-s0-7c0d5b2e",
      "label": "objective.name=clm,data.loss_on=all,seed=0",
      "state": "done" | "failed" | "queued" | "running" | "interrupted",
      "slurm_task": "1234_0",                 # --backend slurm: the array task of the cell
      "ray_job": "uaclm-sweep-...",           # --backend ray: the cell's job (submission id)
      "phase": "train" | "eval" | null,      # the phase running, or the one that failed
      "reason": "uaclm train exited with status 1" | null,
      "returncode": 1 | null,
      "stderr_tail": ["...", ...],            # last lines of the failed command's stderr
      "stderr_log": "<cell>/logs/train.stderr.log" | null,
      "attempt": 2,                           # runs of this cell by `sweep run` so far
      "started": "2025-01-01T12:00:00+00:00", "finished": "...",
      "durations_s": {"train": 812.4, "eval": 301.0},   # seconds, this attempt
      "commands": {"train": [argv...], "eval": [argv...]}
    }

The state a cell shows (:func:`cell_state`) trusts the result files first: a cell whose outputs
are complete is ``done`` whatever status.json says; otherwise status.json's state, else
``pending``. A ``running`` cell whose sweep was killed stays ``running`` until the next run.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from typing import Any

from uaclm_dist.sweep.layout import CellPaths, read_json

__all__ = ["DONE", "FAILED", "INTERRUPTED", "PENDING", "QUEUED", "RUNNING", "SCHEDULER_KEYS",
           "cell_state", "now_iso", "read_status", "write_status"]  # fmt: skip

PENDING = "pending"
QUEUED = "queued"  # handed to a scheduler (Slurm, Ray Jobs), not started yet
#: status.json keys naming the scheduler's task / job of a cell (kept by the cell's own run)
SCHEDULER_KEYS = ("slurm_task", "ray_job")
RUNNING = "running"
DONE = "done"
FAILED = "failed"
INTERRUPTED = "interrupted"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_status(paths: CellPaths) -> dict[str, Any]:
    """The cell's status.json (``{}`` when there is none or it cannot be read)."""
    status = read_json(paths.status_file)
    return status if isinstance(status, dict) else {}


def write_status(paths: CellPaths, status: dict[str, Any]) -> None:
    """Write status.json atomically (a temporary file renamed over it)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    # unique: a sweep driver and a Slurm task may write the same cell's status at once
    tmp = paths.status_file.with_name(f".status.{socket.gethostname()}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, indent=2, default=str) + "\n")
    os.replace(tmp, paths.status_file)


def cell_state(paths: CellPaths, evaluate: bool) -> str:
    """``done`` when the outputs are complete, else status.json's state, else ``pending``."""
    if paths.finished(evaluate):
        return DONE
    state = read_status(paths).get("state")
    return PENDING if state in (None, DONE) else state
