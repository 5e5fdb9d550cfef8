"""A checkpoint's run state and completeness, read from its files alone (no torch).

Used by training (:mod:`uaclm_dist.train.checkpoint` re-exports these) and by the sweep runner,
which decides whether a cell's run can resume without importing torch.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from uaclm_dist.train.manifest import verify

RUN_STATE = "run_state.json"


def write_run_state(directory: Path, state: dict) -> None:
    (directory / RUN_STATE).write_text(json.dumps(state, indent=2))


def read_run_state(directory: Path) -> dict:
    path = Path(directory) / RUN_STATE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: not a uaclm checkpoint directory")
    return json.loads(path.read_text())


def checkpoint_problems(directory: Path, *, hashes: bool = False) -> list[str]:
    """Why the checkpoint folder cannot be resumed from (empty list: it can).

    Rank 0's run state must be readable and every rank's files must match its manifest
    (:func:`uaclm_dist.train.manifest.verify`; sizes always, sha256 with ``hashes``). A run state
    cut off mid-write makes the checkpoint unusable, never an error: resume falls back to an
    older one.
    """
    try:
        state = read_run_state(directory)
        world = int(state["world_size"])
        int(state["next_step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{RUN_STATE} unreadable ({exc})"]
    return verify(Path(directory), world, hashes=hashes)


def is_complete(directory: Path) -> bool:
    """Every rank's files are there in full (sizes against the manifests; no hashing)."""
    return not checkpoint_problems(directory)


def latest_checkpoint(
    storage_dir: Path, *, verify_hashes: bool = True, warn: Callable[[str], None] | None = None
) -> Path | None:
    """Newest checkpoint under a Ray Train run folder (``checkpoint_*`` dirs) that verifies.

    Read from storage rather than only from Ray's registry: a worker group that dies right
    after reporting can leave a checkpoint on disk that the controller never registered. Newer
    checkpoints that fail verification are skipped, each named through ``warn`` (default: a line
    on stderr) with its first problem.
    """
    warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
    candidates = []
    for path in Path(storage_dir).glob("checkpoint_*"):
        if not path.is_dir():  # Ray's checkpoint_manager_snapshot.json
            continue
        try:
            candidates.append((int(read_run_state(path)["next_step"]), path.name, path))
        except (OSError, ValueError, KeyError, TypeError):
            warn(f"[uaclm] skipping checkpoint {path}: {RUN_STATE} missing or unreadable")
    for next_step, _, path in sorted(candidates, reverse=True):
        problems = checkpoint_problems(path, hashes=verify_hashes)
        if not problems:
            return path
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        warn(f"[uaclm] skipping checkpoint {path} (step {next_step}): {problems[0]}{more}")
    return None
