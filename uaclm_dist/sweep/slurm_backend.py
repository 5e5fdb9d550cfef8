"""``uaclm sweep run SPEC --backend slurm``: the unfinished cells as Slurm job arrays.

Cells that need the same resources share one array (a Slurm array has one resource request);
each task runs one cell on one node with the local backend::

    python -m uaclm_dist.cli sweep run SPEC --backend local --only <cell id>

so its status.json, resume from a checkpoint and failure record are those of a local run. A
task asks for ``--cpus-per-task`` = the larger of the cell's training CPUs (Ray Train workers x
``distributed.cpus_per_worker``) and evaluation CPUs (generation actors x
``eval.cpus_per_actor``), rounded up, and ``--gres=gpu:N`` likewise; ``--slurm-arg`` adds
sbatch options (partition, account, time, memory). The scripts and the tasks' console logs are
in ``OUTPUT_DIR/slurm/`` (``array-<k>.sh``, ``<job>_<task>.out``). A cell runs on one node; a
cell that needs several nodes belongs on a Ray cluster (``--backend ray``).

``sweep run`` then waits (:mod:`.remote`), printing progress, until every task has ended;
``--no-wait`` returns after submitting (``uaclm sweep plan`` shows the states, ``sweep run``
again picks up what is left). The submitting environment is exported to the tasks (sbatch's
default), with this repository first on ``PYTHONPATH``.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from uaclm_dist.config import REPO_ROOT, ConfigError
from uaclm_dist.sweep.layout import cell_paths
from uaclm_dist.sweep.remote import RemoteCell, mark_queued, recorded_in_flight, watch_cells
from uaclm_dist.sweep.spec import SweepSpec
from uaclm_dist.sweep.validate import CellCheck

__all__ = ["SlurmQueue", "array_script", "group_by_resources", "run_on_slurm", "submit_arrays"]

Run = Callable[..., subprocess.CompletedProcess]


def task_resources(check: CellCheck, evaluate: bool) -> tuple[int, int]:
    """``(cpus, gpus)`` one task of this cell asks Slurm for."""
    needs = [check.train_resources] + ([check.eval_resources] if evaluate else [])
    cpus = max(math.ceil(r.cpus) for r in needs)
    gpus = max(math.ceil(r.gpus) for r in needs)
    return max(1, cpus), gpus


def group_by_resources(checks: list[CellCheck],
                       evaluate: bool) -> dict[tuple[int, int], list[CellCheck]]:  # fmt: skip
    """Cells by the ``(cpus, gpus)`` of their task, in the order of the cells."""
    groups: dict[tuple[int, int], list[CellCheck]] = {}
    for check in checks:
        groups.setdefault(task_resources(check, evaluate), []).append(check)
    return groups


def array_script(spec: SweepSpec, checks: list[CellCheck], cpus: int, gpus: int,
                 log_dir: Path) -> str:  # fmt: skip
    """The sbatch script of one array: task i runs cell ``checks[i]``."""
    ids = " ".join(shlex.quote(c.cell.id) for c in checks)
    pythonpath = os.pathsep.join(dict.fromkeys(
        [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    gres = [f"#SBATCH --gres=gpu:{gpus}"] if gpus else []
    lines = [
        "#!/usr/bin/env bash",
        f"# uaclm sweep {spec.name}: {len(checks)} cell(s), one per array task, each on one "
        "node with the local backend (written by `uaclm sweep run --backend slurm`).",
        f"#SBATCH --job-name=uaclm-sweep-{spec.name}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={cpus}",
        *gres,
        f"#SBATCH --array=0-{len(checks) - 1}",
        f"#SBATCH --output={log_dir}/%A_%a.out",
        f"#SBATCH --chdir={Path.cwd()}",
        "set -euo pipefail",
        f"ids=({ids})",
        'id="${ids[$SLURM_ARRAY_TASK_ID]}"',
        f"export PYTHONPATH={shlex.quote(pythonpath)}",
        f"exec {shlex.quote(sys.executable)} -m uaclm_dist.cli sweep run "
        f"{shlex.quote(str(spec.path))} --backend local --only \"$id\"",
    ]
    return "\n".join(lines) + "\n"


def _sbatch(script: Path, extra: list[str], run: Run) -> str:
    """Submit ``script`` held (``--hold``): its tasks start only once released."""
    proc = run(["sbatch", "--parsable", "--hold", *extra, str(script)], capture_output=True,
               text=True)  # fmt: skip
    if proc.returncode != 0:
        raise ConfigError(f"sbatch refused {script} (exit {proc.returncode}): "
                          f"{proc.stderr.strip() or proc.stdout.strip()}")  # fmt: skip
    return proc.stdout.strip().split(";")[0]


def _release(job: str, run: Run) -> None:
    proc = run(["scontrol", "release", job], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"scontrol release {job} failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip()}; the array is held: release or scancel it")


def submit_arrays(spec: SweepSpec, checks: list[CellCheck], *, extra: list[str],
                  out: TextIO, run: Run = subprocess.run) -> list[RemoteCell]:  # fmt: skip
    """Write and submit one array per resource group; the cells with their task handles.

    Each array is submitted held, its cells are marked queued, then it is released: a task
    never starts (and writes its own status) before its cell records which task it is, and a
    refused ``sbatch`` of a later group leaves the earlier groups recorded, never submitted
    twice by a rerun.
    """
    log_dir = (spec.output_dir / "slurm").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    cells: list[RemoteCell] = []
    for k, ((cpus, gpus), group) in enumerate(group_by_resources(checks, spec.evaluate).items()):
        script = log_dir / f"array-{k}.sh"
        script.write_text(array_script(spec, group, cpus, gpus, log_dir))
        job = _sbatch(script, extra, run)
        submitted = [RemoteCell(check, cell_paths(spec, check.cell), f"{job}_{i}",
                                log_dir / f"{job}_{i}.out") for i, check in enumerate(group)]
        for cell in submitted:
            mark_queued(cell, "slurm_task")
        _release(job, run)
        print(f"[sweep] submitted array {job}: {len(group)} cell(s), {cpus} CPU(s)"
              f"{f' and {gpus} GPU(s)' if gpus else ''} per task ({script})", file=out,
              flush=True)  # fmt: skip
        cells += submitted
    return cells


#: job states after which a task does no more work
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                             "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"})  # fmt: skip


class SlurmQueue:
    """Asks ``squeue`` which tasks are still queued or running; remembers the last state it
    saw of each (``-t all``: a task that ended is listed with its final state until Slurm
    forgets it, ``MinJobAge``), the account of a task that ended without finishing its cell.

    A failing ``squeue`` (controller busy or restarting) counts the tasks as still active, up
    to :attr:`MAX_FAILURES` polls in a row."""

    MAX_FAILURES = 12

    def __init__(self, run: Run = subprocess.run):
        self.run = run
        self.last_state: dict[str, str] = {}
        self.failures = 0

    def active(self, cells: list[RemoteCell]) -> set[str]:
        jobs = sorted({c.handle.split("_")[0] for c in cells})
        proc = self.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(jobs), "-o", "%i %T"],
                        capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            # squeue forgets jobs some time after they end ("Invalid job id"): none is active
            if "invalid job id" in (proc.stderr or "").lower():
                return set()
            self.failures += 1
            if self.failures >= self.MAX_FAILURES:
                raise RuntimeError(f"squeue failed {self.failures} times in a row (exit "
                                   f"{proc.returncode}): {proc.stderr.strip()}")  # fmt: skip
            return {c.handle for c in cells}
        self.failures = 0
        active = set()
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue
            handle, state = parts
            self.last_state[handle] = state
            if state not in TERMINAL_STATES:
                active.add(handle)
        return active

    def why_gone(self, cell: RemoteCell) -> str:
        state = self.last_state.get(cell.handle)
        return f"Slurm state {state}" if state else "no longer in squeue"


def _still_queued(spec: SweepSpec, checks: list[CellCheck], queue: SlurmQueue,
                  out: TextIO) -> list[RemoteCell]:  # fmt: skip
    """Cells submitted by an earlier ``sweep run --backend slurm`` whose task is still queued
    or running (status.json ``slurm_task``): watched again, not submitted twice."""
    earlier = [RemoteCell(check, paths, handle,
                          (spec.output_dir / "slurm" / f"{handle}.out").resolve())
               for check, paths, handle in recorded_in_flight(spec, checks, "slurm_task")]
    if not earlier:
        return []
    active = queue.active(earlier)
    kept = [c for c in earlier if c.handle in active]
    for cell in kept:
        print(f"[sweep] {cell.check.cell.id}: still in Slurm as task {cell.handle}, not "
              "submitted again", file=out)  # fmt: skip
    return kept


def run_on_slurm(spec: SweepSpec, checks: list[CellCheck], *, extra: list[str], wait: bool,
                 out: TextIO, poll_s: float = 5.0):  # fmt: skip
    """Submit the cells and (``wait``) watch them; the final progress, or None without wait."""
    if shutil.which("sbatch") is None:
        raise ConfigError("--backend slurm: `sbatch` is not on PATH (run on a Slurm login node, "
                          "or use --backend local / ray)")  # fmt: skip
    queue = SlurmQueue()
    earlier = _still_queued(spec, checks, queue, out)
    skip = {c.check.cell.id for c in earlier}
    cells = earlier + (submit_arrays(spec, [c for c in checks if c.cell.id not in skip],
                                     extra=extra, out=out) if len(skip) < len(checks) else [])
    if not wait:
        print("[sweep] not waiting (--no-wait): `uaclm sweep plan SPEC` shows the cells' "
              "states; `squeue` the tasks", file=out)  # fmt: skip
        return None
    return watch_cells(spec, cells, active=queue.active, why_gone=queue.why_gone, out=out,
                       poll_s=poll_s)
