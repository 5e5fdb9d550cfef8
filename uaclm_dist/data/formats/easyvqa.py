"""easy-VQA (packaged): questions about 64x64 shape images."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from uaclm_dist.data.formats.files import read_json
from uaclm_dist.data.formats.packages import package_dir
from uaclm_dist.data.formats.registry import DATA_FORMATS, DataFormat
from uaclm_dist.data.records import QARecord, RecordCollector

__all__ = ["easyvqa_dir", "read_easyvqa"]


def easyvqa_dir(split: str = "test") -> Path:
    """``easy_vqa/data/<split>`` (``questions.json`` + ``images/``) of the installed package."""
    return package_dir("easy_vqa", "easy-vqa==1.0") / "data" / split


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


DATA_FORMATS.register(DataFormat("easyvqa", read_easyvqa, suffixes=None, packaged=True))
