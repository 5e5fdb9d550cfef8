"""The `uaclm` console script: config subcommands, exit statuses and messages for bad configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from uaclm_dist import cli
from uaclm_dist.config import REPO_ROOT, RunConfig, load_config


@pytest.fixture
def ds_config(tmp_path: Path) -> Path:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    return path


@pytest.fixture
def good(tmp_path: Path, ds_config: Path) -> Path:
    """A small valid config file whose DeepSpeed config is tmp_path/ds.json."""
    path = tmp_path / "good.yaml"
    path.write_text(
        "model:\n  name_or_path: tiny-llama\n"
        "data:\n  format: fanoutqa\n  max_examples: 16\n"
        "optim:\n  max_steps: 2\n"
        "distributed:\n  deepspeed_config: ds.json\n"
    )
    return path


def write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_config_error(capsys, argv, *needles: str) -> str:
    """The command exits 2 with `uaclm: error:` and every needle on stderr; returns stderr."""
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, out, err)
    assert err.startswith("uaclm: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


# --------------------------------------------------------------------------- bad configs: exit 2


def test_unknown_top_level_key(tmp_path, capsys, good):
    path = write(tmp_path, good.read_text() + "trainer:\n  lr: 1\n")
    assert_config_error(capsys, ["config", "check", path], "unknown key 'trainer'",
                        str(path), "valid keys at the top level")


def test_typo_gets_a_suggestion(tmp_path, capsys, good):
    path = write(tmp_path, good.read_text().replace("model:\n", "model:\n  lora:\n    rnak: 8\n"))
    assert_config_error(
        capsys, ["config", "check", path],
        f"unknown key 'model.lora.rnak' in {path}; did you mean 'model.lora.rank'?",
    )


def test_wrong_type_from_command_line(capsys, good):
    assert_config_error(capsys, ["config", "show", good, "optim.lr=abc"],
                        "'optim.lr'", "command line", "expected float", "'abc'")


@pytest.mark.parametrize("override, key", [
    ("model.lora.dropout=1.5", "'model.lora.dropout'"),
    ("data.train_fraction=0", "'data.train_fraction'"),
    ("distributed.num_workers=-1", "'distributed.num_workers'"),
])
def test_out_of_range(capsys, good, override, key):
    assert_config_error(capsys, ["config", "check", good, override], key, "command line",
                        override.partition("=")[2])


def test_missing_config_file(tmp_path, capsys):
    assert_config_error(capsys, ["config", "check", tmp_path / "nope.yaml"],
                        "config file", "nope.yaml", "not found")


def test_missing_deepspeed_config(capsys, good):
    assert_config_error(capsys, ["config", "check", good, "distributed.deepspeed_config=z9.json"],
                        "'distributed.deepspeed_config'", "z9.json", "not found")


def test_unknown_objective(tmp_path, capsys, good):
    path = write(tmp_path, good.read_text() + "objective:\n  name: uaclm\n")
    assert_config_error(capsys, ["config", "check", path], "'objective.name'", str(path),
                        "clm, ua_clm, clm+ua, ult", "did you mean 'ua_clm'?")


def test_invalid_yaml_names_the_line(tmp_path, capsys):
    path = write(tmp_path, "model:\n  name_or_path: tiny-llama\noptim: [1, 2\n")
    assert_config_error(capsys, ["config", "check", path], "invalid YAML", str(path), "line 4")


def test_non_mapping_yaml(tmp_path, capsys):
    path = write(tmp_path, "- model\n- data\n")
    assert_config_error(capsys, ["config", "check", path], "top level", "must be a mapping",
                        "got a list")


def test_override_without_equals(capsys, good):
    assert_config_error(capsys, ["config", "check", good, "optim.lr"],
                        "override 'optim.lr'", "key=value")


def test_override_unknown_key(capsys, good):
    assert_config_error(capsys, ["config", "check", good, "optim.learning_rate=1e-3"],
                        "unknown key 'optim.learning_rate' on the command line")


def test_ult_needs_the_reference_implementation(capsys, good):
    assert_config_error(capsys, ["config", "check", good, "objective.name=ult"],
                        "objective.name 'ult'", "objective.implementation 'reference'",
                        "got 'fused'")


def test_bad_enum_for_loss_on(capsys, good):
    assert_config_error(capsys, ["config", "check", good, "data.loss_on=prompt"],
                        "'data.loss_on'", "all, answer", "'prompt'")


def test_data_paths_must_exist(tmp_path, capsys, good):
    path = write(tmp_path, good.read_text().replace(
        "format: fanoutqa", "format: jsonl\n  paths: [missing.jsonl]"))
    assert_config_error(capsys, ["config", "check", path], "'data.paths[0]'", "missing.jsonl",
                        "not found")


def test_data_paths_required_for_file_formats(capsys, good):
    assert_config_error(capsys, ["config", "check", good, "data.format=coqa"],
                        "data.paths is empty", "'coqa'")


def test_several_problems_are_listed(capsys, good):
    err = assert_config_error(capsys, ["config", "check", good, "optim.lr=0", "eval.clusterer=x"],
                              "2 problems", "'optim.lr'", "'eval.clusterer'")
    assert err.count("\n  - ") == 2


def test_train_validates_the_config_first(capsys, good, monkeypatch):
    def must_not_be_called(*args):
        raise AssertionError("entry point looked up before the config was validated")

    monkeypatch.setattr(cli, "_entry_point", must_not_be_called)
    for command in ("train", "eval", "run"):
        assert_config_error(capsys, [command, good, "optim.lr=abc"], "'optim.lr'")


def _fake_run(folder: Path, config: Path, split_seed: int) -> Path:
    """A run folder as training leaves it for evaluation: adapter/ and split_ids.json, the split
    of ``config``'s data with ``split_seed``."""
    from uaclm_dist.data import load_records, split_records

    cfg = load_config(config)
    train, test = split_records(load_records(cfg.data), cfg.data.train_fraction, split_seed)
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    (folder / "split_ids.json").write_text(json.dumps({"train": [r.id for r in train],
                                                      "test": [r.id for r in test]}))
    return folder


