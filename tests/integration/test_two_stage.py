"""Two-stage training end to end (issue 27): a run that starts from another run's adapter
(``model.init_adapter``) on the tiny model, through ``uaclm train`` and ``uaclm eval``.

A parent (`clm`, 2 steps, 1 worker) is trained once; then: a child (`ua_clm`) started from it
records its parent and starts from the parent's weights (its step-0 probe equals the parent's
last); a LoRA rank that differs and a split that puts the parent's training questions in the
child's test split are refused with exit 2 before Ray starts; an evaluation of the child names
the chain and holds the parent's training questions out; an adapter folder from elsewhere is
accepted as "parent split unknown" and its evaluation says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "tiny_test.yaml"
COMMON = ("distributed.num_workers=1", "optim.max_steps=2", "logging.probe_examples=4",
          "model.lora.dropout=0.0")  # fmt: skip
EVAL = ("eval.max_examples=3", "eval.num_samples=2", "eval.max_new_tokens=4",
        "eval.bootstrap_samples=0", "eval.scores=[te,length]")  # fmt: skip


def uaclm(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uaclm_dist.cli", *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=900, check=False)  # fmt: skip


def probe_rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "probe.jsonl").read_text().splitlines() if x]


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two-stage") / "parent"
    proc = uaclm("train", CONFIG, *COMMON, "objective.name=clm", "optim.lr=0.05",
                 f"logging.output_dir={out}")  # a large step, so that the parent moves
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def child(parent) -> Path:
    out = parent.parent / "child"
    proc = uaclm("train", CONFIG, *COMMON, "objective.name=ua_clm", f"logging.output_dir={out}",
                 f"model.init_adapter={parent}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_the_child_records_its_parent_and_starts_from_its_weights(parent, child):
    record = json.loads((child / "run_info.json").read_text())["parent"]
    info = json.loads((parent / "run_info.json").read_text())
    assert record["run_dir"] == str(parent.resolve()) and record["objective"] == "clm"
    assert record["run_id"] == info["run_id"] and record["split"] == "recorded"
    assert len(record["config_hash"]) == 16
    # the child's starting model is the parent's trained one: its step-0 probe is the parent's
    # last probe row (same held-out tokens, eval mode, no dropout), not the base model's
    (parent_start, *_, parent_end), start = probe_rows(parent), probe_rows(child)[0]
    key = "entropy_incorrect" if parent_end["entropy_incorrect"] is not None else "entropy_correct"
    moved = abs(parent_end[key] - parent_start[key])
    assert moved > 1e-6 * abs(parent_start[key]), "the parent's 2 steps did not move the probe"
    assert abs(start[key] - parent_end[key]) < 1e-3 * moved, (start, parent_end, parent_start)


def test_a_lora_that_differs_or_a_split_that_leaks_is_refused_before_ray(parent, tmp_path):
    proc = uaclm("train", CONFIG, *COMMON, f"logging.output_dir={tmp_path / 'r'}",
                 f"model.init_adapter={parent}", "model.lora.rank=4")  # fmt: skip
    assert proc.returncode == 2 and "rank 8 (config model.lora.rank 4)" in proc.stderr
    proc = uaclm("train", CONFIG, *COMMON, f"logging.output_dir={tmp_path / 's'}",
                 f"model.init_adapter={parent}", "data.split_seed=7")  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "in the parent run's training split" in proc.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_evaluating_the_child_names_the_chain_and_holds_the_parents_questions_out(parent, child):
    out = child / "eval-chain"
    proc = uaclm("eval", CONFIG, *EVAL, "--adapter", f"child={child}", "--out", out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    examples = json.loads((out / "examples.json").read_text())
    assert examples["chains"]["child"].startswith(f"clm ({parent.resolve()})")
    assert examples["parent_split_unknown"] == []
    parent_train = set(json.loads((parent / "split_ids.json").read_text())["train"])
    assert examples["ids"] and not parent_train & set(examples["ids"])
    assert "child (ancestor 1)" in examples["runs_checked"]
    assert "`child` starts from clm" in (out / "report.md").read_text()


def test_an_adapter_from_elsewhere_is_accepted_as_parent_split_unknown(parent, tmp_path):
    foreign = tmp_path / "downloaded-adapter"
    shutil.copytree(parent / "adapter", foreign)
    out = tmp_path / "child2"
    proc = uaclm("train", CONFIG, *COMMON, "objective.name=clm+ua", f"logging.output_dir={out}",
                 f"model.init_adapter={foreign}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((out / "run_info.json").read_text())["parent"]
    assert record["split"] == "unknown" and record["run_dir"] is None
    proc = uaclm("eval", CONFIG, *EVAL, "--adapter", f"c2={out}", "--out", out / "eval")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((out / "eval" / "examples.json").read_text())["parent_split_unknown"] == [
        "c2"]
    assert "parent split unknown" in (out / "eval" / "report.md").read_text()
