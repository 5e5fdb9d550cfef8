"""The non-finite guard's policy (the real skip: tests/integration/test_extension_seams.py)."""

from __future__ import annotations

import pytest
import torch

from uaclm_dist.exit_codes import CommandFailed
from uaclm_dist.train.nonfinite import (
    ABORTED_FILE,
    NonFiniteError,
    SkippedStepGuard,
    assert_finite_trainable,
    raise_if_aborted,
    set_aside_aborted,
    write_aborted,
)


def test_skips_are_counted_and_a_finite_step_resets_the_run():
    guard = SkippedStepGuard(limit=3)
    for step, skipped in enumerate([False, True, True, False, True, True, False], start=1):
        guard.update(step, skipped=skipped, loss_finite=not skipped)
    assert guard.total == 4 and guard.in_a_row == 0


def test_limit_in_a_row_aborts_naming_the_step_and_the_setting():
    guard = SkippedStepGuard(limit=2)
    guard.update(1, skipped=True, loss_finite=False)
    with pytest.raises(NonFiniteError, match=r"step 2: 2 optimizer steps in a row.*max_skipped"):
        guard.update(2, skipped=True, loss_finite=False)


def test_a_non_finite_loss_that_was_applied_aborts_at_once():
    with pytest.raises(NonFiniteError, match="applied the update.*compute_grad_norm"):
        SkippedStepGuard(limit=5).update(7, skipped=False, loss_finite=False)


def test_a_skip_with_a_finite_loss_counts_too():
    """A finite loss with a non-finite gradient norm: DeepSpeed skipped, the guard counts."""
    guard = SkippedStepGuard(limit=5)
    guard.update(1, skipped=True, loss_finite=True)
    assert guard.total == 1


def test_non_finite_trainable_weights_are_never_checkpointed():
    module = torch.nn.Linear(3, 2)
    assert_finite_trainable(module)
    module.bias.requires_grad_(False)
    with torch.no_grad():
        module.bias[0] = float("nan")  # frozen: not checked
    assert_finite_trainable(module)
    with torch.no_grad():
        module.weight[1, 2] = float("inf")
    with pytest.raises(NonFiniteError, match="refusing to checkpoint"):
        assert_finite_trainable(module)


def test_abort_record_round_trip_and_kept_on_resume(tmp_path):
    raise_if_aborted(tmp_path)  # nothing recorded: no error
    write_aborted(tmp_path, NonFiniteError("step 3: too many skips"))
    with pytest.raises(CommandFailed, match="step 3: too many skips"):
        raise_if_aborted(tmp_path)
    set_aside_aborted(tmp_path)
    write_aborted(tmp_path, NonFiniteError("again"))
    set_aside_aborted(tmp_path)
    assert not (tmp_path / ABORTED_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aborted.1.json", "aborted.2.json"]
