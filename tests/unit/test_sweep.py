"""`uaclm sweep`: spec checks, cell expansion and ids, the local backend with a fake command
runner (order, resume, failures), and `collect` on cell folders written by the real writers
(`train.summary.summarize`, `evaluate.summary.compute_metrics`)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uaclm_dist import cli
from uaclm_dist.config import REPO_ROOT, parse_overrides
from uaclm_dist.evaluate.summary import compute_metrics, to_jsonable
from uaclm_dist.exit_codes import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK
from uaclm_dist.sweep import SweepSpecError, expand_cells, load_spec
from uaclm_dist.sweep import cli as sweep_cli
from uaclm_dist.sweep.cells import find_cells, parent_cell
from uaclm_dist.sweep.execute import CellCommand, CommandResult, tail_lines
from uaclm_dist.sweep.layout import cell_paths
from uaclm_dist.sweep.overrides import override_arg, value_text
from uaclm_dist.sweep.progress import Progress, format_duration
from uaclm_dist.sweep.status import read_status
from uaclm_dist.train.manifest import write_manifest
from uaclm_dist.train.step_timing import PHASES
from uaclm_dist.train.summary import summarize
from uaclm_dist.train.throughput import write_compute_setup

SCORES = ["te", "length"]


# ------------------------------------------------------------------------------- helpers


def write_spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def grid_spec(tmp_path: Path, *, objectives: str = "[clm, ua_clm]", extra: str = "") -> Path:
    """objective x loss_on x seeds [0, 1] on the tiny test config (found in the repo root)."""
    return write_spec(tmp_path, f"""
name: grid
base: configs/tiny_test.yaml
axes:
  - key: objective.name
    values: {objectives}
  - key: data.loss_on
    values: [all, answer]
seeds: [0, 1]
overrides:
  eval.max_examples: 16
output_dir: {tmp_path / "out"}
{extra}""")


def spec_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(SweepSpecError) as err:
        load_spec(write_spec(tmp_path, text))
    return str(err.value)


def fabricate_training(run_dir: Path, *, loss_first: float, loss_last: float,
                       stopped: bool = False, params: int | None = None, world: int = 2,
                       tokens_per_s: float = 100.0) -> dict:  # fmt: skip
    """A run folder whose summary.json is written by the real `summarize`; with ``params``
    also the compute set-up and running totals a worker writes (``tokens_per_s`` in total)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_info.json").write_text(json.dumps({
        "run_id": "r1", "git_commit": "abc", "world_size": world,
        "config": {"optim": {"micro_batch_size": 2, "grad_accumulation": 1}}}))
    steps = [{"step": s, "total_steps": 6, "loss": loss_first + (loss_last - loss_first) * s / 5,
              "entropy_correct": 0.5, "entropy_incorrect": 2.0, "token_accuracy": 0.4}
             for s in range(6)]  # fmt: skip
    if params is not None:
        write_compute_setup(run_dir, {
            "world_size": world, "device": "cpu", "peak_flops_per_device": 1e9,
            "peak_flops_source": "test",
            "parameters": {"total": params, "trainable": params // 100, "matmul_frozen": params,
                           "matmul_trainable": 1}})  # fmt: skip
        for s, row in enumerate(steps, 1):  # 1 s per step, 6 * params FLOPs per token
            row.update(cum_tokens=tokens_per_s * s, cum_seconds=float(s),
                       cum_flops=6.0 * params * tokens_per_s * s,
                       peak_memory_mb_per_worker=[params / 1e4] * world,
                       **{f"cum_{p}_s": s / 10 for p in PHASES})
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in steps) + "\n")
    probe = [{"step": 0, "n_tokens": 50, "n_base_correct": 20, "entropy_base_correct": 0.6,
              "entropy_base_incorrect": 2.0, "entropy_auroc": 0.7},
             {"step": 6, "n_tokens": 50, "n_base_correct": 20, "entropy_base_correct": 0.4,
              "entropy_base_incorrect": 2.5, "entropy_auroc": 0.8}]  # fmt: skip
    (run_dir / "probe.jsonl").write_text("\n".join(json.dumps(r) for r in probe) + "\n")
    return summarize(run_dir, {"adapter_numel": 10}, stopped)


def example_frame(n_correct: int, n_incorrect: int, seed: int) -> pd.DataFrame:
    """A per-example frame: incorrect answers are more uncertain (te) and longer."""
    rng = np.random.default_rng(seed)
    correct = np.array([True] * n_correct + [False] * n_incorrect)
    return pd.DataFrame({
        "rouge_l": np.where(correct, 0.9, 0.0), "confidence": np.where(correct, 0.8, 0.4),
        "te": np.where(correct, 0.5, 1.0) + rng.normal(0, 0.4, correct.size),
        "length": np.where(correct, 3.0, 4.0) + rng.integers(0, 3, correct.size),
        "is_ood": False,
    })  # fmt: skip


def fabricate_eval(eval_dir: Path, method: str, n_correct: int, n_incorrect: int,
                   seed: int) -> dict:  # fmt: skip
    """An evaluation folder whose metrics.json is what `uaclm eval` writes."""
    eval_dir.mkdir(parents=True, exist_ok=True)
    metrics = {method: compute_metrics(example_frame(n_correct, n_incorrect, seed), SCORES,
                                       n_bootstrap=20, seed=seed)}  # fmt: skip
    (eval_dir / "metrics.json").write_text(json.dumps(to_jsonable(metrics), indent=2))
    return metrics


def arg_value(argv: tuple[str, ...], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def override_value(argv: tuple[str, ...], key: str) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith(f"{key}="))


class FakeRunner:
    """Stands in for the subprocess runner: records each command and writes the files the real
    command would (via the real writers); cells in ``fail`` fail in phase ``fail_phase``."""

    def __init__(self, fail: set[str] = frozenset(), fail_phase: str = "train"):
        self.calls: list[CellCommand] = []
        self.fail, self.fail_phase = set(fail), fail_phase

    def __call__(self, command: CellCommand) -> CommandResult:
        self.calls.append(command)
        command.stderr_path.parent.mkdir(parents=True, exist_ok=True)
        run_dir = Path(override_value(command.argv, "logging.output_dir"))
        if command.cell_id in self.fail and command.phase == self.fail_phase:
            command.stderr_path.write_text("loading\rstep 1/8\rstep 2/8\nTraceback ...\n"
                                           "RuntimeError: worker died\n")  # fmt: skip
            return CommandResult(1, tail_lines(command.stderr_path))
        seed = int(override_value(command.argv, "optim.seed"))
        if command.phase == "train":
            fabricate_training(run_dir, loss_first=3.0, loss_last=1.0 + seed)
        else:
            method = arg_value(command.argv, "--adapter").split("=", 1)[0]
            fabricate_eval(Path(arg_value(command.argv, "--out")), method, 30 + 10 * seed, 30,
                           seed)  # fmt: skip
        command.stderr_path.write_text("")
        return CommandResult(0, [])


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fake(monkeypatch) -> FakeRunner:
    runner = FakeRunner()
    monkeypatch.setattr(sweep_cli, "COMMAND_RUNNER", runner)
    return runner


# ---------------------------------------------------------------------------------- spec


