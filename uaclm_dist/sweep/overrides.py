"""Spec values as ``key=value`` command-line overrides that parse back to the same value.

``uaclm`` parses an override's value as YAML (:func:`uaclm_dist.config.parse_overrides`), so a
value is written as one line of flow-style YAML: ``clm+ua``, ``1.0e-05`` (PyYAML reads ``1e-05``
as text), ``'null'`` for the string "null", ``[q_proj, v_proj]``, ``{question: q}``.
"""

from __future__ import annotations

from typing import Any

import yaml

from uaclm_dist.config import ConfigError

__all__ = ["override_arg", "value_text"]


def value_text(value: Any) -> str:
    """``value`` as one line of YAML that ``yaml.safe_load`` reads back as ``value``;
    :class:`ConfigError` for a value that does not survive the round trip."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    text = text.removesuffix("\n...").strip()  # the document end PyYAML adds after a scalar
    if "\n" in text or yaml.safe_load(text) != value:
        raise ConfigError(f"value {value!r} cannot be passed as a one-line override")
    return text


def override_arg(key: str, value: Any) -> str:
    """``key=value`` for the command line, e.g. ``override_arg("optim.lr", 1e-5)`` ->
    ``"optim.lr=1.0e-05"``."""
    return f"{key}={value_text(value)}"
