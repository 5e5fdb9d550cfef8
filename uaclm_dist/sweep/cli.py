"""``uaclm sweep plan | run | collect SPEC``: the handlers and their arguments.

Registered in :mod:`uaclm_dist.cli` (``COMMANDS["sweep"]``, ``ACTIONS["sweep"]``,
``ARGUMENTS``). Exit statuses (:mod:`uaclm_dist.exit_codes`): 2 for a bad spec, an invalid cell
config, an unknown ``--only`` id or a backend this version does not have; ``run``: 1 when any
cell failed (the others still ran), else 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from uaclm_dist.config import ConfigError
from uaclm_dist.exit_codes import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK
from uaclm_dist.sweep.cells import expand_cells, find_cells
from uaclm_dist.sweep.execute import CommandRunner, run_subprocess
from uaclm_dist.sweep.layout import check_spec_lock
from uaclm_dist.sweep.plan import print_plan, short_path
from uaclm_dist.sweep.runner import BACKENDS, PLANNED_BACKENDS, run_sweep
from uaclm_dist.sweep.spec import SweepSpec, load_spec
from uaclm_dist.sweep.validate import CellCheck, check_base, check_cells, invalid

__all__ = ["SWEEP_ARGUMENTS", "SWEEP_SUBCOMMANDS"]

#: How ``sweep run`` runs a cell command (tests replace it with a fake).
COMMAND_RUNNER: CommandRunner = run_subprocess


def _checked(path: str) -> tuple[SweepSpec, list[CellCheck]]:
    """The spec and every cell's config check (:class:`SweepSpecError` for a bad spec)."""
    spec = load_spec(path)
    check_base(spec)
    return spec, check_cells(spec, expand_cells(spec))


def _plan(args: argparse.Namespace) -> int:
    """Show a sweep's cells: ids, values, folders, status so far, resources."""
    spec, checks = _checked(args.spec)
    print_plan(spec, checks, sys.stdout)
    try:
        check_spec_lock(spec)
    except ConfigError as exc:
        print(f"warning: `uaclm sweep run` will refuse this spec: {exc}", file=sys.stdout)
    return EXIT_BAD_INPUT if invalid(checks) else EXIT_OK


def _run(args: argparse.Namespace) -> int:
    """Train (and evaluate) every unfinished cell of a sweep, one after another."""
    if args.backend in PLANNED_BACKENDS:
        print(f"uaclm sweep run: error: --backend {args.backend} is not available yet (this "
              f"version runs {', '.join(BACKENDS)}); run the cells with --backend local",
              file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    spec, checks = _checked(args.spec)
    bad = invalid(checks)
    if bad:
        lines = "\n".join(f"  - cell {c.cell.id} ({c.cell.label}): {c.problem}" for c in bad)
        raise ConfigError(f"sweep spec {args.spec}: {len(bad)} of {len(checks)} cell(s) have an "
                          f"invalid config; nothing was run:\n{lines}")  # fmt: skip
    if args.only:
        cells, unknown = find_cells([c.cell for c in checks], args.only)
        if unknown:
            raise ConfigError(f"--only: no cell {', '.join(unknown)} in {args.spec} (ids: "
                              f"{', '.join(c.cell.id for c in checks)})")  # fmt: skip
        chosen = {c.id for c in cells}
        checks = [c for c in checks if c.cell.id in chosen]
    progress = run_sweep(spec, checks, runner=COMMAND_RUNNER)
    if progress.failed:
        print(f"uaclm sweep run: {progress.failed} cell(s) failed (see their status.json; "
              "`uaclm sweep run` again retries them)", file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    return EXIT_OK


def _collect(args: argparse.Namespace) -> int:
    """Gather every cell's results into sweep.parquet, sweep.csv and sweep.md."""
    from uaclm_dist.sweep.collect import collect, write_tables
    from uaclm_dist.sweep.markdown import render
    from uaclm_dist.sweep.study import aggregate_over_seeds

    spec = load_spec(args.spec)
    collected = collect(spec, expand_cells(spec))
    study = aggregate_over_seeds(collected.frame, collected.axis_columns, collected.scores)
    written = write_tables(collected, spec.output_dir)
    written["study csv"] = spec.output_dir / "sweep_study.csv"
    study.to_csv(written["study csv"], index=False)
    written["markdown"] = spec.output_dir / "sweep.md"
    written["markdown"].write_text(render(spec, collected, study))
    cells = collected.frame.drop_duplicates("cell")
    unfinished = cells[cells["status"] != "done"]
    print(f"sweep {spec.name}: {len(cells)} cell(s), {len(cells) - len(unfinished)} finished")
    for _, row in unfinished.iterrows():
        print(f"  not finished: {row['cell']} ({row['status']})")
    for what, path in written.items():
        print(f"{what}: {short_path(path)}")
    return EXIT_OK


SWEEP_SUBCOMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "plan": _plan,
    "run": _run,
    "collect": _collect,
}


def _spec_argument(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("spec", metavar="SPEC", help="sweep spec (YAML; see configs/sweeps/)")


def _run_arguments(sub: argparse.ArgumentParser) -> None:
    _spec_argument(sub)
    sub.add_argument("--backend", choices=(*BACKENDS, *PLANNED_BACKENDS), default="local",
                     help="local: one cell after another on this machine (ray, slurm: planned)")
    sub.add_argument("--only", metavar="ID", nargs="+", action="extend", default=[],
                     help="run only these cells (id or its 8-digit hash, as `sweep plan` shows)")


#: ``sweep <action>`` -> adds its arguments (merged into :data:`uaclm_dist.cli.ARGUMENTS`).
SWEEP_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "sweep plan": _spec_argument,
    "sweep run": _run_arguments,
    "sweep collect": _spec_argument,
}
