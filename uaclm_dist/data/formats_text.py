"""Adapters for the public text-QA datasets of the paper: CoQA, TriviaQA, SQuAD, BioASQ Task B.

Each reader takes one file in the dataset's released format and returns ``list[QARecord]`` in
file order. Rows that the format marks as unusable (SQuAD v2 unanswerable questions) are skipped
and counted in ``stats`` (a :class:`collections.Counter`, optional); anything malformed raises
:class:`DataError` naming the file and the row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from uaclm_dist.data.formats_io import MISSING, get_field, iter_jsonl, iter_parquet, read_json
from uaclm_dist.data.records import DataError, QARecord, RecordCollector, unique_answers

__all__ = ["read_bioasq", "read_coqa", "read_squad", "read_triviaqa"]


def _list_field(rows: RecordCollector, where: str, obj: Any, key: str) -> list[Any]:
    if not isinstance(obj, Mapping):
        raise rows.error(where, f"expected a JSON object, got {type(obj).__name__}")
    value = obj.get(key, MISSING)
    if value is MISSING:
        raise rows.error(where, f"missing field {key!r}")
    if not isinstance(value, list):
        raise rows.error(where, f"field {key!r} must be a list, got {type(value).__name__}")
    return value


def _field(rows: RecordCollector, where: str, obj: Any, key: str) -> Any:
    if not isinstance(obj, Mapping):
        raise rows.error(where, f"expected a JSON object, got {type(obj).__name__}")
    value = obj.get(key)
    if value is None:
        raise rows.error(where, f"missing field {key!r}")
    return value


def _text(rows: RecordCollector, where: str, obj: Any, key: str) -> str:
    value = _field(rows, where, obj, key)
    if not isinstance(value, str):
        raise rows.error(where, f"field {key!r} must be a string, got {type(value).__name__}")
    return value.strip()


def _id(rows: RecordCollector, where: str, obj: Any, key: str) -> str:
    value = _field(rows, where, obj, key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise rows.error(where, f"field {key!r} must be a string or integer id, got {value!r}")
    return str(value)


def _answers(rows: RecordCollector, where: str, values: Iterable[Any]) -> tuple[str, ...]:
    try:
        return unique_answers(values)
    except DataError as err:
        raise rows.error(where, str(err)) from None


# ---------------------------------------------------------------------------------------- CoQA


def read_coqa(path: str | Path, stats: Counter | None = None) -> list[QARecord]:
    """CoQA (https://stanfordnlp.github.io/coqa/, ``coqa-dev-v1.0.json``), one record per turn.

    Format::

        {"version": "1.0", "data": [{"id": str, "story": str,
            "questions": [{"input_text": str, "turn_id": int}, ...],
            "answers":   [{"input_text": str, "span_text": str, "turn_id": int, ...}, ...],
            "additional_answers": {"0": [{"input_text", "turn_id", ...}, ...], "1": ..., "2": ...}
        }, ...]}

    Record: id ``"<story id>_<turn id>"``; context = the story, then each earlier turn of the
    conversation as ``"Q: <question>\\nA: <answer>"`` lines (gold answers, as in the semantic-
    uncertainty CoQA setup); answers = the turn's answer, then its additional answers (distinct).
    """
    rows = RecordCollector(path, "coqa")
    for s, story in enumerate(_list_field(rows, "top level", read_json(path), "data")):
        story_id = _id(rows, f"data[{s}]", story, "id")
        where = f"data[{s}] (story {story_id!r})"
        text = _text(rows, where, story, "story")
        questions = _list_field(rows, where, story, "questions")
        answers = _list_field(rows, where, story, "answers")
        extra = story.get("additional_answers") or {}
        if len(questions) != len(answers):
            raise rows.error(where, f"{len(questions)} questions but {len(answers)} answers")
        history: list[str] = []
        for q, a in zip(questions, answers, strict=True):
            turn = _field(rows, where, q, "turn_id")
            turn_where = f"{where} turn {turn}"
            if _field(rows, turn_where, a, "turn_id") != turn:
                raise rows.error(turn_where, f"answer has turn_id {a['turn_id']}")
            question = _text(rows, turn_where, q, "input_text")
            answer = _text(rows, turn_where, a, "input_text")
            more = [x.get("input_text", "") for alt in extra.values() for x in alt
                    if isinstance(x, Mapping) and x.get("turn_id") == turn]
            rows.add(turn_where, id=f"{story_id}_{turn}", question=question,
                     answers=_answers(rows, turn_where, [answer, *more]),
                     context="\n".join([text, *history]))
            history.append(f"Q: {question}\nA: {answer}")
    return rows.records


# --------------------------------------------------------------------------------------- SQuAD


def read_squad(path: str | Path, stats: Counter | None = None) -> list[QARecord]:
    """SQuAD v1.1 / v2.0 (https://rajpurkar.github.io/SQuAD-explorer/, ``dev-v2.0.json``).

    Format::

        {"version": "v2.0", "data": [{"title": str, "paragraphs": [{"context": str,
            "qas": [{"id": str, "question": str, "answers": [{"text": str, "answer_start": int}],
                     "is_impossible": bool (v2 only), "plausible_answers": [...] (v2 only)}]}]}]}

    Record per answerable question: context = the paragraph, answers = distinct answer texts.
    Unanswerable (v2 ``is_impossible``) questions are skipped, counted as
    ``stats["squad_impossible_skipped"]``.
    """
    rows = RecordCollector(path, "squad")
    stats = Counter() if stats is None else stats
    for a, article in enumerate(_list_field(rows, "top level", read_json(path), "data")):
        for p, paragraph in enumerate(_list_field(rows, f"data[{a}]", article, "paragraphs")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _text(rows, where, paragraph, "context")
            for i, qa in enumerate(_list_field(rows, where, paragraph, "qas")):
                qa_where = f"{where}.qas[{i}]"
                qa_id = _id(rows, qa_where, qa, "id")
                qa_where += f" (id {qa_id!r})"
                if qa.get("is_impossible"):
                    stats["squad_impossible_skipped"] += 1
                    continue
                texts = [_text(rows, qa_where, x, "text")
                         for x in _list_field(rows, qa_where, qa, "answers")]
                rows.add(qa_where, id=qa_id, question=_text(rows, qa_where, qa, "question"),
                         answers=_answers(rows, qa_where, texts), context=context)
    return rows.records


# ------------------------------------------------------------------------------------ TriviaQA


def read_triviaqa(
    path: str | Path,
    stats: Counter | None = None,
    *,
    with_context: bool = False,
    evidence_dir: str | Path | None = None,
    max_evidence_chars: int | None = 2000,
) -> list[QARecord]:
    """TriviaQA (https://nlp.cs.washington.edu/triviaqa/), closed book by default (the paper's
    TriviaQA setting). Two row shapes, chosen by file extension:

    ``.json`` - the released rc / unfiltered files (``qa/wikipedia-dev.json``, ``web-dev.json``,
    ``unfiltered-web-dev.json``)::

        {"Data": [{"QuestionId": str, "Question": str,
                   "Answer": {"Value": str, "Aliases": [str], "NormalizedAliases": [str], ...},
                   "EntityPages": [{"Filename": str, "Title": str, ...}],
                   "SearchResults": [{"Filename": str, "Description": str, ...}]}], ...}

    ``.jsonl`` / ``.parquet`` - rows of the Hugging Face ``trivia_qa`` dataset::

        {"question": str, "question_id": str, "answer": {"value": str, "aliases": [str], ...},
         "entity_pages": {"wiki_context": [str], ...},
         "search_results": {"search_context": [str], "description": [str], ...}}

    Answers = the answer value, then its aliases (distinct). With ``with_context`` the context is
    the evidence documents joined by blank lines, each cut to its first ``max_evidence_chars``
    characters: for ``.json`` files read from ``evidence_dir/wikipedia/<Filename>`` and
    ``evidence_dir/web/<Filename>`` (without ``evidence_dir``: the search-result descriptions);
    for HF rows the ``wiki_context`` / ``search_context`` texts.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return _triviaqa_json(path, with_context, evidence_dir, max_evidence_chars)
    if suffix in (".jsonl", ".parquet"):
        return _triviaqa_hf_rows(path, with_context, max_evidence_chars)
    raise DataError(f"{path}: TriviaQA files must be .json (released format) or .jsonl / .parquet "
                    "(Hugging Face trivia_qa rows)")


def _cut(text: str, limit: int | None) -> str:
    return text.strip() if limit is None else text.strip()[:limit]


def _optional_list(rows: RecordCollector, where: str, obj: Mapping, key: str) -> list[Any]:
    value = get_field(obj, key)
    if value is MISSING or value is None:
        return []
    if not isinstance(value, list):
        raise rows.error(where, f"field {key!r} must be a list, got {type(value).__name__}")
    return value


def _triviaqa_json(path, with_context, evidence_dir, limit) -> list[QARecord]:
    rows = RecordCollector(path, "triviaqa")
    for i, item in enumerate(_list_field(rows, "top level", read_json(path), "Data")):
        qid = _id(rows, f"Data[{i}]", item, "QuestionId")
        where = f"Data[{i}] (QuestionId {qid!r})"
        answer = _field(rows, where, item, "Answer")
        refs = [_field(rows, where + " Answer", answer, "Value"),
                *_optional_list(rows, where, answer, "Aliases")]
        context = None
        if with_context:
            docs = []
            for key, sub in (("EntityPages", "wikipedia"), ("SearchResults", "web")):
                for doc in _optional_list(rows, where, item, key):
                    if evidence_dir is not None:
                        file = Path(evidence_dir) / sub / _text(rows, where, doc, "Filename")
                        if not file.is_file():
                            raise rows.error(where, f"evidence file {file} not found")
                        docs.append(_cut(file.read_text(encoding="utf-8"), limit))
                    elif isinstance(doc, Mapping) and isinstance(doc.get("Description"), str):
                        docs.append(_cut(doc["Description"], limit))
            context = "\n\n".join(d for d in docs if d) or None
        rows.add(where, id=qid, question=_text(rows, where, item, "Question"),
                 answers=_answers(rows, where, refs), context=context)
    return rows.records


def _triviaqa_hf_rows(path, with_context, limit) -> list[QARecord]:
    rows = RecordCollector(path, "triviaqa")
    reader: Iterator = iter_jsonl(path) if str(path).endswith(".jsonl") else iter_parquet(path)
    for where, row in reader:
        answer = _field(rows, where, row, "answer")
        refs = [_field(rows, where + " answer", answer, "value"),
                *_optional_list(rows, where, answer, "aliases")]
        context = None
        if with_context:
            texts = [*_optional_list(rows, where, row, "entity_pages.wiki_context"),
                     *_optional_list(rows, where, row, "search_results.search_context")]
            context = "\n\n".join(
                _cut(t, limit) for t in texts if isinstance(t, str) and t.strip()
            ) or None
        rows.add(where, id=_id(rows, where, row, "question_id"),
                 question=_text(rows, where, row, "question"),
                 answers=_answers(rows, where, refs), context=context)
    return rows.records


# ------------------------------------------------------------------------------------- BioASQ


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [x for item in value for x in _flatten(item)]
    return [value]


def read_bioasq(
    path: str | Path, stats: Counter | None = None, *, with_snippets: bool = False
) -> list[QARecord]:
    """BioASQ Task B (http://participants-area.bioasq.org/datasets/, ``trainingNb.json`` or the
    golden test batches), the paper's OOD questions.

    Format::

        {"questions": [{"id": str, "body": str, "type": "factoid" | "list" | "yesno" | "summary",
                        "exact_answer": "yes" | [str] | [[str, synonym, ...], ...],
                        "ideal_answer": str | [str],
                        "snippets": [{"text": str, "document": url, ...}], ...}]}

    Answers: the exact answer, flattened (list-of-lists -> every entity and synonym in order;
    yes/no as is); the ideal answer(s) when there is no exact answer, and always for ``summary``
    questions. Closed book by default; ``with_snippets`` puts the snippet texts (one per line) in
    the context.
    """
    rows = RecordCollector(path, "bioasq")
    for i, item in enumerate(_list_field(rows, "top level", read_json(path), "questions")):
        qid = _id(rows, f"questions[{i}]", item, "id")
        where = f"questions[{i}] (id {qid!r})"
        ideal = _flatten(item.get("ideal_answer") or [])
        exact = [] if item.get("type") == "summary" else _flatten(item.get("exact_answer") or [])
        refs = _answers(rows, where, exact) or _answers(rows, where, ideal)
        if not refs:
            raise rows.error(where, "no 'exact_answer' and no 'ideal_answer'")
        context = None
        if with_snippets:
            texts = [s.get("text") for s in _optional_list(rows, where, item, "snippets")
                     if isinstance(s, Mapping)]
            context = "\n".join(t.strip() for t in texts if isinstance(t, str) and t.strip())
        rows.add(where, id=qid, question=_text(rows, where, item, "body"), answers=refs,
                 context=context or None)
    return rows.records
