"""Adapters for the data that ships inside installed packages: FanOutQA and easy-VQA.

The packages are located with :func:`importlib.util.find_spec` and never imported (importing
``fanoutqa`` pulls heavy dependencies); their JSON files are read directly.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uaclm_dist.data.formats_io import read_json
from uaclm_dist.data.records import DataError, QARecord, RecordCollector, answer_text

__all__ = ["easyvqa_dir", "fanoutqa_dev_path", "read_easyvqa", "read_fanoutqa"]


def _package_dir(name: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the {pip_name!r} package is not installed; it ships the {name} data "
                        f"(pip install {pip_name})")
    return Path(list(spec.submodule_search_locations)[0])


def fanoutqa_dev_path() -> Path:
    """``fanoutqa/data/fanout-final-dev.json`` of the installed ``fanoutqa`` package."""
    return _package_dir("fanoutqa", "fanoutqa==1.1.1") / "data" / "fanout-final-dev.json"


def easyvqa_dir(split: str = "test") -> Path:
    """``easy_vqa/data/<split>`` (``questions.json`` + ``images/``) of the installed package."""
    return _package_dir("easy_vqa", "easy-vqa==1.0") / "data" / split


# ------------------------------------------------------------------------------------ FanOutQA


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


# ------------------------------------------------------------------------------------ easy-VQA


def read_easyvqa(path: str | Path | None = None, stats: Counter | None = None) -> list[QARecord]:
    """easy-VQA (https://github.com/vzhou842/easy-VQA): questions about 64x64 shape images.

    Format: ``<split>/questions.json`` is a JSON list of ``[question, answer, image_id]``; the
    image is ``<split>/images/<image_id>.png``; ``data/answers.txt`` lists the 13 possible
    answers (yes/no, shapes, colours), one per line.

    Records: id ``"easyvqa-<split>-<row>"``, ``image`` = absolute PNG path, one answer (checked
    against ``answers.txt`` when that file is next to the split folder).

    Args:
        path: a split folder or its ``questions.json``; ``None`` = the packaged ``test`` split
            (9,673 questions on 1,000 images; the analogue of the paper's OK-VQA validation set,
            which it splits 20% / 80%). The packaged ``train`` split has 38,575 questions.
    """
    path = easyvqa_dir("test") if path is None else Path(path)
    split_dir = path if path.is_dir() else path.parent
    questions_file = path / "questions.json" if path.is_dir() else path
    rows = RecordCollector(questions_file, "easyvqa")
    images_dir = (split_dir / "images").resolve()
    images = set(os.listdir(images_dir)) if images_dir.is_dir() else set()
    answers_file = split_dir.parent / "answers.txt"
    closed_set = (
        {line.strip() for line in answers_file.read_text().splitlines() if line.strip()}
        if answers_file.is_file() else None
    )
    data = read_json(questions_file)
    if not isinstance(data, list):
        raise rows.error("top level", "expected a JSON list of [question, answer, image_id]")
    for i, row in enumerate(data):
        where = f"[{i}]"
        if not isinstance(row, list) or len(row) != 3:
            raise rows.error(where, f"expected [question, answer, image_id], got {row!r}")
        question, answer, image_id = row
        if closed_set is not None and answer not in closed_set:
            raise rows.error(where, f"answer {answer!r} is not in {answers_file}")
        image = f"{image_id}.png"
        if image not in images:
            raise rows.error(where, f"image {images_dir / image} not found")
        rows.add(where, id=f"easyvqa-{split_dir.name}-{i}", question=question,
                 answers=(answer,), image=str(images_dir / image))
    return rows.records