def test_spec_reports_every_problem_naming_its_field(tmp_path):
    message = spec_error(tmp_path, """
name: bad name
base: configs/tiny_test.yaml
axis: []
axes:
  - key: objective.nme
    values: [clm]
  - zip: {model.tiny.hidden_size: [64, 128], model.tiny.num_layers: [2]}
  - key: data.loss_on
    values: []
seeds: [0, 0]
eval_args: [--out, x]
""")
    for needle in ("unknown field 'axis'; did you mean 'axes'?",
                   "name: expected letters",
                   "axes[0]: 'objective.nme' is not a config key; did you mean 'objective.name'?",
                   "axes[1].zip: the lists advance together and must have one length",
                   "axes[2].values: expected a non-empty list",
                   "seeds: repeated seeds",
                   "eval_args: '--out' is not allowed"):  # fmt: skip
        assert needle in message, message
    assert message.startswith("8 problems in sweep spec")  # --out and x


def test_spec_refuses_keys_set_twice_or_set_by_the_sweep(tmp_path):
    message = spec_error(tmp_path, """
name: twice
base: configs/tiny_test.yaml
axes:
  - key: objective.name
    values: [clm]
  - key: optim.seed
    values: [1, 2]
seeds: [0]
overrides: {objective.name: ua_clm, logging.output_dir: x, data.field_map.question: q}
""")
    assert "overrides: 'objective.name' is already set by axes[0]" in message
    assert "seeds: 'optim.seed' is already set by axes[1]" in message
    assert "overrides: 'logging.output_dir' is set by the sweep" in message
    assert "field_map" not in message  # a mapping field's entry is a valid key


def test_spec_paths_missing_base_and_defaults(tmp_path, monkeypatch):
    assert "base: config file 'nope.yaml' not found" in spec_error(
        tmp_path, "name: x\nbase: nope.yaml\naxes: []\n")
    assert "missing field 'axes'" in spec_error(tmp_path, "name: x\nbase: configs/demo.yaml\n")
    (tmp_path / "local.yaml").write_text((REPO_ROOT / "configs/tiny_test.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    spec = load_spec(write_spec(tmp_path, "name: x\nbase: local.yaml\naxes: []\n"))
    assert spec.base == (tmp_path / "local.yaml").resolve()  # next to the spec first
    assert spec.output_dir == (tmp_path / "runs/sweeps/x").resolve()  # relative to cwd
    assert spec.evaluate is True and spec.seeds is None and spec.eval_args == ()
    assert [c.id.startswith("base-") for c in expand_cells(spec)] == [True]


def test_repository_specs_load_and_expand():
    study = load_spec(REPO_ROOT / "configs/sweeps/study.yaml")
    cells = expand_cells(study)
    assert study.base == REPO_ROOT / "configs/demo.yaml" and study.evaluate
    assert len(cells) == 12 and {c.seed for c in cells} == {0, 1}
    assert {dict(c.assignment)["objective.name"] for c in cells} == {"clm", "ua_clm", "clm+ua"}
    tiny = load_spec(REPO_ROOT / "configs/sweeps/tiny_2x2.yaml")
    sizes = {(dict(c.assignment)["model.tiny.hidden_size"],
              dict(c.assignment)["model.tiny.num_layers"]) for c in expand_cells(tiny)}
    assert sizes == {(64, 2), (128, 4)} and len(expand_cells(tiny)) == 4


@pytest.mark.parametrize("name, n_cells", [("tiny_llama_sizes", 10), ("tiny_llama_workers", 6),
                                           ("real_sizes", 6), ("qwen_sizes", 4), ("premise", 24)])
def test_scaling_specs_validate_every_cell(name, n_cells):
    from uaclm_dist.sweep.validate import check_cells, invalid

    spec = load_spec(REPO_ROOT / f"configs/sweeps/{name}.yaml")
    checks = check_cells(spec, expand_cells(spec))
    assert len(checks) == n_cells and invalid(checks) == []


def test_the_paper_sizes_spec_expands_to_the_recipes_layout():
    import yaml

    spec = load_spec(REPO_ROOT / "configs/sweeps/paper_7b_13b.yaml")
    cells = [dict(c.assignment) for c in expand_cells(spec)]
    assert len(cells) == 4 and spec.evaluate and spec.eval_args == ("--base",)
    assert {(c["model.name_or_path"], c["objective.name"]) for c in cells} == {
        (m, o) for m in ("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf")
        for o in ("clm", "ua_clm")}
    # both sizes train as the paper recipes do: 2 workers, ZeRO-2, the paper's global batch
    base = yaml.safe_load((REPO_ROOT / spec.base).read_text())
    assert base["distributed"]["num_workers"] == 2 and base["distributed"]["zero_stage"] == 2
    assert base["distributed"]["deepspeed_config"] == "ds_configs/zero2_overlap.json"
    assert base["optim"]["global_batch_size"] == 2


@pytest.mark.parametrize("value", [1e-5, 2.0e-4, "clm+ua", "null", "1", "", None, True, 64,
                                   ["q_proj", "v_proj"], {"question": "q"}, [1e-5, "a"]])
def test_values_round_trip_through_the_override_parser(value):
    pairs, problems = parse_overrides([override_arg("model.lora.target_modules", value)])
    assert problems == [] and pairs == [("model.lora.target_modules", value)]
    assert "\n" not in value_text(value)


# --------------------------------------------------------------------------------- cells


def shapes_spec(tmp_path: Path, *, zip_first: bool = True, name: str = "shapes.yaml") -> Path:
    shape = "  - zip: {model.tiny.hidden_size: [64, 128], model.tiny.num_layers: [2, 4]}\n"
    objective = "  - key: objective.name\n    values: [clm, ua_clm, clm+ua]\n"
    axes = shape + objective if zip_first else objective + shape
    return write_spec(tmp_path, f"""
name: shapes
base: configs/tiny_test.yaml
axes:
{axes}seeds: [3, 4]
overrides: {{optim.max_steps: 2}}
output_dir: {tmp_path / "out"}
""", name)


def test_product_and_zip_expansion_order_and_ids(tmp_path):
    spec = load_spec(shapes_spec(tmp_path))
    cells = expand_cells(spec)
    assert len(cells) == 2 * 2 * 3
    # seeds outermost, then the axes in order; zipped keys advance together
    assert [c.seed for c in cells] == [3] * 6 + [4] * 6
    first = [tuple(v for _, v in c.assignment) for c in cells[:6]]
    assert first == [(64, 2, "clm"), (64, 2, "ua_clm"), (64, 2, "clm+ua"),
                     (128, 4, "clm"), (128, 4, "ua_clm"), (128, 4, "clm+ua")]  # fmt: skip
    cell = cells[2]
    assert cell.label == ("model.tiny.hidden_size=64,model.tiny.num_layers=2,"
                          "objective.name=clm+ua,seed=3")  # fmt: skip
    identity = {"assignment": {"model.tiny.hidden_size": 64, "model.tiny.num_layers": 2,
                               "objective.name": "clm+ua"}, "seed": 3}  # fmt: skip
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    assert cell.id == f"64-2-clm_ua-s3-{digest}"
    assert cell.overrides(spec) == ["optim.max_steps=2", "model.tiny.hidden_size=64",
                                    "model.tiny.num_layers=2", "objective.name=clm+ua",
                                    "optim.seed=3"]  # fmt: skip
    assert len({c.id for c in cells}) == len(cells)
    assert [c.id for c in expand_cells(load_spec(spec.path))] == [c.id for c in cells]
    # the hash depends on the cell's own values, not on the order of the axes
    swapped = expand_cells(load_spec(shapes_spec(tmp_path, zip_first=False, name="b.yaml")))
    assert {c.short_hash for c in swapped} == {c.short_hash for c in cells}
    assert [c.label for c in swapped[:2]] == [
        "objective.name=clm,model.tiny.hidden_size=64,model.tiny.num_layers=2,seed=3",
        "objective.name=clm,model.tiny.hidden_size=128,model.tiny.num_layers=4,seed=3"]
    chosen, unknown = find_cells(cells, [cell.short_hash, cells[0].id, "nope"])
    assert [c.index for c in chosen] == [0, 2] and unknown == ["nope"]


# ---------------------------------------------------------------------------------- plan


def test_plan_lists_cells_and_names_an_invalid_cell(tmp_path, capsys):
    spec = grid_spec(tmp_path, objectives="[clm, clmm]")
    code, out, _ = run_cli(capsys, "sweep", "plan", spec)
    assert code == EXIT_BAD_INPUT
    assert "8 cell(s): 4 pending, 4 INVALID" in out
    bad = next(c for c in expand_cells(load_spec(spec)) if dict(c.assignment)[
        "objective.name"] == "clmm")
    line = next(x for x in out.splitlines() if bad.id in x)
    assert "INVALID" in line and "2/2/0  1/1/0" not in line
    assert "invalid value for 'objective.name' in the sweep spec" in out
    assert "did you mean 'clm'" in out


def test_run_refuses_a_spec_with_a_bad_value_before_running_anything(tmp_path, capsys, fake):
    spec = grid_spec(tmp_path, objectives="[clm, clmm]")
    code, _, err = run_cli(capsys, "sweep", "run", spec)
    assert code == EXIT_BAD_INPUT and fake.calls == []
    assert "4 of 8 cell(s) have an invalid config; nothing was run" in err
    bad = [c for c in expand_cells(load_spec(spec)) if "clmm" in c.label]
    assert all(f"cell {c.id} ({c.label})" in err for c in bad)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--address", "http://h:8265"], "--address: only with --backend ray"),
    (["--backend", "slurm", "--max-parallel", "2"], "--max-parallel: only with --backend ray"),
    (["--backend", "ray", "--no-wait", "--address", "h:8265"],
     "--no-wait: only with --backend slurm"),
    (["--backend", "ray"], "--backend ray needs --address"),
    (["--backend", "ray", "--address", "http://h:8265"], "output_dir in"),
])  # fmt: skip
def test_run_refuses_backend_flags_and_a_relative_output_dir_for_ray(tmp_path, capsys, fake,
                                                                     argv, message):
    spec = write_spec(tmp_path, """
name: rel
base: configs/tiny_test.yaml
axes: [{key: objective.name, values: [clm]}]
output_dir: runs/sweeps/relative-for-ray-test
""")
    code, _, err = run_cli(capsys, "sweep", "run", spec, *argv)
    assert code == EXIT_BAD_INPUT and fake.calls == [] and message in err, err
    assert not (REPO_ROOT / "runs/sweeps/relative-for-ray-test").exists()


