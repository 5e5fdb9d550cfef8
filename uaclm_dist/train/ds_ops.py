"""Load DeepSpeed's JIT-built CPU communication op so that a killed run cannot hang later ones.

On the CPU accelerator, ``deepspeed.initialize`` -> ``TorchBackend.__init__`` loads the
``deepspeed_shm_comm`` op through ``torch.utils.cpp_extension.load``, which on every call (even
when the ``.so`` is up to date) takes a ``FileBaton``: it creates
``$TORCH_EXTENSIONS_DIR/<py>_cpu/deepspeed_shm_comm/lock``, runs ninja and deletes the file. A
process killed inside that window (a run stopped, a test's timeout, a node lost) leaves the file
behind, and every later run on that machine waits on it forever at "train 0/N" with no message.

:func:`load_cpu_comm_op` loads the op first, holding an ``fcntl`` lock that the kernel releases
when its holder dies. Every uaclm worker loads the op only under that lock, so a baton file seen
while holding it was left by a dead process: it is removed (with a warning) before loading.
DeepSpeed then finds the op in its loaded-op cache and does not take the baton again.

A process outside uaclm building the same op at the same moment would not hold our lock; its
baton could be removed mid-build. That case is not handled (it needs another program JIT-building
DeepSpeed's op in the same extensions folder at the same second).
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_NAME = "uaclm-build.flock"


@contextmanager
def exclusive_file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); the kernel drops it when
    the process exits, however it exits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_op_clearing_stale_baton(builder: Any, build_dir: Path) -> Any:
    """``builder.load()`` under :func:`exclusive_file_lock`, first removing a ``lock`` baton
    left in ``build_dir`` by a process that died while building or checking the op."""
    with exclusive_file_lock(build_dir / LOCK_NAME):
        baton = build_dir / "lock"
        if baton.exists():
            print(f"[uaclm] removing {baton}: left by a process that died while building "
                  f"DeepSpeed's {builder.name} op (it would block this run forever)",
                  file=sys.stderr, flush=True)  # fmt: skip
            baton.unlink(missing_ok=True)
        return builder.load(verbose=False)


def load_cpu_comm_op() -> Any | None:
    """Load DeepSpeed's shared-memory communication op as ``deepspeed.initialize`` would, under
    :func:`load_op_clearing_stale_baton`; None where the accelerator has no such op (GPUs) or it
    cannot build here (DeepSpeed then runs without it, as it would by itself)."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator
    from torch.utils.cpp_extension import _get_build_directory

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return None
    build_dir = Path(_get_build_directory(builder.name, verbose=False))
    return load_op_clearing_stale_baton(builder, build_dir)
