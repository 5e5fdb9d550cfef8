"""File reading shared by the format adapters; every failure is a :class:`DataError` naming the
file (and the line for JSON Lines)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from uaclm_dist.data.records import DataError

__all__ = ["MISSING", "get_field", "iter_jsonl", "iter_parquet", "read_json"]

#: Returned by :func:`get_field` when a (dotted) field is absent.
MISSING: Any = object()


def read_json(path: str | Path) -> Any:
    """Parse one JSON document; a missing file or a syntax error names the file and position."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: "
                        f"{err.msg}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason})") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``("line N", row)`` for each non-blank line of a JSON Lines file (N from 1); a line
    that is not UTF-8 text is a :class:`DataError` naming it."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}: line {number}: not UTF-8 text (byte "
                                f"{raw[err.start]:#04x} at byte {err.start + 1} of the line)"
                                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {number}: invalid JSON at column {err.colno}: "
                                f"{err.msg}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {number}: expected a JSON object, got "
                                f"{type(row).__name__}")
            yield f"line {number}", row


def iter_parquet(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``("row N", row)`` for each row of a Parquet file (N from 0, file order)."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as err:  # pyarrow raises several types for corrupt / non-parquet files
        raise DataError(f"{path}: cannot read as Parquet: {err}") from None
    for number, row in enumerate(table.to_pylist()):
        yield f"row {number}", row


def get_field(row: Mapping[str, Any], name: str) -> Any:
    """``row[name]``, following dots into nested mappings (``"answer.value"``); :data:`MISSING`
    if any step is absent. A key containing a literal dot is found before it is split."""
    if name in row:
        return row[name]
    value: Any = row
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value
