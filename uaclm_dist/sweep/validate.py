"""Every cell's full config, validated before anything runs, and the resources each run asks for.

A cell's config is ``load_config(base, cell.overrides(spec))``: the same call ``uaclm train``
makes in the cell's subprocess, so a value the schema refuses (``objective.name: clmm``, a
learning rate of -1) is reported here, naming the cell, rather than hours into a sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

from uaclm_dist.cluster import Resources, required_resources
from uaclm_dist.config import ConfigError, RunConfig, load_config
from uaclm_dist.sweep.cells import Cell
from uaclm_dist.sweep.overrides import override_arg
from uaclm_dist.sweep.spec import SweepSpec, SweepSpecError

__all__ = ["CellCheck", "check_base", "check_cells", "invalid"]


@dataclass(frozen=True)
class CellCheck:
    """One cell and its resolved config, or why it has none.

    Attributes:
        cell: the cell.
        config: the validated config (None when invalid).
        problem: the config error, worded for the spec's author (None when valid).
    """

    cell: Cell
    config: RunConfig | None
    problem: str | None

    @property
    def train_resources(self) -> Resources | None:
        """Ray Train workers and their CPU / GPU totals (None when invalid)."""
        return required_resources(self.config, "train") if self.config else None

    @property
    def eval_resources(self) -> Resources | None:
        """Generation actors and their CPU / GPU totals (None when invalid)."""
        return required_resources(self.config, "eval") if self.config else None

    @property
    def method_name(self) -> str:
        """Name of the cell's adapter in its evaluation: the objective (``clm``, ``ua_clm``)."""
        return self.config.objective.name if self.config else "adapter"


def _spec_wording(message: str) -> str:
    """Config errors call overrides "on the command line"; here they come from the spec."""
    return message.replace("on the command line", "in the sweep spec")


def check_base(spec: SweepSpec) -> RunConfig:
    """The base config with the shared overrides; :class:`SweepSpecError` when invalid (every
    cell would fail the same way)."""
    try:
        return load_config(spec.base, [override_arg(k, v) for k, v in spec.overrides])
    except ConfigError as exc:
        raise SweepSpecError(str(spec.path), f"base {spec.base} with the shared overrides: "
                             f"{_spec_wording(str(exc))}") from None  # fmt: skip


def check_cells(spec: SweepSpec, cells: list[Cell]) -> list[CellCheck]:
    """Validate every cell's config (base + shared overrides + the cell's values + seed)."""
    checks = []
    for cell in cells:
        try:
            checks.append(CellCheck(cell, load_config(spec.base, cell.overrides(spec)), None))
        except ConfigError as exc:
            checks.append(CellCheck(cell, None, _spec_wording(str(exc))))
    return checks


def invalid(checks: list[CellCheck]) -> list[CellCheck]:
    """The checks that failed."""
    return [c for c in checks if c.problem is not None]
