"""The generated blocks of a Markdown page.

A block::

    <!-- generated: demo | command: make results-demo | commit: 1a2b3c4d5e6f |
         date: 2026-12-07 11:20 UTC | machine: x86_64, 2 cores, ... -->  (one line on the page)
    ...Markdown written by the command...
    <!-- end generated: demo -->

Only the text between the two marker lines belongs to the command; everything else on the page is
prose and is never touched by :func:`replace_block`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Block", "BlockError", "find_blocks", "render_block", "replace_block"]

_BEGIN = re.compile(r"^<!-- generated: (?P<name>[\w.-]+)(?P<fields>(?: \| [\w-]+: [^|]*?)*) -->$")
_END = "<!-- end generated: {name} -->"
FIELDS = ("command", "commit", "date", "machine")


class BlockError(ValueError):
    """A page's markers are malformed (unclosed, duplicated, missing a field)."""


@dataclass(frozen=True)
class Block:
    """One generated block: its name, its marker fields and its body (without the markers)."""

    name: str
    fields: dict[str, str]
    body: str

    @property
    def commit(self) -> str:
        """The commit the block was measured on (``+dirty``: with uncommitted changes)."""
        return self.fields["commit"]


def _parse_fields(text: str, where: str) -> dict[str, str]:
    fields = {}
    for part in filter(None, (p.strip() for p in text.split("|"))):
        key, _, value = part.partition(":")
        fields[key.strip()] = value.strip()
    missing = [f for f in FIELDS if not fields.get(f)]
    if missing:
        raise BlockError(f"{where}: marker lacks {', '.join(missing)}")
    return fields


def find_blocks(text: str, page: str = "page") -> dict[str, Block]:
    """Every generated block of ``text`` by name; :class:`BlockError` naming ``page`` and the line
    on an unclosed or repeated block or a marker without its fields."""
    lines = text.splitlines()
    blocks: dict[str, Block] = {}
    i = 0
    while i < len(lines):
        match = _BEGIN.match(lines[i])
        if match is None:
            if lines[i].startswith("<!-- generated:"):
                raise BlockError(f"{page} line {i + 1}: malformed marker {lines[i]!r}")
            i += 1
            continue
        name, where = match["name"], f"{page} line {i + 1}"
        if name in blocks:
            raise BlockError(f"{where}: a second block named {name!r}")
        end = _END.format(name=name)
        try:
            j = lines.index(end, i + 1)
        except ValueError:
            raise BlockError(f"{where}: block {name!r} has no {end!r}") from None
        blocks[name] = Block(
            name, _parse_fields(match["fields"], where), "\n".join(lines[i + 1 : j])
        )
        i = j + 1
    return blocks


def render_block(name: str, fields: dict[str, str], body: str) -> str:
    """The marker lines around ``body``; ``fields`` must hold :data:`FIELDS` (no ``|``)."""
    for key in FIELDS:
        if not fields.get(key) or "|" in fields[key]:
            raise BlockError(f"block {name!r}: field {key!r} must be set and hold no '|'")
    head = " | ".join(f"{k}: {fields[k]}" for k in FIELDS)
    return f"<!-- generated: {name} | {head} -->\n{body.strip()}\n{_END.format(name=name)}"


def replace_block(
    text: str, name: str, fields: dict[str, str], body: str, page: str = "page"
) -> str:
    """``text`` with block ``name`` rewritten; :class:`BlockError` when the page has no such block
    (a section is placed by hand once, where its prose wants it)."""
    blocks = find_blocks(text, page)
    if name not in blocks:
        raise BlockError(f"{page} has no block {name!r}: add the two marker lines where it belongs")
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if (m := _BEGIN.match(line.rstrip("\n")))
                 and m["name"] == name)  # fmt: skip
    stop = next(i for i in range(start + 1, len(lines))
                if lines[i].rstrip("\n") == _END.format(name=name))  # fmt: skip
    return (
        "".join(lines[:start])
        + render_block(name, fields, body)
        + "\n"
        + "".join(lines[stop + 1 :])
    )
