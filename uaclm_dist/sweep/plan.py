"""``uaclm sweep plan``: the cells as a table, with their status so far and resources.

    sweep study: 12 cells, base /repo/configs/demo.yaml
      output:    runs/sweeps/study   (one folder per cell: <cell>/run, <cell>/eval)
      ...
      #  cell                 status   train  eval   folder                 values
      1  clm-all-s0-3e1e304a  pending  2/2/0  2/2/0  runs/sweeps/study/...  objective.name=clm,...

Resources: ``workers/CPUs/GPUs`` in total for the training (Ray Train workers) and
``actors/CPUs/GPUs`` for the evaluation (generation actors), from the cell's config
(:func:`uaclm_dist.cluster.required_resources`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TextIO

from uaclm_dist.cluster import Resources
from uaclm_dist.sweep.layout import cell_paths
from uaclm_dist.sweep.spec import SweepSpec
from uaclm_dist.sweep.status import FAILED, cell_state, read_status
from uaclm_dist.sweep.validate import CellCheck

__all__ = ["print_plan", "short_path"]

INVALID = "INVALID"


def short_path(path: Path) -> str:
    """``path`` relative to the current directory when below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _resources(res: Resources | None) -> str:
    return "-" if res is None else f"{res.workers}/{res.cpus:g}/{res.gpus:g}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]  # fmt: skip


def print_plan(spec: SweepSpec, checks: list[CellCheck], file: TextIO) -> Counter:
    """Print the plan of ``checks`` to ``file``; returns the count of cells per status
    (``INVALID`` for a cell whose config does not validate)."""
    shared = " ".join(f"{k}={v}" for k, v in spec.overrides) or "(none)"
    evaluate = (f"yes: uaclm eval --adapter <objective>=<cell>/run --out <cell>/eval "
                f"{' '.join(spec.eval_args)}".rstrip() if spec.evaluate else "no")  # fmt: skip
    print(f"sweep {spec.name}: {len(checks)} cell(s), base {spec.base}", file=file)
    if spec.description:
        print(f"  {spec.description.strip()}", file=file)
    for label, value in (("output", f"{short_path(spec.output_dir)}  (one folder per cell: "
                                    "<cell>/run, <cell>/eval, <cell>/status.json)"),
                         ("overrides", shared), ("evaluate", evaluate),
                         ("resources", "train = workers/CPUs/GPUs, eval = actors/CPUs/GPUs "
                                       "(totals)")):  # fmt: skip
        print(f"  {label + ':':<11}{value}", file=file)
    rows = [["#", "cell", "status", "train", "eval", "folder", "values"]]
    notes: dict[int, str] = {}
    counts: Counter = Counter()
    for check in checks:
        cell = check.cell
        paths = cell_paths(spec, cell)
        state = INVALID if check.problem else cell_state(paths, spec.evaluate)
        counts[state] += 1
        rows.append([str(cell.index + 1), cell.id, state, _resources(check.train_resources),
                     _resources(check.eval_resources) if spec.evaluate else "-",
                     short_path(paths.root), cell.label])  # fmt: skip
        if check.problem:
            notes[len(rows) - 1] = check.problem
        elif state == FAILED:
            status = read_status(paths)
            notes[len(rows) - 1] = f"failed in {status.get('phase')}: {status.get('reason')}"
    print("", file=file)
    for i, line in enumerate(_table(rows)):
        print(line, file=file)
        if i in notes:
            for note_line in notes[i].splitlines():
                print(f"       {note_line}", file=file)
    summary = ", ".join(f"{n} {state}" for state, n in counts.items())
    print(f"\n{len(checks)} cell(s): {summary}", file=file)
    if counts[INVALID]:
        print(f"{counts[INVALID]} cell(s) have an invalid config: `uaclm sweep run` refuses "
              "the spec until they are fixed", file=file)  # fmt: skip
    return counts
