"""The run-config schema: defaults, YAML round trips, overrides, path resolution, messages."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest
import yaml

from uaclm_dist.config import (
    REPO_ROOT,
    ConfigError,
    RunConfig,
    load_config,
    reference_markdown,
    valid_keys,
)


@pytest.fixture
def ds_config(tmp_path: Path) -> Path:
    """A minimal ZeRO-2 DeepSpeed config in tmp_path."""
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    return path


def write_config(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    """Write a config that points at tmp_path/ds.json unless it sets its own distributed."""
    path = tmp_path / name
    if "distributed:" not in text:
        text += "\ndistributed:\n  deepspeed_config: ds.json\n"
    path.write_text(text)
    return path


def errors_of(path, overrides=()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value.problems


# ---------------------------------------------------------------------------------- good cases


def test_defaults_follow_the_paper(ds_config):
    cfg = load_config(None, [f"distributed.deepspeed_config={ds_config}"])
    assert cfg.model.lora.rank == 32 and cfg.model.lora.alpha == 64
    assert cfg.model.lora.target_modules == ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
    assert cfg.model.quantization.method == "nf4"
    assert cfg.optim.lr == 1e-4 and cfg.optim.weight_decay == 0.001
    assert cfg.data.train_fraction == 0.2 and cfg.data.loss_on == "all"
    assert cfg.objective.name == "ua_clm" and cfg.objective.ua_pooling == "batch"
    assert cfg.eval.scores == ["te", "ppl", "pe", "se", "dse", "length"]
    assert cfg.eval.correctness_threshold == 0.3 and cfg.eval.temperature == 0.3


def test_defaults_round_trip_through_yaml(tmp_path, ds_config):
    cfg = load_config(None, [f"distributed.deepspeed_config={ds_config}"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict() == yaml.safe_load(cfg.to_yaml())


def test_file_values_and_overrides_apply_in_order(tmp_path, ds_config):
    path = write_config(
        tmp_path, "optim:\n  lr: 3.0e-4\n  epochs: 1\nmodel:\n  lora:\n    rank: 8\n"
    )
    cfg = load_config(path, ["optim.lr=2e-4", "model.lora.rank=4", "model.lora.rank=16"])
    assert cfg.optim.lr == 2e-4  # "2e-4" is a YAML string; the schema makes it a float
    assert cfg.optim.epochs == 1  # from the file
    assert cfg.model.lora.rank == 16  # the last override wins
    assert cfg.model.lora.alpha == 64  # default


def test_list_dict_and_null_overrides(tmp_path, ds_config):
    path = write_config(tmp_path, "data:\n  max_examples: 10\n")
    cfg = load_config(path, [
        "model.lora.target_modules=[q_proj,v_proj]",
        "data.field_map.question=q",
        "data.max_examples=null",
        "eval.scores=[te, se]",
    ])
    assert cfg.model.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.field_map == {"question": "q"}
    assert cfg.data.max_examples is None
    assert cfg.eval.scores == ["te", "se"]


def test_override_can_fill_an_optional_section(tmp_path, ds_config):
    bioasq = tmp_path / "bioasq.json"
    bioasq.write_text("{}")
    path = write_config(tmp_path, "data:\n  ood: null\n")
    cfg = load_config(path, ["data.ood.paths=bioasq.json", "data.ood.max_examples=5"])
    assert cfg.data.ood.format == "bioasq"
    assert cfg.data.ood.paths == [str(bioasq.resolve())]  # one string is a one-item list


def test_relative_paths_resolve_next_to_the_config_file(tmp_path, ds_config, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text("")
    (tmp_path / "data" / "b.jsonl").write_text("")
    path = write_config(
        tmp_path, "data:\n  format: jsonl\n  paths: [data/a.jsonl, 'data/*.jsonl']\n"
    )
    cfg = load_config(path)
    assert cfg.distributed.deepspeed_config == str(ds_config.resolve())
    assert cfg.data.paths == [str((tmp_path / "data" / "a.jsonl").resolve()),
                              str(tmp_path.resolve() / "data" / "*.jsonl")]


def test_recipe_configs_are_valid(tmp_path, ds_config):
    for name in ("demo.yaml", "tiny_test.yaml"):
        cfg = load_config(REPO_ROOT / "configs" / name,
                          [f"distributed.deepspeed_config={ds_config}"])
        assert cfg.distributed.num_workers == 2
        assert cfg.model.quantization.method == "nf4"
        assert cfg.data.format == "fanoutqa"
    demo = load_config(REPO_ROOT / "configs" / "demo.yaml",
                       [f"distributed.deepspeed_config={ds_config}"])
    assert demo.model.name_or_path == "smollm2-135m" and demo.optim.max_steps == 30


def test_valid_keys_and_reference_cover_the_schema():
    keys = valid_keys()
    assert "model.lora.rank" in keys and "data.ood.format" in keys and "logging" in keys
    reference = reference_markdown()
    for key in keys:
        if "." in key:
            assert f"`{key}`" in reference, key


def test_docs_config_md_holds_the_current_reference():
    docs = (REPO_ROOT / "docs" / "CONFIG.md").read_text()
    assert reference_markdown() in docs, "regenerate docs/CONFIG.md with `uaclm config reference`"
    readme = (REPO_ROOT / "README.md").read_text()
    assert reference_markdown() in readme, "regenerate the README's configuration reference"


def test_direct_construction_runs_cross_field_checks():
    with pytest.raises(pydantic.ValidationError, match="reference"):
        RunConfig.model_validate({"objective": {"name": "ult"}})
    assert RunConfig().objective.name == "ua_clm"


# ----------------------------------------------------------------------------------- messages


def test_all_problems_are_reported_together(tmp_path, ds_config):
    path = write_config(tmp_path, "model:\n  lora:\n    rnak: 4\noptim:\n  lr: -1\n")
    problems = errors_of(path, ["eval.temperature=0", "optim.epoch=2"])
    text = "\n".join(problems)
    assert len(problems) == 4, text
    assert "unknown key 'model.lora.rnak' in " + str(path) + "; did you mean 'model.lora.rank'?" \
        in text
    assert "unknown key 'optim.epoch' on the command line; did you mean 'optim.epochs'?" in text
    assert f"'optim.lr' in {path}" in text and "got -1" in text
    assert "'eval.temperature' on the command line" in text


def test_type_error_names_key_type_value_and_origin(tmp_path, ds_config):
    path = write_config(tmp_path, "optim:\n  epochs: three\n")
    (problem,) = errors_of(path)
    assert problem.startswith(f"invalid value for 'optim.epochs' in {path}: expected int")
    assert "'three'" in problem


def test_unknown_enum_value_suggests_the_closest(tmp_path, ds_config):
    path = write_config(tmp_path, "model:\n  dtype: bf16\n")
    (problem,) = errors_of(path)
    assert "'model.dtype'" in problem and "did you mean 'bfloat16'?" in problem


def test_cross_field_rules(tmp_path, ds_config):
    path = write_config(tmp_path, "model:\n  lora:\n    enabled: false\n")
    problems = errors_of(path, ["eval.clusterer=nli", "eval.num_samples=1",
                                "model.tiny.num_kv_heads=3"])
    text = "\n".join(problems)
    assert "model.lora.enabled" in text and f"(in {path})" in text
    assert "eval.nli_model_path" in text
    assert "eval.num_samples must be at least 2" in text
    assert "model.tiny.num_kv_heads (3) must divide" in text
    assert load_config(path, ["model.quantization.method=none"]).model.lora.enabled is False


def test_deepspeed_stage_must_match_zero_stage(tmp_path, ds_config):
    path = write_config(tmp_path, "")
    (problem,) = errors_of(path, ["distributed.zero_stage=3"])
    assert "zero_optimization.stage 2" in problem and "distributed.zero_stage is 3" in problem
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    (problem,) = errors_of(path, [f"distributed.deepspeed_config={bad_json}"])
    assert "not valid JSON" in problem


def test_duplicate_yaml_keys_are_errors(tmp_path, ds_config):
    path = write_config(tmp_path, "optim:\n  lr: 1.0e-4\n  lr: 2.0e-4\n")
    (problem,) = errors_of(path)
    assert "duplicate key 'lr'" in problem and "line 3" in problem


def test_local_model_directory_must_exist(tmp_path, ds_config):
    path = write_config(tmp_path, "")
    (problem,) = errors_of(path, ["model.name_or_path=./no_such_model"])
    assert "'model.name_or_path' on the command line" in problem and "not found" in problem
    (tmp_path / "my_model").mkdir()
    cfg = load_config(path, ["model.name_or_path=./my_model"])
    assert cfg.model.name_or_path == str((tmp_path / "my_model").resolve())
    # hub ids and aliases are not checked against the file system
    assert load_config(path, ["model.name_or_path=meta-llama/Llama-2-7b-hf"]) is not None
