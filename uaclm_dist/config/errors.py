"""Configuration problems worded for the person who wrote the config.

Every message names the dotted key, what was expected, the bad value and where it came from (the
config file, the command line or the defaults), and suggests the closest valid key or value for
typos. :class:`ConfigError` carries all problems found at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from uaclm_dist.config.choices import UNKNOWN_NAME_ERROR
from uaclm_dist.config.introspect import (
    choices_of,
    constraint_text,
    field_for_loc,
    section_class,
    type_name,
    valid_keys,
)
from uaclm_dist.config.schema import CROSS_FIELD_ERROR, RunConfig

__all__ = ["ConfigError", "Origins", "kind", "show", "suggest", "translate_validation_error"]

class ConfigError(Exception):
    """A configuration problem, worded for the person who wrote the config.

    ``str(err)`` is the full message; ``err.problems`` lists the individual problems.
    """

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{len(self.problems)} problems in the configuration:\n{lines}"
        super().__init__(message)


class Origins:
    """Where each value came from: the file, the command line or the defaults.

    Args:
        label: the config file as the user named it (None: no file).
        override_keys: dotted keys set on the command line.
    """

    def __init__(self, label: str | None, override_keys: Sequence[str]):
        self.label = label
        self.override_keys = list(override_keys)

    def _overridden(self, key: str) -> bool:
        return any(
            key == k or key.startswith(k + ".") or k.startswith(key + ".")
            for k in self.override_keys
        )

    def where(self, *keys: str) -> str:
        """'on the command line' / 'in FILE' / 'in the defaults' for the given keys."""
        if any(self._overridden(k) for k in keys):
            return "on the command line"
        return f"in {self.label}" if self.label else "in the defaults"


def kind(value: Any) -> str:
    """'a list', 'a mapping' or the type and value, for messages."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {show(value)}"


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(value: Any, choices: Sequence[str], cutoff: float) -> str:
    """"; did you mean 'x'?" for the closest of ``choices``, or ''."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=cutoff)
    return f"; did you mean '{close[0]}'?" if close else ""


def suggest(key: str) -> str:
    """'; did you mean ...?' for an unknown key, or the valid keys next to it."""
    hint = did_you_mean(key, valid_keys(), cutoff=0.6)
    if hint:
        return hint
    parent = key.rpartition(".")[0]
    cls: type[BaseModel] | None = RunConfig
    for part in parent.split(".") if parent else []:
        field = cls.model_fields.get(part) if cls else None
        cls = section_class(field.annotation) if field else None
    if cls is None:
        return ""
    where = f"under '{parent}'" if parent else "at the top level"
    return f"; valid keys {where}: {', '.join(cls.model_fields)}"


def translate_validation_error(exc: ValidationError, origins: Origins) -> list[str]:
    """One message per pydantic error, naming key, expected type, value and origin."""
    problems = []
    for err in exc.errors(include_url=False):
        if err["type"] == CROSS_FIELD_ERROR:
            for keys, message in err["ctx"]["issues"]:
                problems.append(f"{message} ({origins.where(*keys)})")
            continue
        field_key, display, annotation, info = field_for_loc(err["loc"])
        where = origins.where(field_key)
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key '{display}' {where}{suggest(field_key)}")
            continue
        problems.append(f"invalid value for '{display}' {where}: "
                        + _value_problem(err, annotation, info))
    return problems


def _value_problem(err: Any, annotation: Any, info: Any) -> str:
    """'expected X, got Y' plus a suggestion or pydantic's reason, for one bad value."""
    metadata = info.metadata if info is not None else ()
    choices = choices_of(annotation, metadata) if annotation is not None else None
    expected = type_name(annotation, ", ", metadata) if annotation is not None else "a value"
    if choices is not None:
        expected = "one of " + expected
    constraints = constraint_text(metadata)
    if constraints:
        expected += f" ({constraints})"
    if expected == "section":
        expected = "a mapping (section)"
    message = f"expected {expected}, got {show(err['input'])}"
    if choices is not None:
        return message + (did_you_mean(err["input"], choices, cutoff=0.5)
                          if err["type"] in ("literal_error", UNKNOWN_NAME_ERROR) else "")
    if err["type"] in ("model_type", "model_attributes_type"):
        return message
    reason = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    return f"{message} ({reason})"
