"""The sweep spec: a YAML file naming a base config, the axes to vary, seeds and shared overrides.

    name: study                       # [A-Za-z0-9._-]; names the default output folder
    base: configs/demo.yaml           # the run config every cell starts from
    description: ...                  # optional, free text
    axes:                             # product over the axes, first axis outermost
      - key: objective.name           # one dotted config key and its values
        values: [clm, ua_clm, clm+ua]
      - zip:                          # several keys whose values advance together
          model.tiny.hidden_size: [64, 128]
          model.tiny.num_layers: [2, 4]
    seeds: [0, 1]                     # optional: each sets optim.seed (outermost loop)
    overrides: {optim.max_steps: 30}  # optional: applied to every cell
    evaluate: true                    # optional (default true): uaclm eval after training
    eval_args: [--base]               # optional: --base / --allow-train-overlap / --verbose
    output_dir: runs/sweeps/study     # optional (default runs/sweeps/<name>)
    baseline: {objective.name: clm}   # optional: collect adds paired differences of every
                                      # cell against the cell with this value, same other
                                      # values and seed, on the same held-out questions

Two-stage cells: an axis on the key ``init_from`` (not a config key) whose values are ``null``
(start from the base model) or a mapping of other axes' values, e.g.
``{key: init_from, values: [null, {objective.name: clm}]}``: a cell with
``init_from: {objective.name: clm}`` trains from the final adapter of its parent, the cell with
the same values and seed except ``objective.name: clm`` and ``init_from: null``
(``model.init_adapter`` = the parent's run folder; optimizer and schedule start fresh). Parents
run before their children; one level only (a parent starts from the base model); the local
backend runs them.

Paths: ``base`` (when relative) is looked up next to the spec file, then in the repository root,
then in the current directory (the order ``load_config`` uses for the DeepSpeed config);
``output_dir`` is relative to the current directory, like ``logging.output_dir``.

Checked here, every problem at once, each naming its field: unknown or missing fields, types, a
dotted key that is not a config key (with the closest valid one), a key set twice (two axes, an
axis and ``overrides``, ``seeds`` and ``optim.seed``), ``logging.output_dir`` (the sweep sets it
per cell), zipped lists of unequal length, repeated values. Values themselves are checked per
cell against the schema by :mod:`.validate`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from uaclm_dist.config import REPO_ROOT, ConfigError, parse_overrides, valid_keys
from uaclm_dist.config.errors import did_you_mean, suggest
from uaclm_dist.config.introspect import is_dict, iter_fields

__all__ = ["Axis", "SweepSpec", "SweepSpecError", "config_key_problem", "load_spec", "parse_spec",
           "with_baseline"]

#: Every top-level field of a spec.
SPEC_FIELDS = ("name", "base", "description", "axes", "seeds", "overrides", "evaluate",
               "eval_args", "output_dir", "baseline")  # fmt: skip
REQUIRED_FIELDS = ("name", "base", "axes")
#: ``uaclm eval`` flags a spec may add (the sweep sets ``--adapter`` and ``--out`` itself).
ALLOWED_EVAL_ARGS = ("--base", "--allow-train-overlap", "--verbose")
#: Config keys the sweep sets itself, per cell.
RESERVED_KEYS = ("logging.output_dir", "model.init_adapter")
#: The pseudo key of two-stage cells (module docstring).
INIT_FROM = "init_from"
SEED_KEY = "optim.seed"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class SweepSpecError(ConfigError):
    """A problem in a sweep spec (a :class:`ConfigError`: ``uaclm`` exits with status 2)."""

    def __init__(self, label: str, problems: str | list[str]):
        problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(problems)
        if len(problems) == 1:
            message = f"sweep spec {label}: {problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in problems)
            message = f"{len(problems)} problems in sweep spec {label}:\n{lines}"
        self.args = (message,)


@dataclass(frozen=True)
class Axis:
    """One axis of the grid.

    Attributes:
        keys: the dotted config keys it sets (one for a ``key``/``values`` axis, several for a
            ``zip`` axis).
        points: one tuple of values per point of the axis, aligned with ``keys``.
    """

    keys: tuple[str, ...]
    points: tuple[tuple[Any, ...], ...]

    @property
    def is_zip(self) -> bool:
        return len(self.keys) > 1


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, checked spec (paths absolute). See the module docstring for the fields."""

    path: Path
    name: str
    base: Path
    axes: tuple[Axis, ...]
    seeds: tuple[int, ...] | None
    overrides: tuple[tuple[str, Any], ...]
    evaluate: bool
    eval_args: tuple[str, ...]
    output_dir: Path
    description: str = ""
    baseline: tuple[str, Any] | None = None

    @property
    def two_stage(self) -> bool:
        """Some cells start from another cell's adapter (an ``init_from`` axis)."""
        return INIT_FROM in self.axis_keys

    @property
    def axis_keys(self) -> list[str]:
        """Every key the axes set, in axis order (the table columns of the varied settings)."""
        return [key for axis in self.axes for key in axis.keys]


