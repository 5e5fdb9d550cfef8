"""Generic row formats: JSON Lines, Parquet and Hugging Face ``datasets`` on local disk.

Columns are found through a ``field_map`` from our record fields to the source's column names::

    field_map = {"question": "query", "answers": "answer.aliases", "context": "passage"}

Keys are ``id``, ``question``, ``answers``, ``context``, ``image``; a missing key maps to the
column of the same name; dotted names reach into nested objects (``answer.aliases``). ``answers``
may hold a string, a number or a list of them. ``context`` and ``image`` are optional (absent,
null or empty: none); a relative ``image`` path is taken relative to the data file's folder.
When ``id`` is not in ``field_map`` and a row has no ``id`` column, its id is
``"<file stem>-<row>"``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from uaclm_dist.data.formats_io import MISSING, get_field, iter_jsonl, iter_parquet
from uaclm_dist.data.records import DataError, QARecord, RecordCollector, unique_answers

__all__ = ["FIELDS", "read_hf", "read_jsonl", "read_parquet", "records_from_rows"]

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


def read_jsonl(
    path: str | Path, stats: Counter | None = None, *, field_map: Mapping[str, str] | None = None
) -> list[QARecord]:
    """One JSON object per line (blank lines ignored); rows located as ``"line N"``."""
    return records_from_rows(iter_jsonl(path), path, "jsonl", field_map)


def read_parquet(
    path: str | Path, stats: Counter | None = None, *, field_map: Mapping[str, str] | None = None
) -> list[QARecord]:
    """A Parquet table; rows located as ``"row N"`` (from 0)."""
    return records_from_rows(iter_parquet(path), path, "parquet", field_map)


def read_hf(
    path: str | Path, stats: Counter | None = None, *, field_map: Mapping[str, str] | None = None
) -> list[QARecord]:
    """A Hugging Face ``datasets`` dataset on local disk, never from the hub.

    ``path`` is a folder written by ``Dataset.save_to_disk`` (or one split folder of a saved
    ``DatasetDict``), or a local data file / folder that ``datasets.load_dataset`` can read
    (json / jsonl / csv / parquet). A dataset with several splits is refused: point
    ``data.paths`` at the split you mean.
    """
    import datasets

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found (the hf format reads local datasets only, never "
                        "hub ids)")
    try:
        saved = ("dataset_dict.json", "state.json")
        if path.is_dir() and any((path / name).is_file() for name in saved):
            dataset = datasets.load_from_disk(str(path))
        elif path.is_file():
            builder = {".jsonl": "json", ".json": "json", ".csv": "csv",
                       ".parquet": "parquet"}.get(path.suffix.lower())
            if builder is None:
                raise DataError(f"{path}: the hf format reads .json/.jsonl/.csv/.parquet files "
                                "or dataset folders")
            dataset = datasets.load_dataset(builder, data_files=str(path))
        else:
            dataset = datasets.load_dataset(str(path))
    except DataError:
        raise
    except Exception as err:  # datasets raises many types; keep the cause in the message
        raise DataError(f"{path}: cannot load as a Hugging Face dataset: {err}") from None
    if isinstance(dataset, datasets.DatasetDict):
        if len(dataset) != 1:
            raise DataError(f"{path}: has splits {', '.join(dataset)}; point data.paths at one "
                            "split (for save_to_disk folders: <folder>/<split>)")
        dataset = next(iter(dataset.values()))

    def rows() -> Iterator[tuple[str, Mapping[str, Any]]]:
        for number, row in enumerate(dataset):
            yield f"row {number}", row

    return records_from_rows(rows(), path, "hf", field_map,
                             base=path.parent if path.is_file() else path)