class FakeSlurm:
    """sbatch / squeue stand-ins: arrays get job ids 100, 101, ...; ``squeue`` lists the tasks
    in ``queued`` until the test moves them on."""

    def __init__(self):
        self.scripts: list[str] = []
        self.queued: dict[str, str] = {}
        self.held: str | None = None

    def __call__(self, argv, **_):
        if argv[0] == "scontrol":
            assert argv[1] == "release" and self.held == argv[2], argv
            self.held = None
            return subprocess.CompletedProcess(argv, 0, "", "")
        if argv[0] == "sbatch":
            assert "--hold" in argv and self.held is None  # the previous array was released
            self.held = str(100 + len(self.scripts))
            job = str(100 + len(self.scripts))
            text = Path(argv[-1]).read_text()
            self.scripts.append(text)
            n = int(text.split("--array=0-")[1].split()[0]) + 1
            self.queued.update({f"{job}_{i}": "PENDING" for i in range(n)})
            return subprocess.CompletedProcess(argv, 0, f"{job};cluster\n", "")
        lines = [f"{h} {state}" for h, state in self.queued.items()]
        return subprocess.CompletedProcess(argv, 0, "\n".join(lines) + "\n", "")


def test_slurm_arrays_per_resource_group_and_a_vanished_task_is_failed(tmp_path, capsys):
    from uaclm_dist.sweep import slurm_backend
    from uaclm_dist.sweep.remote import watch_cells
    from uaclm_dist.sweep.validate import check_cells

    spec_path = write_spec(tmp_path, f"""
name: grid
base: configs/tiny_test.yaml
axes:
  - {{key: objective.name, values: [clm, ua_clm]}}
  - {{key: distributed.num_workers, values: [1, 2]}}
output_dir: {tmp_path / "out"}
""")
    spec = load_spec(spec_path)
    checks = check_cells(spec, expand_cells(spec))
    slurm = FakeSlurm()
    cells = slurm_backend.submit_arrays(spec, checks, extra=["--partition=cpu"], out=sys.stdout,
                                        run=slurm)  # fmt: skip
    assert len(slurm.scripts) == 2  # 1 worker: 1 CPU per task; 2 workers: 2 CPUs
    one, two = slurm.scripts
    assert "#SBATCH --cpus-per-task=1" in one and "#SBATCH --array=0-1" in one
    assert "#SBATCH --cpus-per-task=2" in two and "--gres" not in two
    assert f"sweep run {spec.path} --backend local --only \"$id\"" in one
    assert [c.handle for c in cells] == ["100_0", "100_1", "101_0", "101_1"]
    assert slurm.held is None  # every array released after its cells were marked
    assert [read_status(c.paths)["slurm_task"] for c in cells] == [c.handle for c in cells]
    assert {read_status(c.paths)["state"] for c in cells} == {"queued"}
    queue = slurm_backend.SlurmQueue(run=slurm)
    polls = []

    def sleep(_):  # the scheduler moves on between polls
        polls.append(1)
        if len(polls) == 1:  # task 100_0 finishes its cell; 101_1 is cancelled before starting
            fabricate_training(cells[0].paths.run_dir, loss_first=3, loss_last=1)
            fabricate_eval(cells[0].paths.eval_dir, "clm", 30, 30, 0)
            slurm.queued.update({"100_0": "COMPLETED", "101_1": "CANCELLED"})
        else:  # the others write a failure or finish
            for cell in cells[1:3]:
                fabricate_training(cell.paths.run_dir, loss_first=3, loss_last=1)
                fabricate_eval(cell.paths.eval_dir, "x", 30, 30, 0)
            slurm.queued = {}

    progress = watch_cells(spec, cells, active=queue.active, why_gone=queue.why_gone,
                           out=sys.stdout, sleep=sleep)  # fmt: skip
    out = capsys.readouterr().out
    assert (progress.done, progress.failed) == (3, 1)
    assert "[sweep] 1/4 done, 1 failed, 0 running, 2 queued" in out
    status = json.loads(cells[3].paths.status_file.read_text())
    assert status["state"] == "failed" and "101_1 ended without finishing the cell (Slurm state " \
        "CANCELLED)" in status["reason"] and str(cells[3].log) in status["reason"]


class FakeJobs:
    """Ray's JobSubmissionClient: a job runs for one poll, then its cell is finished (or, for
    ids in ``fail``, the job fails without a word from the cell)."""

    def __init__(self, spec, fail=(), unknown=(), interrupt_at_poll=None):
        self.spec, self.fail, self.unknown = spec, set(fail), set(unknown)
        self.interrupt_at_poll = interrupt_at_poll  # Ctrl-C while this many polls are done
        self.submitted: list[dict] = []
        self.polls: dict[str, int] = {}

    def __call__(self, address):
        self.address = address
        return self

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)

    def get_job_status(self, handle):
        if handle in self.unknown:
            raise RuntimeError(f"Job {handle} does not exist")
        if self.interrupt_at_poll is not None and sum(self.polls.values()) >= \
                self.interrupt_at_poll:  # fmt: skip
            raise KeyboardInterrupt
        self.polls[handle] = self.polls.get(handle, 0) + 1
        if self.polls[handle] == 1:
            return "RUNNING"
        cell = next(c for c in expand_cells(self.spec) if c.id in handle)
        if cell.id in self.fail:
            return "FAILED"
        paths = cell_paths(self.spec, cell)
        fabricate_training(paths.run_dir, loss_first=3, loss_last=1)
        fabricate_eval(paths.eval_dir, "clm", 30, 30, 0)
        return "SUCCEEDED"


