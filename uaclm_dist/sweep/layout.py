"""The sweep folder: one folder per cell, what counts as finished, and the spec it was run with.

    OUTPUT_DIR/spec.json                 base config and shared overrides of the folder's runs
    OUTPUT_DIR/<cell id>/run/            logging.output_dir of the cell's training
    OUTPUT_DIR/<cell id>/run.failed-<k>/ an earlier attempt without a checkpoint, set aside
    OUTPUT_DIR/<cell id>/eval/           uaclm eval --out
    OUTPUT_DIR/<cell id>/logs/           <phase>.stdout.log / <phase>.stderr.log per command
    OUTPUT_DIR/<cell id>/status.json     see :mod:`.status`

A cell is *trained* when ``run/summary.json`` says ``"stopped": false`` and *evaluated* when
``eval/metrics.json`` exists; it is finished when trained and (if the spec evaluates) evaluated.
Nothing here imports torch: checkpoints are checked by the torch-free
:mod:`uaclm_dist.train.run_state`, the same code training resumes with.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uaclm_dist.config import REPO_ROOT
from uaclm_dist.sweep.cells import Cell
from uaclm_dist.sweep.spec import SweepSpec, SweepSpecError
from uaclm_dist.train.manifest import set_aside
from uaclm_dist.train.run_state import latest_checkpoint

__all__ = ["CellPaths", "cell_paths", "check_spec_lock", "write_spec_lock"]

SPEC_LOCK = "spec.json"


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None when it is missing or unreadable (e.g. cut off mid-write)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


@dataclass(frozen=True)
class CellPaths:
    """The files of one cell under ``root`` (``OUTPUT_DIR/<cell id>``)."""

    root: Path

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    @property
    def summary_file(self) -> Path:
        return self.run_dir / "summary.json"

    @property
    def run_info_file(self) -> Path:
        return self.run_dir / "run_info.json"

    @property
    def metrics_file(self) -> Path:
        return self.eval_dir / "metrics.json"

    def trained(self) -> bool:
        """Training ran to its end (``summary.json`` with ``"stopped": false``)."""
        summary = read_json(self.summary_file)
        return isinstance(summary, dict) and summary.get("stopped") is False

    def evaluated(self) -> bool:
        return self.metrics_file.is_file()

    def finished(self, evaluate: bool) -> bool:
        return self.trained() and (self.evaluated() or not evaluate)

    def has_run(self) -> bool:
        """A training started here (``run_info.json``): ``uaclm train`` will not start another."""
        return self.run_info_file.is_file()

    def has_checkpoint(self) -> bool:
        """A complete checkpoint to resume from (:func:`uaclm_dist.train.run_state.is_complete`)."""
        return latest_checkpoint(self.run_dir / "ray" / "train", verify_hashes=False,
                                 warn=lambda _line: None) is not None

    def set_aside_run(self) -> Path:
        """Rename ``run/`` (a failed start with nothing to resume) to ``run.failed-<k>``, k the
        first free number; returns the new path. Nothing is deleted."""
        return set_aside(self.run_dir, lambda k: self.root / f"run.failed-{k}")


def cell_paths(spec: SweepSpec, cell: Cell) -> CellPaths:
    return CellPaths(spec.output_dir / cell.id)


# -------------------------------------------------------------------------------- spec lock


def _base_key(path: str | Path) -> str:
    """The base config as the lock records it: relative to the repository root when inside it
    (a Ray job runs the sweep in an uploaded copy of the repository, elsewhere on disk)."""
    path = Path(path)
    try:
        return str(path.relative_to(REPO_ROOT)) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


def spec_identity(spec: SweepSpec) -> dict[str, Any]:
    """What every cell of the folder shares, beyond its own values: base config and overrides."""
    return {"base": _base_key(spec.base), "overrides": {k: v for k, v in spec.overrides}}


def check_spec_lock(spec: SweepSpec) -> None:
    """:class:`SweepSpecError` when ``output_dir`` holds runs of another base config or other
    shared overrides (their cells would be skipped as finished although their config differs).
    Adding axis values or seeds is fine: new cells get new folders."""
    saved = read_json(spec.output_dir / SPEC_LOCK)
    if saved is None:
        return
    now = spec_identity(spec)
    saved = {**saved, "base": _base_key(saved.get("base", ""))}
    changed = [k for k in now if saved.get(k) != now[k]]
    if changed:
        raise SweepSpecError(str(spec.path), (
            f"{spec.output_dir} holds runs made with another {' and '.join(changed)} "
            f"(saved in {spec.output_dir / SPEC_LOCK}: "
            f"{json.dumps({k: saved.get(k) for k in changed})}); choose another name or "
            f"output_dir, or move that folder away"))  # fmt: skip


def write_spec_lock(spec: SweepSpec) -> None:
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    identity = {**spec_identity(spec), "name": spec.name, "spec": str(spec.path)}
    # atomically: the tasks of a Slurm array or Ray jobs check it while others write it
    tmp = spec.output_dir / f".{SPEC_LOCK}.{socket.gethostname()}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(identity, indent=2, default=str) + "\n")
    os.replace(tmp, spec.output_dir / SPEC_LOCK)
