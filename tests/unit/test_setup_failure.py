"""train/setup_failure.py: a failure before the first optimizer step is recorded by the rank,
fails every restarted rank at once, and reaches the driver as one error naming the first rank."""

from __future__ import annotations

import pytest

from uaclm_dist.train import setup_failure as sf


def test_restarted_ranks_fail_at_once_and_the_driver_names_the_first_failure(tmp_path):
    sf.raise_if_failed_earlier(tmp_path)  # nothing recorded: a first attempt goes on
    sf.record_setup_failure(tmp_path, 1, ValueError("model has no lm_head"))
    sf.record_setup_failure(tmp_path, 0, ConnectionError("peer closed"))  # collateral, later
    with pytest.raises(sf.SetupFailed, match=r"not retried: rank 1 failed before its first "
                                             r"optimizer step \(ValueError: model has no"):
        sf.raise_if_failed_earlier(tmp_path)
    cause = RuntimeError("worker group failed")
    with pytest.raises(sf.SetupFailed, match=r"^rank 1 failed before its first optimizer step "
                                             r"\(then rank\(s\) 0\): ValueError") as err:
        sf.raise_if_setup_failed(tmp_path, cause=cause)
    assert err.value.__cause__ is cause and "setup_failed.rank1.json" in str(err.value)


def test_a_new_invocation_sets_earlier_records_aside(tmp_path):
    sf.record_setup_failure(tmp_path, 0, OSError("disk full"))
    sf.set_aside_setup_failures(tmp_path)
    sf.raise_if_failed_earlier(tmp_path)
    sf.raise_if_setup_failed(tmp_path)  # no record of this invocation: nothing to say
    assert (tmp_path / "setup_failed.rank0.1.json").exists()
    sf.record_setup_failure(tmp_path, 0, OSError("disk full again"))
    sf.set_aside_setup_failures(tmp_path)
    assert (tmp_path / "setup_failed.rank0.2.json").exists()