# ------------------------------------------------------------------------------------- keys


def config_key_problem(key: Any) -> str | None:
    """Why ``key`` cannot be set as a dotted override, or None. Valid: every schema key
    (sections too, set to a mapping) and ``<mapping field>.<name>`` (``data.field_map.id``)."""
    if not isinstance(key, str) or not key:
        return f"a config key must be a dotted string, got {key!r}"
    if key in valid_keys():
        return None
    parent = key.rpartition(".")[0]
    fields = dict(iter_fields())
    if parent in fields and is_dict(fields[parent].annotation):
        return None
    return f"'{key}' is not a config key{suggest(key)}"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# ------------------------------------------------------------------------------------ YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a mapping key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            key = repr(self.construct_object(key_node, deep=deep))
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    if not path.is_file():
        raise SweepSpecError(label, "file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepSpecError(label, f"cannot read it: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SweepSpecError(label, f"invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise SweepSpecError(label, f"the top level must be a mapping of fields "
                                    f"({', '.join(SPEC_FIELDS)})")  # fmt: skip
    return data


# ---------------------------------------------------------------------------------- fields


def _resolve_base(value: str, spec_dir: Path) -> Path | None:
    path = Path(value).expanduser()
    if path.is_absolute():
        return path if path.is_file() else None
    for folder in (spec_dir, REPO_ROOT, Path.cwd()):
        if (folder / path).is_file():
            return (folder / path).resolve()
    return None


def _axis(i: int, item: Any, problems: list[str]) -> Axis | None:
    where = f"axes[{i}]"
    if isinstance(item, dict) and set(item) == {"key", "values"}:
        values = item["values"]
        if not isinstance(values, list) or not values:
            problems.append(f"{where}.values: expected a non-empty list, got {values!r}")
            return None
        return Axis((item["key"],), tuple((v,) for v in values))
    if isinstance(item, dict) and set(item) == {"zip"}:
        columns = item["zip"]
        if not isinstance(columns, dict) or not columns:
            problems.append(f"{where}.zip: expected a mapping of dotted keys to lists, "
                            f"got {columns!r}")  # fmt: skip
            return None
        bad = [k for k, v in columns.items() if not isinstance(v, list) or not v]
        if bad:
            problems.append(f"{where}.zip.{bad[0]}: expected a non-empty list")
            return None
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) > 1:
            problems.append(f"{where}.zip: the lists advance together and must have one length, "
                            f"got {lengths}")  # fmt: skip
            return None
        return Axis(tuple(columns), tuple(zip(*columns.values(), strict=True)))
    problems.append(f"{where}: expected {{key: dotted.key, values: [...]}} or "
                    f"{{zip: {{dotted.key: [...], ...}}}}, got {item!r}")  # fmt: skip
    return None


def _axes(value: Any, problems: list[str]) -> tuple[Axis, ...]:
    if not isinstance(value, list):
        problems.append(f"axes: expected a list (may be empty), got {value!r}")
        return ()
    axes = []
    for i, item in enumerate(value):
        axis = _axis(i, item, problems)
        if axis is None:
            continue
        for key in axis.keys:
            problem = None if key == INIT_FROM else config_key_problem(key)
            if problem:
                problems.append(f"axes[{i}]: {problem}")
        points = [_canonical(p) for p in axis.points]
        repeated = sorted({p for p in points if points.count(p) > 1})
        if repeated:
            problems.append(f"axes[{i}]: value(s) repeated: {', '.join(repeated)}")
        axes.append(axis)
    return tuple(axes)


