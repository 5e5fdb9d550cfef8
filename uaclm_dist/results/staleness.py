"""Which generated sections are stale: measured on uncommitted changes, on a commit this clone
does not have, or on a commit older than the last one touching a path the section depends on
(committed, or changed in the working tree)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from uaclm_dist.results.markers import find_blocks
from uaclm_dist.results.provenance import git
from uaclm_dist.results.sections import Section

__all__ = ["Stale", "stale_sections"]


@dataclass(frozen=True)
class Stale:
    """A section that no longer says what the code produces, and why."""

    section: str
    page: str
    command: str
    reason: str

    def __str__(self) -> str:
        return f"{self.page} [{self.section}]: {self.reason}; regenerate with `{self.command}`"


def _is_ancestor(repo: Path, older: str, newer: str) -> bool:
    try:
        git(repo, "merge-base", "--is-ancestor", older, newer)
        return True
    except subprocess.CalledProcessError:
        return False


def _why_stale(repo: Path, section: Section, commit: str) -> str | None:
    if commit.endswith("+dirty"):
        return f"measured on {commit} (uncommitted changes)"
    try:
        full = git(repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    except subprocess.CalledProcessError:
        return f"measured on {commit}, which is not in this clone's history"
    paths = [p for p in section.depends_on if (repo / p).exists()]
    if not paths:
        return None
    last = git(repo, "log", "-1", "--format=%h", "HEAD", "--", *paths)
    if last and not _is_ancestor(repo, last, full):
        touched = git(repo, "diff", "--name-only", full, last, "--", *paths).splitlines()
        shown = ", ".join(touched[:3]) + (
            f" and {len(touched) - 3} more" if len(touched) > 3 else ""
        )
        return f"measured on {commit}; {shown or 'its paths'} changed since (last in {last})"
    changed = git(repo, "diff", "--name-only", "HEAD", "--", *paths).splitlines()
    if changed:
        return f"measured on {commit}; uncommitted changes to {changed[0]}"
    return None


def stale_sections(repo: Path, sections: Iterable[Section]) -> list[Stale]:
    """The stale sections among ``sections`` of the repository at ``repo`` (a section whose block
    is missing from its page counts as stale)."""
    stale = []
    pages: dict[str, dict] = {}
    for section in sections:
        page = repo / section.page
        if section.page not in pages:
            pages[section.page] = (
                find_blocks(page.read_text(), section.page) if page.is_file() else {}
            )
        block = pages[section.page].get(section.name)
        reason = ("no generated block on the page" if block is None
                  else _why_stale(repo, section, block.commit))  # fmt: skip
        if reason:
            stale.append(Stale(section.name, section.page, section.command, reason))
    return stale
