"""One entry point from a data config to records: :func:`load_records`.

    records = load_records(cfg.data)        # or cfg.data.ood
    train, test = split_records(records, cfg.data.train_fraction, cfg.data.split_seed)

The format is looked up in :data:`~uaclm_dist.data.formats.DATA_FORMATS`; each format's module
documents the file format it reads.
"""

from __future__ import annotations

import glob
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uaclm_dist.data.formats import DATA_FORMATS, DataFormat
from uaclm_dist.data.records import DataError, QARecord, check_unique_ids
from uaclm_dist.data.retrieval import add_retrieved_context
from uaclm_dist.data.split import split_records

__all__ = ["expand_paths", "get_format", "load_records", "read_file"]

logger = logging.getLogger(__name__)


def get_format(fmt: str) -> DataFormat:
    """The registered format ``fmt``; a :class:`DataError` listing the known ones otherwise."""
    if fmt not in DATA_FORMATS:
        raise DataError(f"unknown data format {fmt!r}; known: {', '.join(DATA_FORMATS.names())}")
    return DATA_FORMATS.get(fmt)


def expand_paths(paths: list[str], fmt: str) -> list[Path]:
    """Files to read, in order: glob patterns expand sorted; a folder gives its files with the
    format's suffixes, sorted (for formats without suffixes, e.g. ``hf`` / ``easyvqa``, the
    folder itself)."""
    suffixes = get_format(fmt).suffixes
    out: list[Path] = []
    for entry in paths:
        matches = sorted(glob.glob(entry, recursive=True)) if glob.has_magic(entry) else [entry]
        if not matches:
            raise DataError(f"data path pattern {entry!r} matches no file")
        for match in map(Path, matches):
            if not match.exists():
                raise DataError(f"data path {match} not found")
            if match.is_dir() and suffixes is not None:
                files = sorted(p for p in match.iterdir() if p.suffix.lower() in suffixes)
                if not files:
                    raise DataError(f"data folder {match} holds no {'/'.join(suffixes)} file for "
                                    f"format {fmt!r}")
                out.extend(files)
            else:
                out.append(match)
    return out


def read_file(
    fmt: str, path: str | Path | None, stats: Counter | None = None, **options: Any
) -> list[QARecord]:
    """Records of one file (``path=None``: the packaged data of a packaged format)."""
    return get_format(fmt).read(path, stats, **options)


def load_records(data_cfg: Any) -> list[QARecord]:
    """All records of a :class:`~uaclm_dist.config.DataConfig` (or ``OODDataConfig``).

    Reads ``data_cfg.paths`` in order (packaged formats with no paths read their package data),
    checks that ids are unique across all files, then keeps the first ``max_examples`` records
    in file order - deterministic and applied before the train/test split, so a smaller run
    uses a prefix of the same data. Uses ``data_cfg.field_map`` when the config has one
    (formats with ``uses_field_map``: jsonl / parquet / hf). With ``data_cfg.context ==
    "retrieved"`` the kept records get a retrieved context (:func:`with_retrieved_context`).

    Returns:
        ``list[QARecord]`` in file order.
    """
    fmt = get_format(data_cfg.format)
    paths = list(getattr(data_cfg, "paths", []) or [])
    field_map: Mapping[str, str] = getattr(data_cfg, "field_map", None) or {}
    if field_map and not fmt.uses_field_map:
        table_formats = [f.name for f in DATA_FORMATS.values() if f.uses_field_map]
        raise DataError(f"data.field_map is only used by the {'/'.join(table_formats)} formats, "
                        f"not {fmt.name!r}")
    if paths:
        files: list[Path | None] = list(expand_paths(paths, fmt.name))
    elif fmt.packaged:
        files = [None]
    else:
        raise DataError(f"data.paths is empty but format {fmt.name!r} reads local files")
    stats: Counter = Counter()
    records: list[QARecord] = []
    for file in files:
        records.extend(_checked_file_records(fmt, file, fmt.load(file, stats, field_map), stats))
    check_unique_ids(records)
    total = len(records)
    if data_cfg.max_examples is not None:
        records = records[: data_cfg.max_examples]
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(stats.items()))
    logger.info("loaded %d %s records from %d file(s) (kept %d after max_examples)%s", total,
                fmt.name, len(files), len(records), f"; {skipped}" if skipped else "")
    if getattr(data_cfg, "context", "none") == "retrieved":
        records = with_retrieved_context(records, data_cfg)
    return records


def _checked_file_records(fmt: DataFormat, file: Path | None, records: list[QARecord],
                          stats: Counter) -> list[QARecord]:
    """``records``, read from ``file``, after the checks every format shares: the file gave at
    least one record (an empty file is a mistake, not an empty dataset) and every record's
    image exists. :class:`DataError` naming the file (and the record) otherwise."""
    where = str(file) if file is not None else f"the packaged {fmt.name} data"
    if not records:
        empty = file is not None and file.is_file() and not file.read_bytes().strip()
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(stats.items()))
        why = (" (the file is empty)" if empty else f" (rows skipped: {skipped})" if skipped
               else "")  # fmt: skip
        raise DataError(f"{where}: no {fmt.name} records{why}")
    for record in records:
        if record.image is not None and not Path(record.image).is_file():
            raise DataError(f"{where}: record {record.id!r}: image {record.image!r} not found")
    return records


def with_retrieved_context(records: list[QARecord], data_cfg: Any) -> list[QARecord]:
    """``records`` with the contexts of ``data.context: retrieved`` (:mod:`.retrieval`): k
    statements, seeded by ``data.context_seed``; training questions (the split of
    ``data.train_fraction`` / ``data.split_seed``, as training computes it) draw only from
    training questions, so no test answer is in a training sequence."""
    fmt = get_format(data_cfg.format)
    if not fmt.retrieved_context:
        able = [f.name for f in DATA_FORMATS.values() if f.retrieved_context]
        raise DataError(f"data.context 'retrieved' is only supported by the "
                        f"{'/'.join(able) or 'no'} format(s), not data.format {fmt.name!r}")
    train, _ = split_records(records, data_cfg.train_fraction, data_cfg.split_seed)
    records, report = add_retrieved_context(
        records, k=data_cfg.context_k, miss_rate=data_cfg.context_miss_rate,
        seed=data_cfg.context_seed, train_ids={r.id for r in train},
    )  # fmt: skip
    logger.info("retrieved contexts: %d of %d hold the question's own statement; %d shorter "
                "than data.context_k=%d", report.n_with_answer, report.n_records,
                report.n_short, data_cfg.context_k)  # fmt: skip
    return records
