"""`uaclm run` (train, then evaluate base and adapter) and `uaclm eval` on a trained run, which
uses that run's split (`split_ids.json`), end to end.

One tiny-llama run (2 steps, FanOutQA with ``data.context: retrieved``) is trained and evaluated
once by `uaclm run`, with fake credentials in its environment; then: that evaluation scored base
and adapter on the run's own test ids (with ``context_has_answer`` in the parquet) and no file
holds a credential; an evaluation config with another ``data.split_seed`` is refused before Ray
starts; the same one with ``--allow-train-overlap`` runs and records the overlap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cluster_fixtures as cf
import pandas as pd
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "tiny_test.yaml"
DATA = ("data.context=retrieved", "data.max_length=192")
EVAL = ("eval.max_examples=3", "eval.num_samples=2", "eval.max_new_tokens=4",
        "eval.bootstrap_samples=0", "eval.scores=[te,ppl,pe,se,length]")  # fmt: skip


def uaclm(*argv: str | Path, timeout: int = 1200, env: dict | None = None
          ) -> subprocess.CompletedProcess:  # fmt: skip
    return subprocess.run([sys.executable, "-m", "uaclm_dist.cli", *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=None if env is None else {**os.environ, **env})  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """`uaclm run`: 2 training steps, then base and adapter scored on 4 of the run's test ids."""
    out = tmp_path_factory.mktemp("split") / "run"
    proc = uaclm("run", CONFIG, *DATA, f"logging.output_dir={out}", "optim.max_steps=2",
                 "eval.max_examples=4", "eval.max_new_tokens=4", "eval.num_samples=2",
                 "eval.bootstrap_samples=20", "logging.wandb_mode=offline",
                 env=cf.FAKE_SECRETS)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    return out


def test_uaclm_run_trains_then_scores_base_and_adapter_on_the_runs_test_ids(run_dir):
    """Also: the fake credentials in its environment appear in no file the run wrote (config,
    run_info, logs, metrics, W&B offline files, the evaluation)."""
    assert (run_dir / "logs").is_dir() and (run_dir / "run_info.json").exists()
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert cf.files_holding_secrets(run_dir) == []
    out = run_dir / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"base", "trained"}
    assert all(m["n_examples"] == 4 for m in metrics.values())
    assert (out / "report.md").exists()
    split = json.loads((run_dir / "split_ids.json").read_text())
    examples = json.loads((out / "examples.json").read_text())
    assert examples["ids"] == split["test"][:4] and examples["train_overlap"] == {"trained": 0}
    for method in ("base", "trained"):
        df = pd.read_parquet(out / "per_example" / f"{method}.parquet")
        assert df["id"].tolist() == split["test"][:4], method
        assert df["context_has_answer"].map(type).eq(bool).all(), method


def test_another_split_seed_is_refused_naming_the_run(run_dir, tmp_path):
    out = tmp_path / "eval"
    proc = uaclm("eval", CONFIG, *DATA, *EVAL, "data.split_seed=1", "--adapter",
                 f"r={run_dir}", "--out", out, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"run {run_dir} (r): " in proc.stderr and "in its training split" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_the_flag_scores_the_overlap_and_records_it(run_dir, tmp_path):
    out = tmp_path / "eval"
    proc = uaclm("eval", CONFIG, *DATA, *EVAL, "data.split_seed=1", "--adapter", f"r={run_dir}",
                 "--allow-train-overlap", "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    examples = json.loads((out / "examples.json").read_text())
    assert examples["allow_train_overlap"] is True and examples["train_overlap"]["r"] > 0
