"""DeepSpeed's CPU shared-memory op (inference only) is neither built nor loaded by training:
no compile, and no torch build lock that a killed process could leave behind
(uaclm_dist.train.ds_ops)."""

from __future__ import annotations

import importlib

import deepspeed.ops
import pytest

from uaclm_dist.train import ds_ops


@pytest.fixture
def restore_compatible_ops(monkeypatch):
    ops = deepspeed.ops.__compatible_ops__
    monkeypatch.setitem(ops, ds_ops.SHM_COMM_OP, ops.get(ds_ops.SHM_COMM_OP, False))
    return ops


def test_after_the_skip_deepspeed_builds_no_shm_op_and_takes_no_build_lock(
        restore_compatible_ops, monkeypatch, tmp_path):  # fmt: skip
    """Without the skip this call compiles the op into ``tmp_path`` (minutes) and fails."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    ds_ops.skip_cpu_shm_comm_op()
    # deepspeed.comm re-exports torch, so the submodule is imported by its full name
    assert importlib.import_module("deepspeed.comm.torch").build_shm_op() is None
    assert list(tmp_path.rglob("*")) == []  # no build folder, no lock


def test_the_op_name_is_the_one_deepspeeds_cpu_builder_uses():
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    assert ShareMemCommBuilder.NAME == ds_ops.SHM_COMM_OP
