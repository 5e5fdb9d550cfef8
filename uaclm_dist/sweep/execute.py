"""Running one cell command: the injectable :data:`CommandRunner` and the subprocess one.

A runner takes a :class:`CellCommand` and returns a :class:`CommandResult`; the local backend
calls it for every command, so tests pass a fake that writes the result files instead.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CellCommand", "CommandResult", "CommandRunner", "run_subprocess", "tail_lines"]

#: stderr lines kept in status.json for a failed command
TAIL_LINES = 20
#: seconds an interrupted command gets to exit by itself before it is killed
INTERRUPT_GRACE_S = 60.0


@dataclass(frozen=True)
class CellCommand:
    """One command of one cell.

    Attributes:
        cell_id: the cell.
        phase: ``"train"`` or ``"eval"``.
        argv: program and arguments (run without a shell).
        stdout_path / stderr_path: where the command's output goes.
        env: its environment (None: the sweep's).
    """

    cell_id: str
    phase: str
    argv: tuple[str, ...]
    stdout_path: Path
    stderr_path: Path
    env: Mapping[str, str] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CommandResult:
    """Exit status and the last lines of stderr (progress-bar redraws collapsed)."""

    returncode: int
    stderr_tail: list[str]


CommandRunner = Callable[[CellCommand], CommandResult]


def tail_lines(path: Path, n: int = TAIL_LINES) -> list[str]:
    """The last ``n`` non-empty lines of a text file; of a line redrawn with carriage returns
    (a progress bar) only its last state. ``[]`` when the file is missing."""
    try:
        with path.open(encoding="utf-8", errors="replace", newline="") as file:  # keep \r
            text = file.read()
    except OSError:
        return []
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return [line for line in lines if line.strip()][-n:]


def run_subprocess(command: CellCommand) -> CommandResult:
    """Run ``command.argv`` to its end, its stdout and stderr into their files (overwritten).

    On Ctrl-C (which the command, in the same process group, receives too) the command gets
    :data:`INTERRUPT_GRACE_S` seconds to stop its workers and exit before it is killed; then the
    KeyboardInterrupt goes on.
    """
    command.stdout_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(command.env) if command.env is not None else None
    with open(command.stdout_path, "w") as out, open(command.stderr_path, "w") as err:
        proc = subprocess.Popen(list(command.argv), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=env)  # fmt: skip
        try:
            returncode = proc.wait()
        except KeyboardInterrupt:
            try:
                proc.wait(timeout=INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    return CommandResult(returncode, tail_lines(command.stderr_path))
