"""TriviaQA, closed book by default (the paper's TriviaQA setting): the released JSON files
or Hugging Face ``trivia_qa`` rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

from uaclm_dist.data.formats.fields import (
    answer_texts,
    cut,
    field,
    id_field,
    list_field,
    optional_list,
    text_field,
)
from uaclm_dist.data.formats.files import iter_jsonl, iter_parquet, read_json
from uaclm_dist.data.formats.registry import DATA_FORMATS, DataFormat
from uaclm_dist.data.records import DataError, QARecord, RecordCollector

__all__ = ["read_triviaqa"]


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


def _triviaqa_json(path, with_context, evidence_dir, limit) -> list[QARecord]:
    rows = RecordCollector(path, "triviaqa")
    for i, item in enumerate(list_field(rows, "top level", read_json(path), "Data")):
        qid = id_field(rows, f"Data[{i}]", item, "QuestionId")
        where = f"Data[{i}] (QuestionId {qid!r})"
        answer = field(rows, where, item, "Answer")
        refs = [field(rows, where + " Answer", answer, "Value"),
                *optional_list(rows, where, answer, "Aliases")]
        context = None
        if with_context:
            docs = []
            for key, sub in (("EntityPages", "wikipedia"), ("SearchResults", "web")):
                for doc in optional_list(rows, where, item, key):
                    if evidence_dir is not None:
                        file = Path(evidence_dir) / sub / text_field(rows, where, doc, "Filename")
                        if not file.is_file():
                            raise rows.error(where, f"evidence file {file} not found")
                        docs.append(cut(file.read_text(encoding="utf-8"), limit))
                    elif isinstance(doc, Mapping) and isinstance(doc.get("Description"), str):
                        docs.append(cut(doc["Description"], limit))
            context = "\n\n".join(d for d in docs if d) or None
        rows.add(where, id=qid, question=text_field(rows, where, item, "Question"),
                 answers=answer_texts(rows, where, refs), context=context)
    return rows.records


def _triviaqa_hf_rows(path, with_context, limit) -> list[QARecord]:
    rows = RecordCollector(path, "triviaqa")
    reader: Iterator = iter_jsonl(path) if str(path).endswith(".jsonl") else iter_parquet(path)
    for where, row in reader:
        answer = field(rows, where, row, "answer")
        refs = [field(rows, where + " answer", answer, "value"),
                *optional_list(rows, where, answer, "aliases")]
        context = None
        if with_context:
            texts = [*optional_list(rows, where, row, "entity_pages.wiki_context"),
                     *optional_list(rows, where, row, "search_results.search_context")]
            context = "\n\n".join(
                cut(t, limit) for t in texts if isinstance(t, str) and t.strip()
            ) or None
        rows.add(where, id=id_field(rows, where, row, "question_id"),
                 question=text_field(rows, where, row, "question"),
                 answers=answer_texts(rows, where, refs), context=context)
    return rows.records


DATA_FORMATS.register(
    DataFormat("triviaqa", read_triviaqa, suffixes=(".json", ".jsonl", ".parquet"))
)
