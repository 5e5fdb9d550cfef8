"""train/checkpoint.py without DeepSpeed: RNG state round trip, run_state.json round trip and
its error, completeness of a checkpoint folder, choice of the newest complete checkpoint, and
save/load_rank_files against a fake engine that records the DeepSpeed calls."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from uaclm_dist.train import checkpoint as ckpt
from uaclm_dist.train.manifest import publish, write_manifest


def draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def make_checkpoint(path: Path, next_step: int, world: int = 2, ranks=None) -> Path:
    """A checkpoint folder as the ranks in ``ranks`` (default all) publish it: each writes its
    files into its own folder, its manifest, and publishes them into ``path``."""
    path.mkdir(parents=True)
    for r in range(world) if ranks is None else ranks:
        local = path.parent / f".local-{path.name}-rank{r}"
        (local / "rng").mkdir(parents=True)
        (local / "rng" / f"rank{r}.pt").write_bytes(bytes([r]) * 16)
        if r == 0:
            ckpt.write_run_state(local, {"next_step": next_step, "world_size": world})
        write_manifest(local, r)
        publish(local, path, r)
    if ranks is not None and 0 not in ranks:  # rank 0's run state alone, as if its manifest
        ckpt.write_run_state(path, {"next_step": next_step, "world_size": world})  # were lost
    return path


class FakeEngine:
    def __init__(self, load_result=("some/path", {})):
        self.calls: list[tuple] = []
        self.load_result = load_result
        self.module = torch.nn.Linear(2, 2)

    def save_checkpoint(self, save_dir, **kwargs):
        self.calls.append(("save", save_dir, kwargs))

    def load_checkpoint(self, load_dir, **kwargs):
        self.calls.append(("load", load_dir, kwargs))
        return self.load_result


def test_rng_state_round_trip_repeats_draws():
    state = ckpt.rng_state()
    first = draws()
    assert draws() != first
    ckpt.set_rng_state(state)
    assert draws() == first


def test_run_state_round_trip_and_missing_file(tmp_path):
    state = {"next_step": 4, "total_steps": 8, "run_id": "abc", "world_size": 2, "final": False}
    ckpt.write_run_state(tmp_path, state)
    assert ckpt.read_run_state(tmp_path) == state
    with pytest.raises(FileNotFoundError, match="not a uaclm checkpoint directory"):
        ckpt.read_run_state(tmp_path / "elsewhere")


def test_is_complete(tmp_path):
    assert ckpt.is_complete(make_checkpoint(tmp_path / "ok", 3))
    assert not ckpt.is_complete(make_checkpoint(tmp_path / "rank1_missing", 3, ranks=[0]))
    no_state = make_checkpoint(tmp_path / "no_state", 3)
    (no_state / ckpt.RUN_STATE).unlink()
    assert not ckpt.is_complete(no_state)


def test_latest_checkpoint_takes_highest_next_step_among_complete(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    make_checkpoint(tmp_path / "checkpoint_000000", 2)
    best = make_checkpoint(tmp_path / "checkpoint_000001", 6)  # name order != step order
    make_checkpoint(tmp_path / "checkpoint_000002", 4)
    make_checkpoint(tmp_path / "checkpoint_000003", 8, ranks=[0])  # incomplete
    make_checkpoint(tmp_path / "other_folder", 10)  # not a checkpoint_* folder
    assert ckpt.latest_checkpoint(tmp_path) == best


def test_a_run_state_cut_off_mid_write_makes_the_checkpoint_incomplete_not_an_error(tmp_path):
    older = make_checkpoint(tmp_path / "checkpoint_000000", 2)
    torn = make_checkpoint(tmp_path / "checkpoint_000001", 4)
    text = (torn / ckpt.RUN_STATE).read_text()
    (torn / ckpt.RUN_STATE).write_text(text[: len(text) // 2])  # half a JSON document
    assert not ckpt.is_complete(torn)
    assert ckpt.latest_checkpoint(tmp_path) == older  # resume falls back to the older one


def test_latest_checkpoint_none_when_only_incomplete(tmp_path):
    make_checkpoint(tmp_path / "checkpoint_000000", 2, ranks=[1])
    assert ckpt.latest_checkpoint(tmp_path) is None
    assert ckpt.latest_checkpoint(tmp_path / "missing") is None


def test_save_rank_files_calls_deepspeed_and_writes_rng(tmp_path):
    engine = FakeEngine()
    ckpt.save_rank_files(tmp_path, engine, rank=1)
    assert engine.calls == [
        ("save", str(tmp_path / "ds"), {"tag": "ds", "exclude_frozen_parameters": True})
    ]
    assert (tmp_path / "rng" / "rank1.pt").exists()
    assert not (tmp_path / "rng" / "rank0.pt").exists()


def test_load_rank_files_restores_rng(tmp_path):
    ckpt.save_rank_files(tmp_path, FakeEngine(), rank=0)
    first = draws()
    engine = FakeEngine()
    ckpt.load_rank_files(tmp_path, engine, rank=0)
    expected_kwargs = {"tag": "ds", "load_module_strict": False}
    assert engine.calls == [("load", str(tmp_path / "ds"), expected_kwargs)]
    assert draws() == first


def test_load_rank_files_raises_when_deepspeed_finds_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="DeepSpeed found no checkpoint"):
        ckpt.load_rank_files(tmp_path, FakeEngine(load_result=(None, None)), rank=0)


def test_the_checkpointed_module_state_holds_the_trainable_parameters_only():
    """A 4-bit base writes its quantization state (absmax, quant_map, ...) beside the frozen
    weights; DeepSpeed's exclude_frozen_parameters drops only the weights' names. Under
    trainable_state_only the state dict DeepSpeed saves is the LoRA weights, nothing else."""
    from uaclm_dist.modeling.loading import attach_lora, load_causal_lm

    base = load_causal_lm("tiny-llama", dtype=torch.float32, quantization="nf4",
                          compute_dtype=torch.float32, storage_dtype=torch.float32)
    model = attach_lora(base, rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"],
                        quantized=True)  # fmt: skip
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    everything = set(model.state_dict())
    assert any(k.endswith(".absmax") or "quant_state" in k for k in everything)
    with ckpt.trainable_state_only(model):
        saved = set(model.state_dict())
    assert saved == trainable and saved and all("lora_" in k for k in saved)
    assert set(model.state_dict()) == everything  # the hook is gone afterwards
