"""Generated results sections: markers, tables, provenance and the stale check."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uaclm_dist.data.formats.arithmetic import ARITHMETIC_SIZE, read_arithmetic
from uaclm_dist.data.load import load_records
from uaclm_dist.data.records import DataError
from uaclm_dist.evaluate.compare import TOO_FEW, compare_methods
from uaclm_dist.evaluate.summary import compute_metrics, to_jsonable
from uaclm_dist.results.__main__ import REPO_ROOT, write_section
from uaclm_dist.results.markers import BlockError, find_blocks, render_block, replace_block
from uaclm_dist.results.provenance import record_provenance
from uaclm_dist.results.sections import SECTIONS, Section
from uaclm_dist.results.staleness import stale_sections
from uaclm_dist.results.tables import (
    EvalResults,
    _holds,
    detection_table,
    ood_table,
    paired_table,
    seeds_table,
)

FIELDS = {"command": "make results-x", "commit": "abc", "date": "2026-12-07", "machine": "m"}


# ------------------------------------------------------------------------------------ markers


def test_a_block_is_replaced_and_the_prose_around_it_kept_byte_for_byte():
    prose_before, prose_after = "# Title\n\nProse | with a pipe.\n\n", "\nMore prose.\n"
    page = prose_before + render_block("x", FIELDS, "old table") + prose_after
    new = replace_block(page, "x", {**FIELDS, "commit": "def"}, "| a |\n| b |")
    assert new.startswith(prose_before) and new.endswith(prose_after)
    block = find_blocks(new)["x"]
    assert block.commit == "def" and block.body == "| a |\n| b |"
    assert block.fields["date"] == "2026-12-07"


@pytest.mark.parametrize(
    ("page", "message"),
    [
        ("<!-- generated: x | command: c | commit: a | date: d | machine: m -->\nbody\n",
         "page line 1: block 'x' has no"),
        ("<!-- generated: x | command: c | commit: a -->\n<!-- end generated: x -->\n",
         "page line 1: marker lacks date, machine"),
        ("text\n<!-- generated: x with spaces -->\n", "page line 2: malformed marker"),
    ],
)  # fmt: skip
def test_malformed_markers_name_the_line(page, message):
    with pytest.raises(BlockError, match=message):
        find_blocks(page)


def test_a_repeated_block_and_a_missing_block_are_errors():
    one = render_block("x", FIELDS, "body")
    with pytest.raises(BlockError, match="a second block named 'x'"):
        find_blocks(one + "\n" + one)
    with pytest.raises(BlockError, match="no block 'y'"):
        replace_block(one, "y", FIELDS, "body")


# ------------------------------------------------------------------------------------- tables


def _frames(seed: int, wrong_rate: dict[str, float], n: int = 120, n_ood: int = 40):
    rng = np.random.default_rng(seed)
    frames = {}
    for method, rate in wrong_rate.items():
        wrong = rng.random(n) < rate
        frame = pd.DataFrame({
            "id": [f"q{i}" for i in range(n)] + [f"ood:{i}" for i in range(n_ood)],
            "rouge_l": np.r_[np.where(wrong, 0.0, 1.0), np.zeros(n_ood)],
            "is_ood": [False] * n + [True] * n_ood,
        })  # fmt: skip
        for score in ("te", "ppl", "pe", "se", "length"):
            frame[score] = np.r_[wrong * 1.0 + rng.normal(0, 1, n), rng.normal(2, 1, n_ood)]
        frame["confidence"] = 1 / (1 + np.exp(frame["te"]))
        frames[method] = frame
    return frames


def _write_eval(folder: Path, seed: int = 0, rates: dict | None = None,
                pairs: dict | None = None) -> Path:  # fmt: skip
    frames = _frames(seed, rates or {"base": 0.97, "clm": 0.45, "clm+ua": 0.4})
    scores = ["te", "ppl", "pe", "se", "length"]
    metrics = {m: compute_metrics(df, scores, 0.5, 100) for m, df in frames.items()}
    comparison = compare_methods(frames, scores, baseline="clm", pairs=pairs, threshold=0.5,
                                 n_bootstrap=100)  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(to_jsonable(metrics)))
    (folder / "comparison.json").write_text(json.dumps(to_jsonable(comparison.to_dict())))
    return folder


def test_tables_carry_counts_and_say_too_few_to_judge(tmp_path):
    run = EvalResults(_write_eval(tmp_path / "eval"))
    metrics = run.metrics
    table = detection_table({"": run}).splitlines()
    base_row = next(r for r in table if r.startswith("| `base`"))
    clm_row = next(r for r in table if r.startswith("| `clm` "))
    # The base model answers < 10 correctly: its AUROCs are not judged.
    assert metrics["base"]["n_correct"] < 10 and base_row.count(TOO_FEW) == 5
    counts = f"{metrics['clm']['n_correct']} / {metrics['clm']['n_incorrect']}"
    auroc = metrics["clm"]["scores"]["te"]["auroc"]
    assert counts in clm_row and f"{auroc:.3f} [" in clm_row and TOO_FEW not in clm_row
    ood = ood_table({"": run})
    ood_auroc = metrics["clm"]["scores"]["te"]["ood_auroc"]
    assert "| `clm` | 120 / 40 |" in ood and f"{ood_auroc:.3f} [" in ood


def test_a_method_paired_with_its_own_control_is_labelled_so(tmp_path):
    rates = {"clm": 0.45, "then_clm": 0.4, "then_ua": 0.35}
    runs = {f" (seed {s})": EvalResults(_write_eval(tmp_path / f"s{s}", s, rates,
                                                    {"then_ua": "then_clm"}))
            for s in (0, 1)}  # fmt: skip
    run = runs[" (seed 0)"]
    rows = paired_table(run).splitlines()
    assert rows[0].startswith("| method - `clm` |")
    assert [r.split(" |")[0] for r in rows[2:]] == ["| `then_clm`", "| `then_ua` - `then_clm`"]
    diff = next(d for d in run.comparison["diffs"]
                if d["method"] == "then_ua" and d["quantity"] == "Accuracy")  # fmt: skip
    assert f"{diff['diff']:+.3f} [" in rows[3]
    assert "| `then_ua` - `then_clm` | TE AUROC |" in seeds_table(runs)


@pytest.mark.parametrize(
    ("intervals", "expected"),
    [
        ([(0.01, 0.2), (0.03, 0.1)], "higher in every seed"),
        ([(-0.2, -0.01), (-0.1, -0.03)], "lower in every seed"),
        ([(0.01, 0.2), (-0.1, 0.1)], "no"),
        ([(0.01, 0.2), (-0.2, -0.01)], "no"),
    ],
)
def test_a_difference_holds_only_when_every_seed_excludes_zero_on_one_side(intervals, expected):
    cells = [{"low": lo, "high": hi, "verdict": "yes"} for lo, hi in intervals]
    assert _holds(cells) == expected
    assert _holds([*cells, {"low": 0.1, "high": 0.2, "verdict": TOO_FEW}]) == TOO_FEW


# ---------------------------------------------------------------------- provenance and staleness


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def _commit_all(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    return _git(repo, "rev-parse", "--short=12", "HEAD")


def _section(**changes) -> Section:
    return dataclasses.replace(SECTIONS["demo"], page="docs/R.md", depends_on=("code",), **changes)


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "code").mkdir(parents=True)
    (repo / "docs").mkdir()
    (repo / "code" / "train.py").write_text("x = 1\n")
    (repo / "other.txt").write_text("a\n")
    _git(repo, "init", "-q")
    commit = _commit_all(repo, "first")
    block = render_block("demo", {**FIELDS, "commit": commit}, "table")
    (repo / "docs" / "R.md").write_text(f"# Results\n\n{block}\n")
    _commit_all(repo, "docs")
    return repo


def test_a_section_turns_stale_when_a_commit_touches_its_paths(repo):
    section = _section()
    assert stale_sections(repo, [section]) == []
    (repo / "other.txt").write_text("b\n")
    _commit_all(repo, "unrelated")
    assert stale_sections(repo, [section]) == []
    (repo / "code" / "train.py").write_text("x = 2\n")
    assert "uncommitted changes to code/train.py" in stale_sections(repo, [section])[0].reason
    last = _commit_all(repo, "training changed")
    [stale] = stale_sections(repo, [section])
    assert "code/train.py changed since" in stale.reason and last[:7] in stale.reason
    assert "make results-demo" in str(stale)


def test_dirty_unknown_and_missing_blocks_are_stale(repo):
    page = repo / "docs" / "R.md"
    for commit, reason in (("abc123+dirty", "uncommitted changes"),
                           ("0123456789ab", "not in this clone's history")):  # fmt: skip
        page.write_text(render_block("demo", {**FIELDS, "commit": commit}, "table") + "\n")
        assert reason in stale_sections(repo, [_section()])[0].reason
    page.write_text("# Results\n")
    assert stale_sections(repo, [_section()])[0].reason == "no generated block on the page"


def test_write_puts_the_measured_tables_and_their_provenance_in_the_block(repo, tmp_path):
    folder = tmp_path / "measured"
    _write_eval(folder / "eval")
    (repo / "other.txt").write_text("changed, but not a declared path\n")
    fields = record_provenance(folder, repo, "make results-demo", ("code",))
    assert not fields["commit"].endswith("+dirty") and "cores" in fields["machine"]
    (repo / "code" / "train.py").write_text("x = 3\n")
    assert record_provenance(tmp_path / "m2", repo, "c", ("code",))["commit"].endswith("+dirty")
    (repo / "code" / "train.py").write_text("x = 1\n")
    page = write_section(repo, _section(), folder)
    block = find_blocks(page.read_text())["demo"]
    assert block.fields == fields
    assert "| `clm+ua` |" in block.body and "Out-of-domain detection" in block.body
    assert stale_sections(repo, [_section()]) == []  # measured on HEAD, the page not a path
    with pytest.raises(FileNotFoundError, match="provenance.json not found"):
        write_section(repo, _section(), tmp_path / "unmeasured")


def test_every_section_has_its_block_on_its_page():
    for section in SECTIONS.values():
        blocks = find_blocks((REPO_ROOT / section.page).read_text(), section.page)
        assert section.name in blocks, f"{section.page} lacks the block of {section.name!r}"
        assert blocks[section.name].fields["command"] == section.command
        assert all((REPO_ROOT / p).exists() for p in section.depends_on), section.depends_on


# --------------------------------------------------------------------- the out-of-domain prompts


def test_the_arithmetic_prompts_are_distinct_correct_and_the_same_every_time():
    records = read_arithmetic()
    assert len(records) == ARITHMETIC_SIZE == len({r.question for r in records})
    assert records == read_arithmetic()
    words = {"plus": "+", "minus": "-", "times": "*"}
    for record in records[:60]:
        q = record.question.rstrip("?").split()
        if q[-2] in words:
            value = eval(f"{q[-3]} {words[q[-2]]} {q[-1]}")  # noqa: S307 - digits and one operator
        elif q[1] == "many":
            value = int(q[-2]) * (60 if q[2] == "minutes" else 7)
        else:
            value = int(q[-1]) // 2
        assert record.answers == (str(value),), record.question
        assert record.context is None and record.image is None


def test_arithmetic_loads_as_ood_data_and_refuses_paths(tmp_path):
    from uaclm_dist.config.schema import OODDataConfig

    records = load_records(OODDataConfig(format="arithmetic", max_examples=200))
    assert len(records) == 200 and records[0].id == "arith-0"
    with pytest.raises(DataError, match="generated and reads no files"):
        read_arithmetic(tmp_path)
