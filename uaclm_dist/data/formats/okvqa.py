"""OK-VQA (https://okvqa.allenai.org/): the paper's vision-language data, in its own files.

A split is three things released separately (``val2014`` shown; ``train2014`` alike)::

    OpenEnded_mscoco_val2014_questions.json   {"questions": [{"image_id": int,
                                                 "question": str, "question_id": int}, ...]}
    mscoco_val2014_annotations.json           {"annotations": [{"question_id": int,
                                                 "image_id": int, "answers": [{"answer": str,
                                                 "raw_answer": str, "answer_confidence": str,
                                                 "answer_id": int}, x 10], ...}, ...]}
    val2014/COCO_val2014_000000297147.jpg     the COCO images (image_id zero-padded to 12)

``data.paths`` names the questions file; the annotations file is looked up next to it by its
released name, the images in a ``val2014/`` folder next to it (or next to that folder's parent
``coco/`` folder, as COCO is usually unpacked once for several datasets).

Records: id ``"okvqa-<question_id>"``; answers = the distinct annotator answers, most frequent
first (ties: first given), so ``answers[0]`` (the training target) is the most frequent answer
and correctness at evaluation is checked against all of them.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from uaclm_dist.data.formats.fields import field, list_field, text_field
from uaclm_dist.data.formats.files import read_json
from uaclm_dist.data.formats.registry import DATA_FORMATS, DataFormat
from uaclm_dist.data.records import DataError, QARecord, RecordCollector, answer_text

__all__ = ["coco_image_path", "read_okvqa"]

QUESTIONS_NAME = re.compile(r"OpenEnded_mscoco_(?P<split>\w+?)_questions\.json$")


def coco_image_path(images_dir: Path, split: str, image_id: int) -> Path:
    """``<images_dir>/COCO_<split>_<image_id:012d>.jpg``."""
    return images_dir / f"COCO_{split}_{image_id:012d}.jpg"


def _images_dir(questions_file: Path, split: str) -> Path:
    """The first existing of ``<dir>/<split>``, ``<dir>/coco/<split>``, ``<dir>/../coco/<split>``
    (``<dir>/<split>`` when none exists: the missing-image error then names it)."""
    base = questions_file.parent
    for candidate in (base / split, base / "coco" / split, base.parent / "coco" / split):
        if candidate.is_dir():
            return candidate.resolve()
    return (base / split).resolve()


def ranked_answers(answers: list[str]) -> tuple[str, ...]:
    """Distinct answers, most frequent first; ties keep the order they were given in."""
    counts = Counter(answers)
    first = {a: i for i, a in reversed(list(enumerate(answers)))}
    return tuple(sorted(counts, key=lambda a: (-counts[a], first[a])))


def read_okvqa(path: str | Path, stats: Counter | None = None) -> list[QARecord]:
    """Records of one OK-VQA split from its questions file (see the module docstring)."""
    questions_file = Path(path)
    match = QUESTIONS_NAME.search(questions_file.name)
    if match is None:
        raise DataError(f"{questions_file}: not an OK-VQA questions file (expected a name like "
                        "OpenEnded_mscoco_val2014_questions.json)")  # fmt: skip
    split = match["split"]
    annotations_file = questions_file.with_name(f"mscoco_{split}_annotations.json")
    if not annotations_file.is_file():
        raise DataError(f"{questions_file}: its annotations file {annotations_file} not found "
                        "(OK-VQA ships questions and answers in two files)")  # fmt: skip
    images_dir = _images_dir(questions_file, split)

    notes = RecordCollector(annotations_file, "okvqa")
    answers_of: dict[int, tuple[str, ...]] = {}
    for i, note in enumerate(list_field(notes, "top level", read_json(annotations_file),
                                        "annotations")):  # fmt: skip
        where = f"annotations[{i}]"
        qid = field(notes, where, note, "question_id")
        given = []
        for j, item in enumerate(list_field(notes, where, note, "answers")):
            try:
                given.append(answer_text(field(notes, f"{where}.answers[{j}]", item, "answer")))
            except DataError as exc:
                raise notes.error(f"{where}.answers[{j}]", str(exc)) from None
        answers_of[qid] = ranked_answers([a for a in given if a])

    rows = RecordCollector(questions_file, "okvqa")
    for i, question in enumerate(list_field(rows, "top level", read_json(questions_file),
                                            "questions")):  # fmt: skip
        where = f"questions[{i}]"
        qid = field(rows, where, question, "question_id")
        image_id = field(rows, where, question, "image_id")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise rows.error(where, f"image_id must be an integer, got {image_id!r}")
        if qid not in answers_of:
            raise rows.error(where, f"question_id {qid} has no entry in {annotations_file}")
        if not answers_of[qid]:
            raise rows.error(where, f"question_id {qid} has no non-empty answer in "
                                    f"{annotations_file}")  # fmt: skip
        image = coco_image_path(images_dir, split, image_id)
        rows.add(where, id=f"okvqa-{qid}", question=text_field(rows, where, question, "question"),
                 answers=answers_of[qid], image=str(image))  # fmt: skip
    return rows.records


DATA_FORMATS.register(DataFormat("okvqa", read_okvqa, suffixes=(".json",)))
