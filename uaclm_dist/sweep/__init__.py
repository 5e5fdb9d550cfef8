"""Study sweeps: many ``uaclm train`` + ``uaclm eval`` runs over a grid of config values, one table.

    uaclm sweep plan    SPEC                      the cells, their folders, status and resources
    uaclm sweep run     SPEC [--only ID ...]      train (+ evaluate) every unfinished cell
    uaclm sweep collect SPEC                      sweep.parquet / sweep.csv / sweep.md

A *spec* (YAML, :mod:`.spec`) names a base config, axes of dotted config keys, seeds and shared
overrides; its *cells* (:mod:`.cells`) are the product of the axes (a ``zip`` axis advances
several keys together) times the seeds, each with a deterministic id and its own folder
(:mod:`.layout`)::

    OUTPUT_DIR/spec.json            the base and shared overrides the folder was run with
    OUTPUT_DIR/<cell id>/run/       the training run (logging.output_dir)
    OUTPUT_DIR/<cell id>/eval/      the evaluation (uaclm eval --out)
    OUTPUT_DIR/<cell id>/logs/      stdout / stderr of each command
    OUTPUT_DIR/<cell id>/status.json  state (pending / running / done / failed / interrupted),
                                      reason, stderr tail, timings (:mod:`.status`)

Every cell's full config is validated before anything runs (:mod:`.validate`). The local backend
(:mod:`.runner`) runs the cells one after another as subprocesses (:mod:`.commands`,
:mod:`.execute`; the command runner is injectable), skips finished cells, records a failed one
and goes on. :mod:`.collect` reads every cell's ``summary.json`` and ``metrics.json`` into one
table, :mod:`.study` aggregates it over seeds and :mod:`.markdown` writes ``sweep.md``.

Planning (spec, cells, validation) imports no torch, Ray or transformers.
"""

from __future__ import annotations

from uaclm_dist.sweep.cells import Cell, expand_cells
from uaclm_dist.sweep.spec import Axis, SweepSpec, SweepSpecError, load_spec, parse_spec

__all__ = ["Axis", "Cell", "SweepSpec", "SweepSpecError", "expand_cells", "load_spec",
           "parse_spec"]  # fmt: skip
