"""The two commands of a cell, as argument vectors (no shell).

    python -m uaclm_dist.cli train BASE <overrides> logging.output_dir=<cell>/run \
        [--resume <cell>/run]
    python -m uaclm_dist.cli eval  BASE <overrides> logging.output_dir=<cell>/run \\
        --adapter <objective>=<cell>/run --out <cell>/eval [eval_args]

``<overrides>``: the spec's shared overrides, the cell's axis values and ``optim.seed``
(:meth:`~.cells.Cell.overrides`), and for a two-stage cell ``model.init_adapter=<parent>/run``.
The evaluation gets the training's exact config, so it scores
the test split the run held out (``uaclm eval`` checks the run's ``split_ids.json``). Both run
with the interpreter of the sweep (``sys.executable``) and with the repository that holds this
``uaclm_dist`` first on ``PYTHONPATH``, so the cells run the sweep's own code.
"""

from __future__ import annotations

import os
import sys

from uaclm_dist.config import REPO_ROOT
from uaclm_dist.sweep.cells import Cell
from uaclm_dist.sweep.layout import CellPaths
from uaclm_dist.sweep.overrides import override_arg
from uaclm_dist.sweep.spec import SweepSpec

__all__ = ["cell_env", "eval_command", "train_command"]

UACLM = (sys.executable, "-m", "uaclm_dist.cli")


def _config_args(spec: SweepSpec, cell: Cell, paths: CellPaths,
                 parent: CellPaths | None) -> list[str]:  # fmt: skip
    start = [] if parent is None else [override_arg("model.init_adapter", str(parent.run_dir))]
    return [str(spec.base), *cell.overrides(spec), *start,
            override_arg("logging.output_dir", str(paths.run_dir))]  # fmt: skip


def train_command(spec: SweepSpec, cell: Cell, paths: CellPaths, *, resume: bool,
                  parent: CellPaths | None = None) -> list[str]:  # fmt: skip
    """``uaclm train`` of the cell; ``resume``: continue ``<cell>/run`` from its checkpoint;
    ``parent``: a two-stage cell's parent (its run folder becomes ``model.init_adapter``)."""
    resume_args = ["--resume", str(paths.run_dir)] if resume else []
    return [*UACLM, "train", *_config_args(spec, cell, paths, parent), *resume_args]


def eval_command(spec: SweepSpec, cell: Cell, paths: CellPaths, method: str,
                 parent: CellPaths | None = None) -> list[str]:  # fmt: skip
    """``uaclm eval`` of the cell's adapter, labelled ``method`` in metrics.json."""
    return [*UACLM, "eval", *_config_args(spec, cell, paths, parent),
            "--adapter", f"{method}={paths.run_dir}", "--out", str(paths.eval_dir),
            *spec.eval_args]  # fmt: skip


def cell_env() -> dict[str, str]:
    """The sweep's environment with this repository first on ``PYTHONPATH``."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env
