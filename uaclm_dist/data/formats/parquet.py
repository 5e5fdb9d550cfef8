"""Parquet rows, columns named by ``data.field_map`` (see :mod:`.table`)."""

from __future__ import annotations

from uaclm_dist.data.formats.files import iter_parquet
from uaclm_dist.data.formats.registry import DATA_FORMATS, DataFormat
from uaclm_dist.data.formats.table import table_reader

__all__ = ["read_parquet"]

read_parquet = table_reader(
    "parquet", iter_parquet, 'A Parquet table; rows located as ``"row N"`` (from 0).'
)

DATA_FORMATS.register(
    DataFormat("parquet", read_parquet, suffixes=(".parquet",), uses_field_map=True)
)
