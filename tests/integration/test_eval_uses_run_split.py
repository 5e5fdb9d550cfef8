"""`uaclm eval` on a trained run uses that run's split (`split_ids.json`), end to end.

One tiny-llama run (2 steps, FanOutQA with ``data.context: retrieved``) is trained once; then:
an evaluation config with another ``data.split_seed`` is refused before Ray starts, the same one
with ``--allow-train-overlap`` runs and records the overlap, and the run's own settings score
base and adapter on the run's test ids, with ``context_has_answer`` in the parquet.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "tiny_test.yaml"
DATA = ("data.context=retrieved", "data.max_length=192")
EVAL = ("eval.max_examples=3", "eval.num_samples=2", "eval.max_new_tokens=4",
        "eval.bootstrap_samples=0", "eval.scores=[te,ppl,pe,se,length]")  # fmt: skip


def uaclm(*argv: str | Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uaclm_dist.cli", *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("split") / "run"
    proc = uaclm("train", CONFIG, *DATA, f"logging.output_dir={out}", "optim.max_steps=2")
    assert proc.returncode == 0, proc.stderr[-6000:]
    return out


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


def test_base_and_adapter_are_scored_on_the_runs_test_ids(run_dir, tmp_path):
    out = tmp_path / "eval"
    proc = uaclm("eval", CONFIG, *DATA, *EVAL, "--base", "--adapter", f"r={run_dir}",
                 "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    split = json.loads((run_dir / "split_ids.json").read_text())
    examples = json.loads((out / "examples.json").read_text())
    assert examples["ids"] == split["test"][:3] and examples["train_overlap"] == {"r": 0}
    frames = {m: pd.read_parquet(out / "per_example" / f"{m}.parquet") for m in ("base", "r")}
    for df in frames.values():
        assert df["id"].tolist() == split["test"][:3]
        assert df["context_has_answer"].map(type).eq(bool).all()
