"""JSON Lines rows, columns named by ``data.field_map`` (see :mod:`.table`)."""

from __future__ import annotations

from uaclm_dist.data.formats.files import iter_jsonl
from uaclm_dist.data.formats.registry import DATA_FORMATS, DataFormat
from uaclm_dist.data.formats.table import table_reader

__all__ = ["read_jsonl"]

read_jsonl = table_reader(
    "jsonl", iter_jsonl,
    'One JSON object per line (blank lines ignored); rows located as ``"line N"``.',
)

DATA_FORMATS.register(DataFormat("jsonl", read_jsonl, suffixes=(".jsonl",), uses_field_map=True))