def test_ray_jobs_one_at_a_time_with_the_code_only_working_dir(tmp_path, capsys):
    from uaclm_dist.sweep.ray_backend import run_on_ray
    from uaclm_dist.sweep.validate import check_cells

    spec = load_spec(grid_spec(tmp_path))
    checks = check_cells(spec, expand_cells(spec))[:3]
    jobs = FakeJobs(spec, fail={checks[1].cell.id})
    progress = run_on_ray(spec, checks, address="http://head:8265", max_parallel=1,
                          out=sys.stdout, client_factory=jobs, poll_s=0)  # fmt: skip
    assert jobs.address == "http://head:8265"
    assert (progress.done, progress.failed) == (2, 1)
    assert [j["metadata"]["cell"] for j in jobs.submitted] == [c.cell.id for c in checks]
    first = jobs.submitted[0]
    assert first["entrypoint"].endswith(f"--backend local --only {checks[0].cell.id}")
    env = first["runtime_env"]
    assert env["working_dir"] == str(REPO_ROOT) and "/.venv" in env["excludes"]
    assert set(env["env_vars"]) == {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "RAY_AUTH_MODE",
                                    "RAY_OVERRIDE_JOB_RUNTIME_ENV"}  # fmt: skip
    # one at a time: each job was submitted only after the previous one ended
    assert all(jobs.polls[j["submission_id"]] >= 2 for j in jobs.submitted)
    status = json.loads(cell_paths(spec, checks[1].cell).status_file.read_text())
    assert "Ray job status FAILED" in status["reason"]
    # every cell names its job, recorded before the job was submitted
    for check, job in zip(checks, jobs.submitted, strict=True):
        status = json.loads(cell_paths(spec, check.cell).status_file.read_text())
        assert status["ray_job"] == job["submission_id"], check.cell.id


def _queued_as(spec, cell, job: str) -> None:
    paths = cell_paths(spec, cell)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.status_file.write_text(json.dumps({"cell": cell.id, "state": "queued", "ray_job": job}))


def test_a_rerun_watches_the_jobs_still_on_the_cluster_and_submits_only_the_rest(tmp_path,
                                                                                 capsys):
    from uaclm_dist.sweep.ray_backend import run_on_ray
    from uaclm_dist.sweep.validate import check_cells

    spec = load_spec(grid_spec(tmp_path))
    checks = check_cells(spec, expand_cells(spec))[:3]
    running, forgotten = f"uaclm-sweep-{checks[0].cell.id}-old", f"x-{checks[1].cell.id}"
    _queued_as(spec, checks[0].cell, running)    # its job is still running on the cluster
    _queued_as(spec, checks[1].cell, forgotten)  # the cluster no longer knows its job
    jobs = FakeJobs(spec, unknown={forgotten})
    progress = run_on_ray(spec, checks, address="http://head:8265", max_parallel=1,
                          out=sys.stdout, client_factory=jobs, poll_s=0)  # fmt: skip
    assert (progress.done, progress.failed) == (3, 0)
    assert [j["metadata"]["cell"] for j in jobs.submitted] == [c.cell.id for c in checks[1:]]
    out = capsys.readouterr().out
    assert f"{checks[0].cell.id}: still on the cluster as Ray job {running}" in out


def test_ctrl_c_leaves_the_submitted_jobs_running_and_says_which(tmp_path, capsys):
    from uaclm_dist.sweep.ray_backend import run_on_ray
    from uaclm_dist.sweep.validate import check_cells

    spec = load_spec(grid_spec(tmp_path))
    checks = check_cells(spec, expand_cells(spec))[:2]
    jobs = FakeJobs(spec, interrupt_at_poll=1)
    with pytest.raises(KeyboardInterrupt):
        run_on_ray(spec, checks, address="http://head:8265", max_parallel=2, out=sys.stdout,
                   client_factory=jobs, poll_s=0)  # fmt: skip
    handles = [j["submission_id"] for j in jobs.submitted]
    assert len(handles) == 2
    out = capsys.readouterr().out
    assert "2 Ray job(s) keep running on the cluster" in out and all(h in out for h in handles)
    for check, handle in zip(checks, handles, strict=True):  # a rerun will find them
        status = json.loads(cell_paths(spec, check.cell).status_file.read_text())
        assert status["state"] == "queued" and status["ray_job"] == handle


# ----------------------------------------------------------------------------------- run


def test_run_order_commands_skip_on_rerun(tmp_path, capsys, fake):
    spec_path = grid_spec(tmp_path)
    spec = load_spec(spec_path)
    cells = expand_cells(spec)
    code, out, _ = run_cli(capsys, "sweep", "run", spec_path)
    assert code == EXIT_OK
    assert [(c.cell_id, c.phase) for c in fake.calls] == [
        (cell.id, phase) for cell in cells for phase in ("train", "eval")]
    train, evaluate = fake.calls[0].argv, fake.calls[1].argv
    paths = cell_paths(spec, cells[0])
    assert train[1:4] == ("-m", "uaclm_dist.cli", "train") and train[4] == str(spec.base)
    assert "objective.name=clm" in train and "optim.seed=0" in train
    assert "eval.max_examples=16" in train and "--resume" not in train
    assert f"logging.output_dir={paths.run_dir}" in train
    assert evaluate[3] == "eval" and arg_value(evaluate, "--adapter") == f"clm={paths.run_dir}"
    assert arg_value(evaluate, "--out") == str(paths.eval_dir)
    assert [a for a in evaluate if "=" in a and not a.startswith("clm=")] == [
        a for a in train if "=" in a]  # the evaluation gets the training's exact config
    status = read_status(paths)
    assert status["state"] == "done" and status["attempt"] == 1
    assert set(status["durations_s"]) == {"train", "eval"}
    assert "8/8 done, 0 failed, 0 remaining" in out and "ETA 0s" in out
    assert json.loads((tmp_path / "out/spec.json").read_text())["overrides"] == {
        "eval.max_examples": 16}

    fake.calls.clear()
    code, out, _ = run_cli(capsys, "sweep", "run", spec_path)
    assert code == EXIT_OK and fake.calls == [] and out.count("finished earlier, skipped") == 8
    code, out, _ = run_cli(capsys, "sweep", "plan", spec_path)
    assert code == EXIT_OK and "8 cell(s): 8 done" in out


