"""Reading the schema as data: dotted keys, field types as text, constraints, error locations.

Shared by the error messages (:mod:`.errors`), the override parser (:mod:`.loading`) and the key
reference (:mod:`.reference`).
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel

from uaclm_dist.config.choices import RegisteredName
from uaclm_dist.config.schema import RunConfig

__all__ = [
    "choices_of",
    "constraint_text",
    "field_for_loc",
    "is_dict",
    "iter_fields",
    "section_class",
    "type_name",
    "unwrap_optional",
    "valid_keys",
]


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(args) < len(get_args(annotation)):
            return args[0], True
    return annotation, False


def section_class(annotation: Any) -> type[BaseModel] | None:
    """The section model behind a field annotation, or None for a leaf."""
    inner, _ = unwrap_optional(annotation)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner
    return None


def is_dict(annotation: Any) -> bool:
    return get_origin(unwrap_optional(annotation)[0]) is dict


def choices_of(annotation: Any, metadata: Iterable[Any] = ()) -> tuple[str, ...] | None:
    """The allowed values of a choice field (a Literal, or a name checked against a registry,
    found in ``metadata`` or in an ``Annotated`` type); None for any other field."""
    inner = unwrap_optional(annotation)[0]
    if get_origin(inner) is Literal:
        return tuple(str(v) for v in get_args(inner))
    if get_origin(inner) is Annotated:
        metadata = [*metadata, *inner.__metadata__]
    for item in metadata:
        if isinstance(item, RegisteredName):
            return item.choices()
    return None


def type_name(annotation: Any, sep: str = " | ", metadata: Iterable[Any] = ()) -> str:
    """A short, readable name for a field type: choices are listed, joined by ``sep`` (as is
    ``null`` for an optional field); other alternatives are joined by 'or'."""
    inner, optional = unwrap_optional(annotation)
    origin = get_origin(inner)
    choices = choices_of(inner, metadata)
    if choices is not None:
        name = sep.join(choices)
    elif origin is Annotated:
        name = type_name(get_args(inner)[0], sep)
    elif origin is list:
        name = f"list[{type_name(get_args(inner)[0], sep)}]"
    elif origin is dict:
        key, value = get_args(inner)
        name = f"dict[{type_name(key, sep)}, {type_name(value, sep)}]"
    elif origin in (Union, types.UnionType):
        name = " or ".join(type_name(member, sep) for member in get_args(inner))
    elif section_class(inner) is not None:
        name = "section"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name}{sep}null" if optional else name


def constraint_text(metadata: Iterable[Any]) -> str:
    """Field constraints as text, e.g. '>= 0, < 1'."""
    parts = []
    for item in metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                parts.append(f"{symbol} {getattr(item, attr):g}")
        if isinstance(item, annotated_types.MinLen) and item.min_length > 0:
            parts.append(f"length >= {item.min_length}")
    return ", ".join(parts)


def iter_fields(cls: type[BaseModel] | None = None, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted key, FieldInfo) for every field, depth first, sections before their fields."""
    cls = cls or RunConfig
    for name, info in cls.model_fields.items():
        key = f"{prefix}{name}"
        yield key, info
        section = section_class(info.annotation)
        if section is not None:
            yield from iter_fields(section, f"{key}.")


def valid_keys() -> list[str]:
    """Every valid dotted key of the schema (sections included), in schema order."""
    return [key for key, _ in iter_fields()]


def field_for_loc(loc: Sequence[Any]) -> tuple[str, str, Any, Any]:
    """Map a pydantic error location to (field key, display key, annotation, FieldInfo).

    The field key is the dotted schema key (used to find where the value came from); the display
    key adds list indices / mapping keys, e.g. ``eval.scores[2]``. Below a list or mapping the
    FieldInfo is None and the annotation is the item type.
    """
    cls: type[BaseModel] | None = RunConfig
    annotation: Any = None
    info: Any = None
    field_parts: list[str] = []
    display = ""
    for item in loc:
        if cls is not None and isinstance(item, str) and item in cls.model_fields:
            info = cls.model_fields[item]
            annotation = info.annotation
            field_parts.append(item)
            display = f"{display}.{item}" if display else item
            cls = section_class(annotation)
            continue
        inner = unwrap_optional(annotation)[0] if annotation is not None else None
        if isinstance(item, int) and get_origin(inner) is list:
            annotation, info = get_args(inner)[0], None
            display += f"[{item}]"
        elif get_origin(inner) is dict:
            annotation, info = get_args(inner)[1], None
            display += f".{item}"
        elif cls is not None:  # an unknown key below a section
            field_parts.append(str(item))
            display = f"{display}.{item}" if display else str(item)
            annotation = info = cls = None
        # anything else is a pydantic-internal tag (union member, validator name): skip it
    return ".".join(field_parts), display, annotation, info
