"""The paper recipes' code path end to end: the vocabulary-sharded LM head inside Ray Train +
DeepSpeed (every configs/paper/*.yaml sets ``objective.implementation: vocab_parallel``).

Per ZeRO stage: an uninterrupted run with the fused loss, and the same run (same seed and data)
with the vocab-parallel loss stopped after 3 steps and resumed from its checkpoint. The
vocab-parallel per-step losses and entropy-probe statistics (computed with the sharded head's
collectives) must equal the fused ones to 1e-5 (fp32), so sharding, its checkpoint and its
resume change nothing but where the head rows live.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny_test.yaml"
FP32 = ("model.dtype=float32", "model.quantization.compute_dtype=float32",
        "model.quantization.storage_dtype=float32", "objective.name=clm+ua",
        "optim.max_steps=6", "logging.probe_examples=4")  # fmt: skip
ZERO = {2: ("distributed.deepspeed_config=ds_configs/zero2.json", "distributed.zero_stage=2"),
        3: ("distributed.deepspeed_config=ds_configs/zero3.json", "distributed.zero_stage=3")}


def train(out: Path, *overrides: str, expect: int = 0) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "uaclm_dist.cli", "train", str(TINY), f"logging.output_dir={out}",
         *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stderr[-6000:]}"


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def assert_same(got: dict, expected: dict, keys: tuple[str, ...], what: str) -> None:
    """Equal to 1e-5 (relative); a value undefined in one (null: an empty token set) must be
    undefined in the other."""
    for key in keys:
        if expected[key] is None or got[key] is None:
            assert got[key] is None and expected[key] is None, (what, key)
        else:
            assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), (what, key)


@pytest.mark.parametrize("stage", [2, 3])
def test_vocab_parallel_with_resume_reproduces_the_fused_run(tmp_path, stage):
    fused, sharded = tmp_path / "fused", tmp_path / "vocab_parallel"
    run = (*FP32, *ZERO[stage])
    train(fused, *run, "objective.implementation=fused")
    vp = (*run, "objective.implementation=vocab_parallel")
    train(sharded, *vp, "--stop-after-steps", "3", expect=75)
    assert [r["step"] for r in rows(sharded / "metrics.jsonl")] == [1, 2, 3]
    train(sharded, *vp, "--resume", str(sharded))

    expected, got = rows(fused / "metrics.jsonl"), rows(sharded / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in expected] == list(range(1, 7))
    for a, b in zip(got, expected, strict=True):
        assert_same(a, b, ("loss", "loss_clm", "loss_ua", "entropy_correct", "entropy_incorrect",
                           "token_accuracy"), f"step {a['step']}")  # fmt: skip
    # The probe's statistics come from the sharded head's collectives (all-reduced softmax
    # states): start, the stop at step 3 and the end, against the fused head's start and end.
    probe_fused, probe_vp = rows(fused / "probe.jsonl"), rows(sharded / "probe.jsonl")
    assert [r["step"] for r in probe_vp] == [0, 3, 6]
    for a, b in ((probe_vp[0], probe_fused[0]), (probe_vp[-1], probe_fused[-1])):
        assert a["n_tokens"] == b["n_tokens"] > 0 and a["n_base_correct"] == b["n_base_correct"]
        assert_same(a, b, ("entropy_base_correct", "entropy_base_incorrect", "token_accuracy"),
                    f"probe step {a['step']}")  # fmt: skip
    assert (sharded / "adapter" / "adapter_model.safetensors").exists()
