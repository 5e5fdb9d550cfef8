"""From a YAML file plus dotted ``key=value`` overrides to a validated, resolved :class:`RunConfig`.

    config = load_config("configs/demo.yaml", ["optim.lr=2e-4", "model.lora.rank=16"])

The YAML loader is strict (duplicate keys are errors). After the schema checks, the file system
is checked: the DeepSpeed config, data files and local model paths must exist; they are rewritten
as absolute paths so the resolved config (``RunConfig.to_yaml()``) is what the run actually used.
Relative paths are looked up next to the config file, then in the repository root (the parent of
the ``uaclm_dist`` package), then in the current directory.
"""

from __future__ import annotations

import copy
import glob
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from uaclm_dist.config.errors import (
    ConfigError,
    Origins,
    kind,
    suggest,
    translate_validation_error,
)
from uaclm_dist.config.introspect import is_dict, section_class
from uaclm_dist.config.schema import RunConfig

__all__ = ["MODEL_ALIASES", "REPO_ROOT", "load_config", "parse_overrides"]

#: The repository root: the parent directory of the ``uaclm_dist`` package.
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Model names resolved by ``uaclm_dist.modeling`` rather than by Hugging Face / the file system.
#: (kept literal so that loading a config imports no model code; a unit test checks it against
#: ``uaclm_dist.modeling.assets.SLICED_GGUF_MODELS``)
MODEL_ALIASES = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b",
                 "tiny-llama")  # fmt: skip


# ------------------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last one."""


def _construct_mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            first = seen.setdefault(key, key_node.start_mark.line)
        except TypeError:  # unhashable key; the constructor below reports it
            continue
        if first != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first defined on line {first + 1})",
                key_node.start_mark,
            )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates
)


