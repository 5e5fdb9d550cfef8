"""A baton left by a process killed while DeepSpeed's CPU op was loading must not hang the next
run; two processes loading at once still take turns (uaclm_dist.train.ds_ops)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from uaclm_dist.train import ds_ops


class RecordingBuilder:
    """Stands in for a DeepSpeed op builder: records whether the baton was there at load."""

    name = "deepspeed_shm_comm"

    def __init__(self, build_dir: Path):
        self.build_dir, self.baton_at_load = build_dir, []

    def load(self, verbose: bool = True):
        self.baton_at_load.append((self.build_dir / "lock").exists())
        return "op-module"


def test_a_baton_left_by_a_dead_process_is_removed_before_loading(tmp_path, capsys):
    (tmp_path / "lock").touch()  # what a process killed inside torch's FileBaton leaves
    builder = RecordingBuilder(tmp_path)
    assert ds_ops.load_op_clearing_stale_baton(builder, tmp_path) == "op-module"
    assert builder.baton_at_load == [False] and not (tmp_path / "lock").exists()
    assert f"removing {tmp_path / 'lock'}" in capsys.readouterr().err


def test_loading_without_a_baton_says_nothing(tmp_path, capsys):
    builder = RecordingBuilder(tmp_path)
    assert ds_ops.load_op_clearing_stale_baton(builder, tmp_path) == "op-module"
    assert builder.baton_at_load == [False] and capsys.readouterr().err == ""


def test_a_live_holder_makes_the_next_loader_wait_and_a_dead_one_does_not(tmp_path):
    """A process holding the lock (a live builder) blocks us; once it is killed, with its baton
    left behind, the kernel has released the lock and we load at once."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from uaclm_dist.train import ds_ops
        with ds_ops.exclusive_file_lock(Path({str(tmp_path / ds_ops.LOCK_NAME)!r})):
            Path({str(tmp_path / "lock")!r}).touch()
            print("holding", flush=True)
            time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "holding"
        waiter = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            from pathlib import Path
            from uaclm_dist.train import ds_ops
            with ds_ops.exclusive_file_lock(Path({str(tmp_path / ds_ops.LOCK_NAME)!r})):
                print("acquired", flush=True)
        """)], stdout=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(2.0)
        assert waiter.poll() is None, "the lock did not exclude a second process"
        holder.kill()
        holder.wait(timeout=30)
        assert waiter.communicate(timeout=60)[0].strip() == "acquired"
    finally:
        holder.kill()
    builder = RecordingBuilder(tmp_path)
    ds_ops.load_op_clearing_stale_baton(builder, tmp_path)
    assert builder.baton_at_load == [False]
