"""A checkpoint's run state and completeness, read from its files alone (no torch).

Used by training (:mod:`uaclm_dist.train.checkpoint` re-exports these) and by the sweep runner,
which decides whether a cell's run can resume without importing torch.
"""

from __future__ import annotations

import json
from pathlib import Path

RUN_STATE = "run_state.json"


def write_run_state(directory: Path, state: dict) -> None:
    (directory / RUN_STATE).write_text(json.dumps(state, indent=2))


def read_run_state(directory: Path) -> dict:
    path = Path(directory) / RUN_STATE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: not a uaclm checkpoint directory")
    return json.loads(path.read_text())


def is_complete(directory: Path) -> bool:
    """Rank 0's run state and every rank's files are there (each rank writes its RNG file
    after its DeepSpeed shard). A run state that cannot be read (cut off mid-write) makes the
    checkpoint incomplete, never an error: resume falls back to an older one."""
    try:
        state = read_run_state(directory)
        world = int(state["world_size"])
        int(state["next_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((directory / "rng" / f"rank{r}.pt").exists() for r in range(world))


def latest_checkpoint(storage_dir: Path) -> Path | None:
    """Newest complete checkpoint under a Ray Train run folder (``checkpoint_*`` dirs).

    Read from storage rather than only from Ray's registry: a worker group that dies right
    after reporting can leave a checkpoint on disk that the controller never registered.
    """
    candidates = [p for p in Path(storage_dir).glob("checkpoint_*") if is_complete(p)]
    if not candidates:
        return None
    return max(candidates, key=lambda p: read_run_state(p)["next_step"])
