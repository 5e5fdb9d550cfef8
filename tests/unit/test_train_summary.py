"""The training summary's report of the paper's signature (METHOD.md section 4)."""

from __future__ import annotations

import json

import pytest

from uaclm_dist.train.summary import paper_signature, print_summary, summarize


def _row(step, incorrect, correct, n_tokens=10, n_base_correct=4):
    return {"step": step, "n_tokens": n_tokens, "n_base_correct": n_base_correct,
            "entropy_base_incorrect": incorrect, "entropy_base_correct": correct}  # fmt: skip


def test_signature_reports_start_end_and_direction_on_the_fixed_sets():
    sig = paper_signature({"start": _row(0, 2.0, 1.0), "end": _row(30, 3.25, 0.5)})
    assert sig["steps"] == [0, 30] and (sig["n_base_incorrect"], sig["n_base_correct"]) == (6, 4)
    assert sig["entropy_base_incorrect"] == {"start": 2.0, "end": 3.25, "change": 1.25}
    assert sig["entropy_base_correct"]["change"] == pytest.approx(-0.5)
    assert sig["incorrect_entropy_rose"] is True and sig["correct_entropy_fell"] is True
    clm_like = paper_signature({"start": _row(0, 2.0, 1.0), "end": _row(30, 1.5, 0.5)})
    assert clm_like["incorrect_entropy_rose"] is False


def test_no_signature_without_a_step_and_none_for_an_empty_set():
    assert paper_signature(None) is None
    assert paper_signature({"start": _row(0, 2.0, 1.0), "end": _row(0, 2.0, 1.0)}) is None
    sig = paper_signature({"start": _row(0, 2.0, None, n_base_correct=0),
                           "end": _row(5, 2.5, None, n_base_correct=0)})  # fmt: skip
    assert sig["correct_entropy_fell"] is None and sig["incorrect_entropy_rose"] is True


def test_summary_json_holds_the_signature_and_the_console_names_the_token_set(tmp_path, capsys):
    rows = [{"step": s, "total_steps": 3, "loss": 3.0 - s, "entropy_correct": 1.0,
             "entropy_incorrect": 2.0, "token_accuracy": 0.5} for s in (1, 2, 3)]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "probe.jsonl").write_text(
        json.dumps(_row(0, 2.0, 1.0)) + "\n" + json.dumps(_row(3, 2.5, 0.8)) + "\n"
    )
    summary = summarize(tmp_path, {"adapter_numel": 7}, stopped=False)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["first_steps"]["loss"] == 1.0 and summary["signature"]["steps"] == [0, 3]
    print_summary(summary)
    out = capsys.readouterr().out
    assert "held-out answer tokens" in out and "2.000 -> 2.500" in out
