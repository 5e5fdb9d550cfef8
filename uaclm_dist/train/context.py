"""What a training rank needs from whatever runs it, as one small object.

The training worker (:mod:`uaclm_dist.train.worker`) asks its context for its rank, the world
size and its device, and hands it each checkpoint to report. Two contexts implement that:

- :class:`RayTrainContext`: a Ray Train worker (every cluster run): ``ray.train.get_context``,
  ``ray.train.torch.get_device``, ``ray.train.report`` with the atomic upload
  (:func:`uaclm_dist.train.storage.publish_to_storage`);
- :class:`LocalContext`: one process without Ray (the GPU check's harness, where Ray cannot be
  carried): rank 0 of a one-rank process group, checkpoints published with the same manifest
  writer into the same folder layout, so that resume finds them the same way.

The worker's code is the same under both; only these few calls differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from uaclm_dist.train.manifest import BeforeFileHook, publish


class WorkerContext(Protocol):
    """Rank, world size, device and the checkpoint report of one training rank."""

    rank: int
    world_size: int
    device: torch.device

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path,
               before_file: BeforeFileHook | None = None) -> None:  # fmt: skip
        """Publish this rank's files under ``checkpoint_dir`` as the run's next checkpoint
        (collective: every rank reports every checkpoint) and record ``metrics``."""


class RayTrainContext:
    """The context of a Ray Train worker (read from Ray Train when constructed)."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path,
               before_file: BeforeFileHook | None = None) -> None:  # fmt: skip
        import ray.train

        from uaclm_dist.train.storage import publish_to_storage

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir),
                         checkpoint_upload_fn=lambda c, name: publish_to_storage(
                             c, name, self.rank, before_file))  # fmt: skip


@dataclass
class LocalContext:
    """Rank 0 of 1 in this process; checkpoints go to ``storage/checkpoint_NNNNNN`` (the
    layout :func:`uaclm_dist.train.run_state.latest_checkpoint` reads), the newest ``keep``
    kept. ``metrics``: every reported row, in order."""

    device: torch.device
    storage: Path
    keep: int = 2
    rank: int = 0
    world_size: int = 1
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path,
               before_file: BeforeFileHook | None = None) -> None:  # fmt: skip
        import shutil

        self.storage.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.storage.glob("checkpoint_*"))
        index = 1 + max((int(p.name.split("_")[-1]) for p in existing), default=-1)
        publish(Path(checkpoint_dir), self.storage / f"checkpoint_{index:06d}", self.rank,
                before_file=before_file)  # fmt: skip
        for old in sorted(self.storage.glob("checkpoint_*"))[: -self.keep]:
            shutil.rmtree(old)
        self.metrics.append(dict(metrics))
