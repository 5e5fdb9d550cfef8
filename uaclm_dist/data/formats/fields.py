"""Field access for the JSON dataset formats (CoQA, SQuAD, TriviaQA, BioASQ): every missing or
mistyped field is a :class:`DataError` naming the file and the row (via the
:class:`RecordCollector` of the file being read)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from uaclm_dist.data.formats.files import MISSING, get_field
from uaclm_dist.data.records import DataError, RecordCollector, unique_answers

__all__ = ["answer_texts", "cut", "field", "id_field", "list_field", "optional_list", "text_field"]


def list_field(rows: RecordCollector, where: str, obj: Any, key: str) -> list[Any]:
    """``obj[key]``, which must be a list."""
    if not isinstance(obj, Mapping):
        raise rows.error(where, f"expected a JSON object, got {type(obj).__name__}")
    value = obj.get(key, MISSING)
    if value is MISSING:
        raise rows.error(where, f"missing field {key!r}")
    if not isinstance(value, list):
        raise rows.error(where, f"field {key!r} must be a list, got {type(value).__name__}")
    return value


def field(rows: RecordCollector, where: str, obj: Any, key: str) -> Any:
    """``obj[key]``, which must be present and not null."""
    if not isinstance(obj, Mapping):
        raise rows.error(where, f"expected a JSON object, got {type(obj).__name__}")
    value = obj.get(key)
    if value is None:
        raise rows.error(where, f"missing field {key!r}")
    return value


def text_field(rows: RecordCollector, where: str, obj: Any, key: str) -> str:
    """``obj[key]``, a string, stripped."""
    value = field(rows, where, obj, key)
    if not isinstance(value, str):
        raise rows.error(where, f"field {key!r} must be a string, got {type(value).__name__}")
    return value.strip()


def id_field(rows: RecordCollector, where: str, obj: Any, key: str) -> str:
    """``obj[key]``, a string or integer id, as a string."""
    value = field(rows, where, obj, key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise rows.error(where, f"field {key!r} must be a string or integer id, got {value!r}")
    return str(value)


def optional_list(rows: RecordCollector, where: str, obj: Mapping, key: str) -> list[Any]:
    """``obj[key]`` (dotted keys reach into nested objects), a list; absent or null: []."""
    value = get_field(obj, key)
    if value is MISSING or value is None:
        return []
    if not isinstance(value, list):
        raise rows.error(where, f"field {key!r} must be a list, got {type(value).__name__}")
    return value


def answer_texts(rows: RecordCollector, where: str, values: Iterable[Any]) -> tuple[str, ...]:
    """The distinct answer texts of ``values`` (see :func:`unique_answers`)."""
    try:
        return unique_answers(values)
    except DataError as err:
        raise rows.error(where, str(err)) from None


def cut(text: str, limit: int | None) -> str:
    """``text`` stripped, then cut to its first ``limit`` characters (None: all)."""
    return text.strip() if limit is None else text.strip()[:limit]
