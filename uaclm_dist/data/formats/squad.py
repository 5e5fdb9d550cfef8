"""SQuAD v1.1 / v2.0: one record per answerable question."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from uaclm_dist.data.formats.fields import answer_texts, id_field, list_field, text_field
from uaclm_dist.data.formats.files import read_json
from uaclm_dist.data.formats.registry import DATA_FORMATS, DataFormat
from uaclm_dist.data.records import QARecord, RecordCollector

__all__ = ["read_squad"]


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
    for a, article in enumerate(list_field(rows, "top level", read_json(path), "data")):
        for p, paragraph in enumerate(list_field(rows, f"data[{a}]", article, "paragraphs")):
            where = f"data[{a}].paragraphs[{p}]"
            context = text_field(rows, where, paragraph, "context")
            for i, qa in enumerate(list_field(rows, where, paragraph, "qas")):
                qa_where = f"{where}.qas[{i}]"
                qa_id = id_field(rows, qa_where, qa, "id")
                qa_where += f" (id {qa_id!r})"
                if qa.get("is_impossible"):
                    stats["squad_impossible_skipped"] += 1
                    continue
                texts = [text_field(rows, qa_where, x, "text")
                         for x in list_field(rows, qa_where, qa, "answers")]
                rows.add(qa_where, id=qa_id, question=text_field(rows, qa_where, qa, "question"),
                         answers=answer_texts(rows, qa_where, texts), context=context)
    return rows.records


DATA_FORMATS.register(DataFormat("squad", read_squad, suffixes=(".json",)))
