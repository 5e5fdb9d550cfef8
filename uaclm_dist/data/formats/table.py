"""Generic table rows (the jsonl, parquet and hf formats) -> records, through ``data.field_map``.

Columns are found through a ``field_map`` from our record fields to the source's column names::

    field_map = {"question": "query", "answers": "answer.aliases", "context": "passage"}

Keys are ``id``, ``question``, ``answers``, ``context``, ``image``; a missing key maps to the
column of the same name; dotted names reach into nested objects (``answer.aliases``). ``answers``
may hold a string, a number or a list of them. ``context`` and ``image`` are optional (absent,
null or empty: none); a relative ``image`` path is taken relative to the data file's folder
(:func:`~uaclm_dist.data.load.load_records` checks that the file exists).
When ``id`` is not in ``field_map`` and a row has no ``id`` column, its id is
``"<file stem>-<row>"``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from uaclm_dist.data.formats.files import MISSING, get_field
from uaclm_dist.data.records import DataError, QARecord, RecordCollector, unique_answers

__all__ = ["FIELDS", "records_from_rows", "table_reader"]

#: Record fields a ``field_map`` may name.
FIELDS = ("id", "question", "answers", "context", "image")


def records_from_rows(
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    path: str | Path,
    fmt: str,
    field_map: Mapping[str, str] | None = None,
    base: Path | None = None,
) -> list[QARecord]:
    """Records from ``(where, row)`` pairs of the file ``path`` (``where``: ``"line 7"``);
    relative image paths are resolved against ``base`` (default: the file's folder)."""
    field_map = dict(field_map or {})
    unknown = sorted(set(field_map) - set(FIELDS))
    if unknown:
        raise DataError(f"data.field_map: unknown record field(s) {', '.join(unknown)}; valid: "
                        f"{', '.join(FIELDS)}")
    col = {name: field_map.get(name, name) for name in FIELDS}
    out = RecordCollector(path, fmt)
    base = Path(path).parent if base is None else base

    def field(where: str, row: Mapping[str, Any], name: str, required: bool) -> Any:
        value = get_field(row, col[name])
        if value is MISSING or value is None or value == "":
            if required:
                hint = "" if name in field_map else f" (map it with data.field_map.{name})"
                raise out.error(where, f"field {name!r} (column {col[name]!r}) is missing{hint}")
            return None
        return value

    for where, row in rows:
        row_id = field(where, row, "id", required="id" in field_map)
        if row_id is None:
            row_id = f"{Path(path).stem}-{where.split()[-1]}"
        elif isinstance(row_id, bool) or not isinstance(row_id, str | int):
            raise out.error(where, f"id (column {col['id']!r}) must be a string or integer")
        question = field(where, row, "question", required=True)
        question = question.strip() if isinstance(question, str) else question
        answers = field(where, row, "answers", required=True)
        try:
            answers = unique_answers(answers if isinstance(answers, list | tuple) else [answers])
        except DataError as err:
            raise out.error(where, f"answers (column {col['answers']!r}): {err}") from None
        if not answers:
            raise out.error(where, f"answers (column {col['answers']!r}) holds no non-empty "
                                   "answer; every record needs at least one")
        image = field(where, row, "image", required=False)
        if isinstance(image, Mapping) and isinstance(image.get("path"), str):
            image = image["path"]  # an HF Image feature stored by path
        if image is not None and not isinstance(image, str):
            raise out.error(where, f"image (column {col['image']!r}) must be a file path")
        context = field(where, row, "context", required=False)
        out.add(where, id=str(row_id), question=question, answers=answers,
                context=(context.strip() or None) if isinstance(context, str) else context,
                image=None if image is None else str(base / image))
    return out.records


def table_reader(
    fmt: str, rows_of: Callable[[Path], Iterable[tuple[str, Mapping[str, Any]]]], doc: str
) -> Callable[..., list[QARecord]]:
    """``read_<fmt>(path, stats=None, *, field_map=None)``: the records of the ``(where, row)``
    pairs that ``rows_of(path)`` yields (``doc`` becomes its docstring)."""

    def read(
        path: str | Path, stats: Counter | None = None, *,
        field_map: Mapping[str, str] | None = None,
    ) -> list[QARecord]:
        return records_from_rows(rows_of(Path(path)), path, fmt, field_map)

    read.__name__ = read.__qualname__ = f"read_{fmt}"
    read.__doc__ = doc
    return read
