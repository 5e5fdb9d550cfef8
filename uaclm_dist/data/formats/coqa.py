"""CoQA (conversational QA): one record per turn, earlier turns in the context."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from uaclm_dist.data.formats.fields import answer_texts, field, id_field, list_field, text_field
from uaclm_dist.data.formats.files import read_json
from uaclm_dist.data.formats.registry import DATA_FORMATS, DataFormat
from uaclm_dist.data.records import QARecord, RecordCollector

__all__ = ["read_coqa"]


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
    for s, story in enumerate(list_field(rows, "top level", read_json(path), "data")):
        story_id = id_field(rows, f"data[{s}]", story, "id")
        where = f"data[{s}] (story {story_id!r})"
        text = text_field(rows, where, story, "story")
        questions = list_field(rows, where, story, "questions")
        answers = list_field(rows, where, story, "answers")
        extra = story.get("additional_answers") or {}
        if len(questions) != len(answers):
            raise rows.error(where, f"{len(questions)} questions but {len(answers)} answers")
        history: list[str] = []
        for q, a in zip(questions, answers, strict=True):
            turn = field(rows, where, q, "turn_id")
            turn_where = f"{where} turn {turn}"
            if field(rows, turn_where, a, "turn_id") != turn:
                raise rows.error(turn_where, f"answer has turn_id {a['turn_id']}")
            question = text_field(rows, turn_where, q, "input_text")
            answer = text_field(rows, turn_where, a, "input_text")
            more = [x.get("input_text", "") for alt in extra.values() for x in alt
                    if isinstance(x, Mapping) and x.get("turn_id") == turn]
            rows.add(turn_where, id=f"{story_id}_{turn}", question=question,
                     answers=answer_texts(rows, turn_where, [answer, *more]),
                     context="\n".join([text, *history]))
            history.append(f"Q: {question}\nA: {answer}")
    return rows.records


DATA_FORMATS.register(DataFormat("coqa", read_coqa, suffixes=(".json",)))
