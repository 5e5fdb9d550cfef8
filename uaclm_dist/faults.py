"""Fault injection for the integration tests (training and evaluation): off unless its
environment variable is set.

``UACLM_FAULT_HANG_IN_CHECKPOINT="NEXT_STEP:RANK"``: while rank RANK publishes the checkpoint
taken before step NEXT_STEP (:func:`uaclm_dist.train.manifest.publish`), it lets one file land,
writes half of the next one into its ``.partial`` file (as a copy cut off by a kill leaves it),
records its pid in ``RUN_DIR/faults/hung-in-checkpoint-step{NEXT_STEP}-rank{RANK}.pid`` and
blocks, so a test can SIGKILL it mid-write. It fires once per run folder (the pid file marks it),
so the restarted worker does not hang again.

``UACLM_FAULT_KILL_GENERATION_ACTOR=MARKER``: see :func:`kill_generation_actor_once`.

``UACLM_FAULT_FAIL_SETUP_ON_RANK=RANK``: see :func:`fail_setup_on_rank`.

The drivers hand both variables on to Ray workers and actors
(:data:`uaclm_dist.cluster.PASSTHROUGH_ENV`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from uaclm_dist.train.manifest import BeforeFileHook

HANG_IN_CHECKPOINT_ENV = "UACLM_FAULT_HANG_IN_CHECKPOINT"
KILL_GENERATION_ACTOR_ENV = "UACLM_FAULT_KILL_GENERATION_ACTOR"
FAIL_SETUP_ENV = "UACLM_FAULT_FAIL_SETUP_ON_RANK"


def hang_marker(out_dir: Path, next_step: int, rank: int) -> Path:
    return Path(out_dir) / "faults" / f"hung-in-checkpoint-step{next_step}-rank{rank}.pid"


def checkpoint_write_hook(out_dir: Path, rank: int, next_step: int) -> BeforeFileHook | None:
    """The ``before_file`` hook for this rank's publish of this checkpoint, or None."""
    spec = os.environ.get(HANG_IN_CHECKPOINT_ENV, "")
    if not spec:
        return None
    try:
        step, target_rank = (int(x) for x in spec.split(":"))
    except ValueError as exc:
        raise ValueError(f"{HANG_IN_CHECKPOINT_ENV}={spec!r}: expected NEXT_STEP:RANK") from exc
    marker = hang_marker(out_dir, step, target_rank)
    if (step, target_rank) != (next_step, rank) or marker.exists():
        return None
    published = []

    def hang_in_second_file(rel: str, source: Path, partial: Path) -> None:
        published.append(rel)
        if len(published) < 2:
            return
        data = source.read_bytes()
        partial.write_bytes(data[: max(1, len(data) // 2)])
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.with_suffix(".tmp").write_text(str(os.getpid()))
        os.replace(marker.with_suffix(".tmp"), marker)  # a reader sees no pid or the whole pid
        print(f"[uaclm] fault injection: rank {rank} hangs writing {rel} (pid {os.getpid()})",
              flush=True)  # fmt: skip
        while True:
            time.sleep(1.0)

    return hang_in_second_file


def kill_generation_actor_once() -> None:
    """``UACLM_FAULT_KILL_GENERATION_ACTOR=MARKER``: the first evaluation batch that finds no
    MARKER file creates it and SIGKILLs its own generation actor mid-batch (Ray Data restarts
    the actor and retries the batch). Off unless the variable is set."""
    marker = os.environ.get(KILL_GENERATION_ACTOR_ENV, "")
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # one actor wins, once
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def fail_setup_on_rank(out_dir: Path, rank: int) -> None:
    """``UACLM_FAULT_FAIL_SETUP_ON_RANK=RANK``: rank RANK raises while it sets up (a model or
    config only a worker can find wrong), after counting the attempt in
    ``RUN_DIR/faults/setup-attempts-rank{RANK}`` (one line per attempt)."""
    target = os.environ.get(FAIL_SETUP_ENV, "")
    if not target or int(target) != rank:
        return
    counter = Path(out_dir) / "faults" / f"setup-attempts-rank{rank}"
    counter.parent.mkdir(parents=True, exist_ok=True)
    with counter.open("a") as f:
        f.write(f"{os.getpid()}\n")
    raise RuntimeError(f"fault injection: rank {rank} fails while setting up")
