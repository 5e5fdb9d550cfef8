"""Keep DeepSpeed from JIT-building its CPU shared-memory op, which training never uses.

On the CPU accelerator, ``deepspeed.initialize`` -> ``TorchBackend.__init__`` builds and loads
the ``deepspeed_shm_comm`` op through ``torch.utils.cpp_extension.load``. DeepSpeed calls it only
from ``inference_all_reduce`` (its inference / AutoTP tensor-parallel layers; without the op that
call falls back to the process group's all-reduce). Training's collectives are plain
``torch.distributed`` calls over gloo. Building it costs:

- a C++ compile of ~100 s on 2 cores in every new environment (the build folder is keyed by
  the op's name, and a venv at another path rebuilds it), on the first run's critical path;
- a hang: ``load`` takes torch's ``FileBaton`` on every call, even when the ``.so`` is up to
  date (it creates ``$TORCH_EXTENSIONS_DIR/<py>_cpu/deepspeed_shm_comm/lock``, runs ninja,
  deletes the file). A process killed inside that window leaves the file behind and every later
  run on the machine waits on it forever at "train 0/N" (a CI run of ours timed out so).

:func:`skip_cpu_shm_comm_op` marks the op incompatible for this process before
``deepspeed.initialize``; DeepSpeed's ``build_shm_op`` then returns None without touching the
build folder.
"""

from __future__ import annotations

SHM_COMM_OP = "deepspeed_shm_comm"


def skip_cpu_shm_comm_op() -> None:
    """Make DeepSpeed's ``build_shm_op`` return None in this process (no compile, no lock)."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False
