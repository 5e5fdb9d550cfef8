"""Evaluation uses the runs' splits: an evaluation whose examples include a run's training
questions is refused (naming the run and the count) unless explicitly allowed; otherwise the
base model and every adapter are scored on the ids every run held out. No Ray here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uaclm_dist.config import ConfigError, RunConfig
from uaclm_dist.data import DataError, QARecord, load_records, split_records
from uaclm_dist.data.run_splits import (
    RunSplit,
    TrainOverlapError,
    find_run_split,
    select_examples,
)
from uaclm_dist.evaluate.runner import (
    prompt_rows,
    resolve_adapter,
    select_eval_examples,
    with_context_flags,
)


def records(n: int) -> list[QARecord]:
    return [QARecord(id=f"q{i}", question=f"Q{i}?", answers=(f"a{i}",)) for i in range(n)]


def run_split(name: str, train: list[str], test: list[str], folder: str = "/runs/x") -> RunSplit:
    return RunSplit(name, Path(folder), frozenset(train), frozenset(test))


def make_run(folder: Path, train: list[str], test: list[str]) -> Path:
    """A fake run folder: ``adapter/adapter_config.json`` and ``split_ids.json``."""
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    (folder / "split_ids.json").write_text(json.dumps({"train": train, "test": test}))
    return folder


def config(**data) -> RunConfig:
    return RunConfig(model={"name_or_path": "tiny-llama"},
                     data={"format": "fanoutqa", "max_examples": 40, **data})  # fmt: skip


def split_ids(cfg: RunConfig) -> tuple[list[str], list[str]]:
    train, test = split_records(load_records(cfg.data), cfg.data.train_fraction,
                                cfg.data.split_seed)  # fmt: skip
    return [r.id for r in train], [r.id for r in test]


# ------------------------------------------------------------------------------ select_examples


def test_overlap_is_refused_naming_the_run_the_count_and_the_first_ids():
    candidates = records(10)
    run = run_split("clm", ["q1", "q3", "q4", "q5", "q6", "q7", "q8"], ["q0", "q2", "q9"],
                    folder="/runs/clm")  # fmt: skip
    with pytest.raises(TrainOverlapError) as info:
        select_examples(candidates, [run])
    message = str(info.value)
    assert "run /runs/clm (clm): 7 of the 10 evaluation examples are in its training split" in (
        message)
    assert "/runs/clm/split_ids.json" in message
    assert "e.g. q1, q3, q4, q5, q6, ..." in message
    assert "--allow-train-overlap" in message and "contaminated" in message


def test_every_overlapping_run_is_named():
    runs = [run_split("a", ["q0"], ["q1", "q2"], "/runs/a"),
            run_split("b", [], ["q0", "q1", "q2"], "/runs/b"),
            run_split("c", ["q2", "q1"], ["q0"], "/runs/c")]  # fmt: skip
    with pytest.raises(TrainOverlapError) as info:
        select_examples(records(3), runs)
    message = str(info.value)
    assert "run /runs/a (a): 1 of the 3" in message and "run /runs/c (c): 2 of the 3" in message
    assert "/runs/b" not in message


def test_the_flag_scores_the_candidates_as_they_are_and_records_the_overlap():
    candidates = records(6)
    run = run_split("clm", ["q0", "q1"], ["q2", "q3", "q4", "q5"])
    selected, summary = select_examples(candidates, [run], allow_train_overlap=True)
    assert selected == candidates
    assert summary["train_overlap"] == {"clm": 2} and summary["allow_train_overlap"] is True
    assert "--allow-train-overlap" in summary["rule"]


def test_without_overlap_every_method_gets_the_ids_all_runs_held_out():
    candidates = records(8)
    runs = [run_split("clm", ["q7"], ["q0", "q1", "q2", "q3", "q4", "q5"]),
            run_split("ua", [], ["q1", "q2", "q3", "q5", "q6"])]  # fmt: skip
    selected, summary = select_examples(candidates[:7], runs)
    assert [r.id for r in selected] == ["q1", "q2", "q3", "q5"]  # candidate order kept
    assert summary["candidates"] == 7 and summary["selected"] == 4
    assert summary["train_overlap"] == {"clm": 0, "ua": 0}
    assert "restricted to the test ids of every run" in summary["rule"]


def test_no_runs_means_the_candidates():
    selected, summary = select_examples(records(4), [])
    assert [r.id for r in selected] == ["q0", "q1", "q2", "q3"]
    assert summary["runs_checked"] == {} and summary["rule"] == "the evaluation config's test split"


def test_an_empty_intersection_is_an_error():
    with pytest.raises(DataError, match="none of the 2 evaluation examples"):
        select_examples(records(2), [run_split("a", [], ["zz"])])


# ------------------------------------------------------------------------------- find_run_split


def test_split_ids_found_next_to_the_adapter_or_in_the_run_folder(tmp_path):
    run = make_run(tmp_path / "run", ["t1"], ["e1", "e2"])
    name, adapter = resolve_adapter(f"clm={run}")
    found = find_run_split(name, adapter)
    assert found == RunSplit("clm", run, frozenset({"t1"}), frozenset({"e1", "e2"}))
    (tmp_path / "bare").mkdir()
    assert find_run_split("bare", tmp_path / "bare") is None


@pytest.mark.parametrize("text", ["{not json", '{"train": ["a"]}', '{"train": [1], "test": []}'])
def test_a_malformed_split_ids_file_is_named(tmp_path, text):
    (tmp_path / "split_ids.json").write_text(text)
    with pytest.raises(DataError, match=str(tmp_path / "split_ids.json")):
        find_run_split("x", tmp_path)


# ------------------------------------------------------------------- runner: select_eval_examples


def test_same_data_settings_as_the_run_evaluate_its_test_split(tmp_path):
    cfg = config()
    train, test = split_ids(cfg)
    run = make_run(tmp_path / "run", train, test)
    examples = select_eval_examples(cfg, [("base", None), resolve_adapter(f"clm={run}")])
    assert [r.id for r in examples.test] == test
    assert examples.selection["scored"] == len(test) == 32
    assert examples.selection["runs_checked"] == {"clm": str(run)}


def test_another_split_seed_is_refused_with_the_run_named(tmp_path):
    train, test = split_ids(config())
    run = make_run(tmp_path / "run", train, test)
    cfg = config(split_seed=1)
    overlap = sum(i in set(train) for i in split_ids(cfg)[1])
    assert overlap > 0
    with pytest.raises(ConfigError) as info:
        select_eval_examples(cfg, [resolve_adapter(f"clm={run}")])
    assert f"run {run} (clm): {overlap} of the 32 evaluation examples" in str(info.value)
    allowed = select_eval_examples(cfg, [resolve_adapter(f"clm={run}")],
                                   allow_train_overlap=True)  # fmt: skip
    assert [r.id for r in allowed.test] == split_ids(cfg)[1]


def test_a_larger_eval_set_is_cut_to_the_runs_held_out_ids_before_max_examples(tmp_path):
    """A run that held out only part of the evaluation's test split (and trained on none of
    it): the common ids are scored, cut to eval.max_examples after the intersection."""
    cfg = config()
    _, test = split_ids(cfg)
    run = make_run(tmp_path / "run", [], test[::2])
    examples = select_eval_examples(cfg.model_copy(update={"eval": cfg.eval.model_copy(
        update={"max_examples": 5})}), [resolve_adapter(f"clm={run}")])  # fmt: skip
    assert [r.id for r in examples.test] == test[::2][:5]
    assert examples.selection["selected"] == 16 and examples.selection["scored"] == 5


def test_adapters_without_split_ids_are_listed_as_unchecked(tmp_path, capsys):
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "adapter_config.json").write_text("{}")
    examples = select_eval_examples(config(), [resolve_adapter(f"x={tmp_path / 'bare'}")])
    assert examples.selection["runs_unchecked"] == ["x"]
    assert "no split_ids.json for x" in capsys.readouterr().out


# ------------------------------------------------------------------ runner: context_has_answer


def test_prompt_rows_and_parquet_frame_carry_context_has_answer(smollm2_tokenizer):
    import pandas as pd

    cfg = config(context="retrieved", max_length=256, prompt_template="paper")
    rows = prompt_rows(cfg, smollm2_tokenizer)
    records = {r.id: r for r in load_records(cfg.data)}
    assert all(r["context_has_answer"] == records[r["id"]].context_has_answer for r in rows)
    df = with_context_flags(pd.DataFrame({"id": [r["id"] for r in rows] + ["ood:1"]}), rows)
    assert df["context_has_answer"].tolist() == [r["context_has_answer"] for r in rows] + [None]
    closed = prompt_rows(config(), smollm2_tokenizer)
    assert not any("context_has_answer" in r for r in closed)
    assert "context_has_answer" not in with_context_flags(pd.DataFrame({"id": ["x"]}), closed)


def test_a_context_cut_to_fit_loses_its_answer_flag(smollm2_tokenizer):
    cfg = config(context="retrieved", context_k=8, context_miss_rate=0.0, max_length=96)
    rows = prompt_rows(cfg, smollm2_tokenizer)
    assert any(r["context_has_answer"] is False for r in rows)
    assert any(r["context_has_answer"] is True for r in rows)
