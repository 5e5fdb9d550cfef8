"""The local backend: the cells one after another, each as ``uaclm train`` then ``uaclm eval``.

Resumable: a finished cell (:meth:`~.layout.CellPaths.finished`) is skipped; a cell trained but
not evaluated only evaluates; a training stopped with a checkpoint (exit 75, or a killed sweep
after a checkpoint) continues with ``--resume``; a training that failed before any complete
checkpoint is set aside (``run.failed-<k>``) and started again. A failed cell is recorded in its
status.json (reason, stderr tail) and the sweep goes on with the next one; rerunning
``sweep run`` retries the failed and missing cells.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from uaclm_dist.exit_codes import EXIT_STOPPED
from uaclm_dist.sweep.cells import Cell, expand_cells, parent_cell
from uaclm_dist.sweep.commands import cell_env, eval_command, train_command
from uaclm_dist.sweep.execute import CellCommand, CommandResult, CommandRunner, run_subprocess
from uaclm_dist.sweep.layout import CellPaths, cell_paths, check_spec_lock, write_spec_lock
from uaclm_dist.sweep.progress import Progress
from uaclm_dist.sweep.spec import SweepSpec
from uaclm_dist.sweep.status import (
    DONE,
    FAILED,
    INTERRUPTED,
    RUNNING,
    SCHEDULER_KEYS,
    now_iso,
    read_status,
    write_status,
)
from uaclm_dist.sweep.validate import CellCheck

__all__ = ["BACKENDS", "run_sweep"]

#: Backends of ``sweep run`` (ray: :mod:`.ray_backend`, slurm: :mod:`.slurm_backend`).
BACKENDS = ("local", "ray", "slurm")
#: stderr lines of a failed command echoed on the console (status.json keeps more)
ECHO_LINES = 5


class CellFailed(Exception):
    """A command of the cell failed; ``str()`` is the reason."""

    def __init__(self, reason: str, phase: str, result: CommandResult | None,
                 command: CellCommand | None):  # fmt: skip
        super().__init__(reason)
        self.phase, self.result, self.command = phase, result, command


def _say(out: TextIO, text: str) -> None:
    print(f"[sweep] {text}", file=out, flush=True)


class _CellRun:
    """One attempt at one cell: runs its missing phases and keeps its status.json current."""

    def __init__(self, spec: SweepSpec, check: CellCheck, runner: CommandRunner,
                 clock: Callable[[], float], out: TextIO,
                 parent: Cell | None = None):  # fmt: skip
        self.spec, self.check, self.runner, self.clock, self.out = spec, check, runner, clock, out
        self.cell = check.cell
        self.paths: CellPaths = cell_paths(spec, self.cell)
        self.parent = parent
        self.parent_paths = cell_paths(spec, parent) if parent is not None else None
        previous = read_status(self.paths)
        self.status: dict[str, Any] = {
            "cell": self.cell.id, "label": self.cell.label, "state": RUNNING, "phase": None,
            "reason": None, "returncode": None, "stderr_tail": [], "stderr_log": None,
            "attempt": int(previous.get("attempt", 0)) + 1, "started": now_iso(),
            "finished": None, "durations_s": {}, "commands": {},
        }  # fmt: skip
        for key in SCHEDULER_KEYS:  # run as a Slurm task / Ray job: keep its name
            if previous.get(key):
                self.status[key] = previous[key]

    def _save(self, **changes: Any) -> None:
        self.status.update(changes)
        write_status(self.paths, self.status)

    def _command(self, phase: str, argv: list[str]) -> CellCommand:
        logs = self.paths.logs_dir
        return CellCommand(self.cell.id, phase, tuple(argv), logs / f"{phase}.stdout.log",
                           logs / f"{phase}.stderr.log", env=cell_env())  # fmt: skip

    def _phase(self, phase: str, argv: list[str], produced: Callable[[], bool],
               missing: str) -> None:  # fmt: skip
        """Run one command; :class:`CellFailed` unless it exits 0 and ``produced()``."""
        command = self._command(phase, argv)
        self.status["commands"][phase] = list(argv)
        self._save(phase=phase)
        _say(self.out, f"  {phase}: logs in {command.stderr_path.parent}")
        start = self.clock()
        result = self.runner(command)
        self.status["durations_s"][phase] = round(self.clock() - start, 3)
        if result.returncode == EXIT_STOPPED:
            raise CellFailed(f"uaclm {phase} stopped with a checkpoint (exit {EXIT_STOPPED}); "
                             "the next sweep run resumes it", phase, result, command)  # fmt: skip
        if result.returncode != 0:
            raise CellFailed(f"uaclm {phase} exited with status {result.returncode}", phase,
                             result, command)  # fmt: skip
        if not produced():
            raise CellFailed(f"uaclm {phase} exited with status 0 but {missing}", phase, result,
                             command)  # fmt: skip

    def _train(self) -> None:
        resume = False
        if self.paths.has_run():
            if self.paths.has_checkpoint():
                resume = True
                _say(self.out, f"  train: resuming {self.paths.run_dir} from its checkpoint")
            else:
                moved = self.paths.set_aside_run()
                self.status["set_aside"] = str(moved)
                _say(self.out, f"  train: earlier attempt without a checkpoint moved to {moved}")
        if self.parent_paths is not None and not self.parent_paths.trained():
            raise CellFailed(f"its parent cell {self.parent.id} has no finished training (run it "
                             "first: `uaclm sweep run` again)", "train", None, None)  # fmt: skip
        argv = train_command(self.spec, self.cell, self.paths, resume=resume,
                             parent=self.parent_paths)  # fmt: skip
        self._phase("train", argv, self.paths.trained,
                    f"{self.paths.summary_file} does not show a finished run")  # fmt: skip

    def _evaluate(self) -> None:
        argv = eval_command(self.spec, self.cell, self.paths, self.check.method_name,
                            self.parent_paths)  # fmt: skip
        self._phase("eval", argv, self.paths.evaluated, f"wrote no {self.paths.metrics_file}")

    def run(self) -> bool:
        """Run the missing phases; True when the cell is finished."""
        self._save()
        try:
            if not self.paths.trained():
                self._train()
            if self.spec.evaluate and not self.paths.evaluated():
                self._evaluate()
        except CellFailed as exc:
            self._fail(exc)
            return False
        except KeyboardInterrupt:
            self._save(state=INTERRUPTED, reason="interrupted (Ctrl-C)", finished=now_iso())
            raise
        self._save(state=DONE, phase=None, finished=now_iso())
        return True

    def _fail(self, exc: CellFailed) -> None:
        tail = exc.result.stderr_tail if exc.result else []
        log = str(exc.command.stderr_path) if exc.command else None
        self._save(state=FAILED, phase=exc.phase, reason=str(exc),
                   returncode=exc.result.returncode if exc.result else None, stderr_tail=tail,
                   stderr_log=log, finished=now_iso())  # fmt: skip
        _say(self.out, f"  FAILED: {exc}")
        for line in tail[-ECHO_LINES:]:
            print(f"    | {line}", file=self.out)
        if log:
            _say(self.out, f"  full stderr: {log}")


def run_sweep(spec: SweepSpec, checks: list[CellCheck], *,
              runner: CommandRunner = run_subprocess,
              clock: Callable[[], float] = time.monotonic,
              out: TextIO | None = None) -> Progress:  # fmt: skip
    """Run the cells of ``checks`` (all valid) in order, one at a time, with ``runner``.

    Args:
        spec: the sweep.
        checks: the cells to run, validated (:func:`~.validate.check_cells`).
        runner: runs one :class:`~.execute.CellCommand` (default: a subprocess).
        clock: seconds, for durations and the ETA.
        out: where progress lines go (default: stdout).

    Returns:
        The final :class:`~.progress.Progress` (``failed`` > 0: some cell failed).

    Raises:
        SweepSpecError: ``output_dir`` holds runs of another base config or shared overrides.
    """
    out = out or sys.stdout
    cells = expand_cells(spec)  # every cell: a two-stage cell's parent may not be in `checks`
    check_spec_lock(spec)
    write_spec_lock(spec)
    progress = Progress(len(checks))
    _say(out, f"{spec.name}: {len(checks)} cell(s) in {spec.output_dir}")
    for i, check in enumerate(checks, 1):
        cell = check.cell
        paths = cell_paths(spec, cell)
        if paths.finished(spec.evaluate):
            progress.done += 1
            if read_status(paths).get("state") != DONE:
                write_status(paths, {**read_status(paths), "cell": cell.id, "label": cell.label,
                                     "state": DONE, "phase": None})  # fmt: skip
            _say(out, f"{i}/{len(checks)} {cell.id}: finished earlier, skipped")
            continue
        _say(out, f"{i}/{len(checks)} {cell.id} ({cell.label})")
        start = clock()
        finished = _CellRun(spec, check, runner, clock, out, parent_cell(cell, cells)).run()
        progress.durations_s.append(clock() - start)
        if finished:
            progress.done += 1
        else:
            progress.failed += 1
        _say(out, progress.line())
    return progress
