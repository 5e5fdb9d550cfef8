"""BioASQ Task B: the paper's out-of-distribution questions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uaclm_dist.data.formats.fields import (
    answer_texts,
    id_field,
    list_field,
    optional_list,
    text_field,
)
from uaclm_dist.data.formats.files import read_json
from uaclm_dist.data.formats.registry import DATA_FORMATS, DataFormat
from uaclm_dist.data.records import QARecord, RecordCollector

__all__ = ["read_bioasq"]


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
    for i, item in enumerate(list_field(rows, "top level", read_json(path), "questions")):
        qid = id_field(rows, f"questions[{i}]", item, "id")
        where = f"questions[{i}] (id {qid!r})"
        ideal = _flatten(item.get("ideal_answer") or [])
        exact = [] if item.get("type") == "summary" else _flatten(item.get("exact_answer") or [])
        refs = answer_texts(rows, where, exact) or answer_texts(rows, where, ideal)
        if not refs:
            raise rows.error(where, "no 'exact_answer' and no 'ideal_answer'")
        context = None
        if with_snippets:
            texts = [s.get("text") for s in optional_list(rows, where, item, "snippets")
                     if isinstance(s, Mapping)]
            context = "\n".join(t.strip() for t in texts if isinstance(t, str) and t.strip())
        rows.add(where, id=qid, question=text_field(rows, where, item, "body"), answers=refs,
                 context=context or None)
    return rows.records


DATA_FORMATS.register(DataFormat("bioasq", read_bioasq, suffixes=(".json",)))
