"""Which examples an evaluation may score, given the splits the evaluated runs trained on.

Training writes ``RUN_DIR/split_ids.json`` (``{"train": [ids], "test": [ids]}``). An evaluation
re-derives its test split from its own config; with another ``data.split_seed``,
``data.train_fraction`` or ``data.max_examples`` that split would hold questions a run trained
on. :func:`select_examples` guards against it:

- **refuse** when any candidate example is in a run's training ids (:class:`TrainOverlapError`,
  naming the run folder, the count and the first ids), unless ``allow_train_overlap`` - then the
  candidates are scored as they are and the numbers are contaminated;
- otherwise keep the candidates that are in **every** run's test ids, in candidate order, so the
  base model and every adapter are scored on the same held-out questions.

Runs without ``split_ids.json`` (a bare adapter folder) cannot be checked; they are listed in the
selection's summary as unchecked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uaclm_dist.data.records import DataError, QARecord

__all__ = ["SPLIT_IDS_FILE", "RunSplit", "TrainOverlapError", "find_run_split",
           "select_examples"]  # fmt: skip

SPLIT_IDS_FILE = "split_ids.json"

#: Ids quoted in an overlap message.
_IDS_SHOWN = 5


class TrainOverlapError(DataError):
    """The evaluation's examples include questions an evaluated run was trained on."""


@dataclass(frozen=True)
class RunSplit:
    """The split of one trained run: method name, run folder and its train / test ids."""

    name: str
    folder: Path
    train: frozenset[str]
    test: frozenset[str]


def _id_list(data: Any, key: str, path: Path) -> frozenset[str]:
    values = data.get(key) if isinstance(data, dict) else None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise DataError(f"{path}: '{key}' must be a list of string ids")
    return frozenset(values)


def find_run_split(name: str, adapter_dir: str | Path) -> RunSplit | None:
    """The split of the run an adapter belongs to: ``split_ids.json`` in the adapter folder or
    its parent (a run folder's ``adapter/``); None when there is none."""
    adapter_dir = Path(adapter_dir)
    for folder in (adapter_dir, adapter_dir.parent):
        path = folder / SPLIT_IDS_FILE
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise DataError(f"{path}: not a readable JSON file ({exc})") from None
            return RunSplit(name, folder, _id_list(data, "train", path),
                            _id_list(data, "test", path))  # fmt: skip
    return None


def _overlap_message(overlaps: dict[RunSplit, list[str]], n_candidates: int) -> str:
    parts = []
    for run, ids in overlaps.items():
        shown = ", ".join(ids[:_IDS_SHOWN]) + (", ..." if len(ids) > _IDS_SHOWN else "")
        parts.append(f"run {run.folder} ({run.name}): {len(ids)} of the {n_candidates} "
                     f"evaluation examples are in its training split ({run.folder / SPLIT_IDS_FILE}"
                     f"), e.g. {shown}")  # fmt: skip
    return ("; ".join(parts) + ". Evaluate with the run's data settings (data.split_seed, "
            "data.train_fraction, data.max_examples, data.format/paths), or pass "
            "--allow-train-overlap to score them anyway (the numbers are then contaminated)")


def select_examples(
    candidates: Sequence[QARecord],
    runs: Sequence[RunSplit],
    *,
    allow_train_overlap: bool = False,
) -> tuple[list[QARecord], dict[str, Any]]:
    """The in-domain examples to score and a summary of the choice (for the report protocol).

    Args:
        candidates: the evaluation config's test split, in order.
        runs: the splits of the evaluated runs that have one.
        allow_train_overlap: score ``candidates`` as they are even where a run trained on them.

    Raises:
        TrainOverlapError: a candidate is in a run's training ids (and not allowed).
        DataError: no candidate is in every run's test ids.
    """
    overlaps = {run: [r.id for r in candidates if r.id in run.train] for run in runs}
    overlaps = {run: ids for run, ids in overlaps.items() if ids}
    if overlaps and not allow_train_overlap:
        raise TrainOverlapError(_overlap_message(overlaps, len(candidates)))
    if allow_train_overlap:
        selected = list(candidates)
        rule = "the evaluation config's test split as is (--allow-train-overlap)"
    else:
        selected = [r for r in candidates if all(r.id in run.test for run in runs)]
        rule = ("the evaluation config's test split" + (", restricted to the test ids of every "
                "run (split_ids.json)" if runs else ""))  # fmt: skip
    if not selected:
        names = ", ".join(str(run.folder) for run in runs)
        raise DataError(f"none of the {len(candidates)} evaluation examples is in the test ids of "
                        f"every run ({names}); evaluate with the runs' data settings")
    summary = {
        "rule": rule,
        "candidates": len(candidates),
        "selected": len(selected),
        "runs_checked": {run.name: str(run.folder) for run in runs},
        "train_overlap": {run.name: len(overlaps.get(run, [])) for run in runs},
        "allow_train_overlap": allow_train_overlap,
    }
    return selected, summary
