"""train/parent.py pieces without training: the LoRA shape check, the split check, and the
chain of parents an evaluation follows when a parent's folder is gone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uaclm_dist.config import ConfigError
from uaclm_dist.train import parent as pa


def run_folder(path: Path, *, parent: dict | None = None, train=(), test=(), rank=8) -> Path:
    (path / "adapter").mkdir(parents=True)
    (path / "adapter" / pa.ADAPTER_CONFIG).write_text(json.dumps(
        {"r": rank, "lora_alpha": 16, "target_modules": ["v_proj", "q_proj"]}))
    (path / "adapter" / pa.ADAPTER_WEIGHTS).write_bytes(b"")
    (path / "run_info.json").write_text(json.dumps(
        {"run_id": path.name, "config": {"objective": {"name": "clm"}}, "parent": parent}))
    (path / "split_ids.json").write_text(json.dumps({"train": list(train), "test": list(test)}))
    return path


def test_the_lora_shape_and_the_split_are_checked_naming_what_differs(tmp_path):
    parent = pa.locate_parent(str(run_folder(tmp_path / "p", train=["a", "b"], test=["c"])))
    assert parent.record()["split"] == "recorded" and parent.record()["objective"] == "clm"
    pa.check_lora_shape(parent, 8, 16, ["q_proj", "v_proj"])  # order does not matter
    with pytest.raises(ConfigError, match=r"rank 8 \(config model\.lora\.rank 4\); alpha 16 "
                                          r"\(config model\.lora\.alpha 32\)"):
        pa.check_lora_shape(parent, 4, 32, ["q_proj", "v_proj"])
    pa.check_parent_split(parent, ["c", "d"])
    with pytest.raises(ConfigError, match=r"1 of this run's 2 test questions .*\(e\.g\. b\)"):
        pa.check_parent_split(parent, ["c", "b"])
    with pytest.raises(ConfigError, match="neither a run folder with adapter/"):
        pa.locate_parent(str(tmp_path))


def test_a_gone_parent_ends_the_chain_as_missing_and_the_evaluation_says_so(tmp_path):
    from uaclm_dist.evaluate.runner import _ancestor_splits, _name_the_chains

    grand = run_folder(tmp_path / "grand", train=["g"], test=["x"])
    mid = run_folder(tmp_path / "mid", train=["m"], test=["x"],
                     parent=pa.locate_parent(str(grand)).record())
    child = run_folder(tmp_path / "child", train=["c"], test=["x"],
                       parent=pa.locate_parent(str(mid)).record())
    chain = pa.ancestry(child)
    assert [p["run_dir"] for p in chain] == [str(mid), str(grand)]
    chains = {"child": chain}
    assert {s.folder for s in _ancestor_splits(chains)} == {mid, grand}
    selection: dict = {}
    _name_the_chains(selection, chains)
    assert selection["parent_split_unknown"] == [] and "clm (" in selection["chains"]["child"]

    for f in mid.iterdir():  # the middle run's folder is deleted: its split and parents are lost
        if f.is_file():
            f.unlink()
    chains = {"child": pa.ancestry(child)}
    assert [p["split"] for p in chains["child"]] == ["missing"]
    assert _ancestor_splits(chains) == []
    selection = {}
    _name_the_chains(selection, chains)
    assert selection["parent_split_unknown"] == ["child"]
