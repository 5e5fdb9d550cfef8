"""A Hugging Face ``datasets`` dataset on local disk (never the hub), columns named by
``data.field_map``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from uaclm_dist.data.formats.registry import DATA_FORMATS, DataFormat
from uaclm_dist.data.formats.table import records_from_rows
from uaclm_dist.data.records import DataError, QARecord

__all__ = ["read_hf"]


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


DATA_FORMATS.register(DataFormat("hf", read_hf, suffixes=None, uses_field_map=True))
