"""Real Ray Train + DeepSpeed ZeRO + bitsandbytes NF4 training runs through the `uaclm` CLI.

Each run is a subprocess (`python -m uaclm_dist.cli train ...`) that starts its own local Ray
cluster, so runs cannot leak state into each other or into the test process.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from uaclm_dist import faults

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny_test.yaml"


def uaclm(*args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "uaclm_dist.cli", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        env=None if env is None else {**os.environ, **env},
    )  # fmt: skip
    return proc


def train(out: Path, *overrides: str, config: Path = TINY, expect: int = 0,
          env: dict | None = None) -> dict:  # fmt: skip
    proc = uaclm("train", str(config), f"logging.output_dir={out}", *overrides, env=env)
    assert proc.returncode == expect, (
        f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-6000:]}"
    )
    return json.loads((out / "summary.json").read_text())


def metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]


def adapter_tensors(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def assert_checkpoints_hold_trainable_state_only(out: Path) -> None:
    from uaclm_dist.train.checkpoint import checkpointed_module_keys

    keys = checkpointed_module_keys(out / "ray")
    assert keys and all("lora_" in k for k in keys), sorted(keys)[:10]


#: The probe settings both module runs share (so their step-0 probes must agree).
PROBE = ("logging.probe_examples=8",)


@pytest.fixture(scope="module")
def zero2_clm(tmp_path_factory) -> tuple[Path, dict]:
    """24 CLM steps, 2 workers, ZeRO-2, NF4 QLoRA, W&B offline: (run folder, summary)."""
    out = tmp_path_factory.mktemp("zero2") / "z2"
    return out, train(out, "optim.max_steps=24", "objective.name=clm", "optim.lr=3e-3",
                      "logging.wandb_mode=offline", *PROBE)  # fmt: skip


@pytest.fixture(scope="module")
def zero3_ua_clm(tmp_path_factory) -> tuple[Path, dict]:
    """6 UA-CLM steps, 2 workers, ZeRO-3, NF4 QLoRA: (run folder, summary)."""
    out = tmp_path_factory.mktemp("zero3") / "z3"
    return out, train(out, "optim.max_steps=6", "objective.name=ua_clm", *ZERO[3], *PROBE)


def test_zero2_qlora_two_workers_learns_and_saves_a_loadable_adapter(zero2_clm):
    out, summary = zero2_clm
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 25))
    first = sum(r["loss"] for r in rows[:4]) / 4
    last = sum(r["loss"] for r in rows[-4:]) / 4
    assert last < first - 0.1, f"loss did not decrease: {first:.3f} -> {last:.3f}"
    assert all(r["n_correct"] + r["n_incorrect"] == r["n_tokens"] for r in rows)
    assert_checkpoints_hold_trainable_state_only(out)  # no 4-bit quantization state
    # LoRA B starts at zero; training must have moved it.
    tensors = adapter_tensors(out)
    lora_b = [t for k, t in tensors.items() if "lora_B" in k]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)
    # The adapter loads onto the base model with peft.
    from peft import PeftModel

    from uaclm_dist.modeling.loading import load_causal_lm

    info = json.loads((out / "run_info.json").read_text())
    tiny = info["config"]["model"]["tiny"]
    tiny.pop("tokenizer")
    base = load_causal_lm("tiny-llama", dtype=torch.float32, tiny_kwargs=tiny, seed=0)
    model = PeftModel.from_pretrained(base, str(out / "adapter"))
    loaded = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert len(loaded) == len(lora_b)
    assert summary["adapter_numel"] == sum(t.numel() for t in tensors.values())
    for name in ("config.yaml", "run_info.json", "data_report.json", "split_ids.json"):
        assert (out / name).exists(), name
    # W&B offline run (rank 0 only), named by the run id kept for resume
    run_id = info["run_id"]
    assert len(list((out / "wandb").glob(f"offline-run-*-{run_id}"))) == 1


def test_zero3_qlora_saves_the_adapter_the_workers_held(zero3_ua_clm):
    out, summary = zero3_ua_clm
    tensors = adapter_tensors(out)
    assert tensors and all(t.numel() > 0 for t in tensors.values())
    # Fingerprint of the gathered ZeRO-3 parameters on the workers == the file's content.
    assert summary["adapter_numel"] == sum(t.numel() for t in tensors.values())
    l1 = float(sum(t.float().abs().sum() for t in tensors.values()))
    assert l1 == pytest.approx(summary["adapter_l1"], rel=1e-6)
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if "lora_B" in k)
    assert_checkpoints_hold_trainable_state_only(out)


def test_zero3_builds_an_unquantized_model_partitioned_while_it_loads(tmp_path):
    """ZeRO-3 the documented way: no device_map, a live HfDeepSpeedConfig, so from_pretrained
    builds the unquantized base under deepspeed.zero.Init; it then trains."""
    out = tmp_path / "z3-full"
    summary = train(out, "model.quantization.method=none", "model.dtype=float32",
                    "optim.max_steps=3", "logging.probe_examples=0", *ZERO[3])  # fmt: skip
    assert summary["steps_done"] == 3
    setup = json.loads((out / "compute.json").read_text())
    assert setup["zero_stage"] == 3 and setup["partitioned_at_load"] == 1.0
    assert all(math.isfinite(r["loss"]) for r in metrics(out))
    assert_checkpoints_hold_trainable_state_only(out)


def test_the_4bit_zero3_and_zero2_bases_are_not_partitioned_before_the_engine(zero2_clm,
                                                                               zero3_ua_clm):
    # transformers loads 4-bit weights outside zero.Init; ZeRO-3 shards them in initialize
    for out, stage in ((zero2_clm[0], 2), (zero3_ua_clm[0], 3)):
        setup = json.loads((out / "compute.json").read_text())
        assert (setup["zero_stage"], setup["partitioned_at_load"]) == (stage, 0.0)


EXACT = ("model.quantization.method=none", "model.dtype=float32", "model.lora.dropout=0.0",
         "optim.max_steps=6", "objective.name=clm")  # fmt: skip


ZERO = {2: ("distributed.deepspeed_config=ds_configs/zero2.json", "distributed.zero_stage=2"),
        3: ("distributed.deepspeed_config=ds_configs/zero3.json", "distributed.zero_stage=3")}
#: One global batch of 12 examples (micro 2) spread over 2, 1 and 3 workers.
WORLDS = {2: ("distributed.num_workers=2", "optim.grad_accumulation=3"),
          1: ("distributed.num_workers=1", "optim.grad_accumulation=6"),
          3: ("distributed.num_workers=3", "optim.grad_accumulation=2")}  # fmt: skip


@pytest.fixture(scope="module")
def two_worker_reference(tmp_path_factory) -> Path:
    """6 uninterrupted steps on 2 workers (ZeRO-2), global batch 12. (Resume on another world
    size is tested on the paper path, tests/integration/test_paper_path.py.)"""
    out = tmp_path_factory.mktemp("reference") / "w2"
    train(out, *EXACT, *ZERO[2], *WORLDS[2], "distributed.cpus_per_worker=0.5")
    return out


def test_stop_and_resume_reproduce_the_uninterrupted_losses(tmp_path):
    # fp32, LoRA dropout on (the RNG state must be restored too), 12 steps over 3 epochs.
    run = (*EXACT[:2], "optim.max_steps=12", "objective.name=clm", "model.lora.dropout=0.1")
    full = tmp_path / "full"
    train(full, *run)
    reference = {r["step"]: r["loss"] for r in metrics(full)}

    part = tmp_path / "part"
    stopped = train(part, *run, "--stop-after-steps", "5", expect=75)
    assert stopped["stopped"] and stopped["steps_done"] == 5
    resumed = uaclm("train", str(TINY), f"logging.output_dir={part}", *run, "--resume", str(part))
    assert resumed.returncode == 0, resumed.stderr[-6000:]
    rows = metrics(part)
    assert [r["step"] for r in rows] == list(range(1, 13))
    for r in rows:
        assert r["loss"] == pytest.approx(reference[r["step"]], rel=1e-5), r["step"]
    assert torch.equal(
        adapter_tensors(part)["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"],
        adapter_tensors(full)["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"],
    )
    # The run folder refuses a second fresh run; a resume with another objective is refused.
    again = uaclm("train", str(TINY), f"logging.output_dir={part}")
    assert again.returncode == 2 and "already holds a run" in again.stderr
    other = uaclm("train", str(TINY), f"logging.output_dir={part}", *run, "objective.name=ua_clm",
                  "--resume", str(part))  # fmt: skip
    assert other.returncode == 2 and "objective.name" in other.stderr


def test_probe_measures_held_out_answer_tokens_and_the_summary_reports_the_signature(
        zero2_clm, zero3_ua_clm):  # fmt: skip
    """The entropy probe's token set is the answer tokens (target span + EOS) of held-out
    examples, split by the starting model's errors: the same set, with the same step-0
    numbers, for every objective trained from the same start (here CLM under ZeRO-2 and UA-CLM
    under ZeRO-3, the module's two runs). summary.json reports the paper's signature
    (METHOD.md section 4) on it as measured numbers. Its direction is reported, not asserted:
    a few steps of a random tiny model say nothing about the method (the README's study
    does)."""
    from uaclm_dist.config import load_config
    from uaclm_dist.train.trainer import prepare_training_data

    runs = {"clm": zero2_clm, "ua_clm": zero3_ua_clm}
    summaries = {objective: summary for objective, (_, summary) in runs.items()}
    data = prepare_training_data(load_config(TINY, list(PROBE)))
    n_answer = sum(sum(1 for y in e.labels[1:] if y != -100) for e in data.probe)
    assert len(data.probe) == 8
    assert n_answer == sum(len(e.input_ids) - e.prompt_length for e in data.probe)

    starts = [s["probe"]["start"] for s in summaries.values()]
    for key in ("n_tokens", "n_base_correct", "entropy_base_incorrect"):
        assert starts[0][key] == pytest.approx(starts[1][key], rel=1e-6), key
    for summary in summaries.values():
        sig = summary["signature"]
        assert sig["steps"] == [0, summary["steps_done"]] and sig["n_tokens"] == n_answer
        assert sig["n_base_incorrect"] + sig["n_base_correct"] == n_answer
        e = sig["entropy_base_incorrect"]
        assert e["change"] == pytest.approx(e["end"] - e["start"])
        assert sig["incorrect_entropy_rose"] == (e["change"] > 0)


def test_uaclm_stop_checkpoints_a_running_job_at_its_next_step(tmp_path):
    """`uaclm stop` on a running job: checkpoint at the next optimizer step, exit 75, no adapter.
    (Resuming from such a checkpoint is the stop/resume test above: both stops write the same
    checkpoint; the Slurm USR1 test resumes one after a requeue.)"""
    out = tmp_path / "stop"
    run = ("optim.max_steps=400", "objective.name=clm")
    watcher = threading.Thread(target=_stop_when_step_logged, args=(out, 2), daemon=True)
    watcher.start()
    stopped = train(out, *run, expect=75)
    k = stopped["steps_done"]
    assert stopped["stopped"] and 2 <= k < 400 and not (out / "adapter").exists()
    state = json.loads(
        next((out / "ray" / "train").glob("checkpoint_*/run_state.json")).read_text()
    )
    assert state["next_step"] == k
    assert [r["step"] for r in metrics(out)] == list(range(1, k + 1))


def _stop_when_step_logged(out: Path, step: int, timeout: float = 600) -> None:
    """Run `uaclm stop` once rank 0 has logged ``step``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = out / "metrics.jsonl"
        lines = path.read_text().splitlines(keepends=True) if path.exists() else []
        complete = [json.loads(x) for x in lines if x.endswith("\n")]
        if any(row["step"] >= step for row in complete):
            subprocess.run(
                [sys.executable, "-m", "uaclm_dist.cli", "stop", str(out)], cwd=REPO, check=True
            )
            return
        time.sleep(0.05)


def test_a_worker_killed_while_writing_a_checkpoint_resumes_from_the_last_good_one(
        tmp_path, two_worker_reference):  # fmt: skip
    """Rank 1 is SIGKILLed in the middle of publishing the step-4 checkpoint (the fault hook
    blocks it after half a file); Ray restarts the workers, resume skips the torn step-4
    checkpoint (naming it) for the step-2 one, and the run ends as the uninterrupted one (the
    module's 2-worker reference: same config, checkpoints do not change the losses)."""
    out = tmp_path / "fail"
    run = (*EXACT, *ZERO[2], *WORLDS[2], "distributed.cpus_per_worker=0.5",
           "logging.checkpoint_every_steps=2")  # fmt: skip
    marker = faults.hang_marker(out, next_step=4, rank=1)
    killer = threading.Thread(target=_kill_when_hung, args=(marker,), daemon=True)
    killer.start()
    summary = train(out, *run, env={faults.HANG_IN_CHECKPOINT_ENV: "4:1"})
    killer.join(timeout=5)
    assert marker.exists(), "the fault was not injected"
    assert not summary["stopped"]
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 7))  # no gap, no duplicate
    # the steps after the step-2 checkpoint were redone (their first rows were set aside)
    superseded = [json.loads(x) for x in
                  (out / "metrics.superseded.jsonl").read_text().splitlines()]  # fmt: skip
    assert min(r["step"] for r in superseded) == 3
    logs = "".join(p.read_text(errors="replace") for p in (out / "logs").rglob("*") if p.is_file())
    assert "skipping checkpoint" in logs and "(step 4): rank 1 never finished writing" in logs
    for a, b in zip(rows, metrics(two_worker_reference), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), a["step"]
    got, want = adapter_tensors(out), adapter_tensors(two_worker_reference)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-5, atol=1e-7), name


