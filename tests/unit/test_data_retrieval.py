"""``data.context: retrieved``: answer-bearing statements, seeded contexts of k statements with
retrieval misses at the configured rate, and what reaches the prompt."""

from __future__ import annotations

import pydantic
import pytest

from uaclm_dist.config import DataConfig, RunConfig
from uaclm_dist.data import DataError, QARecord, build_prompt, load_records, split_records
from uaclm_dist.data.formats.fanoutqa import read_fanoutqa
from uaclm_dist.data.retrieval import (
    add_retrieved_context,
    draw_contexts,
    mentions_answer,
    statement,
)


def synthetic(n: int) -> list[QARecord]:
    """``n`` closed-book records with distinct answers (``ans7`` never matches ``ans70``)."""
    return [QARecord(id=f"q{i:04d}", question=f"What is item {i}?", answers=(f"ans{i}",))
            for i in range(n)]  # fmt: skip


@pytest.fixture(scope="module")
def fanoutqa():
    """The packaged FanOutQA dev set (1,693 single-hop records)."""
    return read_fanoutqa()


# ----------------------------------------------------------------------------------- statements


def test_statement_is_the_question_then_its_first_answer():
    record = QARecord(id="1", question="What is the batting hand of Pat Burrell?",
                      answers=("Right", "right-handed"))  # fmt: skip
    assert statement(record) == "What is the batting hand of Pat Burrell? Right."
    assert statement(QARecord(id="2", question="Name the capital", answers=("Paris",))) == (
        "Name the capital? Paris.")
    assert statement(QARecord(id="3", question="Who?", answers=("J. Doe Jr.",))) == (
        "Who? J. Doe Jr.")


def test_mentions_answer_matches_whole_words_case_insensitively():
    record = QARecord(id="1", question="Which hand?", answers=("Right", "8,848.86 m"))
    assert mentions_answer("He bats right.", record)
    assert mentions_answer("Height: 8,848.86 m high", record)
    assert not mentions_answer("A bright day; copyright", record)
    assert not mentions_answer("8,848.861 m", record)


# ------------------------------------------------------------------------------------- contexts


def test_contexts_are_deterministic_and_independent_of_record_order():
    records = synthetic(200)
    first = draw_contexts(records, k=4, miss_rate=0.2, seed=3)
    assert draw_contexts(records, k=4, miss_rate=0.2, seed=3) == first
    assert draw_contexts(records[::-1], k=4, miss_rate=0.2, seed=3) == first
    other_seed = draw_contexts(records, k=4, miss_rate=0.2, seed=4)
    assert sum(other_seed[i] != first[i] for i in first) > 150


def test_every_context_has_k_distinct_statements_and_the_own_one_iff_has_answer():
    records = synthetic(300)
    contexts = draw_contexts(records, k=5, miss_rate=0.3, seed=0)
    for record in records:
        ctx = contexts[record.id]
        assert len(ctx.ids) == len(set(ctx.ids)) == 5
        assert (record.id in ctx.ids) == ctx.has_answer


def test_own_statement_is_included_at_the_configured_rate():
    contexts = draw_contexts(synthetic(1000), k=4, miss_rate=0.2, seed=0)
    missed = sum(not c.has_answer for c in contexts.values()) / 1000
    assert missed == pytest.approx(0.2, abs=0.04)
    positions = [c.ids.index(i) for i, c in contexts.items() if c.has_answer]
    assert {0, 1, 2, 3} == set(positions)  # shuffled, not always first


def test_k_of_one_is_the_own_statement_or_one_other():
    contexts = draw_contexts(synthetic(50), k=1, miss_rate=0.5, seed=1)
    assert all(len(c.ids) == 1 for c in contexts.values())
    assert all((c.ids == (i,)) == c.has_answer for i, c in contexts.items())


def test_context_text_holds_the_answer_when_included_and_never_when_missed(fanoutqa):
    """On the real data, whose answers repeat ("Right", "Left", years): a missed context never
    holds one of the question's reference answers as a whole word; an included one always."""
    records, report = add_retrieved_context(fanoutqa, k=4, miss_rate=0.2, seed=0)
    assert report.n_records == 1693 and report.n_short == 0
    assert report.n_with_answer == sum(r.context_has_answer for r in records)
    for record in records:
        assert record.context.count(statement(record)) == int(record.context_has_answer)
        assert mentions_answer(record.context, record) == record.context_has_answer
    assert [r.id for r in records] == [r.id for r in fanoutqa]


