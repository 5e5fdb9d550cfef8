"""Deterministic assignment of training examples to optimizer steps, ranks and micro-batches.

Every optimizer step consumes one *global batch* of ``G = micro * accum * world`` examples taken
in order from a per-epoch seeded permutation. The global batch is cut into ``accum * world``
micro-batches; rank ``r`` gets micro-batches ``r * accum ... r * accum + accum - 1``. So the
examples of a step do not depend on how they are spread: 1 worker with accumulation 2 and 2
workers with accumulation 1 see the same data per step. No example is silently dropped: a short
last global batch is filled by wrapping around the permutation, and the wrap-around count is
reported.
"""

from __future__ import annotations

import random


def epoch_order(n: int, epoch: int, seed: int) -> list[int]:
    """The seeded permutation of ``range(n)`` for ``epoch`` (same on every rank)."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def step_micro_batches(
    n: int,
    step: int,
    *,
    steps_per_epoch: int,
    micro: int,
    accum: int,
    world: int,
    rank: int,
    seed: int,
) -> list[list[int]]:
    """Example indices of each of this rank's ``accum`` micro-batches at optimizer ``step``."""
    epoch, step_in_epoch = divmod(step, steps_per_epoch)
    order = epoch_order(n, epoch, seed)
    global_batch = micro * accum * world
    start = step_in_epoch * global_batch
    indices = [order[(start + i) % n] for i in range(global_batch)]
    mine = indices[rank * accum * micro : (rank + 1) * accum * micro]
    return [mine[i * micro : (i + 1) * micro] for i in range(accum)]


def wrapped_examples(n: int, steps_per_epoch: int, global_batch: int) -> int:
    """How many examples per epoch are repeats to fill the last global batch."""
    return steps_per_epoch * global_batch - n
