"""Atomic, verified checkpoint files (train/manifest.py, faults.py): publishing by rename
with the manifest last, verification by size and sha256, resume skipping a torn or altered
checkpoint with a warning that names it, the atomic replacement of the run's adapter folder, and
the fault hooks (a publisher SIGKILLed mid-write; an evaluation actor killing itself once)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uaclm_dist import faults
from uaclm_dist.train.manifest import (
    manifest_path,
    publish,
    replace_dir_atomically,
    verify,
    write_manifest,
)
from uaclm_dist.train.run_state import checkpoint_problems, latest_checkpoint, write_run_state


def rank_files(local: Path, rank: int, next_step: int = 4, world: int = 2) -> Path:
    """What one rank writes into its local folder (a DeepSpeed-like shard, RNG, run state)."""
    (local / "ds" / "ds").mkdir(parents=True)
    (local / "ds" / "ds" / f"zero_pp_rank_{rank}_optim_states.pt").write_bytes(os.urandom(5000))
    (local / "rng").mkdir()
    (local / "rng" / f"rank{rank}.pt").write_bytes(os.urandom(300))
    if rank == 0:
        (local / "adapter").mkdir()
        (local / "adapter" / "adapter_model.safetensors").write_bytes(os.urandom(2000))
        write_run_state(local, {"next_step": next_step, "world_size": world})
    return local


def checkpoint(root: Path, name: str, next_step: int, ranks=(0, 1), world: int = 2) -> Path:
    target = root / name
    for r in ranks:
        local = rank_files(root / f".local-{name}-{r}", r, next_step, world)
        write_manifest(local, r)
        publish(local, target, r)
    return target


def test_publish_copies_every_file_and_the_manifest_verifies(tmp_path):
    local = rank_files(tmp_path / "local", 0, world=1)
    manifest = write_manifest(local, 0)
    assert {e["path"] for e in manifest["files"]} == {
        "ds/ds/zero_pp_rank_0_optim_states.pt", "rng/rank0.pt",
        "adapter/adapter_model.safetensors", "run_state.json",
    }  # fmt: skip
    publish(local, tmp_path / "ckpt", 0)
    for entry in manifest["files"]:
        published = (tmp_path / "ckpt" / entry["path"]).read_bytes()
        assert published == (local / entry["path"]).read_bytes()
    assert json.loads(manifest_path(tmp_path / "ckpt", 0).read_text()) == manifest
    assert verify(tmp_path / "ckpt", 1, hashes=True) == []
    assert not list((tmp_path / "ckpt").rglob("*.partial-rank*"))


def test_publish_needs_the_manifest_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_manifest before publish"):
        publish(rank_files(tmp_path / "local", 0), tmp_path / "ckpt", 0)


def test_a_rank_stopped_mid_publish_leaves_no_manifest_and_no_partial_file_in_place(tmp_path):
    checkpoint(tmp_path, "ckpt", 4, ranks=(0,))
    local = rank_files(tmp_path / "local1", 1)
    write_manifest(local, 1)

    def crash_at_second_file(rel, source, partial):
        if rel.startswith("rng/"):
            partial.write_bytes(source.read_bytes()[:10])  # a copy cut off
            raise KeyboardInterrupt  # stands for the kill

    with pytest.raises(KeyboardInterrupt):
        publish(local, tmp_path / "ckpt", 1, before_file=crash_at_second_file)
    assert not (tmp_path / "ckpt" / "rng" / "rank1.pt").exists()  # only its .partial
    assert (tmp_path / "ckpt" / "rng" / "rank1.pt.partial-rank1").exists()
    problems = checkpoint_problems(tmp_path / "ckpt")
    assert problems == ["rank 1 never finished writing (no manifest/rank1.json)"]


def test_size_is_checked_always_and_sha256_when_resuming(tmp_path):
    ckpt = checkpoint(tmp_path, "ckpt", 4)
    shard = ckpt / "ds" / "ds" / "zero_pp_rank_1_optim_states.pt"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF  # same size, one byte flipped
    shard.write_bytes(bytes(data))
    assert checkpoint_problems(ckpt) == []  # sizes only: cheap, what completeness checks
    assert checkpoint_problems(ckpt, hashes=True) == [
        "ds/ds/zero_pp_rank_1_optim_states.pt sha256 differs from the manifest"
    ]
    shard.write_bytes(bytes(data[:1000]))  # truncated
    assert checkpoint_problems(ckpt) == [
        "ds/ds/zero_pp_rank_1_optim_states.pt has 1000 bytes, the manifest says 5000"
    ]
    shard.unlink()
    assert checkpoint_problems(ckpt) == ["ds/ds/zero_pp_rank_1_optim_states.pt missing"]
    manifest_path(ckpt, 0).write_text("{not json")
    assert checkpoint_problems(ckpt)[0].startswith("manifest/rank0.json unreadable")


def test_resume_skips_newer_broken_checkpoints_naming_each(tmp_path):
    good = checkpoint(tmp_path, "checkpoint_a", 4)
    torn = checkpoint(tmp_path, "checkpoint_b", 8, ranks=(0,))  # rank 1 killed mid-publish
    altered = checkpoint(tmp_path, "checkpoint_c", 12)
    (altered / "rng" / "rank0.pt").write_bytes(os.urandom(300))  # same size, other bytes
    lines: list[str] = []
    assert latest_checkpoint(tmp_path, warn=lines.append) == good
    assert len(lines) == 2
    assert f"skipping checkpoint {altered} (step 12): rng/rank0.pt sha256 differs" in lines[0]
    assert f"skipping checkpoint {torn} (step 8): rank 1 never finished writing" in lines[1]
    # without hashing (the sweep's quick look) the altered one passes: it has every byte count
    assert latest_checkpoint(tmp_path, verify_hashes=False, warn=lines.append) == altered


def test_a_checkpoint_without_manifests_is_not_resumed(tmp_path):
    legacy = tmp_path / "checkpoint_x"
    (legacy / "rng").mkdir(parents=True)
    write_run_state(legacy, {"next_step": 4, "world_size": 1})
    (legacy / "rng" / "rank0.pt").write_bytes(b"x")
    lines: list[str] = []
    assert latest_checkpoint(tmp_path, warn=lines.append) is None
    assert "rank 0 never finished writing" in lines[0]


def test_replace_dir_atomically_replaces_and_recovers_from_a_crash_between_renames(tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    (new / "weights").write_text("new")
    target = tmp_path / "adapter"
    replace_dir_atomically(new, target)
    assert (target / "weights").read_text() == "new"
    (new / "weights").write_text("newer")
    replace_dir_atomically(new, target)
    assert (target / "weights").read_text() == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "new"]
    # a crash after the first rename: the old folder waits as .adapter.old, target is gone
    os.replace(target, tmp_path / ".adapter.old")
    (tmp_path / ".adapter.partial").mkdir()  # and a half copy of the next one
    (new / "weights").write_text("newest")
    replace_dir_atomically(new, target)
    assert (target / "weights").read_text() == "newest"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "new"]


def test_fault_hook_is_off_without_its_variable_and_fires_once(tmp_path, monkeypatch):
    monkeypatch.delenv(faults.HANG_IN_CHECKPOINT_ENV, raising=False)
    assert faults.checkpoint_write_hook(tmp_path, rank=1, next_step=8) is None
    monkeypatch.setenv(faults.HANG_IN_CHECKPOINT_ENV, "8:1")
    assert faults.checkpoint_write_hook(tmp_path, rank=0, next_step=8) is None
    assert faults.checkpoint_write_hook(tmp_path, rank=1, next_step=4) is None
    assert faults.checkpoint_write_hook(tmp_path, rank=1, next_step=8) is not None
    marker = faults.hang_marker(tmp_path, 8, 1)
    marker.parent.mkdir()
    marker.write_text("123")  # it fired already: the restarted worker must not hang again
    assert faults.checkpoint_write_hook(tmp_path, rank=1, next_step=8) is None
    monkeypatch.setenv(faults.HANG_IN_CHECKPOINT_ENV, "eight")
    with pytest.raises(ValueError, match="UACLM_FAULT_HANG_IN_CHECKPOINT='eight'"):
        faults.checkpoint_write_hook(tmp_path, rank=1, next_step=8)


HANGING_PUBLISHER = """
import sys
from pathlib import Path
from uaclm_dist import faults
from uaclm_dist.train.manifest import publish, write_manifest
local, dest, run = (Path(a) for a in sys.argv[1:4])
write_manifest(local, 1)
publish(local, dest, 1, before_file=faults.checkpoint_write_hook(run, rank=1, next_step=8))
"""


def test_a_publisher_sigkilled_mid_write_leaves_a_checkpoint_that_does_not_verify(tmp_path):
    good = checkpoint(tmp_path / "storage", "checkpoint_a", 4)
    torn = checkpoint(tmp_path / "storage", "checkpoint_b", 8, ranks=(0,))
    local = rank_files(tmp_path / "local1", 1, next_step=8)
    env = {**os.environ, faults.HANG_IN_CHECKPOINT_ENV: "8:1"}
    proc = subprocess.Popen([sys.executable, "-c", HANGING_PUBLISHER, str(local), str(torn),
                             str(tmp_path / "run")], env=env)  # fmt: skip
    marker = faults.hang_marker(tmp_path / "run", 8, 1)
    deadline = time.time() + 60
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"the publisher did not reach the hang (exit {proc.poll()})"
    assert int(marker.read_text()) == proc.pid
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    partial = list(torn.rglob("*.partial-rank1"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # half a file, not in place
    lines: list[str] = []
    assert latest_checkpoint(tmp_path / "storage", warn=lines.append) == good
    assert "rank 1 never finished writing" in lines[0]


def test_the_actor_kill_hook_kills_its_process_once(tmp_path):
    marker = tmp_path / "killed"
    code = "from uaclm_dist.faults import kill_generation_actor_once as k; k(); print('alive')"
    env = {**os.environ, faults.KILL_GENERATION_ACTOR_ENV: str(marker)}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert first.returncode == -signal.SIGKILL and "alive" not in first.stdout
    assert marker.read_text().isdigit()
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "alive" in again.stdout  # once per marker
    unset = {k: v for k, v in env.items() if k != faults.KILL_GENERATION_ACTOR_ENV}
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=unset)
    assert off.returncode == 0
