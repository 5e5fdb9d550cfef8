"""Watching cells that run elsewhere (Slurm array tasks, Ray jobs) until each has settled.

Each remote cell runs ``uaclm sweep run SPEC --backend local --only ID``: the local backend
inside the task or job writes the cell's status.json and results exactly as on this machine,
so finished cells are skipped and failed ones recorded the same way. This module only reads
those files and asks the scheduler whether the cell's task / job is still queued or running:

- results complete: ``done``;
- status.json says ``failed``: ``failed`` (its reason is the local backend's);
- the task / job is gone but neither: ``failed``, recorded here with the scheduler's word
  (e.g. cancelled, out of memory, node lost) and the path of the task's console log.

A progress line (done / failed / running / queued, ETA from the pace so far) is printed
whenever a count changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from uaclm_dist.sweep.layout import CellPaths, cell_paths
from uaclm_dist.sweep.progress import Progress, format_duration
from uaclm_dist.sweep.spec import SweepSpec
from uaclm_dist.sweep.status import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    cell_state,
    now_iso,
    read_status,
    write_status,
)
from uaclm_dist.sweep.validate import CellCheck

__all__ = ["RemoteCell", "mark_queued", "recorded_in_flight", "watch_cells"]


@dataclass
class RemoteCell:
    """One cell handed to a scheduler.

    Attributes:
        check: the cell and its config.
        paths: its folders.
        handle: the scheduler's name for its task / job (``"1234_0"``, a submission id).
        log: the task's / job's console log (None: the scheduler keeps it).
        settled: ``done`` / ``failed`` once known.
    """

    check: CellCheck
    paths: CellPaths
    handle: str
    log: Path | None = None
    settled: str | None = field(default=None, compare=False)


def mark_queued(cell: RemoteCell, key: str) -> dict:
    """status.json of ``cell``: queued as its task / job (``key``: ``slurm_task`` or
    ``ray_job``), so that a rerun watches it instead of submitting it again. Returns the
    status it had before."""
    before = read_status(cell.paths)
    write_status(cell.paths, {**before, "cell": cell.check.cell.id, "label": cell.check.cell.label,
                              "state": QUEUED, key: cell.handle, "reason": None})  # fmt: skip
    return before


def recorded_in_flight(spec: SweepSpec, checks: list[CellCheck],
                       key: str) -> list[tuple[CellCheck, CellPaths, str]]:  # fmt: skip
    """The cells whose status.json names a task / job (``key``) and says queued or running,
    with that name: submitted by an earlier ``sweep run``, perhaps still on the scheduler."""
    found = []
    for check in checks:
        paths = cell_paths(spec, check.cell)
        status = read_status(paths)
        if status.get(key) and status.get("state") in (QUEUED, RUNNING):
            found.append((check, paths, status[key]))
    return found


def _record_lost(cell: RemoteCell, why: str) -> None:
    status = read_status(cell.paths)
    where = f"; its console: {cell.log}" if cell.log else ""
    write_status(cell.paths, {
        **status, "cell": cell.check.cell.id, "label": cell.check.cell.label, "state": FAILED,
        "reason": f"{cell.handle} ended without finishing the cell ({why}){where}",
        "finished": now_iso(),
    })  # fmt: skip


def _settle(spec: SweepSpec, cell: RemoteCell, active: bool,
            why_gone: Callable[[RemoteCell], str]) -> None:  # fmt: skip
    if active:  # even with complete outputs: the task still writes its final status.json
        return
    state = cell_state(cell.paths, spec.evaluate)
    if state == DONE:
        cell.settled = DONE
    elif state == FAILED:
        cell.settled = FAILED
    else:  # gone, and the local backend wrote no verdict (killed, cancelled, never started)
        _record_lost(cell, why_gone(cell))
        cell.settled = FAILED


def watch_cells(spec: SweepSpec, cells: list[RemoteCell], *,
                active: Callable[[list[RemoteCell]], set[str]],
                why_gone: Callable[[RemoteCell], str],
                out: TextIO, poll_s: float = 5.0,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep,
                on_settled: Callable[[RemoteCell], None] | None = None) -> Progress:  # fmt: skip
    """Poll until every cell has settled; returns the final counts.

    Args:
        active: the handles of the given unsettled cells whose task / job is still queued or
            running (one scheduler query per poll).
        why_gone: the scheduler's account of a cell whose task / job ended without results.
        poll_s: seconds between polls.
        on_settled: called once per cell as it settles (the Ray backend submits the next).
    """
    progress = Progress(len(cells))
    start, last_line = clock(), None
    while True:
        waiting = [c for c in cells if c.settled is None]
        still = active(waiting) if waiting else set()
        for cell in waiting:
            _settle(spec, cell, cell.handle in still, why_gone)
            if cell.settled is not None and on_settled is not None:
                on_settled(cell)
        progress.done = sum(c.settled == DONE for c in cells)
        progress.failed = sum(c.settled == FAILED for c in cells)
        running = sum(c.settled is None and read_status(c.paths).get("state") == RUNNING
                      for c in cells)  # fmt: skip
        settled = progress.done + progress.failed
        eta = (clock() - start) / settled * progress.remaining if settled else None
        line = (f"{progress.done}/{progress.total} done, {progress.failed} failed, {running} "
                f"running, {progress.remaining - running} queued")  # fmt: skip
        if line != last_line:
            eta_text = f"; ETA {format_duration(eta)}" if progress.remaining else ""
            print(f"[sweep] {line}{eta_text} ({format_duration(clock() - start)} so far)",
                  file=out, flush=True)  # fmt: skip
            last_line = line
        if progress.remaining == 0:
            progress.durations_s = [clock() - start]
            return progress
        sleep(poll_s)
