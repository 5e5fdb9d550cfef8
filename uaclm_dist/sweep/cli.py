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
from uaclm_dist.sweep.runner import BACKENDS, run_sweep
from uaclm_dist.sweep.spec import SweepSpec, load_spec, with_baseline
from uaclm_dist.sweep.validate import CellCheck, check_base, check_cells, invalid

__all__ = ["SWEEP_ARGUMENTS", "SWEEP_SUBCOMMANDS"]

#: How ``sweep run`` runs a cell command (tests replace it with a fake).
COMMAND_RUNNER: CommandRunner = run_subprocess
#: seconds between two looks at the Slurm queue / the Ray jobs
REMOTE_POLL_S = 5.0


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


def _check_backend_flags(args: argparse.Namespace) -> None:
    """Flags of one backend given to another: exit 2 before anything runs."""
    given = {"--address": args.address is not None, "--max-parallel": args.max_parallel != 1,
             "--job-python": args.job_python != "python", "--slurm-arg": bool(args.slurm_arg),
             "--no-wait": args.no_wait}  # fmt: skip
    owners = {"--address": "ray", "--max-parallel": "ray", "--job-python": "ray",
              "--slurm-arg": "slurm", "--no-wait": "slurm"}
    wrong = [f for f, on in given.items() if on and owners[f] != args.backend]
    if wrong:
        raise ConfigError(f"{', '.join(wrong)}: only with --backend "
                          f"{owners[wrong[0]]} (this run: --backend {args.backend})")
    if args.backend == "ray" and not args.address:
        raise ConfigError("--backend ray needs --address http://HEAD:8265 (the cluster's "
                          "dashboard / Jobs API address)")  # fmt: skip
    if args.max_parallel < 1:
        raise ConfigError(f"--max-parallel: at least 1, got {args.max_parallel}")


def _run(args: argparse.Namespace) -> int:
    """Train (and evaluate) every unfinished cell of a sweep: one after another here, as Slurm
    array tasks, or as Ray jobs."""
    _check_backend_flags(args)
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
    if spec.two_stage and args.backend != "local":
        raise ConfigError(f"sweep spec {args.spec}: its init_from (two-stage) cells run with "
                          f"--backend local only: Slurm array tasks and Ray jobs run cells "
                          f"concurrently, and a child must wait for its parent's adapter")
    if args.backend == "local":
        progress = run_sweep(spec, checks, runner=COMMAND_RUNNER)
    else:
        progress = _run_remote(args, spec, checks)
        if progress is None:  # --no-wait
            return EXIT_OK
    if progress.failed:
        print(f"uaclm sweep run: {progress.failed} cell(s) failed (see their status.json; "
              "`uaclm sweep run` again retries them)", file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    return EXIT_OK


def _run_remote(args: argparse.Namespace, spec: SweepSpec, checks: list[CellCheck]):
    """The cells not finished yet, handed to Slurm or Ray (the spec folder locked first)."""
    from uaclm_dist.sweep.layout import cell_paths, write_spec_lock

    if args.backend == "ray":  # before anything is written: the output_dir rule
        from uaclm_dist.sweep.ray_backend import check_ray_spec

        check_ray_spec(spec)
    check_spec_lock(spec)
    write_spec_lock(spec)
    todo = [c for c in checks if not cell_paths(spec, c.cell).finished(spec.evaluate)]
    print(f"[sweep] {spec.name}: {len(checks)} cell(s), {len(checks) - len(todo)} finished "
          f"earlier, {len(todo)} to run with --backend {args.backend}", flush=True)  # fmt: skip
    if not todo:
        from uaclm_dist.sweep.progress import Progress

        return Progress(len(checks), done=len(checks))
    if args.backend == "slurm":
        from uaclm_dist.sweep.slurm_backend import run_on_slurm

        return run_on_slurm(spec, todo, extra=args.slurm_arg, wait=not args.no_wait,
                            out=sys.stdout, poll_s=REMOTE_POLL_S)  # fmt: skip
    from uaclm_dist.sweep.ray_backend import run_on_ray

    return run_on_ray(spec, todo, address=args.address, max_parallel=args.max_parallel,
                      out=sys.stdout, job_python=args.job_python,
                      poll_s=REMOTE_POLL_S)  # fmt: skip


def _collect(args: argparse.Namespace) -> int:
    """Gather every cell's results into sweep.parquet, sweep.csv, sweep.md and the plots."""
    from uaclm_dist.sweep.collect import collect, write_tables
    from uaclm_dist.sweep.markdown import render
    from uaclm_dist.sweep.paired import paired_differences, write_paired
    from uaclm_dist.sweep.plots import write_plots
    from uaclm_dist.sweep.study import aggregate_over_seeds

    spec = load_spec(args.spec)
    if args.baseline is not None:
        spec = with_baseline(spec, args.baseline)
    all_cells = expand_cells(spec)
    collected = collect(spec, all_cells)
    study = aggregate_over_seeds(collected.frame, collected.axis_columns, collected.scores)
    paired = paired_differences(spec, all_cells, collected.scores)
    written = write_tables(collected, spec.output_dir)
    written["study csv"] = spec.output_dir / "sweep_study.csv"
    study.to_csv(written["study csv"], index=False)
    if paired is not None:
        written["paired csv"] = write_paired(paired, spec.output_dir)
    written["markdown"] = spec.output_dir / "sweep.md"
    for plot in write_plots(collected, spec.output_dir):
        written[f"plot {plot.stem}"] = plot
    written["markdown"].write_text(render(spec, collected, study, paired))
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
    sub.add_argument("--backend", choices=BACKENDS, default="local",
                     help="local: one cell after another on this machine; slurm: job arrays "
                          "(sbatch); ray: one Ray job per cell (--address)")
    sub.add_argument("--address", default=None,
                     help="ray: the cluster's Jobs API address, http://HEAD:8265")
    sub.add_argument("--max-parallel", type=int, default=1,
                     help="ray: cells queued or running on the cluster at once (default 1)")
    sub.add_argument("--job-python", default="python",
                     help="ray: the interpreter the jobs run on the cluster (default: python)")
    sub.add_argument("--slurm-arg", metavar="OPTION", action="append", default=[],
                     help="slurm: an sbatch option for every array, e.g. "
                          "--slurm-arg=--partition=gpu (repeatable)")
    sub.add_argument("--no-wait", action="store_true",
                     help="slurm: return after submitting (sweep plan shows the states)")
    sub.add_argument("--only", metavar="ID", nargs="+", action="extend", default=[],
                     help="run only these cells (id or its 8-digit hash, as `sweep plan` shows)")


def _collect_arguments(sub: argparse.ArgumentParser) -> None:
    _spec_argument(sub)
    sub.add_argument("--baseline", metavar="KEY=VALUE", default=None,
                     help="compare every cell with the cell that has this axis value (same "
                          "other values and seed) instead of the spec's baseline, e.g. "
                          "--baseline data.loss_on=all")


#: ``sweep <action>`` -> adds its arguments (merged into :data:`uaclm_dist.cli.ARGUMENTS`).
SWEEP_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "sweep plan": _spec_argument,
    "sweep run": _run_arguments,
    "sweep collect": _collect_arguments,
}
