"""The non-finite guard: a NaN / inf loss or gradient never becomes an update or a checkpoint.

DeepSpeed (0.19.8) already discards an optimizer step whose global gradient norm is not finite,
on every rank alike (the norm is all-reduced), zeroes the gradients, does not advance the LR
schedule and counts it in ``engine.skipped_steps``: ZeRO-3 always, ZeRO-1/2 while
``zero_optimization.compute_grad_norm`` is on (its default) or bf16's ``check_grad_overflow``.
This module turns that into policy: count the skips, abort after ``optim.max_skipped_in_a_row``
in a row, abort at once if a non-finite loss was *applied* (a DeepSpeed config that turned the
check off), and refuse to checkpoint trainable weights that are not finite.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from uaclm_dist.exit_codes import CommandFailed
from uaclm_dist.train.collectives import any_rank
from uaclm_dist.train.manifest import set_aside

#: Written by rank 0 into the run folder when the guard stops training (the reason, as JSON):
#: the workers end cleanly (Ray Train must not restart them into the same NaN) and the driver
#: turns it into an error (exit 1, never the "stopped" status that Slurm would requeue).
ABORTED_FILE = "aborted.json"


class NonFiniteError(CommandFailed):
    """Training cannot continue without writing non-finite numbers into the model."""


def write_aborted(out_dir: Path, exc: NonFiniteError) -> None:
    (Path(out_dir) / ABORTED_FILE).write_text(json.dumps({"reason": str(exc)}, indent=2))


def raise_if_aborted(out_dir: Path) -> None:
    """Driver, after the workers ended: raise the guard's error if it stopped the run."""
    path = Path(out_dir) / ABORTED_FILE
    if path.exists():
        raise NonFiniteError(json.loads(path.read_text())["reason"])


def set_aside_aborted(out_dir: Path) -> None:
    """Before a resumed run: keep an earlier abort's record under a numbered name."""
    path = Path(out_dir) / ABORTED_FILE
    if path.exists():
        set_aside(path, lambda n: path.with_name(f"aborted.{n}.json"))


class SkippedStepGuard:
    """Counts skipped optimizer steps and decides when training must stop.

    Args:
        limit: abort when this many consecutive steps are skipped.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.in_a_row = 0
        self.total = 0

    def update(self, step: int, *, skipped: bool, loss_finite: bool) -> None:
        """Record 1-based optimizer ``step``; raise :class:`NonFiniteError` when it must stop.

        ``loss_finite`` is the step's loss over all ranks and micro-batches (any non-finite
        micro-batch makes it non-finite).
        """
        if not loss_finite and not skipped:
            raise NonFiniteError(
                f"step {step}: the loss is not finite but DeepSpeed applied the update (its "
                f"gradient-norm check is off: keep zero_optimization.compute_grad_norm on); "
                f"stopping before anything is saved"
            )
        if not skipped:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.total += 1
        if self.in_a_row >= self.limit:
            raise NonFiniteError(
                f"step {step}: {self.in_a_row} optimizer steps in a row had a non-finite loss or "
                f"gradient norm and were skipped (optim.max_skipped_in_a_row = {self.limit}); "
                f"stopping. The last checkpoint holds the last finite weights; check the data of "
                f"these steps, or train again with a lower optim.lr"
            )


def _local_values(param: torch.nn.Parameter) -> torch.Tensor:
    """What this rank holds of ``param``: under ZeRO-3 the data is empty outside a gather and
    the rank's shard is ``ds_tensor``."""
    shard = getattr(param, "ds_tensor", None)
    return (param if shard is None else shard).detach()


def assert_finite_trainable(module: torch.nn.Module) -> None:
    """Collective: raise :class:`NonFiniteError` on every rank if any rank holds a non-finite
    trainable parameter (its local shard under ZeRO-3)."""
    bad = any(
        not bool(torch.isfinite(_local_values(p)).all())
        for p in module.parameters()
        if p.requires_grad
    )
    if any_rank(bad):
        raise NonFiniteError("a trainable parameter is not finite: refusing to checkpoint it")
