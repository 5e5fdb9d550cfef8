"""The paper recipes' code path end to end: the vocabulary-sharded LM head inside Ray Train +
DeepSpeed (every configs/paper/*.yaml sets ``objective.implementation: vocab_parallel``), and a
resume on another world size (issue 13 item 2) on that same path.

Under ZeRO-3 (the 13B recipes' stage, whose padded partitions are the harder state to carry
across world sizes; ZeRO-2's resize of the same state is tests/unit/test_portable_state.py, its
vocab-parallel head across two hosts tests/integration/test_launchers.py): an uninterrupted
2-worker run with the fused loss, and the same run (same seed, data and global batch of 12
examples) with the vocab-parallel loss, checkpointed on 2 workers after 2 steps, resumed on 1
worker for 2 steps, then on 3 workers to the end. Steps 1-2 (same world size) must equal the
fused ones to 1e-5 (fp32): sharding the head changes nothing but where its rows live. Steps 3-6
ran on 1 and 3 workers, where the reduction order differs: 1e-4, with the same examples (token
counts) at every step, and the final adapter allclose.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny_test.yaml"
FP32 = ("model.dtype=float32", "model.quantization.compute_dtype=float32",
        "model.quantization.storage_dtype=float32", "objective.name=clm+ua",
        "optim.max_steps=6", "logging.probe_examples=4",
        "model.lora.dropout=0.0")  # fmt: skip  (ranks new to a run draw other dropout masks)
ZERO = {2: ("distributed.deepspeed_config=ds_configs/zero2.json", "distributed.zero_stage=2"),
        3: ("distributed.deepspeed_config=ds_configs/zero3.json", "distributed.zero_stage=3")}


def train(out: Path, *overrides: str, expect: int = 0, stderr_has: str = "") -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "uaclm_dist.cli", "train", str(TINY), f"logging.output_dir={out}",
         *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stderr[-6000:]}"
    assert stderr_has in proc.stderr


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def assert_same(got: dict, expected: dict, keys: tuple[str, ...], what: str,
                rel: float = 1e-5) -> None:
    """Equal to ``rel`` (relative); a value undefined in one (null: an empty token set) must be
    undefined in the other."""
    for key in keys:
        if expected[key] is None or got[key] is None:
            assert got[key] is None and expected[key] is None, (what, key)
        else:
            assert got[key] == pytest.approx(expected[key], rel=rel, abs=1e-6), (what, key)


#: One global batch of 12 examples (micro 2) spread over 2, 1 and 3 workers.
WORLDS = {2: ("distributed.num_workers=2", "optim.grad_accumulation=3"),
          1: ("distributed.num_workers=1", "optim.grad_accumulation=6"),
          3: ("distributed.num_workers=3", "optim.grad_accumulation=2")}  # fmt: skip


def adapter_tensors(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


@pytest.mark.parametrize("stage", [3])
def test_vocab_parallel_resumed_on_1_then_3_workers_reproduces_the_fused_run(tmp_path, stage):
    fused, sharded = tmp_path / "fused", tmp_path / "vocab_parallel"
    run = (*FP32, *ZERO[stage], "distributed.cpus_per_worker=0.5")
    train(fused, *run, *WORLDS[2], "objective.implementation=fused")
    vp = (*run, "objective.implementation=vocab_parallel")
    train(sharded, *vp, *WORLDS[2], "--stop-after-steps", "2", expect=75)
    assert [r["step"] for r in rows(sharded / "metrics.jsonl")] == [1, 2]
    train(sharded, *vp, *WORLDS[1], "--resume", str(sharded), "--stop-after-steps", "2",
          expect=75)  # fmt: skip
    train(sharded, *vp, *WORLDS[3], "--resume", str(sharded))

    expected, got = rows(fused / "metrics.jsonl"), rows(sharded / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in expected] == list(range(1, 7))
    for a, b in zip(got, expected, strict=True):
        assert a["n_tokens"] == b["n_tokens"], a["step"]  # the same examples at every step
        assert_same(a, b, ("loss", "loss_clm", "loss_ua", "entropy_correct", "entropy_incorrect",
                           "token_accuracy"), f"step {a['step']}",
                    rel=1e-5 if a["step"] <= 2 else 1e-4)  # fmt: skip
    # The probe's statistics come from the sharded head's collectives (all-reduced softmax
    # states): at the start (2 workers) and the end (3 workers), against the fused head's.
    probe_fused, probe_vp = rows(fused / "probe.jsonl"), rows(sharded / "probe.jsonl")
    assert [r["step"] for r in probe_vp] == [0, 2, 4, 6]
    ends = (((probe_vp[0], probe_fused[0]), 1e-5), ((probe_vp[-1], probe_fused[-1]), 1e-4))
    for (a, b), rel in ends:
        assert a["n_tokens"] == b["n_tokens"] > 0 and a["n_base_correct"] == b["n_base_correct"]
        assert_same(a, b, ("entropy_base_correct", "entropy_base_incorrect", "token_accuracy"),
                    f"probe step {a['step']}", rel=rel)  # fmt: skip
    got_adapter, want_adapter = adapter_tensors(sharded), adapter_tensors(fused)
    assert got_adapter.keys() == want_adapter.keys()
    for key in want_adapter:
        assert torch.allclose(got_adapter[key], want_adapter[key], rtol=1e-4, atol=1e-5), key
    logs = "".join(p.read_text(errors="replace") for p in (sharded / "logs").rglob("*")
                   if p.is_file())  # fmt: skip
    assert "resuming on 1 workers" in logs and "resuming on 3 workers" in logs
    # another global batch is refused before anything starts
    train(sharded, *vp, "distributed.num_workers=1", "optim.grad_accumulation=3", "--resume",
          str(sharded), expect=2, stderr_has="same global batch")
