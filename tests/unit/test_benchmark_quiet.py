"""The quiet-machine rule every benchmark applies (benchmarks/quiet.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import quiet  # noqa: E402


def test_repeats_alternate_between_the_variants():
    assert quiet.alternating(["a", "b", "c"], 3) == [
        (0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "b"), (1, "a"), (2, "a"), (2, "b"), (2, "c")]


class FakeClock:
    """``os.getloadavg`` falling by ``step`` per poll; ``time`` advanced by the sleeps."""

    def __init__(self, loads):
        self.loads, self.now = list(loads), 0.0

    def getloadavg(self):
        return (self.loads.pop(0) if len(self.loads) > 1 else self.loads[0], 0.0, 0.0)

    def sleep(self, s):
        self.now += s

    def monotonic(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    def install(loads):
        fake = FakeClock(loads)
        monkeypatch.setattr(quiet.os, "getloadavg", fake.getloadavg)
        monkeypatch.setattr(quiet.time, "sleep", fake.sleep)
        monkeypatch.setattr(quiet.time, "monotonic", fake.monotonic)
        return fake

    return install


def test_settle_waits_for_the_load_to_fall(clock):
    clock([1.5, 0.9, 0.5, 0.2])
    reading = quiet.settle(max_wait_s=100, poll_s=5)
    assert reading == quiet.LoadReading(0.2, 15.0) and reading.quiet
    assert "0.20 (1 min), waited 15 s: quiet" in reading.describe()


def test_a_machine_that_stays_busy_is_said_to_be_busy(clock):
    clock([1.2])
    reading = quiet.settle(max_wait_s=30, poll_s=5)
    assert reading.load == 1.2 and reading.waited_s == 30 and not reading.quiet
    header = quiet.machine_header(quiet.LoadReading(0.1, 0), reading)
    assert "NOT a quiet machine: the timings are not comparable" in header
    assert "NOT a quiet machine" not in quiet.machine_header(quiet.LoadReading(0.1, 0),
                                                             quiet.LoadReading(0.29, 60))


def test_profile_buckets_take_the_first_matching_rule_and_only_the_training_thread():
    import train_profile

    raw = "\n".join([
        "run (a.py:1);Rank.train_step (/r/uaclm_dist/train/worker.py:9);DeepSpeedEngine.backward "
        "(deepspeed/runtime/engine.py:3);Fn.backward (/r/uaclm_dist/losses/fused.py:5) 7",
        "run (a.py:1);train_step (/r/uaclm_dist/train/worker.py:9);backward (torch/_tensor.py:1) 5",
        "run (a.py:1);train_step (/r/uaclm_dist/train/worker.py:9);DeepSpeedEngine.step (/v/"
        "deepspeed/runtime/engine.py:2) 3",
        "run (a.py:1);train_step (/r/uaclm_dist/train/worker.py:9);forward (/v/transformers/"
        "models/llama/modeling_llama.py:4) 2",
        "run (a.py:1);train_step (/r/uaclm_dist/train/worker.py:9);sleep (x.py:1) 1",
        "heartbeat (/v/ray/_private/worker.py:1) 11",
    ])
    counts = train_profile.buckets_of(raw, train_profile.TRAINING_THREAD["uaclm_1"])
    assert counts == {"loss": 7, "backward": 5, "optimizer step": 3, "model forward": 2,
                      "other": 1}
    text = train_profile.table({"uaclm_1": {"buckets": counts, "step_seconds": 3.6}})
    assert "| loss | 38.9% | 1.40 |" in text and "| all | 100.0% | 3.60 |" in text
