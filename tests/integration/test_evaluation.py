"""The real Ray Data evaluation pipeline end to end (`uaclm eval` in a subprocess).

SmolLM2-135M-Instruct (packaged) answers a small jsonl set that mixes questions it knows with
questions it does not, so both classes exist and every metric is defined; FanOutQA questions
serve as the OOD set. One run is in-process instead: a score registered in this file alone
reaches ``metrics.json``. (`uaclm run`, training then evaluating, is in
test_eval_uses_run_split.py, which shares its run.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from uaclm_dist import faults
from uaclm_dist.evaluate.scores import SCORES, ScoreSpec
from uaclm_dist.evaluate.stats import ExampleStats

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
QA = REPO / "tests" / "fixtures" / "data" / "easy_and_hard_qa.jsonl"
SMOLLM2_EVAL = (
    "model.name_or_path=smollm2-135m", "model.quantization.method=none", "model.dtype=float32",
    "model.lora.enabled=false", "data.format=jsonl", f"data.paths=[{QA}]",
    "data.train_fraction=0.05", "data.prompt_template=chat", "data.max_length=160",
    "eval.num_samples=3", "eval.max_new_tokens=12", "eval.batch_size=4",
    "eval.num_generation_actors=2", "eval.bootstrap_samples=200",
)  # fmt: skip


def uaclm_eval(out: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "uaclm_dist.cli", "eval", str(REPO / "configs/tiny_test.yaml"),
         "--base", "--out", str(out), *SMOLLM2_EVAL, *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=1200, check=False,
        env=None if env is None else {**os.environ, **env},
    )  # fmt: skip


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``ancestor`` is among the parents of process ``pid`` (from /proc)."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: ppid
    return False


def generation_actors(under: int) -> list[int]:
    """The generation actors of the command ``under`` (another evaluation on the machine, a
    benchmark say, has its own)."""
    found = subprocess.run(["pgrep", "-f", r"MapBatches\(GenerationStage\)"], capture_output=True,
                           text=True).stdout.split()  # fmt: skip
    return [int(p) for p in found if _descends_from(int(p), under)]


def sigterm_once_generation_starts(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`uaclm eval` as :func:`uaclm_eval`, sent SIGTERM as soon as a generation actor exists
    (before any result has reached the driver)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "uaclm_dist.cli", "eval", str(REPO / "configs/tiny_test.yaml"),
         "--base", "--out", str(out), *SMOLLM2_EVAL, *overrides],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 600
    while proc.poll() is None and not generation_actors(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_eval_pipeline_scores_every_id_once_and_writes_the_report(tmp_path):
    """Also, on the way: SIGTERM during generation stops the evaluation with exit 75, leaving
    no per-example file; the same command again, with one generation actor SIGKILLed in the
    middle of its first batch (the fault hook; Ray Data restarts it and retries the batch),
    scores every example exactly once."""
    out = tmp_path / "eval"
    run = ("data.ood.format=fanoutqa", "data.ood.max_examples=4", "eval.batch_size=2")
    stopped = sigterm_once_generation_starts(out, *run)
    assert stopped.returncode == 75, stopped.stderr[-6000:]
    assert "uaclm: stopped: SIGTERM received; abandoned method 'base'" in stopped.stderr
    assert json.loads((out / "stopped.json").read_text())["remaining_methods"] == ["base"]
    assert not list((out / "per_example").iterdir())  # nothing half-written, nothing faked
    assert not (out / "metrics.json").exists()
    killed = tmp_path / "actor_killed"
    proc = uaclm_eval(out, *run, env={faults.KILL_GENERATION_ACTOR_ENV: str(killed)})
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert killed.exists(), "no generation actor was killed"
    assert not (out / "stopped.json").exists()
    df = pd.read_parquet(out / "per_example" / "base.parquet")
    expected = {json.loads(x)["id"] for x in QA.read_text().splitlines()}
    in_domain = df[~df["is_ood"]]
    assert len(in_domain) == len(set(in_domain["id"])) == len(expected) - 1  # 1 id trains
    assert set(in_domain["id"]) < expected
    assert df["is_ood"].sum() == 4 and df["id"].is_unique
    # statistics are there to recompute every score offline
    for column in ("greedy_token_logprobs", "greedy_token_entropies", "sample_texts",
                   "sample_token_logprobs", "cluster_ids", "te", "ppl", "pe", "se", "dse",
                   "length", "rouge_l", "is_correct"):  # fmt: skip
        assert column in df.columns, column
    assert all(len(s) == 3 for s in df["sample_texts"])
    metrics = json.loads((out / "metrics.json").read_text())["base"]
    assert 0 < metrics["accuracy"] < 1, "fixture should mix known and unknown questions"
    for name, res in metrics["scores"].items():
        for key in ("auroc", "auarc", "prr", "ood_auroc", "ood_aupr"):
            assert res[key] is not None, (name, key)
            low, high = res[f"{key}_ci"]
            if key == "prr" and low is None:  # too many undefined resamples: withheld, and said
                assert any(w.startswith(f"{name}: prr interval") for w in metrics["warnings"])
                continue
            assert low <= res[key] <= high or key == "prr", (name, key)
    report = (out / "report.md").read_text()
    assert "AUROC" in report
    for png in ("roc.png", "rejection.png", "reliability.png", "hist_base.png", "ood_roc.png"):
        data = (out / "plots" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    # an existing evaluation is never overwritten
    again = uaclm_eval(out)
    assert again.returncode == 2 and "already holds an evaluation" in again.stderr


def test_eval_rejects_a_missing_adapter_before_starting_ray(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "uaclm_dist.cli", "eval", str(REPO / "configs/tiny_test.yaml"),
         "--adapter", f"x={tmp_path / 'nothing'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "no peft adapter" in proc.stderr and "Traceback" not in proc.stderr


def max_token_nll(stats: ExampleStats) -> float:
    """A score that exists only in this file: the greedy answer's largest token NLL (nats)."""
    return -min(stats.greedy_token_logprobs)


def test_a_score_registered_in_this_file_alone_reaches_metrics_json(tmp_path):
    """One registration is all a new score needs: the config accepts its name, the pipeline
    computes it, metrics.json, the parquet and the report carry it. In-process, because the
    registration lives in this process only (scores are computed on the driver by design)."""
    from uaclm_dist.config import load_config
    from uaclm_dist.evaluate import run_evaluation

    SCORES.register(ScoreSpec("max_nll", max_token_nll, "Max NLL", "max token NLL", "nats"))
    try:
        cfg = load_config(REPO / "configs/tiny_test.yaml", [
            f"logging.output_dir={tmp_path}", "model.quantization.method=none",
            "eval.scores=[te,max_nll]", "eval.max_examples=3", "eval.num_samples=1",
            "eval.max_new_tokens=3", "eval.bootstrap_samples=0",
        ])  # fmt: skip
        run_evaluation(cfg, include_base=True, out_dir=str(tmp_path / "eval"))
    finally:
        SCORES.unregister("max_nll")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["base"]
    assert list(metrics["scores"]) == ["te", "max_nll"]
    assert {"auroc", "auarc", "prr", "spearman", "pearson"} <= set(metrics["scores"]["max_nll"])
    df = pd.read_parquet(tmp_path / "eval" / "per_example" / "base.parquet")
    expected = [-min(lp) for lp in df["greedy_token_logprobs"]]
    assert df["max_nll"].tolist() == pytest.approx(expected) and len(df) == 3
    assert "| Max NLL |" in (tmp_path / "eval" / "report.md").read_text()