def _kill_when_hung(marker: Path, timeout: float = 600) -> None:
    """SIGKILL the worker whose pid the fault hook wrote into ``marker`` once it hangs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if marker.exists() and marker.read_text().strip():
            os.kill(int(marker.read_text()), signal.SIGKILL)
            return
        time.sleep(0.05)


def test_a_rank_that_fails_before_its_first_step_ends_the_run_without_retries(tmp_path):
    """Ray Train would restart the worker group max_failures times, each loading the model to
    fail the same way; a failure before the first optimizer step is recorded and every restart
    fails at once, so the set-up runs once, and the driver names the rank and its error."""
    out = tmp_path / "setup"
    proc = uaclm("train", str(TINY), f"logging.output_dir={out}", "optim.max_steps=2",
                 "distributed.max_failures=2", "logging.probe_examples=0",
                 env={faults.FAIL_SETUP_ENV: "1"})  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert ("uaclm: error: rank 1 failed before its first optimizer step" in proc.stderr
            and "fault injection: rank 1 fails while setting up" in proc.stderr), proc.stderr
    attempts = (out / "faults" / "setup-attempts-rank1").read_text().splitlines()
    assert len(attempts) == 1, attempts  # not retried: the restarts failed before set-up
    assert json.loads((out / "setup_failed.rank1.json").read_text())["rank"] == 1