def test_training_questions_draw_only_from_training_questions():
    records = synthetic(400)
    train, _ = split_records(records, 0.2, seed=0)
    train_ids = {r.id for r in train}
    contexts = draw_contexts(records, k=4, miss_rate=0.2, seed=0, train_ids=train_ids)
    assert all(set(contexts[i].ids) <= train_ids for i in train_ids)
    test_ctx = [c for i, c in contexts.items() if i not in train_ids]
    assert any(set(c.ids) & train_ids for c in test_ctx)
    assert any(set(c.ids) - train_ids for c in test_ctx)
    # the miss decision does not depend on the split
    plain = draw_contexts(records, k=4, miss_rate=0.2, seed=0)
    assert {i: c.has_answer for i, c in contexts.items()} == {
        i: c.has_answer for i, c in plain.items()}


def test_shorter_context_when_too_few_other_questions_are_eligible():
    records = [QARecord(id=str(i), question=f"Which hand {i}?", answers=("Right",))
               for i in range(3)] + [QARecord(id="x", question="Which city?", answers=("Oslo",))]
    out, report = add_retrieved_context(records, k=3, miss_rate=0.0, seed=0)
    by_id = {r.id: r for r in out}
    # every "Right" question's context: its own statement and the only eligible other (Oslo)
    assert by_id["0"].context.count("Right") == 1 and "Oslo" in by_id["0"].context
    assert report.n_short == 3


def test_records_with_a_context_are_refused():
    record = QARecord(id="1", question="Where?", answers=("Paris",), context="Paris is nice.")
    with pytest.raises(DataError, match="closed-book records; 1 already have a context"):
        add_retrieved_context([record], k=2, miss_rate=0.2, seed=0)


def test_bad_k_or_miss_rate():
    with pytest.raises(ValueError, match="miss_rate"):
        draw_contexts(synthetic(3), k=2, miss_rate=1.0, seed=0)


# ------------------------------------------------------------------------ config and load_records


def test_load_records_gives_fanoutqa_retrieved_contexts_split_aware():
    cfg = DataConfig(format="fanoutqa", max_examples=200, context="retrieved", context_k=3,
                     context_miss_rate=0.25, context_seed=5)  # fmt: skip
    records = load_records(cfg)
    assert len(records) == 200 and all(r.context for r in records)
    assert sum(r.context_has_answer for r in records) / 200 == pytest.approx(0.75, abs=0.1)
    assert load_records(cfg) == records
    train, _ = split_records(records, cfg.train_fraction, cfg.split_seed)
    train_statements = {statement(r) for r in train}
    everyone = {statement(r) for r in records}
    for record in train:  # a test question's statement is never in a training sequence
        assert sum(s in record.context for s in everyone) == 3
        assert sum(s in record.context for s in train_statements) == 3
    assert all(r.context is None and r.context_has_answer is None
               for r in load_records(DataConfig(format="fanoutqa", max_examples=5)))


def test_defaults_and_ranges_of_the_context_keys():
    cfg = DataConfig()
    assert (cfg.context, cfg.context_k, cfg.context_miss_rate, cfg.context_seed) == (
        "none", 4, 0.2, 0)
    for bad in ({"context_k": 0}, {"context_miss_rate": 1.0}, {"context_miss_rate": -0.1},
                {"context": "oracle"}):  # fmt: skip
        with pytest.raises(pydantic.ValidationError):
            DataConfig(**bad)


def test_retrieved_context_is_refused_for_other_formats(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "1", "question": "q?", "answers": ["a"]}\n')
    with pytest.raises(pydantic.ValidationError) as info:
        RunConfig(data={"format": "jsonl", "paths": [str(path)], "context": "retrieved"})
    message = str(info.value)
    assert "data.context 'retrieved' is only supported by data.format fanoutqa" in message
    assert "'jsonl'" in message
    with pytest.raises(DataError, match="only supported by the fanoutqa format"):
        load_records(DataConfig(format="jsonl", paths=[str(path)], context="retrieved"))


def test_the_prompt_shows_the_retrieved_context():
    cfg = DataConfig(format="fanoutqa", max_examples=20, context="retrieved")
    for record in load_records(cfg):
        prompt = build_prompt(record)
        assert f"\nContext: {record.context}\nQuestion: {record.question}\nAnswer:" in prompt
