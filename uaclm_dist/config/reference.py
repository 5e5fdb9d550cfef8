"""The generated key reference: every key of the schema with its type, default and description.

``uaclm config reference`` prints it; ``docs/CONFIG.md`` and the README hold a copy (a unit test
keeps them in sync). Choice fields list their values; for names checked against a registry these
are the names registered when the reference is generated.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from uaclm_dist.config.introspect import (
    constraint_text,
    iter_fields,
    section_class,
    type_name,
    unwrap_optional,
)
from uaclm_dist.config.schema import RunConfig

__all__ = ["reference_markdown"]


def reference_markdown() -> str:
    """Markdown tables (one per top-level section) of every key: type, default, description."""
    lines: list[str] = []
    defaults = RunConfig.model_construct().model_dump(mode="json")
    for section, info in RunConfig.model_fields.items():
        lines += [f"### `{section}`", "", info.description or "", ""]
        lines += ["| Key | Type | Default | Description |", "|---|---|---|---|"]
        cls = section_class(info.annotation)
        for key, field in iter_fields(cls, f"{section}."):
            type_text = type_name(field.annotation, " \\| ", field.metadata)
            constraints = constraint_text(field.metadata)
            if constraints:
                type_text += f" ({constraints})"
            default = _default_text(key, defaults, field)
            description = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{key}` | {type_text} | {default} | {description} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _default_text(key: str, defaults: dict[str, Any], field: Any) -> str:
    """The default of ``key`` as inline YAML in backquotes ('' for a section)."""
    if section_class(field.annotation) is not None and not unwrap_optional(field.annotation)[1]:
        return ""
    value: Any = defaults
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            # a field inside an optional section that defaults to null: use its own default
            value = field.get_default(call_default_factory=True)
            if isinstance(value, BaseModel):
                return ""
            break
        value = value[part]
    return f"`{_yaml_inline(value)}`"


def _yaml_inline(value: Any) -> str:
    """``value`` in YAML flow style, on one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_inline(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_inline(v)}" for k, v in value.items()) + "}"
    return str(value)
