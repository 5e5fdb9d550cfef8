"""One entry point from a data config to records: :func:`load_records`.

    records = load_records(cfg.data)        # or cfg.data.ood
    train, test = split_records(records, cfg.data.train_fraction, cfg.data.split_seed)

The format adapters live in ``formats_text`` (CoQA, TriviaQA, SQuAD, BioASQ), ``formats_packaged``
(FanOutQA, easy-VQA) and ``formats_table`` (jsonl, parquet, hf); each documents the file format
it reads.
"""

from __future__ import annotations

import glob
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from uaclm_dist.data.formats_packaged import read_easyvqa, read_fanoutqa
from uaclm_dist.data.formats_table import read_hf, read_jsonl, read_parquet
from uaclm_dist.data.formats_text import read_bioasq, read_coqa, read_squad, read_triviaqa
from uaclm_dist.data.records import DataError, QARecord, check_unique_ids

__all__ = ["READERS", "expand_paths", "load_records", "read_file"]

logger = logging.getLogger(__name__)

#: format -> (reader(path, stats, **options), file suffixes taken from a folder; None: the folder
#: itself is the dataset).
READERS: dict[str, tuple[Callable[..., list[QARecord]], tuple[str, ...] | None]] = {
    "coqa": (read_coqa, (".json",)),
    "triviaqa": (read_triviaqa, (".json", ".jsonl", ".parquet")),
    "squad": (read_squad, (".json",)),
    "bioasq": (read_bioasq, (".json",)),
    "fanoutqa": (read_fanoutqa, (".json",)),
    "easyvqa": (read_easyvqa, None),
    "jsonl": (read_jsonl, (".jsonl",)),
    "parquet": (read_parquet, (".parquet",)),
    "hf": (read_hf, None),
}
_TABLE_FORMATS = ("jsonl", "parquet", "hf")
_PACKAGED_FORMATS = ("fanoutqa", "easyvqa")


def expand_paths(paths: list[str], fmt: str) -> list[Path]:
    """Files to read, in order: glob patterns expand sorted; a folder gives its files with the
    format's suffixes, sorted (for ``hf`` / ``easyvqa`` the folder itself)."""
    if fmt not in READERS:
        raise DataError(f"unknown data format {fmt!r}; known: {', '.join(READERS)}")
    suffixes = READERS[fmt][1]
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
    """Records of one file (``path=None``: the packaged data of fanoutqa / easyvqa)."""
    if fmt not in READERS:
        raise DataError(f"unknown data format {fmt!r}; known: {', '.join(READERS)}")
    return READERS[fmt][0](path, stats, **options)


def load_records(data_cfg: Any) -> list[QARecord]:
    """All records of a :class:`~uaclm_dist.config.DataConfig` (or ``OODDataConfig``).

    Reads ``data_cfg.paths`` in order (packaged formats with no paths read their package data),
    checks that ids are unique across all files, then keeps the first ``max_examples`` records
    in file order - deterministic and applied before the train/test split, so a smaller run
    uses a prefix of the same data. Uses ``data_cfg.field_map`` when the config has one
    (jsonl / parquet / hf).

    Returns:
        ``list[QARecord]`` in file order.
    """
    fmt = data_cfg.format
    paths = list(getattr(data_cfg, "paths", []) or [])
    field_map: Mapping[str, str] = getattr(data_cfg, "field_map", None) or {}
    if field_map and fmt not in _TABLE_FORMATS:
        raise DataError(f"data.field_map is only used by the {'/'.join(_TABLE_FORMATS)} formats, "
                        f"not {fmt!r}")
    if paths:
        files: list[Path | None] = list(expand_paths(paths, fmt))
    elif fmt in _PACKAGED_FORMATS:
        files = [None]
    else:
        raise DataError(f"data.paths is empty but format {fmt!r} reads local files")
    options = {"field_map": field_map} if fmt in _TABLE_FORMATS else {}
    stats: Counter = Counter()
    records: list[QARecord] = []
    for file in files:
        records.extend(read_file(fmt, file, stats, **options))
    check_unique_ids(records)
    total = len(records)
    if data_cfg.max_examples is not None:
        records = records[: data_cfg.max_examples]
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(stats.items()))
    logger.info("loaded %d %s records from %d file(s) (kept %d after max_examples)%s", total,
                fmt, len(files), len(records), f"; {skipped}" if skipped else "")
    return records