def _yaml_error_text(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context and "duplicate" not in problem else problem
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {text}"
    return text


def _read_yaml_file(path: Path, label: str) -> dict[str, Any]:
    """The mapping at the top of a YAML file (an empty file is an empty mapping)."""
    if not path.exists():
        raise ConfigError(f"config file '{label}' not found")
    if not path.is_file():
        raise ConfigError(f"config file '{label}' is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file '{label}': {exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {label}, {_yaml_error_text(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level of {label} must be a mapping of sections (model:, data:, ...), "
            f"got {kind(data)}"
        )
    return data


# -------------------------------------------------------------------------------- overrides


def _override_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be set by an override, or None when it is a valid key."""
    cls: type[BaseModel] | None = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        if cls is None or part not in cls.model_fields:
            return f"unknown key '{key}' on the command line{suggest(key)}"
        annotation = cls.model_fields[part].annotation
        if is_dict(annotation) and i + 2 == len(parts):
            return None  # e.g. data.field_map.question
        cls = section_class(annotation)
    return None


def parse_overrides(overrides: Iterable[str]) -> tuple[list[tuple[str, Any]], list[str]]:
    """Parse ``key=value`` strings into (key, value) pairs and a list of problems.

    Values are YAML: ``2e-4`` is a number, ``[q_proj,v_proj]`` a list, ``null`` None.
    """
    pairs: list[tuple[str, Any]] = []
    problems: list[str] = []
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep:
            problems.append(
                f"override '{text}' on the command line must look like key=value "
                f"(e.g. optim.lr=2e-4)"
            )
            continue
        if not key:
            problems.append(f"override '{text}' on the command line has an empty key")
            continue
        problem = _override_key_problem(key)
        if problem:
            problems.append(problem)
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            problems.append(
                f"cannot parse the value of override '{text}' on the command line as YAML: "
                f"{getattr(exc, 'problem', None) or exc}"
            )
            continue
        pairs.append((key, value))
    return pairs, problems


def _apply_override(data: dict[str, Any], key: str, value: Any) -> str | None:
    """Set dotted ``key`` in nested ``data``; a problem message if the path is not a mapping."""
    node = data
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            return (f"cannot apply override '{key}' from the command line: '{where}' is "
                    f"{kind(child)} in the config file, not a mapping")
        node = child
    node[parts[-1]] = value
    return None


# ----------------------------------------------------------------------- file-system checks


def _candidate_dirs(config_dir: Path | None) -> list[Path]:
    dirs = [config_dir] if config_dir is not None else []
    dirs += [REPO_ROOT, Path.cwd()]
    unique: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d not in unique:
            unique.append(d)
    return unique


def _resolve(value: str, config_dir: Path | None, pattern_ok: bool = False) -> tuple[str | None,
                                                                                     list[Path]]:
    """Find ``value`` (a path, or a glob pattern when ``pattern_ok``) on disk.

    Returns (absolute path or pattern, None if nothing matches) and the directories searched.
    """
    path = Path(value).expanduser()
    is_pattern = pattern_ok and glob.has_magic(value)
    dirs = [Path("/")] if path.is_absolute() else _candidate_dirs(config_dir)
    for base in dirs:
        candidate = base / path
        if is_pattern:
            if glob.glob(str(candidate), recursive=True):
                return str(candidate), dirs
        elif candidate.exists():
            return str(candidate.resolve()), dirs
    return None, dirs


def _looks_like_local_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or value in (".", "..")


def _check_files(cfg: RunConfig, config_dir: Path | None, origins: Origins) -> list[str]:
    """Check that referenced files exist; rewrite them as absolute paths. Returns problems."""
    problems: list[str] = []

    def missing(key: str, value: str, dirs: list[Path], what: str, display: str = "") -> None:
        looked = "" if Path(value).is_absolute() else (
            " (looked in: " + ", ".join(str(d) for d in dirs) + ")"
        )
        problems.append(f"'{display or key}' {origins.where(key)}: {what}{looked}")

    dist = cfg.distributed
    found, dirs = _resolve(dist.deepspeed_config, config_dir)
    if found is None:
        missing("distributed.deepspeed_config", dist.deepspeed_config, dirs,
                f"DeepSpeed config file '{dist.deepspeed_config}' not found")
    else:
        dist.deepspeed_config = found
        problems += _check_deepspeed_json(Path(found), cfg, origins)

    for prefix, section in (("data", cfg.data), ("data.ood", cfg.data.ood)):
        if section is None:
            continue
        resolved = []
        for i, value in enumerate(section.paths):
            found, dirs = _resolve(value, config_dir, pattern_ok=True)
            if found is None:
                what = (f"no file matches the pattern '{value}'" if glob.has_magic(value)
                        else f"data path '{value}' not found")
                missing(f"{prefix}.paths", value, dirs, what, f"{prefix}.paths[{i}]")
            resolved.append(found or value)
        section.paths = resolved

    for key, section, attr in (
        ("model.name_or_path", cfg.model, "name_or_path"),
        ("eval.nli_model_path", cfg.eval, "nli_model_path"),
    ):
        value = getattr(section, attr)
        if value and value not in MODEL_ALIASES and _looks_like_local_path(value):
            found, dirs = _resolve(value, config_dir)
            if found is None:
                missing(key, value, dirs, f"model directory '{value}' not found")
            else:
                setattr(section, attr, found)
    return problems


def _check_deepspeed_json(path: Path, cfg: RunConfig, origins: Origins) -> list[str]:
    key = "distributed.deepspeed_config"
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return [f"cannot read DeepSpeed config '{path}' ({key} {origins.where(key)}): {exc}"]
    except json.JSONDecodeError as exc:
        return [f"DeepSpeed config '{path}' ({key} {origins.where(key)}) is not valid JSON: "
                f"line {exc.lineno}, column {exc.colno}: {exc.msg}"]
    if not isinstance(ds, dict):
        return [f"DeepSpeed config '{path}' ({key} {origins.where(key)}) must be a JSON object"]
    stage = (ds.get("zero_optimization") or {}).get("stage")
    if isinstance(stage, int) and stage != cfg.distributed.zero_stage:
        where = origins.where(key, "distributed.zero_stage")
        return [f"DeepSpeed config '{path}' sets zero_optimization.stage {stage} but "
                f"distributed.zero_stage is {cfg.distributed.zero_stage} ({where}); make them "
                f"agree"]
    return []


# ------------------------------------------------------------------------------------- public


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Load, validate and resolve a run config.

    Args:
        path: YAML file; None starts from the defaults.
        overrides: dotted ``key=value`` strings applied on top of the file, in order; values
            are parsed as YAML (``optim.lr=2e-4``, ``model.lora.target_modules=[q_proj,v_proj]``).

    Returns:
        The validated :class:`RunConfig`, with file paths (DeepSpeed config, data files, local
        model directories) made absolute.

    Raises:
        ConfigError: listing every problem found, each naming the key and where it came from.
    """
    label = str(path) if path is not None else None
    file_data = _read_yaml_file(Path(path), label) if path is not None else {}
    config_dir = Path(path).resolve().parent if path is not None else None

    pairs, problems = parse_overrides(overrides)
    data = copy.deepcopy(file_data)
    for key, value in pairs:
        problem = _apply_override(data, key, value)
        if problem:
            problems.append(problem)
    origins = Origins(label, [key for key, _ in pairs])

    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems + translate_validation_error(exc, origins)) from None
    problems += _check_files(config, config_dir, origins)
    if problems:
        raise ConfigError(problems)
    return config

