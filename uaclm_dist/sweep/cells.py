"""The cells of a sweep: one training (+ evaluation) each, with a deterministic id.

Order: seeds outermost (every setting for the first seed, then every setting again for the next:
a partial sweep already covers the whole grid once), then the axes in spec order, the first axis
outermost, each axis in the order of its values.

Ids: ``<slug>-<hash>``, e.g. ``clm-all-s0-7c0d5b2e``. The slug is the cell's values (lower case,
runs of characters other than letters, digits and ``.`` as ``_``, each cut to 24 characters)
joined by ``-``, then ``s<seed>``. The hash is the first 8 hex digits of the SHA-1 of the cell's
assignment ``{key: value}`` plus ``seed`` as sorted JSON: it depends on the cell's own keys and
values only, not on the order of the axes, other cells, the base config or the shared overrides
(the sweep folder's ``spec.json`` guards those, see :mod:`.layout`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from uaclm_dist.sweep.overrides import override_arg, value_text
from uaclm_dist.sweep.spec import INIT_FROM, SEED_KEY, SweepSpec, SweepSpecError

__all__ = ["Cell", "expand_cells", "find_cells", "parent_cell"]

SLUG_PART_CHARS = 24


@dataclass(frozen=True)
class Cell:
    """One point of the grid.

    Attributes:
        index: position in the sweep's run order (0-based).
        assignment: ``(dotted key, value)`` pairs the axes set, in axis order.
        seed: ``optim.seed`` of this cell; None when the spec has no ``seeds``.
        id: ``<slug>-<hash>`` (see the module docstring); also the cell's folder name.
    """

    index: int
    assignment: tuple[tuple[str, Any], ...]
    seed: int | None
    id: str

    @property
    def label(self) -> str:
        """Readable setting, e.g. ``objective.name=clm,data.loss_on=all,seed=0``."""
        parts = [f"{key}={value_text(value)}" for key, value in self.assignment]
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return ",".join(parts) or "(base config)"

    @property
    def short_hash(self) -> str:
        return self.id.rsplit("-", 1)[-1]

    @property
    def init_from(self) -> dict[str, Any] | None:
        """The parent's values of a two-stage cell (its ``init_from``), else None."""
        return dict(self.assignment).get(INIT_FROM)

    def overrides(self, spec: SweepSpec) -> list[str]:
        """``key=value`` overrides of this cell: the spec's shared ones, the axes' (not the
        ``init_from`` pseudo key), the seed."""
        pairs = [*spec.overrides, *(p for p in self.assignment if p[0] != INIT_FROM)]
        if self.seed is not None:
            pairs.append((SEED_KEY, self.seed))
        return [override_arg(key, value) for key, value in pairs]


def parent_cell(cell: Cell, cells: list[Cell]) -> Cell | None:
    """The cell a two-stage ``cell`` starts from: its values and seed with ``init_from``'s
    values in place and ``init_from`` null (None for a cell that starts from the base model)."""
    if not cell.init_from:
        return None
    wanted = {key: value for key, value in cell.assignment}
    wanted.update(cell.init_from)
    wanted[INIT_FROM] = None
    target = json.dumps(wanted, sort_keys=True, default=str)
    for other in cells:
        if other.seed == cell.seed and json.dumps(dict(other.assignment), sort_keys=True,
                                                  default=str) == target:  # fmt: skip
            return other
    raise ValueError(f"cell {cell.id}: no parent cell with {cell.init_from} in the grid")


def _slug_part(value: Any) -> str:
    text = value_text(value) if not isinstance(value, str) else value
    text = re.sub(r"[^a-z0-9.]+", "_", text.lower()).strip("_")
    return text[:SLUG_PART_CHARS] or "_"


def cell_id(assignment: tuple[tuple[str, Any], ...], seed: int | None) -> str:
    """``<slug>-<hash>`` of one cell (see the module docstring)."""
    parts = [_slug_part(value) for _, value in assignment]
    if seed is not None:
        parts.append(f"s{seed}")
    identity = {"assignment": {key: value for key, value in assignment}, "seed": seed}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    return "-".join([*parts, digest[:8]]) if parts else f"base-{digest[:8]}"


def expand_cells(spec: SweepSpec) -> list[Cell]:
    """Every cell of ``spec`` in run order: ``len(seeds or [None]) x prod(len(axis.points))``."""
    cells = []
    seeds: tuple[int | None, ...] = spec.seeds if spec.seeds is not None else (None,)
    for seed in seeds:
        for points in itertools.product(*(axis.points for axis in spec.axes)):
            assignment = tuple(
                (key, value)
                for axis, point in zip(spec.axes, points, strict=True)
                for key, value in zip(axis.keys, point, strict=True)
            )
            cells.append(Cell(len(cells), assignment, seed, cell_id(assignment, seed)))
    # parents before their children: within each seed, the cells that start from the base model
    # first (stable, so a grid without init_from keeps its order)
    ordered = sorted(cells, key=lambda c: (seeds.index(c.seed), c.init_from is not None))
    cells = [Cell(i, c.assignment, c.seed, c.id) for i, c in enumerate(ordered)]
    orphans = []
    for cell in cells:  # every two-stage cell's parent exists (a zip axis can leave it out)
        try:
            parent_cell(cell, cells)
        except ValueError as exc:
            orphans.append(str(exc))
    if orphans:
        raise SweepSpecError(str(spec.path), orphans)
    return cells


def find_cells(cells: list[Cell], wanted: list[str]) -> tuple[list[Cell], list[str]]:
    """The cells named in ``wanted`` (a full id or its 8-digit hash), in run order, and the
    names that match no cell."""
    chosen = {c.id for c in cells if c.id in wanted or c.short_hash in wanted}
    unknown = [w for w in wanted if not any(w in (c.id, c.short_hash) for c in cells)]
    return [c for c in cells if c.id in chosen], unknown
