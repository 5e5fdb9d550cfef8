"""train/sharding.py: the seeded per-epoch order and the step -> rank -> micro-batch assignment.

Covers: epoch_order is a deterministic permutation that changes with epoch and seed;
step_micro_batches has the shape ``accum x micro``, the ranks of a step together hold exactly
that step's global batch, an epoch covers every example (the wrap-around repeats number
``wrapped_examples``), the split over workers / accumulation does not change a step's data, and
a tiny case worked out by hand.
"""

from __future__ import annotations

from collections import Counter

import pytest

from uaclm_dist.train.schedule import steps_per_epoch
from uaclm_dist.train.sharding import epoch_order, step_micro_batches, wrapped_examples

# (n, micro, accum, world): wrap-around in the last step, an exact fit, a batch larger than n
CASES = [(10, 1, 2, 2), (17, 2, 2, 2), (16, 2, 2, 2), (3, 2, 2, 1)]


def batches(n, step, *, micro, accum, world, rank, seed=0):
    spe = steps_per_epoch(n, micro, accum, world)
    return step_micro_batches(n, step, steps_per_epoch=spe, micro=micro, accum=accum,
                              world=world, rank=rank, seed=seed)  # fmt: skip


def step_examples(n, step, *, micro, accum, world, seed=0):
    """Every example of a step in rank-then-micro-batch order."""
    return [i for rank in range(world)
            for mb in batches(n, step, micro=micro, accum=accum, world=world, rank=rank, seed=seed)
            for i in mb]  # fmt: skip


def test_epoch_order_is_a_seeded_permutation():
    order = epoch_order(50, epoch=2, seed=7)
    assert sorted(order) == list(range(50))
    assert order != list(range(50))
    assert epoch_order(50, epoch=2, seed=7) == order
    assert epoch_order(50, epoch=3, seed=7) != order
    assert epoch_order(50, epoch=2, seed=8) != order


@pytest.mark.parametrize(("micro", "accum", "world"), [(1, 2, 2), (2, 3, 1), (3, 1, 4)])
def test_shape_accum_lists_of_micro_indices(micro, accum, world):
    for rank in range(world):
        got = batches(25, 1, micro=micro, accum=accum, world=world, rank=rank)
        assert len(got) == accum
        assert all(len(mb) == micro for mb in got)


@pytest.mark.parametrize(("n", "micro", "accum", "world"), CASES)
def test_union_over_ranks_is_the_global_batch(n, micro, accum, world):
    g = micro * accum * world
    spe = steps_per_epoch(n, micro, accum, world)
    for step in range(spe):
        order = epoch_order(n, 0, 0)
        expected = [order[(step * g + i) % n] for i in range(g)]
        assert step_examples(n, step, micro=micro, accum=accum, world=world) == expected


@pytest.mark.parametrize(("n", "micro", "accum", "world"), CASES)
def test_one_epoch_covers_every_example_and_counts_wraps(n, micro, accum, world):
    g = micro * accum * world
    spe = steps_per_epoch(n, micro, accum, world)
    seen = Counter(
        i
        for step in range(spe)
        for i in step_examples(n, step, micro=micro, accum=accum, world=world)
    )
    assert set(seen) == set(range(n))
    assert sum(c - 1 for c in seen.values()) == wrapped_examples(n, spe, g)


def test_wrapped_examples_hand_values():
    assert wrapped_examples(10, 3, 4) == 2
    assert wrapped_examples(16, 2, 8) == 0
    assert wrapped_examples(3, 1, 8) == 5


def test_same_data_per_step_for_one_worker_accum2_and_two_workers_accum1():
    for step in range(12):  # crosses several epochs
        one = step_examples(11, step, micro=2, accum=2, world=1, seed=3)
        two = step_examples(11, step, micro=2, accum=1, world=2, seed=3)
        assert one == two


def test_tiny_case_by_hand():
    # n=6, micro=1, accum=2, world=2: G=4, 2 steps per epoch; step 1 takes order positions
    # 4, 5 then wraps to 0, 1. Rank 0 gets the first two, rank 1 the wrapped two.
    o = epoch_order(6, 0, 0)
    assert batches(6, 1, micro=1, accum=2, world=2, rank=0) == [[o[4]], [o[5]]]
    assert batches(6, 1, micro=1, accum=2, world=2, rank=1) == [[o[0]], [o[1]]]
    # step 2 is step 0 of epoch 1: its own permutation
    o1 = epoch_order(6, 1, 0)
    assert batches(6, 2, micro=1, accum=2, world=2, rank=0) == [[o1[0]], [o1[1]]]
    assert batches(6, 2, micro=1, accum=2, world=2, rank=1) == [[o1[2]], [o1[3]]]