def test_eval_refuses_a_runs_training_questions_before_ray_starts(tmp_path, capsys, good,
                                                                   monkeypatch):  # fmt: skip
    import uaclm_dist.cluster

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started before the examples were checked")

    monkeypatch.setattr(uaclm_dist.cluster, "ray_session", no_ray)
    run = _fake_run(tmp_path / "clm_run", good, split_seed=1)
    out = tmp_path / "eval"
    err = assert_config_error(capsys, ["eval", good, "--base", "--adapter", f"clm={run}",
                                       "--out", out], f"run {run} (clm): ",
                              "evaluation examples are in its training split",
                              "--allow-train-overlap")  # fmt: skip
    assert " of the 13 evaluation examples" in err  # 16 records, 20% train: 13 test
    assert not out.exists()


def test_eval_passes_allow_train_overlap_to_the_runner(capsys, good, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "_entry_point",
                        lambda module, name: lambda *a, **kw: calls.append((module, kw)))
    assert run_cli(capsys, "eval", good, "--base", "--allow-train-overlap")[0] == 0
    assert run_cli(capsys, "eval", good, "--base")[0] == 0
    assert [kw["allow_train_overlap"] for _, kw in calls] == [True, False]
    assert calls[0][0] == "uaclm_dist.evaluate.runner"
    help_text = run_cli(capsys, "eval", "--help")[1]
    assert "--allow-train-overlap" in help_text and "CONTAMINATED" in help_text


def test_eval_baseline_must_be_an_evaluated_method_and_reaches_the_runner(
        tmp_path, capsys, good, monkeypatch):  # fmt: skip
    import uaclm_dist.cluster

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started before the baseline was checked")

    monkeypatch.setattr(uaclm_dist.cluster, "ray_session", no_ray)
    out = tmp_path / "eval"
    assert_config_error(capsys, ["eval", good, "--base", "--baseline", "clm", "--out", out],
                        "--baseline: clm is not one of the evaluated methods ['base']")  # fmt: skip
    assert_config_error(capsys, ["eval", good, "--base", "--baseline", "base=ctl", "--out", out],
                        "--baseline: ctl is not one of the evaluated methods ['base']")  # fmt: skip
    assert not out.exists()
    calls = []
    monkeypatch.setattr(cli, "_entry_point",
                        lambda module, name: lambda *a, **kw: calls.append(kw))
    assert run_cli(capsys, "eval", good, "--base", "--baseline", "base")[0] == 0
    assert run_cli(capsys, "eval", good, "--base")[0] == 0
    assert run_cli(capsys, "eval", good, "--base", "--baseline", "a=b", "--baseline", "base",
                   "--baseline", "c=d")[0] == 0  # fmt: skip
    assert [(kw["baseline"], kw["pairs"]) for kw in calls] == [
        ("base", {}), (None, {}), ("base", {"a": "b", "c": "d"})]
    for values, needle in [(["a", "b"], "one default baseline, got ['a', 'b']"),
                           (["a=b", "a=c"], "--baseline a=c: expected METHOD=BASELINE"),
                           (["=b"], "--baseline =b: expected METHOD=BASELINE")]:
        assert_config_error(capsys, ["eval", good, "--base",
                                     *(x for v in values for x in ("--baseline", v))], needle)


