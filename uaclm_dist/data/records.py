"""The one record type every data format is converted to, and its validation.

A :class:`QARecord` is one question with its reference answers (the first answer is the training
target; all of them are references for ROUGE-L at evaluation), an optional context passage and an
optional image path. Adapters build records through :class:`RecordCollector`, which turns every
problem into a :class:`DataError` naming the file and the row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DataError", "QARecord", "RecordCollector", "answer_text", "check_unique_ids"]


class DataError(ValueError):
    """A data file or row that cannot be used; the message names the file and the row/field."""


@dataclass(frozen=True)
class QARecord:
    """One QA / VQA example.

    Attributes:
        id: unique within the dataset (checked when loading).
        question: the question text (non-empty).
        answers: reference answers, at least one, non-empty and distinct; ``answers[0]`` is the
            training target.
        context: passage shown before the question (``None``: closed book).
        image: path of the image for VQA records (``None`` for text QA).
        source: where the record came from, ``"<format>:<file name>"``.
        context_has_answer: whether ``context`` holds the record's own answer statement
            (``data.context: retrieved``, see :mod:`~uaclm_dist.data.retrieval`); ``None``: not
            applicable (no retrieved context).
    """

    id: str
    question: str
    answers: tuple[str, ...]
    context: str | None = None
    image: str | None = None
    source: str = ""
    context_has_answer: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise DataError(f"id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise DataError(f"question must be a non-empty string, got {self.question!r}")
        if not isinstance(self.answers, tuple) or not self.answers:
            raise DataError(f"answers must be a non-empty tuple, got {self.answers!r}")
        for answer in self.answers:
            if not isinstance(answer, str) or not answer.strip():
                raise DataError(f"every answer must be a non-empty string, got {answer!r}")
        for name in ("context", "image"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise DataError(f"{name} must be a string or null, got {type(value).__name__}")
        if self.context_has_answer is not None and not isinstance(self.context_has_answer, bool):
            raise DataError(f"context_has_answer must be a bool or null, got "
                            f"{self.context_has_answer!r}")


def answer_text(value: Any) -> str:
    """Turn a scalar answer into text: strings stripped, ints as digits, floats without a
    trailing ``.0`` when integral (``6.0 -> "6"``) else shortest round-trip (``8848.86``).

    Raises :class:`DataError` for anything else (bools, lists, null, NaN).
    """
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or value is None:
        raise DataError(f"answer must be a string or number, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"answer must be a finite number, got {value!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    raise DataError(f"answer must be a string or number, got {type(value).__name__} {value!r}")


def unique_answers(values: Iterable[Any]) -> tuple[str, ...]:
    """Distinct non-empty answer texts in first-seen order."""
    out: dict[str, None] = {}
    for value in values:
        text = answer_text(value)
        if text:
            out.setdefault(text, None)
    return tuple(out)


class RecordCollector:
    """Builds the records of one file, checking each and rejecting duplicate ids.

    ``where`` strings locate a row inside the file (``"data[3] turn 2"``, ``"line 7"``); every
    error reads ``"<file>: <where>: <problem>"``.
    """

    def __init__(self, path: str | Path, fmt: str):
        self.path = str(path)
        self.source = f"{fmt}:{Path(path).name}"
        self.records: list[QARecord] = []
        self._first_seen: dict[str, str] = {}

    def error(self, where: str, problem: str) -> DataError:
        """The :class:`DataError` for ``problem`` at ``where`` in this file (to ``raise``)."""
        return DataError(f"{self.path}: {where}: {problem}")

    def add(self, where: str, **fields: Any) -> QARecord:
        """Validate and append ``QARecord(**fields, source=...)``; returns it."""
        try:
            record = QARecord(source=self.source, **fields)
        except DataError as err:
            raise self.error(where, str(err)) from None
        if record.id in self._first_seen:
            raise self.error(
                where, f"duplicate id {record.id!r} (first used at {self._first_seen[record.id]})"
            )
        self._first_seen[record.id] = where
        self.records.append(record)
        return record


def check_unique_ids(records: Iterable[QARecord]) -> None:
    """Raise :class:`DataError` if two records share an id, naming both sources (files)."""
    seen: dict[str, str] = {}
    for record in records:
        if record.id in seen:
            raise DataError(
                f"duplicate id {record.id!r}: in {seen[record.id]} and in {record.source} "
                "(ids must be unique across all data.paths)"
            )
        seen[record.id] = record.source