def test_a_failed_cell_is_recorded_the_others_finish_and_a_rerun_retries_it(tmp_path, capsys,
                                                                          fake):  # fmt: skip
    spec_path = grid_spec(tmp_path)
    spec = load_spec(spec_path)
    cells = expand_cells(spec)
    broken = cells[1]
    fake.fail = {broken.id}
    code, out, err = run_cli(capsys, "sweep", "run", spec_path)
    assert code == EXIT_FAILURE and "1 cell(s) failed" in err
    assert [c.cell_id for c in fake.calls].count(broken.id) == 1  # no eval after a failed train
    assert len(fake.calls) == 1 + 2 * 7
    status = read_status(cell_paths(spec, broken))
    assert status["state"] == "failed" and status["phase"] == "train"
    assert status["reason"] == "uaclm train exited with status 1" and status["returncode"] == 1
    # a progress bar redrawn with carriage returns keeps only its last state
    assert status["stderr_tail"] == ["step 2/8", "Traceback ...", "RuntimeError: worker died"]
    assert "FAILED: uaclm train exited with status 1" in out and "| RuntimeError" in out
    assert "7/8 done, 1 failed, 0 remaining" in out
    code, out, _ = run_cli(capsys, "sweep", "plan", spec_path)
    assert "failed in train: uaclm train exited with status 1" in out

    fake.calls.clear()
    fake.fail = set()
    code, _, _ = run_cli(capsys, "sweep", "run", spec_path)
    assert code == EXIT_OK
    assert [(c.cell_id, c.phase) for c in fake.calls] == [(broken.id, "train"),
                                                          (broken.id, "eval")]  # fmt: skip
    assert read_status(cell_paths(spec, broken))["attempt"] == 2


def test_the_commands_parse_with_the_real_uaclm_parser(tmp_path, capsys, fake):
    spec_path = grid_spec(tmp_path, extra="eval_args: [--base]")
    run_cli(capsys, "sweep", "run", spec_path, "--only", expand_cells(load_spec(spec_path))[0].id)
    train, evaluate = (call.argv[3:] for call in fake.calls)
    parsed = cli.build_parser().parse_args([*train, "--resume", "RUN"])
    assert parsed.handler.__name__ == "_train" and parsed.resume == "RUN"
    assert "objective.name=clm" in parsed.overrides
    parsed = cli.build_parser().parse_args(evaluate)
    assert parsed.handler.__name__ == "_eval" and parsed.base is True
    assert parsed.adapter == [arg_value(evaluate, "--adapter")] and parsed.out.endswith("/eval")
    assert parsed.overrides == [a for a in train if "=" in a]


def test_a_failed_evaluation_is_retried_without_training_again(tmp_path, capsys, fake):
    spec_path = grid_spec(tmp_path)
    cell = expand_cells(load_spec(spec_path))[0]
    fake.fail, fake.fail_phase = {cell.id}, "eval"
    code, _, _ = run_cli(capsys, "sweep", "run", spec_path, "--only", cell.id)
    status = read_status(cell_paths(load_spec(spec_path), cell))
    assert code == EXIT_FAILURE and status["phase"] == "eval" and status["state"] == "failed"
    fake.calls.clear()
    fake.fail = set()
    code, _, _ = run_cli(capsys, "sweep", "run", spec_path, "--only", cell.id)
    assert code == EXIT_OK and [c.phase for c in fake.calls] == ["eval"]


def test_an_invalid_base_with_the_shared_overrides_is_one_error(tmp_path, capsys):
    spec_path = grid_spec(tmp_path).read_text().replace("max_examples: 16", "max_examples: 0")
    code, _, err = run_cli(capsys, "sweep", "plan", write_spec(tmp_path, spec_path, "b.yaml"))
    assert code == EXIT_BAD_INPUT
    assert "with the shared overrides: invalid value for 'eval.max_examples' in the sweep spec" \
        in err


def test_retry_resumes_from_a_checkpoint_or_sets_a_dead_start_aside(tmp_path, capsys, fake):
    spec_path = grid_spec(tmp_path)
    spec = load_spec(spec_path)
    first, second = expand_cells(spec)[:2]
    # first: a run that stopped after a complete checkpoint (2 ranks)
    run = cell_paths(spec, first).run_dir
    fabricate_training(run, loss_first=3, loss_last=2, stopped=True)
    ckpt = run / "ray/train/checkpoint_000001"
    (ckpt / "rng").mkdir(parents=True)
    (ckpt / "run_state.json").write_text(json.dumps({"world_size": 2, "next_step": 4}))
    for rank in range(2):
        (ckpt / "rng" / f"rank{rank}.pt").write_bytes(b"x")
    for rank in range(2):
        write_manifest(ckpt, rank)
    # second: a run that died before any checkpoint
    dead = cell_paths(spec, second).run_dir
    dead.mkdir(parents=True)
    (dead / "run_info.json").write_text("{}")
    code, out, _ = run_cli(capsys, "sweep", "run", spec_path, "--only", first.id,
                           second.short_hash)  # fmt: skip
    assert code == EXIT_OK and {c.cell_id for c in fake.calls} == {first.id, second.id}
    assert arg_value(fake.calls[0].argv, "--resume") == str(run)
    assert "--resume" not in fake.calls[2].argv
    assert (dead.parent / "run.failed-1" / "run_info.json").exists()
    assert "moved to" in out


def test_only_with_an_unknown_id_and_a_changed_spec_are_refused(tmp_path, capsys, fake):
    spec_path = grid_spec(tmp_path)
    code, _, err = run_cli(capsys, "sweep", "run", spec_path, "--only", "nope")
    assert code == EXIT_BAD_INPUT and "--only: no cell nope" in err and fake.calls == []
    code, _, _ = run_cli(capsys, "sweep", "run", spec_path, "--only",
                         expand_cells(load_spec(spec_path))[0].id)  # fmt: skip
    assert code == EXIT_OK
    spec_path.write_text(spec_path.read_text().replace("max_examples: 16", "max_examples: 8"))
    code, _, err = run_cli(capsys, "sweep", "run", spec_path)
    assert code == EXIT_BAD_INPUT and "holds runs made with another overrides" in err
    code, out, _ = run_cli(capsys, "sweep", "plan", spec_path)
    assert code == EXIT_OK and "warning: `uaclm sweep run` will refuse this spec" in out


def test_progress_line_and_eta():
    progress = Progress(total=5, done=2, failed=1, durations_s=[60.0, 120.0])
    assert progress.remaining == 2 and progress.eta_s == 180.0
    assert progress.line() == "2/5 done, 1 failed, 2 remaining; 1m30s per cell, ETA 3m00s"
    assert format_duration(7325) == "2h02m" and format_duration(None) == "?"


# ------------------------------------------------------------------------------- collect