@pytest.mark.parametrize("argv, needle", [
    (["config", "check", "does_not_exist.yaml"], "not found"),
    (["config", "show", "{bad}", "model.lora.rank=x"], "'model.lora.rank'"),
])
def test_console_entry_exits_2_without_traceback(tmp_path, ds_config, argv, needle):
    good = write(tmp_path, "distributed:\n  deepspeed_config: ds.json\n", "good.yaml")
    argv = [str(good) if a == "{bad}" else a for a in argv]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-m", "uaclm_dist.cli", *argv], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc
    assert proc.stderr.startswith("uaclm: error:") and needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# ---------------------------------------------------------------------------------- good cases


def test_help_lists_subcommands(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for name in ("config", "train", "eval", "run"):
        assert name in out
    code, out, _ = run_cli(capsys, "config", "--help")
    assert code == 0 and "show" in out and "check" in out and "reference" in out


def test_usage_errors_exit_2(capsys):
    code, _, err = run_cli(capsys)
    assert code == 2 and "uaclm: error:" in err
    code, _, err = run_cli(capsys, "nonsense")
    assert code == 2 and "invalid choice" in err


def test_config_show_parses_back(tmp_path, capsys, good):
    code, out, err = run_cli(capsys, "config", "show", good, "optim.lr=3e-4",
                             "model.lora.target_modules=[q_proj,v_proj]")
    assert code == 0, err
    shown = RunConfig.model_validate(yaml.safe_load(out))
    overrides = ["optim.lr=3e-4", "model.lora.target_modules=[q_proj,v_proj]"]
    assert shown == load_config(good, overrides)
    assert shown.optim.lr == 3e-4 and shown.model.lora.target_modules == ["q_proj", "v_proj"]
    resolved = write(tmp_path, out, "resolved.yaml")
    assert load_config(resolved) == shown


def test_config_check_prints_ok_and_summary(capsys, good):
    code, out, err = run_cli(capsys, "config", "check", good, "model.lora.rank=4")
    assert code == 0, err
    first, second = out.strip().splitlines()
    assert first == f"ok: {good} is valid"
    assert "tiny-llama" in second and "r=4" in second and "max_steps 2" in second


def test_config_reference_lists_every_key(capsys):
    code, out, _ = run_cli(capsys, "config", "reference")
    assert code == 0
    assert "| `model.lora.rank` | int (>= 1) | `32` |" in out
    assert "| `objective.name` |" in out and "`ua_clm`" in out


@pytest.mark.parametrize("command", ["train", "eval", "run"])
def test_unimplemented_commands_exit_3_after_validation(capsys, good, monkeypatch, command):
    monkeypatch.setattr(cli, "_entry_point", lambda module, name: None)
    code, _, err = run_cli(capsys, command, good)
    assert code == 3
    assert "not implemented yet" in err


def test_commands_call_their_entry_points_with_the_config(capsys, good, monkeypatch):
    calls = []

    def fake_entry_point(module, name):
        return lambda config, **options: calls.append((name, config)) or 0

    monkeypatch.setattr(cli, "_entry_point", fake_entry_point)
    assert run_cli(capsys, "run", good, "optim.max_steps=5")[0] == 0
    assert [name for name, _ in calls] == ["run_training", "run_evaluation"]
    assert all(isinstance(c, RunConfig) and c.optim.max_steps == 5 for _, c in calls)


@pytest.mark.parametrize("command", ["train", "eval", "run"])
def test_verbose_is_accepted_and_reaches_every_entry_point(capsys, good, monkeypatch, command):
    calls = []

    def fake_entry_point(module, name):
        return lambda *args, **options: calls.append((module, name, options)) or 0

    monkeypatch.setattr(cli, "_entry_point", fake_entry_point)
    extra = ["--base"] if command == "eval" else []
    assert run_cli(capsys, command, good, *extra, "--verbose", "optim.max_steps=5")[0] == 0
    assert run_cli(capsys, command, good, *extra)[0] == 0
    half = len(calls) // 2
    assert [c[2]["verbose"] for c in calls] == [True] * half + [False] * half
    assert {module for module, _, _ in calls} <= {cli.TRAIN_MODULE, cli.EVAL_MODULE}
    assert "--verbose" in run_cli(capsys, command, "--help")[1]


# ------------------------------------------------------------------ launcher subcommands


def test_config_get_nested_key(capsys, good):
    code, out, err = run_cli(capsys, "config", "get", good, "model.lora.rank")
    assert (code, out, err) == (0, "32\n", "")
    assert run_cli(capsys, "config", "get", good, "optim.max_steps")[1] == "2\n"  # from the file
    assert run_cli(capsys, "config", "get", good, "logging.output_dir")[1] == "runs/default\n"


def test_config_get_applies_overrides(capsys, good):
    code, out, _ = run_cli(capsys, "config", "get", good, "optim.lr", "optim.lr=2e-4")
    assert (code, out) == (0, "0.0002\n")
    code, out, _ = run_cli(capsys, "config", "get", good, "logging.output_dir",
                           "logging.output_dir=/shared/runs/x")  # fmt: skip
    assert (code, out) == (0, "/shared/runs/x\n")


def test_config_get_prints_shell_friendly_values_that_parse_back(capsys, good):
    assert run_cli(capsys, "config", "get", good, "distributed.ray_address")[1] == "\n"  # null
    assert run_cli(capsys, "config", "get", good, "model.lora.enabled")[1] == "true\n"
    code, out, _ = run_cli(capsys, "config", "get", good, "model.lora.target_modules",
                           "model.lora.target_modules=[q_proj,v_proj]")  # fmt: skip
    assert (code, out) == (0, '["q_proj", "v_proj"]\n')
    # the printed value is a valid override value for the same key
    config = load_config(good, [f"model.lora.target_modules={out.strip()}"])
    assert config.model.lora.target_modules == ["q_proj", "v_proj"]
    code, out, _ = run_cli(capsys, "config", "get", good, "model.lora")
    assert code == 0 and json.loads(out)["rank"] == 32


@pytest.mark.parametrize("key, needles", [
    ("optim.learning_rte", ["unknown key 'optim.learning_rte'", "no 'learning_rte' in optim"]),
    ("modle.name_or_path", ["unknown key 'modle.name_or_path'",
                            "did you mean 'model.name_or_path'?"]),
    ("optim.lr.x", ["unknown key 'optim.lr.x'", "'optim.lr' is a value"]),
])
def test_config_get_unknown_key_exits_2_naming_it(capsys, good, key, needles):
    assert_config_error(capsys, ["config", "get", good, key], *needles)


def test_config_get_bad_config_exits_2(capsys, good):
    assert_config_error(capsys, ["config", "get", good, "optim.lr", "optim.lr=abc"], "'optim.lr'")


@pytest.mark.parametrize("argv, line", [
    (["train"], "2 2 0"),  # defaults: 2 workers x 1 CPU, no GPU
    (["train", "distributed.num_workers=4", "distributed.cpus_per_worker=8",
      "distributed.gpus_per_worker=1"], "4 32 4"),
    (["eval", "eval.num_generation_actors=8", "eval.cpus_per_actor=4",
      "eval.gpus_per_actor=1"], "8 32 8"),
    (["eval", "eval.gpus_per_actor=0.5", "eval.cpus_per_actor=1.5"], "2 3 1"),
])
def test_resources_prints_workers_cpus_gpus(capsys, good, argv, line):
    code, out, err = run_cli(capsys, "resources", good, *argv)
    assert (code, out, err) == (0, line + "\n", "")


def test_resources_bad_input_exits_2(capsys, good):
    assert_config_error(capsys, ["resources", good, "train", "distributed.num_workers=0"],
                        "'distributed.num_workers'")  # fmt: skip
    code, _, err = run_cli(capsys, "resources", good, "probe")
    assert code == 2 and "invalid choice: 'probe'" in err


def test_cluster_wait_times_out_with_a_clear_message(capsys):
    import socket
    import time

    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    code, out, err = run_cli(capsys, "cluster", "wait", "--address", f"127.0.0.1:{port}",
                             "--nodes", "2", "--timeout", "1")  # fmt: skip
    assert time.monotonic() - started < 10
    assert code == 1 and out == ""
    assert err.startswith(f"uaclm: error: cannot connect to Ray at 127.0.0.1:{port} within 1s")
    assert f"nothing listens on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_cluster_wait_needs_an_address(capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert_config_error(capsys, ["cluster", "wait", "--nodes", "1"], "--address", "RAY_ADDRESS")


def test_help_lists_the_launcher_subcommands(capsys):
    out = run_cli(capsys, "--help")[1]
    assert "resources" in out and "cluster" in out
    out = run_cli(capsys, "config", "--help")[1]
    assert "get" in out
    code, out, _ = run_cli(capsys, "cluster", "wait", "--help")
    assert code == 0 and "--nodes" in out and "--timeout" in out
