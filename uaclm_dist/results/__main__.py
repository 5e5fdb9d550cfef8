"""``python -m uaclm_dist.results {measure,write,check}``: regenerate a results section, or list
the stale ones.

- ``measure SECTION``: record the commit, date and machine in a new folder, run the section's
  measurement there, then write its block (what ``make results-<section>`` runs).
- ``write SECTION FOLDER``: write the block again from a folder ``measure`` filled (no training).
- ``check [--warn]``: list every stale section (:mod:`.staleness`); exit 1 if any (0 with
  ``--warn``, as ``make test`` runs it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from uaclm_dist.results.markers import replace_block
from uaclm_dist.results.provenance import read_provenance, record_provenance
from uaclm_dist.results.sections import SECTIONS, Section
from uaclm_dist.results.staleness import stale_sections

REPO_ROOT = Path(__file__).resolve().parents[2]
EXIT_BAD_INPUT = 2


def write_section(repo: Path, section: Section, folder: Path) -> Path:
    """Render ``section`` from ``folder`` into its page with ``folder``'s provenance; the page."""
    fields = read_provenance(folder)
    body = section.render(folder)
    page = repo / section.page
    page.write_text(replace_block(page.read_text(), section.name, fields, body, section.page))
    return page


def measure_section(repo: Path, section: Section) -> Path:
    """Run the measurement of ``section`` into a new folder, then write the block; the page."""
    folder = section.folder(repo, datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
    fields = record_provenance(folder, repo, section.command, section.depends_on)
    if fields["commit"].endswith("+dirty"):
        print(f"warning: uncommitted changes: {section.name} will be marked stale", file=sys.stderr)
    for argv in section.measure(folder):
        print("+", " ".join(argv), flush=True)
        subprocess.run(argv, cwd=repo, check=True)
    return write_section(repo, section, folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m uaclm_dist.results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("measure", help="measure a section and write its block")
    measure.add_argument("section", choices=list(SECTIONS))
    write = commands.add_parser("write", help="write a block from a measured folder")
    write.add_argument("section", choices=list(SECTIONS))
    write.add_argument("folder", type=Path)
    check = commands.add_parser("check", help="list stale sections; exit 1 if any")
    check.add_argument("--warn", action="store_true", help="print them but exit 0")
    args = parser.parse_args(argv)

    if args.command == "check":
        stale = stale_sections(REPO_ROOT, SECTIONS.values())
        for item in stale:
            print(f"{'warning: ' if args.warn else ''}stale results: {item}", file=sys.stderr)
        if not stale:
            print(f"results: {len(SECTIONS)} generated sections, none stale")
        return 1 if stale and not args.warn else 0
    section = SECTIONS[args.section]
    try:
        if args.command == "write":
            page = write_section(REPO_ROOT, section, args.folder.resolve())
        else:
            page = measure_section(REPO_ROOT, section)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except subprocess.CalledProcessError as exc:
        print(
            f"error: {' '.join(exc.cmd)} failed (exit {exc.returncode}); {section.page} is "
            "unchanged",
            file=sys.stderr,
        )
        return 1
    print(f"wrote [{section.name}] in {page.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
