"""Where and on what a measurement ran: the commit (``+dirty`` with uncommitted changes to the
paths the section depends on), the UTC date and the machine, recorded before it starts."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["PROVENANCE_FILE", "git", "machine", "read_provenance", "record_provenance"]

PROVENANCE_FILE = "provenance.json"


def git(repo: Path, *args: str) -> str:
    """``git -C repo args`` stdout, stripped; :class:`subprocess.CalledProcessError` on failure."""
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()  # fmt: skip


def _commit(repo: Path, paths: tuple[str, ...]) -> str:
    """HEAD, ``+dirty`` when a tracked file under ``paths`` differs from it (a results page the
    previous section just wrote does not count)."""
    head = git(repo, "rev-parse", "--short=12", "HEAD")
    dirty = git(repo, "diff", "--name-only", "HEAD", "--", *paths) if paths else ""
    return head + ("+dirty" if dirty else "")


def machine() -> str:
    """E.g. ``"x86_64, 2 cores, Intel(R) Xeon(R) ..., no GPU"`` (GPUs by name when torch sees
    them)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpus = ", ".join(
                torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
            )
    except ImportError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu}, {gpus}".replace("|", "/")


def record_provenance(
    out: Path, repo: Path, command: str, paths: tuple[str, ...] = (".",)
) -> dict[str, str]:
    """Write ``out/provenance.json`` (command, commit, date, machine) and return it; ``paths``:
    what the measurement depends on (the dirty check)."""
    out.mkdir(parents=True, exist_ok=True)
    fields = {
        "command": command,
        "commit": _commit(repo, paths),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
    }
    (out / PROVENANCE_FILE).write_text(json.dumps(fields, indent=2) + "\n")
    return fields


def read_provenance(out: Path) -> dict[str, str]:
    """``out/provenance.json``; :class:`FileNotFoundError` naming it when the folder has none (a
    table is written only from a measurement that recorded where it ran)."""
    path = out / PROVENANCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the folder was not measured by "
                                "`python -m uaclm_dist.results measure`")  # fmt: skip
    return json.loads(path.read_text())
