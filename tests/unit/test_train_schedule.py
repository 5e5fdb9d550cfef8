"""train/schedule.py: steps per epoch (rounded up), total steps with and without max_steps, and
hand-computed values of the linear warm-up / linear decay LR multiplier."""

from __future__ import annotations

import pytest

from uaclm_dist.train.schedule import linear_warmup_decay, steps_per_epoch, total_steps


@pytest.mark.parametrize(
    ("n", "micro", "accum", "world", "expected"),
    [(8, 1, 2, 2, 2), (9, 1, 2, 2, 3), (10, 2, 1, 1, 5), (3, 2, 2, 2, 1), (0, 1, 1, 1, 1)],
)
def test_steps_per_epoch_rounds_up(n, micro, accum, world, expected):
    assert steps_per_epoch(n, micro, accum, world) == expected


def test_total_steps_epochs_or_max_steps():
    kw = dict(micro_batch_size=1, grad_accumulation=2, world=2, epochs=3)
    assert total_steps(9, max_steps=None, **kw) == 9  # 3 epochs x ceil(9 / 4)
    assert total_steps(9, max_steps=0, **kw) == 9
    assert total_steps(9, max_steps=5, **kw) == 5
    assert total_steps(9, max_steps=100, **kw) == 100


def test_warmup_then_linear_decay_hand_values():
    # total 10, ratio 0.2 -> 2 warm-up steps, then (10 - s) / 8
    got = [linear_warmup_decay(s, 10, 0.2) for s in range(11)]
    expected = [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0]
    assert got == pytest.approx(expected)
    assert linear_warmup_decay(12, 10, 0.2) == 0.0  # never negative past the end


def test_warmup_steps_round_up():
    # ceil(0.25 * 10) = 3 warm-up steps
    assert [linear_warmup_decay(s, 10, 0.25) for s in range(4)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 1.0]
    )


def test_no_warmup_starts_at_one():
    assert [linear_warmup_decay(s, 4, 0.0) for s in range(5)] == pytest.approx(
        [1.0, 0.75, 0.5, 0.25, 0.0]
    )


def test_full_warmup_ramps_over_all_steps():
    assert [linear_warmup_decay(s, 4, 1.0) for s in range(5)] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 0.0]
    )
