"""Every collective of the training loop outside the loss kernels, in one place.

Why one module: NCCL accepts CUDA tensors only and gloo CPU tensors only. A collective written
inline with ``torch.tensor([...])`` (a CPU tensor) runs under gloo on CPU and fails on the first
GPU step under NCCL. Here each tensor is made on the device its process-group backend serves:

- **device statistics** (:func:`sum_over_ranks`): step sums that live on the worker's device are
  reduced there, without a host sync; reading them (``.tolist()``) is the caller's one sync,
  done on logging steps only;
- **host decisions and host numbers** (:func:`any_rank`, :func:`gather_host_floats`): values
  the host already holds (a STOP file, a peak-memory counter) travel as CPU tensors over the
  CPU backend, so that they never wait for the device's queue.

The process group therefore has a backend for every device kind it sees
(:func:`process_group_backend`: ``gloo`` without GPUs, ``cpu:gloo,cuda:nccl`` with them),
given to Ray Train through ``TorchConfig(backend=...)``. The loss kernels
(:mod:`uaclm_dist.losses.vocab_parallel`) run their own collectives on the device tensors they
compute with. ``tests/unit/test_collectives.py`` fails if any other module calls
``torch.distributed`` collectives directly.

Without an initialized process group (one process: the GPU check's harness, unit tests) every
function is the identity of one rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

#: Backend when the workers have no GPU (Ray Train's own default then, said explicitly).
CPU_BACKEND = "gloo"
#: Backend when they have: NCCL for CUDA tensors, gloo for the CPU tensors of host decisions.
GPU_BACKEND = "cpu:gloo,cuda:nccl"


def process_group_backend(use_gpu: bool) -> str:
    """The ``torch.distributed`` backend string the training workers' process group needs."""
    return GPU_BACKEND if use_gpu else CPU_BACKEND


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """SUM-all-reduce ``values`` in place on its own device (no host sync) and return it.

    ``values`` must be on the worker's device (``cuda`` under NCCL, ``cpu`` under gloo).
    """
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any rank (one MAX all-reduce of a CPU tensor
    over the CPU backend: a host decision that does not wait for the device)."""
    t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float32)
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_host_floats(value: float) -> list[float]:
    """``value`` of every rank, in rank order (one all-gather of CPU tensors)."""
    if not is_distributed():
        return [float(value)]
    mine = torch.tensor([float(value)], dtype=torch.float64)
    parts = [torch.zeros(1, dtype=torch.float64) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, mine)
    return [float(p.item()) for p in parts]


def barrier() -> None:
    """Wait until every rank arrives: an all-reduce of a CPU tensor, so the CPU backend serves
    it (``dist.barrier`` on a ``cpu:gloo,cuda:nccl`` group picks the accelerator's NCCL)."""
    any_rank(False)
