"""A failure before a rank's first optimizer step ends the run at once.

Ray Train restarts the whole worker group after any worker error (``distributed.max_failures``
times), which is right for a lost node mid-run, and wrong for a model that cannot load, data a
worker rejects or a config DeepSpeed refuses: each restart would load the model again to fail
the same way. Ray 2.60 has no hook that marks an error as final, so:

- a rank whose set-up or first step raises records the error in
  ``RUN_DIR/setup_failed.rank{R}.json`` (:func:`record_setup_failure`), then raises;
- every rank of a restarted group finds that record first thing and raises at once
  (:func:`raise_if_failed_earlier`), without loading anything: the remaining retries cost the
  restart of the worker processes only (seconds);
- the driver sets earlier records aside before it starts the workers
  (:func:`set_aside_setup_failures`) and, when the workers fail, turns the records into one
  error naming the rank and its exception (:func:`raise_if_setup_failed`, exit 1).
"""

from __future__ import annotations

import json
import re
import time
import traceback
from pathlib import Path

from uaclm_dist.exit_codes import CommandFailed
from uaclm_dist.train.manifest import set_aside

_NAME = re.compile(r"setup_failed\.rank\d+\.json")  # not the set-aside .N.json copies


class SetupFailed(CommandFailed):
    """A rank failed before its first optimizer step; retrying would fail the same way."""


def _path(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / f"setup_failed.rank{rank}.json"


def record_setup_failure(out_dir: Path, rank: int, exc: BaseException) -> None:
    """Worker: keep ``exc`` of this rank (its type, message and traceback) for the driver."""
    record = {"rank": rank, "time": time.time(), "error": f"{type(exc).__name__}: {exc}",
              "traceback": "".join(traceback.format_exception(exc))}  # fmt: skip
    path = _path(out_dir, rank)
    path.with_suffix(".tmp").write_text(json.dumps(record, indent=2))
    path.with_suffix(".tmp").replace(path)


def _current(out_dir: Path) -> list[Path]:
    return sorted(p for p in Path(out_dir).glob("setup_failed.rank*.json")
                  if _NAME.fullmatch(p.name))  # fmt: skip


def _records(out_dir: Path) -> list[dict]:
    records = []
    for path in _current(out_dir):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # being written by another rank: the others tell the story
    return sorted(records, key=lambda r: r.get("time", 0.0))


def raise_if_failed_earlier(out_dir: Path) -> None:
    """Worker, before anything else: raise :class:`SetupFailed` if a rank of an earlier attempt
    of this invocation failed before its first step."""
    records = _records(out_dir)
    if records:
        first = records[0]
        raise SetupFailed(f"not retried: rank {first['rank']} failed before its first "
                          f"optimizer step ({first['error']})")  # fmt: skip


def set_aside_setup_failures(out_dir: Path) -> None:
    """Driver, before the workers start: earlier invocations' records get numbered names."""
    for path in _current(out_dir):
        set_aside(path, lambda n, p=path: p.with_name(f"{p.stem}.{n}.json"))


def raise_if_setup_failed(out_dir: Path, cause: BaseException | None = None) -> None:
    """Driver, after the workers failed: raise :class:`SetupFailed` naming the first rank that
    failed before its first step and its exception (others may have failed because of it)."""
    records = _records(out_dir)
    if not records:
        return
    first = records[0]
    others = sorted({r["rank"] for r in records[1:]} - {first["rank"]})
    also = f" (then rank(s) {', '.join(map(str, others))})" if others else ""
    where = _path(out_dir, first["rank"])
    raise SetupFailed(
        f"rank {first['rank']} failed before its first optimizer step{also}: {first['error']}. "
        f"Not retried (distributed.max_failures covers failures after training started); the "
        f"traceback is in {where} and the rank's log"
    ) from cause
