"""Data path: format adapters on fixtures in the real formats, the packaged FanOutQA / easy-VQA
data, split, prompts, tokenization and collation (SmolLM2 tokenizer)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from uaclm_dist.config import DataConfig, OODDataConfig  # noqa: E402
from uaclm_dist.data import (  # noqa: E402
    IGNORE_INDEX,
    INSTRUCTION,
    DataError,
    QARecord,
    build_prompt,
    collate,
    encode_example,
    encode_prompt,
    load_records,
    split_records,
    target_text,
    tokenize_record,
    tokenize_records,
)
from uaclm_dist.data.formats.bioasq import read_bioasq  # noqa: E402
from uaclm_dist.data.formats.coqa import read_coqa  # noqa: E402
from uaclm_dist.data.formats.easyvqa import easyvqa_dir, read_easyvqa  # noqa: E402
from uaclm_dist.data.formats.fanoutqa import read_fanoutqa  # noqa: E402
from uaclm_dist.data.formats.hf import read_hf  # noqa: E402
from uaclm_dist.data.formats.jsonl import read_jsonl  # noqa: E402
from uaclm_dist.data.formats.parquet import read_parquet  # noqa: E402
from uaclm_dist.data.formats.squad import read_squad  # noqa: E402
from uaclm_dist.data.formats.triviaqa import read_triviaqa  # noqa: E402

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "data"
GENERIC_MAP = {"id": "qid", "question": "query", "answers": "gold", "context": "passage"}


@pytest.fixture(scope="session")
def tok(smollm2_tokenizer):
    """The SmolLM2 tokenizer (conftest builds it from the packaged GGUF)."""
    return smollm2_tokenizer


def rec(i: int | str = 0, question: str = "What is the capital of France?", answer: str = "Paris",
        context: str | None = None) -> QARecord:
    return QARecord(id=str(i), question=question, answers=(answer,), context=context)


# ------------------------------------------------------------------------------ format adapters


def test_coqa_one_record_per_turn_with_history_and_additional_answers():
    records = read_coqa(FIX / "coqa_dev_sample.json")
    assert [r.id for r in records] == [
        "3dr23u6we5exclen4th8uq9rb42tel_1", "3dr23u6we5exclen4th8uq9rb42tel_2",
        "3dr23u6we5exclen4th8uq9rb42tel_3", "3azhrg4cu4ktme1zh7c2ro3pn2f30d_1",
        "3azhrg4cu4ktme1zh7c2ro3pn2f30d_2",
    ]
    first, second, third = records[:3]
    story = json.loads((FIX / "coqa_dev_sample.json").read_text())["data"][0]["story"]
    assert first.context == story  # no earlier turns
    assert third.context == (story + "\nQ: What color was Cotton?\nA: white"
                             "\nQ: Where did she live?\nA: in a barn")
    assert first.answers == ("white",)  # the additional answers repeat it: deduplicated
    assert second.answers == ("in a barn", "in a barn near a farm house", "above the barn")
    assert third.answers == ("no", "No")
    assert records[3].context.endswith("carrier bag.")  # a new story starts without history
    assert all(r.source == "coqa:coqa_dev_sample.json" for r in records)


def test_squad_v2_skips_impossible_with_a_count():
    stats = Counter()
    records = read_squad(FIX / "squad_v2_sample.json", stats)
    assert [r.id for r in records] == [
        "56ddde6b9a695914005b9628", "56ddde6b9a695914005b9629", "56e16182e3433e1400422e28"]
    assert stats["squad_impossible_skipped"] == 2
    assert records[0].answers == ("France",)
    assert records[1].answers == ("10th and 11th centuries", "in the 10th and 11th centuries")
    assert records[0].context.startswith("The Normans")


def test_triviaqa_closed_book_by_default():
    records = read_triviaqa(FIX / "triviaqa_rc_sample.json")
    assert [r.id for r in records] == ["tc_33", "qb_1001", "sfq_2002"]
    assert all(r.context is None for r in records)
    assert records[0].answers[:2] == ("Sunset Boulevard", "Sunset Blvd")
    assert records[1].answers == ("6", "Six")


def test_triviaqa_with_evidence_files_and_with_descriptions():
    with_files = read_triviaqa(FIX / "triviaqa_rc_sample.json", with_context=True,
                               evidence_dir=FIX / "triviaqa_evidence")
    assert with_files[0].context.startswith("Andrew Lloyd Webber, Baron")
    assert "\n\nSunset Boulevard is a musical" in with_files[0].context  # web evidence too
    assert with_files[1].context is None  # no evidence documents
    assert with_files[2].context.startswith("Mercury is the first planet")
    short = read_triviaqa(FIX / "triviaqa_rc_sample.json", with_context=True,
                          evidence_dir=FIX / "triviaqa_evidence", max_evidence_chars=10)
    assert short[0].context.split("\n\n") == ["Andrew Llo", "Sunset Bou"]
    described = read_triviaqa(FIX / "triviaqa_rc_sample.json", with_context=True)
    assert described[0].context.startswith("Sunset Boulevard is a musical with music by")
    with pytest.raises(DataError, match="evidence file .* not found"):
        read_triviaqa(FIX / "triviaqa_rc_sample.json", with_context=True, evidence_dir=FIX)


def test_triviaqa_hf_rows_jsonl_and_parquet(tmp_path):
    lines = (FIX / "triviaqa_hf_sample.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "validation.parquet")
    for path in (FIX / "triviaqa_hf_sample.jsonl", tmp_path / "validation.parquet"):
        closed = read_triviaqa(path)
        assert [(r.id, r.answers, r.context) for r in closed] == [
            ("tc_33", ("Sunset Boulevard", "Sunset Blvd"), None), ("qb_1001", ("6", "Six"), None)]
        opened = read_triviaqa(path, with_context=True)
        assert opened[0].context.startswith("Andrew Lloyd Webber")
        assert opened[1].context is None


def test_bioasq_answers_and_snippets():
    records = read_bioasq(FIX / "bioasq_taskb_sample.json")
    by_id = {r.id[-1]: r for r in records}
    assert by_id["1"].answers == ("CFTR", "cystic fibrosis transmembrane conductance regulator")
    assert by_id["2"].answers == ("fever", "cough", "rash", "maculopapular rash", "conjunctivitis")
    assert by_id["3"].answers == ("yes",)
    assert by_id["4"].answers[0] == "The hippocampus is involved in memory consolidation."
    assert by_id["5"].answers == ("phenylalanine hydroxylase",)
    assert all(r.context is None for r in records)
    with_snippets = read_bioasq(FIX / "bioasq_taskb_sample.json", with_snippets=True)
    assert with_snippets[0].context == ("Cystic fibrosis is caused by mutations in the CFTR gene."
                                        "\nThe most common mutation is F508del.")
    assert with_snippets[1].context is None


def test_generic_jsonl_with_field_map():
    records = read_jsonl(FIX / "generic.jsonl", field_map=GENERIC_MAP)
    assert [(r.id, r.answers, r.context) for r in records] == [
        ("g1", ("Paris", "paris", "City of Paris"),
         "Paris is the capital and largest city of France."),
        ("g2", ("6",), None),  # a number answer; an empty passage is no context
        ("3", ("William Shakespeare",), None),  # an int id; a single-string answer
    ]


def test_generic_parquet_identity_map_and_relative_image():
    records = read_parquet(FIX / "generic.parquet")
    assert [r.id for r in records] == ["p1", "p2", "p3"]
    assert records[1].answers == ("blue", "light blue")
    assert records[0].context == "Rome is the capital of Italy."
    assert records[2].image == str(FIX / "images" / "0.png")


def test_generic_generated_ids_when_no_id_column(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "a?", "answers": "x"}\n{"question": "b?", "answers": ["y"]}\n')
    assert [r.id for r in read_jsonl(path)] == ["rows-1", "rows-2"]


def test_hf_saved_dataset_file_and_split_choice(tmp_path):
    import datasets

    rows = [{"qid": "h1", "query": "Who?", "gold": ["me"], "passage": None},
            {"qid": "h2", "query": "What?", "gold": ["it", "that"], "passage": "ctx"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    records = read_hf(tmp_path / "saved", field_map=GENERIC_MAP)
    assert [(r.id, r.answers, r.context) for r in records] == [
        ("h1", ("me",), None), ("h2", ("it", "that"), "ctx")]
    # a local data file goes through load_dataset (json builder), never the hub
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r.id for r in read_hf(tmp_path / "rows.jsonl", field_map=GENERIC_MAP)] == ["h1", "h2"]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                               "validation": datasets.Dataset.from_list(rows)})
    dd.save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(DataError, match="has splits train, validation"):
        read_hf(tmp_path / "dict", field_map=GENERIC_MAP)
    assert len(read_hf(tmp_path / "dict" / "validation", field_map=GENERIC_MAP)) == 2
    with pytest.raises(DataError, match="never hub ids"):
        read_hf("someone/some-dataset")


# -------------------------------------------------------------------------------- packaged data


def test_fanoutqa_real_dev_set_counts():
    stats = Counter()
    records = read_fanoutqa(stats=stats)
    # 310 questions; their decomposition trees hold 1,719 nodes with str/int/float answers
    # (shared/ASSETS.md); 25 repeat an earlier question's text and are merged into it, and one
    # ("What is the birthday of Tim Kingsbury?") has an empty answer: 1,693 records.
    assert stats == Counter(fanoutqa_scalar_pairs=1719, fanoutqa_duplicate_questions=25,
                            fanoutqa_empty_answer_skipped=1)
    assert len(records) == 1693
    assert len({r.id for r in records}) == len({r.question for r in records}) == 1693
    by_question = {r.question: r for r in records}
    assert by_question["What is the batting hand of Pat Burrell?"].answers == ("Right",)
    assert by_question["What is the height of Mount Everest?"].answers == ("8,848.86 m", "8848.86")
    assert all(r.context is None and r.image is None for r in records)
    assert "fanoutqa" not in sys.modules  # located by package path, never imported


def test_fanoutqa_number_answers_and_merging(tmp_path):
    data = [{"id": "top", "question": "multi?", "answer": {"a": 1}, "categories": [],
             "decomposition": [
                 {"id": "n1", "question": "How tall?", "answer": 8848.86, "decomposition": []},
                 {"id": "n2", "question": "How many?", "answer": 6.0, "decomposition": [
                     {"id": "n3", "question": "Which?", "answer": ["a", "b"], "decomposition": []},
                     {"id": "n4", "question": "Is it?", "answer": True, "decomposition": []},
                 ]},
                 {"id": "n5", "question": "How tall?", "answer": "8,848.86 m", "decomposition": []},
                 {"id": "n6", "question": "Population?", "answer": 84482267, "decomposition": []},
             ]}]
    (tmp_path / "f.json").write_text(json.dumps(data))
    records = read_fanoutqa(tmp_path / "f.json")
    assert [(r.id, r.answers) for r in records] == [
        ("n1", ("8848.86", "8,848.86 m")), ("n2", ("6",)), ("n6", ("84482267",))]


def test_easyvqa_packaged_splits():
    import easy_vqa

    test = read_easyvqa()
    texts, answers, image_ids = easy_vqa.get_test_questions()
    assert len(test) == len(texts) == 9673
    assert test[5].question == texts[5] and test[5].answers == (answers[5],)
    assert test[5].image == easy_vqa.get_test_image_paths()[image_ids[5]]
    assert {r.answers[0] for r in test} <= set(easy_vqa.get_answers())
    assert len(set(easy_vqa.get_answers())) == 13
    assert all(Path(r.image).is_file() for r in test[:50])
    assert test[0].id == "easyvqa-test-0"
    assert len(read_easyvqa(easyvqa_dir("train") / "questions.json")) == 38575


# ------------------------------------------------------------------------------ malformed data


def _write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _coqa_without_question_text(tmp_path):
    data = json.loads((FIX / "coqa_dev_sample.json").read_text())
    del data["data"][1]["questions"][1]["input_text"]
    return read_coqa(_write(tmp_path, "coqa.json", data))


def _squad_answer_without_text(tmp_path):
    data = json.loads((FIX / "squad_v2_sample.json").read_text())
    data["data"][1]["paragraphs"][0]["qas"][0]["answers"] = [{"answer_start": 0}]
    return read_squad(_write(tmp_path, "squad.json", data))


def _trivia_without_answer(tmp_path):
    data = json.loads((FIX / "triviaqa_rc_sample.json").read_text())
    del data["Data"][2]["Answer"]
    return read_triviaqa(_write(tmp_path, "trivia.json", data))


def _bioasq_without_answers(tmp_path):
    data = {"questions": [{"id": "b1", "body": "Why?", "type": "factoid", "exact_answer": []}]}
    return read_bioasq(_write(tmp_path, "bioasq.json", data))


def _fanoutqa_node_without_answer(tmp_path):
    data = [{"id": "t", "question": "q", "answer": "a", "decomposition": [
        {"id": "n1", "question": "ok?", "answer": "yes", "decomposition": []},
        {"id": "n2", "question": "bad?", "decomposition": []}]}]
    return read_fanoutqa(_write(tmp_path, "fanout.json", data))


def _easyvqa_short_row(tmp_path):
    split = tmp_path / "test"
    (split / "images").mkdir(parents=True)
    (split / "images" / "0.png").write_bytes(b"")
    _write(split, "questions.json", [["what shape?", "circle", 0], ["what colour?", "red"]])
    return read_easyvqa(split)


def _jsonl_bad_json(tmp_path):
    return read_jsonl(_write(tmp_path, "rows.jsonl",
                             '{"id": "a", "question": "q?", "answers": "x"}\n{"id": "b", "quest\n'))


def _jsonl_missing_answers(tmp_path):
    return read_jsonl(_write(tmp_path, "rows.jsonl", '{"id": "a", "question": "q?"}\n'))


def _jsonl_list_answer(tmp_path):
    return read_jsonl(_write(tmp_path, "rows.jsonl",
                             '\n{"id": "a", "question": "q?", "answers": [["x"]]}\n'))


def _parquet_empty_question(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "question": ["q?", " "], "answers": ["x", "y"]}),
                   path)
    return read_parquet(path)


@pytest.mark.parametrize(("make", "file", "where", "problem"), [
    (_coqa_without_question_text, "coqa.json", "data[1] (story '3azhrg4cu4ktme1zh7c2ro3pn2f30d') "
     "turn 2", "missing field 'input_text'"),
    (_squad_answer_without_text, "squad.json", "data[1].paragraphs[0].qas[0]",
     "missing field 'text'"),
    (_trivia_without_answer, "trivia.json", "Data[2] (QuestionId 'sfq_2002')",
     "missing field 'Answer'"),
    (_bioasq_without_answers, "bioasq.json", "questions[0] (id 'b1')", "no 'exact_answer'"),
    (_fanoutqa_node_without_answer, "fanout.json", "[0].decomposition[1]",
     "missing field 'answer'"),
    (_easyvqa_short_row, "questions.json", "[1]", "expected [question, answer, image_id]"),
    (_jsonl_bad_json, "rows.jsonl", "line 2", "invalid JSON"),
    (_jsonl_missing_answers, "rows.jsonl", "line 1", "field 'answers' (column 'answers') is "
     "missing"),
    (_jsonl_list_answer, "rows.jsonl", "line 2", "answer must be a string or number"),
    (_parquet_empty_question, "rows.parquet", "row 1", "question must be a non-empty string"),
])
def test_malformed_rows_name_file_and_row(tmp_path, make, file, where, problem):
    with pytest.raises(DataError) as info:
        make(tmp_path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert file in message and where in message and problem in message, message


def test_duplicate_ids_in_one_file_name_both_rows(tmp_path):
    path = _write(tmp_path, "dups.jsonl", '{"id": "a", "question": "q?", "answers": "x"}\n'
                  '{"id": "b", "question": "r?", "answers": "y"}\n'
                  '{"id": "a", "question": "s?", "answers": "z"}\n')
    with pytest.raises(DataError, match=r"dups\.jsonl: line 3: duplicate id 'a' \(first used at "
                       r"line 1\)"):
        read_jsonl(path)


def test_duplicate_ids_across_files_name_both_files(tmp_path):
    shutil.copy(FIX / "squad_v2_sample.json", tmp_path / "a.json")
    shutil.copy(FIX / "squad_v2_sample.json", tmp_path / "b.json")
    cfg = DataConfig(format="squad", paths=[str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    with pytest.raises(DataError, match="duplicate id '56ddde6b9a695914005b9628': in "
                       "squad:a.json and in squad:b.json"):
        load_records(cfg)


# -------------------------------------------------------------------------------- load_records


def test_load_records_dispatch_globs_folders_and_max_examples(tmp_path):
    full = load_records(DataConfig(format="coqa", paths=[str(FIX / "coqa_dev_sample.json")]))
    assert len(full) == 5
    first3 = load_records(DataConfig(format="coqa", paths=[str(FIX / "coqa_dev_sample.json")],
                                     max_examples=3))
    assert first3 == full[:3]  # the first N in file order, before any split
    globbed = load_records(DataConfig(format="triviaqa", paths=[str(FIX / "triviaqa_rc_*.json")]))
    assert [r.id for r in globbed] == ["tc_33", "qb_1001", "sfq_2002"]
    (tmp_path / "sub").mkdir()
    shutil.copy(FIX / "generic.jsonl", tmp_path / "sub" / "part-0.jsonl")
    (tmp_path / "sub" / "notes.txt").write_text("ignored")
    folder = load_records(DataConfig(format="jsonl", paths=[str(tmp_path / "sub")],
                                     field_map=GENERIC_MAP))
    assert [r.id for r in folder] == ["g1", "g2", "3"]
    assert len(load_records(DataConfig(format="fanoutqa", max_examples=64))) == 64
    ood = load_records(OODDataConfig(format="bioasq",
                                     paths=[str(FIX / "bioasq_taskb_sample.json")]))
    assert len(ood) == 5


def test_load_records_config_errors():
    with pytest.raises(DataError, match="field_map is only used by"):
        load_records(DataConfig(format="squad", paths=[str(FIX / "squad_v2_sample.json")],
                                field_map={"question": "q"}))
    with pytest.raises(DataError, match="data.paths is empty"):
        load_records(DataConfig(format="squad"))
    with pytest.raises(DataError, match="matches no file"):
        load_records(DataConfig(format="squad", paths=[str(FIX / "nothing_*.json")]))
    with pytest.raises(DataError, match="unknown record field"):
        load_records(DataConfig(format="jsonl", paths=[str(FIX / "generic.jsonl")],
                                field_map={"answer": "gold"}))


# ------------------------------------------------------------------------------------- split


def test_split_is_seeded_deterministic_and_order_free():
    records = [rec(i) for i in range(1000)]
    train, test = split_records(records, 0.2, seed=0)
    assert len(train) == 200 and len(test) == 800
    assert {r.id for r in train}.isdisjoint(r.id for r in test)
    assert {r.id for r in train} | {r.id for r in test} == {r.id for r in records}
    assert [r.id for r in train] == [r.id for r in records if r in set(train)]  # input order
    again, _ = split_records(records, 0.2, seed=0)
    assert again == train
    reversed_train, _ = split_records(records[::-1], 0.2, seed=0)
    assert {r.id for r in reversed_train} == {r.id for r in train}
    other, _ = split_records(records, 0.2, seed=1)
    assert {r.id for r in other} != {r.id for r in train}


def test_split_small_sets_keep_both_sides():
    train, test = split_records([rec(0), rec(1)], 0.2, seed=3)
    assert len(train) == 1 and len(test) == 1
    train, test = split_records([rec(i) for i in range(7)], 0.2, seed=0)
    assert (len(train), len(test)) == (1, 6)  # round(1.4) == 1


# ------------------------------------------------------------------------------------ prompts


def test_paper_prompt_exact_text():
    with_context = rec(question="Where did she live?", context="Cotton lived in a barn.")
    assert build_prompt(with_context) == (
        "Answer the following question as briefly as possible.\n"
        "Context: Cotton lived in a barn.\n"
        "Question: Where did she live?\n"
        "Answer:")
    assert build_prompt(rec()) == (
        "Answer the following question as briefly as possible.\n"
        "Question: What is the capital of France?\n"
        "Answer:")
    assert target_text(rec()) == " Paris"
    assert target_text(rec(), "chat") == "Paris"


def test_chat_prompt_uses_the_template(tok):
    prompt = build_prompt(rec(context="France is in Europe."), "chat", tok)
    assert prompt.endswith(
        "<|im_start|>user\n" + INSTRUCTION + "\nContext: France is in Europe.\n"
        "Question: What is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        build_prompt(rec(), "chat")


# ------------------------------------------------------------------------------- tokenization


@pytest.mark.parametrize("template", ["paper", "chat"])
def test_tokenize_loss_on_all_and_answer(tok, template):
    record = rec(context="Paris is the capital of France.")
    full = tokenize_record(record, tok, template=template, loss_on="all", max_length=512)
    masked = tokenize_record(record, tok, template=template, loss_on="answer", max_length=512)
    prompt_ids = encode_prompt(build_prompt(record, template, tok), tok, template)
    # the prompt tokens are exactly what generation will see
    assert list(full.input_ids[: full.prompt_length]) == prompt_ids
    assert full.input_ids == masked.input_ids
    assert full.labels == full.input_ids
    assert full.attention_mask == (1,) * len(full.input_ids)
    assert masked.labels[: masked.prompt_length] == (IGNORE_INDEX,) * masked.prompt_length
    assert masked.labels[masked.prompt_length:] == full.input_ids[full.prompt_length:]
    assert full.input_ids[-1] == tok.eos_token_id
    answer = tok.decode(full.input_ids[full.prompt_length:-1])
    assert answer == target_text(record, template)
    assert not full.context_cut


def test_paper_answer_tokens_match_joint_tokenization(tok):
    record = rec(question="In which state was Barack Obama born?", answer="Hawaii")
    prompt_ids, answer_ids = encode_example(record, tok, "paper")
    joint = tok(build_prompt(record) + " Hawaii")["input_ids"]
    assert prompt_ids + answer_ids[:-1] == joint
    assert answer_ids[-1] == tok.eos_token_id


def test_truncation_cuts_context_from_its_start_and_keeps_question_and_answer(tok):
    context = " ".join(f"Sentence number {i} of a long story about Cotton." for i in range(60))
    record = rec(question="Did she live alone?", answer="no, with her mommy and 5 sisters",
                 context=context)
    untouched = tokenize_record(record, tok, template="paper", loss_on="answer", max_length=1024)
    assert untouched.context_cut is False
    cut = tokenize_record(record, tok, template="paper", loss_on="answer", max_length=96)
    assert cut.context_cut and len(cut.input_ids) <= 96
    assert len(cut.input_ids) >= 90  # it keeps as much context as fits
    answer_ids = untouched.input_ids[untouched.prompt_length:]
    assert cut.input_ids[cut.prompt_length:] == answer_ids  # answer + EOS intact
    text = tok.decode(cut.input_ids[: cut.prompt_length])
    assert text.startswith(INSTRUCTION + "\nContext: ")
    assert text.endswith("\nQuestion: Did she live alone?\nAnswer:")
    kept = text[len(INSTRUCTION + "\nContext: "): -len("\nQuestion: Did she live alone?\nAnswer:")]
    assert context.endswith(kept) and len(kept) < len(context)  # the tail nearest the question
    assert kept.endswith("Sentence number 59 of a long story about Cotton.")


def test_drop_when_even_the_bare_prompt_does_not_fit(tok):
    long_question = "Why " + "really " * 80 + "?"
    records = [rec(0), rec(1, question=long_question), rec(2, context="word " * 200),
               rec(3, question=long_question, context="some context")]
    examples, report = tokenize_records(records, tok, template="paper", loss_on="all",
                                        max_length=48)
    assert [e.id for e in examples] == ["0", "2"]
    assert (report.n_in, report.n_kept, report.n_context_cut, report.n_dropped) == (4, 2, 1, 2)
    assert report.dropped_ids == ("1", "3")
    assert all(len(e.input_ids) <= 48 for e in examples)
    # a context that must go entirely leaves the prompt without a Context line
    bare_fit = len(encode_example(rec(2), tok)[0]) + len(encode_example(rec(2), tok)[1])
    none_left = tokenize_record(rec(2, context="word " * 200), tok, max_length=bare_fit)
    assert none_left.context_cut and "Context:" not in tok.decode(none_left.input_ids)


def test_collate_right_pads_and_masks_labels(tok):
    examples, _ = tokenize_records([rec(0), rec(1, context="Paris is the capital of France.")],
                                   tok, template="paper", loss_on="all", max_length=512)
    short, long_ = examples
    batch = collate(examples, tok.pad_token_id)
    width = len(long_.input_ids)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(t.shape == (2, width) and str(t.dtype) == "torch.int64" for t in batch.values())
    n = len(short.input_ids)
    assert batch["input_ids"][0, :n].tolist() == list(short.input_ids)
    assert batch["input_ids"][0, n:].tolist() == [tok.pad_token_id] * (width - n)
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (width - n)
    # pad id == EOS id for SmolLM2: the real EOS stays supervised, the pads do not
    assert batch["labels"][0, n - 1].item() == tok.eos_token_id
    assert batch["labels"][0, n:].tolist() == [IGNORE_INDEX] * (width - n)
    assert batch["labels"][1].tolist() == list(long_.labels)
    with pytest.raises(ValueError, match="pad_token_id is None"):
        collate(examples, None)
