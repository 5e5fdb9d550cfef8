"""The OK-VQA reader on fixture files written in the released formats (questions JSON,
annotations JSON with 10 answers per question, COCO image folder)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from uaclm_dist.data import DataError
from uaclm_dist.data.formats.okvqa import coco_image_path, ranked_answers, read_okvqa

SPLIT = "val2014"


def answers(*texts: str) -> list[dict]:
    """Annotator answers in the released shape (10 per question in OK-VQA)."""
    return [{"answer": t, "raw_answer": t, "answer_confidence": "yes", "answer_id": i + 1}
            for i, t in enumerate(texts)]  # fmt: skip


def write_split(folder: Path, *, images_at: str = SPLIT, drop_image: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    questions = [
        {"image_id": 297147, "question": "What sport can you use this for?",
         "question_id": 2971475},
        {"image_id": 393225, "question": "What is the material of the glass?",
         "question_id": 3932255},
    ]  # fmt: skip
    notes = [
        {"question_id": 2971475, "image_id": 297147, "question_type": "one", "answer_type": "other",
         "confidence": 3, "answers": answers(*["racing"] * 6, *["motocross"] * 4)},
        {"question_id": 3932255, "image_id": 393225, "question_type": "eight",
         "answer_type": "other", "confidence": 3,
         "answers": answers("glass", "plastic", "plastic", "glass", "crystal", "plastic",
                            "glass", "plastic", "glass", "plastic")},
    ]  # fmt: skip
    info = {"license": {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"},
            "data_subtype": SPLIT, "data_type": "mscoco"}  # fmt: skip
    questions_file = folder / f"OpenEnded_mscoco_{SPLIT}_questions.json"
    questions_file.write_text(json.dumps({**info, "task_type": "Open-Ended",
                                          "questions": questions}))  # fmt: skip
    (folder / f"mscoco_{SPLIT}_annotations.json").write_text(json.dumps({**info,
                                                                        "annotations": notes}))
    images = folder / images_at
    images.mkdir(parents=True, exist_ok=True)
    for q in questions:
        if q["image_id"] != drop_image:
            Image.new("RGB", (40, 30), (200, 10, 10)).save(
                coco_image_path(images, SPLIT, q["image_id"]), format="JPEG")
    return questions_file


def test_records_carry_all_answers_most_frequent_first_and_the_coco_image(tmp_path):
    records = read_okvqa(write_split(tmp_path / "okvqa"), Counter())
    assert [r.id for r in records] == ["okvqa-2971475", "okvqa-3932255"]
    assert records[0].answers == ("racing", "motocross")
    assert records[1].answers == ("plastic", "glass", "crystal")  # given 5, 4 and 1 times
    assert records[0].image.endswith(f"{SPLIT}/COCO_{SPLIT}_000000297147.jpg")
    assert Path(records[0].image).is_file() and records[0].source == "okvqa:" + \
        f"OpenEnded_mscoco_{SPLIT}_questions.json"  # fmt: skip


def test_a_shared_coco_folder_next_to_the_dataset_is_found(tmp_path):
    questions = write_split(tmp_path / "okvqa", images_at=f"../coco/{SPLIT}")
    records = read_okvqa(questions, Counter())
    assert Path(records[0].image).parent == (tmp_path / "coco" / SPLIT).resolve()


def test_ties_keep_the_order_the_annotators_gave():
    assert ranked_answers(["b", "a", "a", "b", "c"]) == ("b", "a", "c")


def test_errors_name_the_file_and_the_row(tmp_path):
    questions = write_split(tmp_path / "a")
    (questions.parent / f"mscoco_{SPLIT}_annotations.json").unlink()
    with pytest.raises(DataError, match=r"annotations file \S*mscoco_val2014_annotations\.json "
                                        r"not found"):  # fmt: skip
        read_okvqa(questions, Counter())

    questions = write_split(tmp_path / "b")
    notes_file = questions.parent / f"mscoco_{SPLIT}_annotations.json"
    notes = json.loads(notes_file.read_text())
    del notes["annotations"][1]
    notes_file.write_text(json.dumps(notes))
    with pytest.raises(DataError, match=r"questions\.json: questions\[1\]: question_id 3932255 "
                                        r"has no entry"):  # fmt: skip
        read_okvqa(questions, Counter())

    wrong = tmp_path / "c" / "questions.json"
    wrong.parent.mkdir()
    wrong.write_text("{}")
    with pytest.raises(DataError, match="not an OK-VQA questions file"):
        read_okvqa(wrong, Counter())


def test_a_missing_coco_image_is_refused_by_the_loader_naming_it(tmp_path):
    from uaclm_dist.config import load_config
    from uaclm_dist.data import load_records

    questions = write_split(tmp_path / "okvqa", drop_image=393225)
    cfg = load_config("configs/tiny_test.yaml", ["data.format=okvqa",
                                                 f"data.paths=[{questions}]"])  # fmt: skip
    with pytest.raises(DataError, match=r"record 'okvqa-3932255': image '\S*"
                                        r"COCO_val2014_000000393225\.jpg' not found"):  # fmt: skip
        load_records(cfg.data)
