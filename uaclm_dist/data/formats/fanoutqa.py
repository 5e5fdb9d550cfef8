"""FanOutQA (packaged): the single-hop sub-questions of its decomposition trees, closed book
(``data.context: retrieved`` gives them a simulated retriever's context, see
:mod:`uaclm_dist.data.retrieval`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uaclm_dist.data.formats.files import read_json
from uaclm_dist.data.formats.packages import package_dir
from uaclm_dist.data.formats.registry import DATA_FORMATS, DataFormat
from uaclm_dist.data.records import QARecord, RecordCollector, answer_text

__all__ = ["fanoutqa_dev_path", "read_fanoutqa"]


def fanoutqa_dev_path() -> Path:
    """``fanoutqa/data/fanout-final-dev.json`` of the installed ``fanoutqa`` package."""
    return package_dir("fanoutqa", "fanoutqa==1.1.1") / "data" / "fanout-final-dev.json"


def read_fanoutqa(path: str | Path | None = None, stats: Counter | None = None) -> list[QARecord]:
    """Single-hop QA pairs of FanOutQA (https://github.com/zhudotexe/fanoutqa), closed book.

    Format (``fanout-final-dev.json``, a JSON list)::

        [{"id": str, "question": str, "answer": {...} | [...] | str, "categories": [str],
          "decomposition": [{"id": str, "question": str, "answer": str|int|float|bool|list|dict,
                             "depends_on": [id], "evidence": {...}, "decomposition": [...]}]}]

    Walks every top-level question's ``decomposition`` tree depth first (the top-level multi-hop
    question itself is not used) and keeps each node whose answer is a str / int / float
    (bools, lists and dicts are skipped). Numbers become text by
    :func:`~uaclm_dist.data.records.answer_text` (``84482267``, ``8848.86``, ``6.0 -> "6"``).
    Identical question texts (several top-level questions share sub-questions) are merged into
    the first one's record (its id), their distinct answers appended as extra references.
    Counts in ``stats``: ``fanoutqa_scalar_pairs`` (scalar-answer nodes seen),
    ``fanoutqa_duplicate_questions`` (merged), ``fanoutqa_empty_answer_skipped``.

    Args:
        path: a file in this format; ``None`` = the packaged dev set.
    """
    path = fanoutqa_dev_path() if path is None else Path(path)
    stats = Counter() if stats is None else stats
    rows = RecordCollector(path, "fanoutqa")
    data = read_json(path)
    if not isinstance(data, list):
        raise rows.error("top level", f"expected a JSON list of questions, got "
                         f"{type(data).__name__}")
    merged: dict[str, dict[str, Any]] = {}  # question text -> {id, answers, where}

    def walk(node: Any, where: str) -> None:
        if not isinstance(node, Mapping):
            raise rows.error(where, f"expected a JSON object, got {type(node).__name__}")
        for key in ("id", "question", "answer"):
            if key not in node:
                raise rows.error(where, f"missing field {key!r}")
        where = f"{where} (id {node['id']!r})"
        answer = node["answer"]
        if isinstance(answer, str | int | float) and not isinstance(answer, bool):
            stats["fanoutqa_scalar_pairs"] += 1
            text = answer_text(answer)
            question = node["question"].strip() if isinstance(node["question"], str) else ""
            if not question:
                raise rows.error(where, f"'question' must be a non-empty string, got "
                                 f"{node['question']!r}")
            if not text:
                stats["fanoutqa_empty_answer_skipped"] += 1
            elif question in merged:
                stats["fanoutqa_duplicate_questions"] += 1
                if text not in merged[question]["answers"]:
                    merged[question]["answers"].append(text)
            else:
                merged[question] = {"id": str(node["id"]), "answers": [text], "where": where}
        children = node.get("decomposition") or []
        if not isinstance(children, list):
            raise rows.error(where, "'decomposition' must be a list")
        for k, child in enumerate(children):
            walk(child, f"{where}.decomposition[{k}]")

    for i, item in enumerate(data):
        if not isinstance(item, Mapping) or not isinstance(item.get("decomposition"), list):
            raise rows.error(f"[{i}]", "expected an object with a 'decomposition' list")
        for k, child in enumerate(item["decomposition"]):
            walk(child, f"[{i}].decomposition[{k}]")
    for question, entry in merged.items():
        rows.add(entry["where"], id=entry["id"], question=question,
                 answers=tuple(entry["answers"]))
    return rows.records


DATA_FORMATS.register(DataFormat("fanoutqa", read_fanoutqa, suffixes=(".json",), packaged=True,
                                 retrieved_context=True))