def _seeds(value: Any, problems: list[str]) -> tuple[int, ...] | None:
    if value is None:
        return None
    ok = isinstance(value, list) and value and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    if not ok:
        problems.append(f"seeds: expected a non-empty list of integers >= 0, got {value!r}")
        return None
    if len(set(value)) != len(value):
        problems.append(f"seeds: repeated seeds in {value}")
    return tuple(value)


def _overrides(value: Any, problems: list[str]) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        problems.append(f"overrides: expected a mapping of dotted keys to values, got {value!r}")
        return ()
    for key in value:
        problem = config_key_problem(key)
        if problem:
            problems.append(f"overrides: {problem}")
    return tuple(value.items())


def _eval_args(value: Any, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        problems.append(f"eval_args: expected a list of strings, got {value!r}")
        return ()
    for arg in value:
        if arg not in ALLOWED_EVAL_ARGS:
            problems.append(f"eval_args: '{arg}' is not allowed (allowed: "
                            f"{', '.join(ALLOWED_EVAL_ARGS)}; the sweep sets --adapter and --out "
                            f"per cell, and config values go in overrides)")  # fmt: skip
    return tuple(value)


def _baseline(value: Any, axes: tuple[Axis, ...], problems: list[str]) -> tuple[str, Any] | None:
    """``{axis key: value}`` -> ``(key, value)``: the key of a single-key axis, one of its
    values."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1:
        problems.append(f"baseline: expected one axis key and its baseline value, e.g. "
                        f"{{objective.name: clm}}, got {value!r}")  # fmt: skip
        return None
    (key, chosen), = value.items()
    axis = next((a for a in axes if key in a.keys), None)
    if axis is None:
        keys = [k for a in axes for k in a.keys]
        problems.append(f"baseline: '{key}' is not an axis key of this spec (axes: "
                        f"{', '.join(keys) or 'none'})")  # fmt: skip
        return None
    if axis.is_zip:
        zipped = ", ".join(k for k in axis.keys if k != key)
        problems.append(f"baseline: '{key}' is zipped with {zipped}; a baseline needs an axis "
                        "of its own")  # fmt: skip
        return None
    values = [p[0] for p in axis.points]
    if _canonical(chosen) not in {_canonical(v) for v in values}:
        problems.append(f"baseline: {chosen!r} is not a value of the axis '{key}' "
                        f"(values: {values})")  # fmt: skip
        return None
    return key, chosen


def _key_conflicts(axes: tuple[Axis, ...], overrides: tuple[tuple[str, Any], ...],
                   seeds: tuple[int, ...] | None) -> list[str]:  # fmt: skip
    """A key set in two places, or one the sweep sets itself."""
    problems = []
    owner: dict[str, str] = {}
    places = [(f"axes[{i}]", key) for i, axis in enumerate(axes) for key in axis.keys]
    places += [("overrides", key) for key, _ in overrides]
    if seeds is not None:
        places.append(("seeds", SEED_KEY))
    for place, key in places:
        if key in RESERVED_KEYS:
            problems.append(f"{place}: '{key}' is set by the sweep (each cell's run folder)")
        elif key in owner:
            problems.append(f"{place}: '{key}' is already set by {owner[key]}")
        else:
            owner[key] = place
    return problems


def _init_from_problems(axes: tuple[Axis, ...]) -> list[str]:
    """An ``init_from`` axis: null and mappings of other axes' keys to values of those axes."""
    values = {key: [p[k] for p in axis.points] for axis in axes
              for k, key in enumerate(axis.keys)}  # fmt: skip
    if INIT_FROM not in values:
        return []
    problems = []
    choices = values.pop(INIT_FROM)
    if None not in choices:
        problems.append(f"axes: '{INIT_FROM}' needs null among its values (the parents: cells "
                        "that start from the base model)")
    for choice in choices:
        if choice is None:
            continue
        if not isinstance(choice, dict) or not choice:
            problems.append(f"axes: an '{INIT_FROM}' value must be null or a mapping of other "
                            f"axes' keys to values, got {choice!r}")
            continue
        for key, value in choice.items():
            if key not in values:
                problems.append(f"axes: '{INIT_FROM}' {choice} names '{key}', which no axis "
                                f"varies (axes: {', '.join(values)})")
            elif _canonical(value) not in {_canonical(v) for v in values[key]}:
                problems.append(f"axes: '{INIT_FROM}' {choice}: {value!r} is not a value of the "
                                f"axis '{key}' (values: {values[key]})")
    return problems


def parse_spec(data: dict[str, Any], spec_path: Path) -> SweepSpec:
    """Check the fields of a spec read from ``spec_path``; :class:`SweepSpecError` listing every
    problem."""
    label = str(spec_path)
    problems: list[str] = []
    unknown = [k for k in data if k not in SPEC_FIELDS]
    problems += [f"unknown field '{k}'{did_you_mean(k, SPEC_FIELDS, cutoff=0.6)} (fields: "
                 f"{', '.join(SPEC_FIELDS)})" for k in unknown]
    problems += [f"missing field '{k}'" for k in REQUIRED_FIELDS if k not in data]

    name = data.get("name")
    if "name" in data and not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
        problems.append(f"name: expected letters, digits, '.', '_' or '-', got {name!r}")
    base_value = data.get("base")
    base = None
    if "base" in data:
        if not isinstance(base_value, str) or not base_value:
            problems.append(f"base: expected a config file path, got {base_value!r}")
        else:
            base = _resolve_base(base_value, spec_path.resolve().parent)
            if base is None:
                problems.append(f"base: config file '{base_value}' not found (looked next to the "
                                f"spec, in {REPO_ROOT} and in {Path.cwd()})")  # fmt: skip
    axes = _axes(data.get("axes", []), problems)
    seeds = _seeds(data.get("seeds"), problems)
    overrides = _overrides(data.get("overrides"), problems)
    eval_args = _eval_args(data.get("eval_args"), problems)
    problems += _key_conflicts(axes, overrides, seeds)
    problems += _init_from_problems(axes)
    baseline = _baseline(data.get("baseline"), axes, problems)
    evaluate = data.get("evaluate", True)
    if not isinstance(evaluate, bool):
        problems.append(f"evaluate: expected true or false, got {evaluate!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.append(f"description: expected text, got {description!r}")
    if baseline is not None and evaluate is False:
        problems.append("baseline: compares the cells' evaluations, but the spec does not "
                        "evaluate (evaluate: false)")
    output_dir = data.get("output_dir", f"runs/sweeps/{name}")
    if not isinstance(output_dir, str) or not output_dir:
        problems.append(f"output_dir: expected a folder path, got {output_dir!r}")
    if problems:
        raise SweepSpecError(label, problems)
    return SweepSpec(path=spec_path.resolve(), name=name, base=base, axes=axes, seeds=seeds,
                     overrides=overrides, evaluate=evaluate, eval_args=eval_args,
                     output_dir=Path(output_dir).expanduser().resolve(),
                     description=description, baseline=baseline)  # fmt: skip


def with_baseline(spec: SweepSpec, text: str) -> SweepSpec:
    """``spec`` with the baseline ``KEY=VALUE`` (``sweep collect --baseline``; the value is YAML,
    as in an override) instead of its own; :class:`SweepSpecError` naming the flag when it is
    not one of the spec's axis values."""
    label = f"{spec.path} (--baseline {text})"
    pairs, problems = parse_overrides([text])
    if problems:
        raise SweepSpecError(label, [p.replace("override", "--baseline", 1) for p in problems])
    key, value = pairs[0]
    baseline = _baseline({key: value}, spec.axes, problems)
    if problems:
        raise SweepSpecError(label, problems)
    return replace(spec, baseline=baseline)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check the sweep spec at ``path`` (see the module docstring)."""
    path = Path(path)
    return parse_spec(_read_yaml(path, str(path)), path)
