"""Config names checked against registries (objectives, scores, data formats, model families) and
``model.lora.target_modules`` as a list or a regex."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from uaclm_dist import cli
from uaclm_dist.config import ConfigError, RunConfig, load_config, reference_markdown
from uaclm_dist.config.schema import DATA_FORMAT, MODEL_FAMILY, OBJECTIVE, SCORE


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """An empty config file whose DeepSpeed config is tmp_path/ds.json."""
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    path = tmp_path / "run.yaml"
    path.write_text("distributed:\n  deepspeed_config: ds.json\n")
    return path


@contextmanager
def registered(registry: Any, entry: Any) -> Iterator[Any]:
    """``entry`` registered for the duration of the block."""
    registry.register(entry)
    try:
        yield entry
    finally:
        registry.unregister(entry.name)


def problem_of(path: Path, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    (problem,) = info.value.problems
    return problem


# ------------------------------------------------------------------------------- unknown names


@pytest.mark.parametrize("override, key, choices, suggestion", [
    ("objective.name=ua-clm", "objective.name", OBJECTIVE, "ua_clm"),
    ("eval.scores=[te, sx]", "eval.scores[1]", SCORE, "se"),
    ("data.format=sqaud", "data.format", DATA_FORMAT, "squad"),
    ("data.ood.format=bioasqq", "data.ood.format", DATA_FORMAT, "bioasq"),
    ("model.family=causal-lm", "model.family", MODEL_FAMILY, "causal_lm"),
])  # fmt: skip
def test_unknown_name_lists_the_choices_and_suggests_one(config, capsys, override, key, choices,
                                                         suggestion):
    problem = problem_of(config, [override])
    bad = override.partition("=")[2].strip("[]").split(", ")[-1]
    assert problem == (f"invalid value for '{key}' on the command line: expected one of "
                       f"{', '.join(choices.choices())}, got '{bad}'; did you mean "
                       f"'{suggestion}'?")
    assert cli.main(["config", "check", str(config), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uaclm: error: ") and f"did you mean '{suggestion}'?" in err


def test_unknown_name_in_the_file_names_the_file(config):
    config.write_text(config.read_text() + "objective:\n  name: ua-clm\n")
    with pytest.raises(ConfigError, match=f"'objective.name' in {config}: expected one of .*"
                       "got 'ua-clm'; did you mean 'ua_clm'"):
        load_config(config)


def test_built_in_names_are_the_documented_ones():
    assert {"clm", "ua_clm", "clm+ua", "ult"} <= set(OBJECTIVE.choices())
    assert {"te", "ppl", "pe", "se", "dse", "length"} <= set(SCORE.choices())
    assert {"coqa", "triviaqa", "squad", "bioasq", "fanoutqa", "easyvqa", "jsonl", "parquet",
            "hf"} <= set(DATA_FORMAT.choices())  # fmt: skip
    assert "causal_lm" in MODEL_FAMILY.choices()
    assert RunConfig().model.family == "causal_lm"
    assert RunConfig().eval.scores == ["te", "ppl", "pe", "se", "dse", "length"]


# ------------------------------------------------------------------- names registered at run time


def test_objective_registered_at_run_time_is_accepted_and_its_needs_are_checked(config):
    dense_only = SimpleNamespace(name="test_dense_only", needs_full_vocab=True)
    with registered(OBJECTIVE.registry(), dense_only):
        cfg = load_config(config, ["objective.name=test_dense_only",
                                   "objective.implementation=reference"])
        assert cfg.objective.name == "test_dense_only"
        reference = reference_markdown().splitlines()
        (row,) = [r for r in reference if r.startswith("| `objective.name`")]
        assert "test_dense_only" in row
        problem = problem_of(config, ["objective.name=test_dense_only"])
        assert problem == ("objective.name 'test_dense_only' is only implemented by "
                           "objective.implementation 'reference' (got 'fused') (on the command "
                           "line)")
    assert "test_dense_only" not in OBJECTIVE.choices()
    assert "did you mean" not in problem_of(config, ["objective.name=test_dense_only"])


def test_score_registered_at_run_time_is_accepted_and_clusters_need_samples(config):
    clustered = SimpleNamespace(name="test_clustered", needs_clusters=True)
    with registered(SCORE.registry(), clustered):
        cfg = load_config(config, ["eval.scores=[te, test_clustered]"])
        assert cfg.eval.scores == ["te", "test_clustered"]
        problem = problem_of(config, ["eval.scores=[te, test_clustered]", "eval.num_samples=1"])
        assert "eval.scores ['test_clustered'] cluster several samples" in problem
        assert "eval.num_samples must be at least 2 (got 1)" in problem
    assert load_config(config, ["eval.scores=[te]", "eval.num_samples=1"]).eval.num_samples == 1


def test_family_registered_at_run_time_is_accepted(config):
    with registered(MODEL_FAMILY.registry(), SimpleNamespace(name="test_family")):
        assert load_config(config, ["model.family=test_family"]).model.family == "test_family"
    assert "expected one of" in problem_of(config, ["model.family=test_family"])


def test_direct_construction_checks_names_too():
    with pytest.raises(ValueError, match="unknown objective 'nope'"):
        RunConfig.model_validate({"objective": {"name": "nope"}})


# ------------------------------------------------------------------------------ target_modules


def test_target_modules_takes_a_list_or_a_regex(config):
    regex = r".*\.(q|v)_proj"
    cfg = load_config(config, [f"model.lora.target_modules={regex}"])
    assert cfg.model.lora.target_modules == regex
    assert load_config(config, ["model.lora.target_modules=[q_proj]"]).model.lora.target_modules \
        == ["q_proj"]
    config.write_text(config.read_text() + f"model:\n  lora:\n    target_modules: '{regex}'\n")
    assert load_config(config).model.lora.target_modules == regex


@pytest.mark.parametrize("value, reason", [
    ("'.*(q_proj'", "not a valid regular expression"),
    ("[]", "the list is empty"),
    ("''", "the regular expression is empty"),
    ("[q_proj, 5]", "module names must be non-empty strings"),
    ("5", "must be a list of module names or a regular expression"),
])  # fmt: skip
def test_bad_target_modules_name_the_key(config, value, reason):
    problem = problem_of(config, [f"model.lora.target_modules={value}"])
    assert problem.startswith("invalid value for 'model.lora.target_modules' on the command line: "
                              "expected list[str] or str, got ")
    assert reason in problem