def test_collect_tables_aggregate_over_seeds_and_list_failed_cells(tmp_path, capsys):
    spec_path = grid_spec(tmp_path, objectives="[clm]")
    spec = load_spec(spec_path)
    cells = expand_cells(spec)  # clm x {all, answer} x seeds {0, 1}
    expected = {}
    for cell in cells:
        loss_on = dict(cell.assignment)["data.loss_on"]
        paths = cell_paths(spec, cell)
        if loss_on == "answer" and cell.seed == 1:
            paths.root.mkdir(parents=True)
            paths.status_file.write_text(json.dumps({"state": "failed", "phase": "eval",
                                                     "reason": "uaclm eval exited with status 1"}))
            fabricate_training(paths.run_dir, loss_first=3, loss_last=2)
            continue
        fabricate_training(paths.run_dir, loss_first=3.0, loss_last=1.0 + cell.seed)
        n_incorrect = 5 if loss_on == "answer" else 30  # "answer": too few incorrect answers
        metrics = fabricate_eval(paths.eval_dir, "clm", 30 + 10 * cell.seed, n_incorrect,
                                 cell.seed)["clm"]  # fmt: skip
        expected[(loss_on, cell.seed)] = metrics

    code, out, _ = run_cli(capsys, "sweep", "collect", spec_path)
    assert code == EXIT_OK and "not finished: " + cells[3].id + " (failed)" in out
    frame = pd.read_parquet(tmp_path / "out/sweep.parquet")
    assert len(frame) == 4 and list(frame["cell"]) == [c.id for c in cells]
    assert pd.read_csv(tmp_path / "out/sweep.csv").shape == frame.shape
    for column in ("objective.name", "data.loss_on", "seed", "status", "method", "accuracy",
                   "auroc_te", "auroc_te_low", "auroc_te_high", "auroc_te_n_correct",
                   "auroc_te_n_incorrect", "auroc_length", "train_loss_last",
                   "sig_entropy_base_incorrect_change", "too_few_to_judge"):  # fmt: skip
        assert column in frame.columns, column
    done = frame.iloc[0]
    metrics = expected[("all", 0)]
    assert done["auroc_te"] == pytest.approx(metrics["scores"]["te"]["auroc"])
    assert [done["auroc_te_low"], done["auroc_te_high"]] == pytest.approx(
        metrics["scores"]["te"]["auroc_ci"])
    assert done["auroc_te_n_incorrect"] == 30 and done["train_loss_last"] == pytest.approx(1.4)
    assert done["sig_entropy_base_incorrect_change"] == pytest.approx(0.5)
    failed = frame.iloc[3]
    assert failed["status"] == "failed" and pd.isna(failed["method"])
    assert failed["failed_phase"] == "eval" and not bool(frame.iloc[0]["too_few_to_judge"])
    assert bool(frame.iloc[1]["too_few_to_judge"])

    study = pd.read_csv(tmp_path / "out/sweep_study.csv")
    all_tokens = study[study["data.loss_on"] == "all"].iloc[0]
    accuracies = [expected[("all", s)]["accuracy"] for s in (0, 1)]
    aurocs = [expected[("all", s)]["scores"]["te"]["auroc"] for s in (0, 1)]
    assert all_tokens["seeds"] == "0,1" and all_tokens["n_seeds"] == 2
    assert all_tokens["accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert all_tokens["accuracy_min"] == pytest.approx(min(accuracies))
    assert all_tokens["auroc_te_mean"] == pytest.approx(np.mean(aurocs))
    assert all_tokens["auroc_te_max"] == pytest.approx(max(aurocs))
    assert all_tokens["counts_per_seed"] == "s0 30/30; s1 40/30"
    assert all_tokens["n_correct_total"] == 70 and not all_tokens["too_few_to_judge"]
    answer = study[study["data.loss_on"] == "answer"].iloc[0]
    assert answer["n_seeds"] == 1 and answer["too_few_to_judge"]

    md = (tmp_path / "out/sweep.md").read_text()
    assert "## Study: mean over seeds" in md and "Length (baseline)" in md
    assert "| accuracy | TE | Length (baseline) | correct/incorrect | judged |" in md
    assert f"{np.mean(aurocs):.3f} ({min(aurocs):.3f}..{max(aurocs):.3f})" in md
    assert "too few to judge" in md
    assert f"- `{cells[3].id}` ({cells[3].label}): failed in eval: uaclm eval exited" in md


def test_collect_adds_compute_columns_and_plots_across_sizes_and_workers(tmp_path, capsys):
    spec_path = write_spec(tmp_path, """
name: sizes
base: configs/tiny_test.yaml
axes:
  - zip: {model.tiny.hidden_size: [64, 128], model.tiny.num_layers: [2, 4]}
  - {key: objective.name, values: [clm, ua_clm]}
  - {key: distributed.num_workers, values: [1, 2]}
output_dir: %s
""" % (tmp_path / "out"))
    spec = load_spec(spec_path)
    cells = expand_cells(spec)
    for cell in cells:
        values = dict(cell.assignment)
        params = 1_000_000 if values["model.tiny.hidden_size"] == 64 else 8_000_000
        world = values["distributed.num_workers"]
        fabricate_training(cell_paths(spec, cell).run_dir, loss_first=3, loss_last=1,
                           params=params, world=world, tokens_per_s=1000.0 * world * 0.8 ** world)
        fabricate_eval(cell_paths(spec, cell).eval_dir, values["objective.name"], 30, 20, 0)
    code, out, _ = run_cli(capsys, "sweep", "collect", spec_path)
    assert code == EXIT_OK
    frame = pd.read_parquet(tmp_path / "out/sweep.parquet").drop_duplicates("cell")
    big = frame[frame["model.tiny.hidden_size"] == 128].iloc[0]
    assert big["params_total"] == 8_000_000 and big["params_trainable"] == 80_000
    # steps 1 -> 6 after the first logged row: 5 s, 5 * tokens/s tokens
    assert big["tokens_per_s"] == pytest.approx(800.0) and big["world_size"] == 1
    assert big["mfu"] == pytest.approx(6 * 8e6 * 800 / 1e9)
    assert big["step_s_loss"] == pytest.approx(0.1) and big["global_batch"] == 2
    assert big["peak_memory_mb_per_worker"] == "800"
    two = frame[(frame["model.tiny.hidden_size"] == 128) & (frame["distributed.num_workers"] == 2)]
    assert two.iloc[0]["tokens_per_s_per_worker"] == pytest.approx(640.0)
    for name in ("throughput", "memory", "scaling", "quality"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 10_000, name
        assert f"plot {name}: " in out
    md = (tmp_path / "out/sweep.md").read_text()
    assert "## Compute" in md and "800.0 (800.0)" in md and "8,000,000 (80,000)" in md


def test_plot_lines_ignore_keys_zipped_with_the_model_and_ticks_name_the_sizes():
    """A key zipped with the model (each model its own prompt template) moves along the x axis:
    one line per objective across both models, not one line per (template, objective)."""
    from uaclm_dist.sweep.collect import Collected
    from uaclm_dist.sweep.plots import _params_label, _series_keys

    frame = pd.DataFrame({
        "model.name_or_path": ["a", "a", "b", "b"], "data.prompt_template": ["chat", "chat",
                                                                              "paper", "paper"],
        "objective.name": ["clm", "ua_clm", "clm", "ua_clm"],
        "optim.lr": [1e-4, 1e-4, 1e-4, 1e-4]})  # fmt: skip
    axes = ["model.name_or_path", "data.prompt_template", "objective.name", "optim.lr"]
    collected = Collected(frame=frame, axis_columns=axes, scores=["te"])
    assert _series_keys(collected, frame) == ["objective.name"]
    assert _series_keys(collected, frame, without=("objective.name",)) == []
    # without a model axis nothing is tied to it
    no_model = Collected(frame=frame, axis_columns=axes[1:], scores=["te"])
    assert _series_keys(no_model, frame) == ["data.prompt_template", "objective.name",
                                             "optim.lr"]  # fmt: skip
    assert [_params_label(n) for n in (135e6, 273_185_408, 1.54e9, 3000, 12)] == \
        ["135M", "273M", "1.54B", "3K", "12"]


def test_collect_lists_cells_never_run(tmp_path, capsys):
    spec_path = grid_spec(tmp_path)
    code, _, _ = run_cli(capsys, "sweep", "collect", spec_path)
    assert code == EXIT_OK
    frame = pd.read_csv(tmp_path / "out/sweep.csv")
    assert len(frame) == 8 and set(frame["status"]) == {"pending"}
    md = (tmp_path / "out/sweep.md").read_text()
    assert "No finished cell with an evaluation yet." in md and md.count(": pending") == 8


def test_planning_imports_neither_torch_nor_ray_nor_transformers():
    code = (
        "import sys; from uaclm_dist import cli; "
        "code = cli.main(['sweep', 'plan', 'configs/sweeps/tiny_2x2.yaml']); "
        "print(code, sorted(m for m in ('torch', 'transformers', 'ray') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout + proc.stderr


# ------------------------------------------------------------------------ paired differences


def labelled_frame(correct: np.ndarray, te: np.ndarray) -> pd.DataFrame:
    """A per-example frame over ids q0..q{n-1} with the given correctness and TE score."""
    return pd.DataFrame({"id": [f"q{i}" for i in range(correct.size)],
                         "rouge_l": np.where(correct, 0.9, 0.0),
                         "confidence": np.where(correct, 0.8, 0.4), "te": te,
                         "length": np.where(correct, 3.0, 4.0), "is_ood": False})  # fmt: skip


def write_evaluation(eval_dir: Path, method: str, frame: pd.DataFrame) -> None:
    """What `uaclm eval` leaves for one method: metrics.json and per_example/<method>.parquet."""
    (eval_dir / "per_example").mkdir(parents=True, exist_ok=True)
    frame.to_parquet(eval_dir / "per_example" / f"{method}.parquet", index=False)
    metrics = {method: compute_metrics(frame, SCORES, n_bootstrap=20, seed=0)}
    (eval_dir / "metrics.json").write_text(json.dumps(to_jsonable(metrics)))


def test_spec_baseline_must_name_a_value_of_an_axis_of_its_own(tmp_path):
    base = "name: s\nbase: configs/tiny_test.yaml\n"
    axes = ("axes:\n  - key: objective.name\n    values: [clm, ua_clm]\n  - zip:\n"
            "      optim.lr: [1.0e-4, 2.0e-4]\n      optim.max_steps: [2, 4]\n")  # fmt: skip
    assert "baseline: 'optim.seed' is not an axis key of this spec (axes: objective.name, " \
        "optim.lr, optim.max_steps)" in spec_error(tmp_path, base + axes +
                                                   "baseline: {optim.seed: 0}")
    assert "baseline: 'clm+ua' is not a value of the axis 'objective.name' (values: ['clm', " \
        "'ua_clm'])" in spec_error(tmp_path, base + axes + "baseline: {objective.name: clm+ua}")
    assert "baseline: 'optim.lr' is zipped with optim.max_steps" in spec_error(
        tmp_path, base + axes + "baseline: {optim.lr: 1.0e-4}")
    assert "baseline: expected one axis key" in spec_error(tmp_path, base + axes + "baseline: clm")
    assert "the spec does not evaluate" in spec_error(
        tmp_path, base + axes + "evaluate: false\nbaseline: {objective.name: clm}")
    spec = load_spec(write_spec(tmp_path, base + axes + "baseline: {objective.name: clm}"))
    assert spec.baseline == ("objective.name", "clm")
    assert load_spec(REPO_ROOT / "configs/sweeps/study.yaml").baseline == ("objective.name", "clm")


def test_collect_pairs_every_cell_with_its_baseline_cell_on_the_same_questions(tmp_path, capsys):
    from uaclm_dist.evaluate.compare import compare_methods
    from uaclm_dist.evaluate.intervals import holm

    spec_path = grid_spec(tmp_path, extra="baseline: {objective.name: clm}")
    spec = load_spec(spec_path)
    cells = expand_cells(spec)  # objective x loss_on x seeds {0, 1}
    rng = np.random.default_rng(0)
    frames = {}
    for i, cell in enumerate(cells):
        values = dict(cell.assignment)
        fabricate_training(cell_paths(spec, cell).run_dir, loss_first=3.0, loss_last=1.0)
        correct = np.arange(80) < 30 + 2 * i  # every cell its own accuracy: pairing shows
        noise = rng.normal(0, 1, correct.size)
        if values["objective.name"] == "ua_clm" and values["data.loss_on"] == "all":
            te = noise + np.where(correct, 0.0, 2.0)  # separates: AUROC well above chance
        else:
            te = noise  # chance
        frames[cell.id] = labelled_frame(correct, te)
        unevaluated = values["objective.name"] == "ua_clm" and values["data.loss_on"] == \
            "answer" and cell.seed == 1
        if not unevaluated:
            write_evaluation(cell_paths(spec, cell).eval_dir, values["objective.name"],
                             frames[cell.id])  # fmt: skip

    code, out, _ = run_cli(capsys, "sweep", "collect", spec_path)
    assert code == EXIT_OK and "paired csv: " in out
    paired = pd.read_csv(tmp_path / "out/sweep_paired.csv")
    # 3 ua_clm cells compared (one unevaluated), 2 quantities each (Accuracy, AUROC te)
    assert len(paired) == 6 and set(paired["quantity"]) == {"Accuracy", "AUROC te"}
    assert set(paired["value"]) == {"ua_clm"}
    # Holm over the whole table, not per pair or per seed
    assert paired["p_holm"].to_numpy() == pytest.approx(holm(paired["p_value"].to_numpy()))
    by_cell = {c.id: c for c in cells}
    for _, row in paired.iterrows():
        cell, base = by_cell[row["cell"]], by_cell[row["baseline_cell"]]
        base_values, cell_values = dict(base.assignment), dict(cell.assignment)
        assert base_values["objective.name"] == "clm" and base.seed == cell.seed == row["seed"]
        assert base_values["data.loss_on"] == cell_values["data.loss_on"] == row["data.loss_on"]
        expected = compare_methods({"clm": frames[base.id], "ua": frames[cell.id]}, ["te"],
                                   baseline="clm", metrics=["auroc"], n_bootstrap=1000,
                                   seed=0).diffs.set_index("quantity").loc[row["quantity"]]
        assert row["diff"] == pytest.approx(expected["diff"]) and row["n_examples"] == 80
        if row["quantity"] == "Accuracy":
            assert row["diff"] == pytest.approx((2 * cell.index - 2 * base.index) / 80)
        else:
            assert (row["low"], row["high"]) == pytest.approx((expected["low"], expected["high"]))
            separated = row["data.loss_on"] == "all"
            assert row["verdict_holm"] == ("yes" if separated else "no")

    md = (tmp_path / "out/sweep.md").read_text()
    assert "## Paired differences against `objective.name=clm`" in md
    assert "**6 comparisons with a p-value**" in md

    # --baseline: another axis for this collect; a value the axis lacks is refused, exit 2
    code, _, err = run_cli(capsys, "sweep", "collect", spec_path, "--baseline", "data.loss_on=al")
    assert code == EXIT_BAD_INPUT and "--baseline data.loss_on=al" in err
    assert "'al' is not a value of the axis 'data.loss_on'" in err
    code, _, _ = run_cli(capsys, "sweep", "collect", spec_path, "--baseline", "data.loss_on=all")
    by_loss_mask = pd.read_csv(tmp_path / "out/sweep_paired.csv")
    assert set(by_loss_mask["value"]) == {"answer"} and code == EXIT_OK
    assert set(by_loss_mask["objective.name"]) == {"clm", "ua_clm"}
    assert "## Paired differences against `data.loss_on=all`" in (
        tmp_path / "out/sweep.md").read_text()
    unevaluated = next(c for c in cells if c.label ==
                       "objective.name=ua_clm,data.loss_on=answer,seed=1")
    assert f"- {unevaluated.id} vs " in md and f"{unevaluated.id} is not evaluated" in md


def test_paired_differences_without_seeds_with_a_base_method_and_too_few_answers(tmp_path,
                                                                                 capsys):
    spec_path = write_spec(tmp_path, f"""
name: one_axis
base: configs/tiny_test.yaml
axes:
  - key: objective.name
    values: [clm, ua_clm, clm+ua]
baseline: {{objective.name: clm}}
output_dir: {tmp_path / "out"}
""")
    spec = load_spec(spec_path)
    cells = {dict(c.assignment)["objective.name"]: c for c in expand_cells(spec)}
    assert [c.seed for c in cells.values()] == [None] * 3
    rng = np.random.default_rng(1)
    for objective, n_correct in (("clm", 40), ("ua_clm", 5), ("clm+ua", 40)):
        paths = cell_paths(spec, cells[objective])
        fabricate_training(paths.run_dir, loss_first=3.0, loss_last=1.0)
        frame = labelled_frame(np.arange(80) < n_correct, rng.normal(0, 1, 80))
        write_evaluation(paths.eval_dir, objective, frame)
        # an evaluation run with --base also holds the base model: not the cell's method
        metrics = json.loads((paths.metrics_file).read_text())
        metrics["base"] = metrics[objective]
        paths.metrics_file.write_text(json.dumps(metrics))

    code, _, _ = run_cli(capsys, "sweep", "collect", spec_path)
    assert code == EXIT_OK
    paired = pd.read_csv(tmp_path / "out/sweep_paired.csv")
    assert list(paired["value"].unique()) == ["ua_clm", "clm+ua"] and paired["seed"].isna().all()
    too_few = paired[paired["value"] == "ua_clm"]  # 5 correct answers: no verdict either way
    assert set(too_few["verdict"]) == set(too_few["verdict_holm"]) == {"too few to judge"}
    assert paired[paired["value"] == "clm+ua"]["verdict_holm"].isin(["yes", "no"]).all()
    md = (tmp_path / "out/sweep.md").read_text()
    section = md[md.index("## Paired differences"):md.index("## Cells")]
    assert "| ua_clm | AUROC TE |" in section and "5/75 vs 40/40" in section
    assert "s- " not in section and "s0 " not in section
    assert "**4 comparisons with a p-value**" in md  # too-few rows keep their p-values


def test_a_paired_table_with_nothing_finished_is_a_readable_empty_csv(tmp_path, capsys):
    spec_path = grid_spec(tmp_path, extra="baseline: {objective.name: clm}")
    code, _, _ = run_cli(capsys, "sweep", "collect", spec_path)
    assert code == EXIT_OK
    paired = pd.read_csv(tmp_path / "out/sweep_paired.csv")
    assert paired.empty and {"data.loss_on", "seed", "diff", "verdict_holm"} <= set(paired)
    assert "No pair of finished cells to compare yet." in (tmp_path / "out/sweep.md").read_text()


# ------------------------------------------------------------------ two-stage cells (init_from)


def two_stage_spec(tmp_path: Path, init_from: str = "[null, {objective.name: clm}]") -> Path:
    """clm / ua_clm / clm+ua, each from the base model or from the clm cell's adapter (the
    control clm -> clm among them), 2 seeds."""
    return write_spec(tmp_path, f"""
name: two_stage
base: configs/tiny_test.yaml
axes:
  - key: objective.name
    values: [clm, ua_clm, clm+ua]
  - key: init_from
    values: {init_from}
seeds: [0, 1]
output_dir: {tmp_path / "out"}
baseline: {{objective.name: clm}}
""")


def test_two_stage_cells_run_after_their_parents_and_start_from_their_adapters(tmp_path,
                                                                               capsys, fake):
    spec = load_spec(two_stage_spec(tmp_path))
    cells = expand_cells(spec)
    assert spec.two_stage and len(cells) == 12
    for cell in cells:
        parent = parent_cell(cell, cells)
        if cell.init_from is None:
            assert parent is None
            continue
        # same seed, objective clm, from the base model; and run before the child
        assert parent.seed == cell.seed and parent.init_from is None
        assert dict(parent.assignment)["objective.name"] == "clm"
        assert parent.index < cell.index
    code, _, _ = run_cli(capsys, "sweep", "run", two_stage_spec(tmp_path))
    assert code == EXIT_OK
    child = next(c for c in cells if c.init_from and dict(c.assignment)["objective.name"]
                 == "ua_clm" and c.seed == 1)  # fmt: skip
    parent_run = cell_paths(spec, parent_cell(child, cells)).run_dir
    for call in fake.calls:
        starts = [a for a in call.argv if a.startswith("model.init_adapter=")]
        if call.cell_id == child.id:
            assert starts == [f"model.init_adapter={parent_run}"], call.argv
            assert not any(a.startswith("init_from") for a in call.argv)
        elif not next(c for c in cells if c.id == call.cell_id).init_from:
            assert starts == []
    # collect pairs each cell with the clm cell of the same init_from and seed: the two-stage
    # cells against the control clm -> clm, the one-stage ones against plain clm
    # (the fake evaluations write no per-example files, so each pair is listed as not compared)
    code, _, _ = run_cli(capsys, "sweep", "collect", two_stage_spec(tmp_path))
    assert code == EXIT_OK
    report = (tmp_path / "out" / "sweep.md").read_text()
    for cell in cells:
        values = dict(cell.assignment)
        if values["objective.name"] == "clm":
            continue
        control = next(c for c in cells if c.seed == cell.seed and dict(c.assignment) == {
            **values, "objective.name": "clm"})
        assert f"{cell.id} vs {control.id}" in report


def test_a_child_whose_parent_failed_fails_saying_so(tmp_path, capsys, fake):
    spec = load_spec(two_stage_spec(tmp_path))
    cells = expand_cells(spec)
    parent = next(c for c in cells if c.init_from is None and c.seed == 0
                  and dict(c.assignment)["objective.name"] == "clm")  # fmt: skip
    fake.fail = {parent.id}
    code, out, _ = run_cli(capsys, "sweep", "run", two_stage_spec(tmp_path))
    assert code == EXIT_FAILURE
    children = [c for c in cells if parent_cell(c, cells) == parent]
    assert len(children) == 3  # clm -> clm (the control), -> ua_clm, -> clm+ua
    for child in children:
        status = read_status(cell_paths(spec, child))
        assert status["state"] == "failed" and f"parent cell {parent.id}" in status["reason"]
    assert not [c for c in fake.calls if c.cell_id in {ch.id for ch in children}]


@pytest.mark.parametrize(("init_from", "problem"), [
    ("[{objective.name: clm}]", "needs null among its values"),
    ("[null, {data.loss_on: answer}]", "names 'data.loss_on', which no axis varies"),
    ("[null, {objective.name: ult}]", "'ult' is not a value of the axis 'objective.name'"),
    ("[null, clm]", "must be null or a mapping"),
])  # fmt: skip
def test_an_init_from_axis_is_checked(tmp_path, init_from, problem):
    with pytest.raises(SweepSpecError, match=re.escape(problem)):
        load_spec(two_stage_spec(tmp_path, init_from))


def test_two_stage_cells_are_refused_on_the_remote_backends(tmp_path, capsys, fake):
    code, _, err = run_cli(capsys, "sweep", "run", two_stage_spec(tmp_path), "--backend",
                           "slurm")  # fmt: skip
    assert code == 2 and "run with --backend local only" in err and fake.calls == []


def test_a_two_stage_cell_without_a_parent_in_the_grid_is_refused_before_anything_runs(tmp_path):
    # zipped with another key, the parent's combination (clm, answer) is not in the grid
    spec = load_spec(write_spec(tmp_path, f"""
name: orphan
base: configs/tiny_test.yaml
axes:
  - zip:
      objective.name: [clm, ua_clm]
      data.loss_on: [all, answer]
  - key: init_from
    values: [null, {{objective.name: clm}}]
output_dir: {tmp_path / "out"}
"""))
    with pytest.raises(SweepSpecError, match=r"no parent cell with \{'objective.name': 'clm'\}"):
        expand_cells(spec)
