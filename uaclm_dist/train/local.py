"""Training in this one process, without Ray: the harness of the GPU check.

The GPU check's host cannot carry Ray (its wheel alone exceeds what one call may take), but what
it must prove is the training worker's own code on a GPU: set-up, DeepSpeed, the loss, the
collectives on an NCCL group, checkpoints and resume. :func:`train_in_this_process` runs exactly
that code (:func:`uaclm_dist.train.worker.run_rank`) as rank 0 of a one-rank process group,
created with the backend string Ray Train is given
(:func:`~uaclm_dist.train.collectives.process_group_backend`), with a
:class:`~uaclm_dist.train.context.LocalContext` in place of Ray Train's. The driver side is the
same too: :func:`~uaclm_dist.train.trainer.prepare_run` before, :func:`~.trainer.finish_run`
after. What is not exercised here: Ray itself (worker placement, restarts, Ray's upload).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from uaclm_dist.config import ConfigError, RunConfig
from uaclm_dist.train.collectives import process_group_backend


@contextmanager
def one_rank_process_group(device: torch.device) -> Iterator[None]:
    """Rank 0 of 1, with the workers' backend for ``device`` (a rendezvous file, no port)."""
    if dist.is_initialized():
        raise RuntimeError("a process group already exists in this process")
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with tempfile.TemporaryDirectory(prefix="uaclm-pg-") as tmp:
        dist.init_process_group(process_group_backend(use_gpu=device.type == "cuda"),
                                init_method=f"file://{tmp}/rendezvous", rank=0,
                                world_size=1)  # fmt: skip
        try:
            yield
        finally:
            _destroy_process_groups()


def _destroy_process_groups() -> None:
    """Destroy the group and DeepSpeed's references to it (its cached data-parallel groups),
    so that a second run in this process (a resume) starts from a clean slate."""
    import sys

    ds_comm = sys.modules.get("deepspeed.comm.comm")
    if ds_comm is not None and ds_comm.cdb is not None and dist.is_initialized():
        ds_comm.destroy_process_group()
        ds_comm.cdb = None  # the next run's init_distributed adopts the next group
    elif dist.is_initialized():
        dist.destroy_process_group()


def train_in_this_process(cfg: RunConfig, resume_dir: str | None = None,
                          stop_after_steps: int | None = None) -> dict:  # fmt: skip
    """``uaclm train`` with one worker in this process; returns the run's summary (as
    :func:`~uaclm_dist.train.trainer.run_training` does). GPU 0 when
    ``distributed.gpus_per_worker`` is set, else the CPU."""
    from uaclm_dist.train.context import LocalContext
    from uaclm_dist.train.trainer import finish_run, prepare_run
    from uaclm_dist.train.worker import run_rank

    if cfg.distributed.num_workers != 1:
        raise ConfigError(
            f"distributed.num_workers {cfg.distributed.num_workers}: training in this process "
            "runs one worker; set distributed.num_workers=1"
        )
    run = prepare_run(cfg, resume_dir, stop_after_steps, ray_cluster=False)
    gpu = cfg.distributed.gpus_per_worker > 0
    if gpu and not torch.cuda.is_available():
        raise ConfigError("distributed.gpus_per_worker is set but torch sees no CUDA device")
    device = torch.device("cuda", 0) if gpu else torch.device("cpu")
    context = LocalContext(device=device, storage=run.out / "ray" / "train")
    with one_rank_process_group(device):
        run_rank(run.plan, context)
    return finish_run(run.out, context.metrics[-1] if context.metrics else {})
