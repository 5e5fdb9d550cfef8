"""The data-format registry: ``data.format`` (and ``data.ood.format``) name an entry of
:data:`DATA_FORMATS`.

Adding a format is one file with a reader and one registration::

    def read_mine(path, stats=None):          # -> list[QARecord]; DataError naming file and row
        ...

    DATA_FORMATS.register(DataFormat("mine", read_mine, suffixes=(".json",)))

The built-in formats are the other modules of this package, one format each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from uaclm_dist.data.records import QARecord
from uaclm_dist.registry import Registry

__all__ = ["DATA_FORMATS", "DataFormat"]


@dataclass(frozen=True)
class DataFormat:
    """One row format: how a file (or an installed package's data) becomes records.

    Attributes:
        name: the value of ``data.format``.
        read: ``read(path, stats, **options) -> list[QARecord]`` for one file or folder, in file
            order; ``stats`` (a :class:`collections.Counter`) counts skipped rows; malformed rows
            raise :class:`~uaclm_dist.data.records.DataError` naming the file and the row. For a
            packaged format ``path`` may be None: the package's own data.
        suffixes: suffixes of the files taken from a folder listed in ``data.paths``; None: the
            folder itself is the dataset.
        packaged: the rows ship in an installed package, so ``data.paths`` may be empty.
        uses_field_map: generic table rows whose columns ``data.field_map`` names (passed to
            ``read`` as ``field_map=``).
        retrieved_context: closed-book records that ``data.context: retrieved`` may give a
            context of answer-bearing statements (:mod:`uaclm_dist.data.retrieval`).
    """

    name: str
    read: Callable[..., list[QARecord]]
    suffixes: tuple[str, ...] | None = ()
    packaged: bool = False
    uses_field_map: bool = False
    retrieved_context: bool = False

    def load(
        self, path: str | Path | None, stats: Counter, field_map: Mapping[str, str]
    ) -> list[QARecord]:
        """Records of one file (None: the packaged data), with this format's options."""
        options = {"field_map": field_map} if self.uses_field_map else {}
        return self.read(path, stats, **options)


#: Every data format, by name, in the order they are listed in messages and docs.
DATA_FORMATS: Registry[DataFormat] = Registry("data format")
