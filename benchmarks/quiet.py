"""A quiet machine, made checkable: what every benchmark records before and after it measures.

A timing is compared only with timings of the same run on a quiet machine:

- nothing else running: the 1-minute load average below :data:`QUIET_LOAD` before the first
  measurement and again after the last one. The benchmark's own processes raise the load while
  they run, and the 1-minute average decays with a time constant of a minute, so the reading
  "after" is taken once the benchmark's processes have ended and the average has had up to
  :data:`SETTLE_S` seconds to fall (a machine where it does not fall has another job on it);
- repeats alternate between the variants (A B B A ...), so a slow phase of the machine hits each
  variant alike, and each variant's number is the median of at least :data:`MIN_REPEATS`.

    from quiet import alternating, machine_header, settle
    before = settle()                         # waits (up to SETTLE_S) for a quiet machine
    ...measure...
    after = settle()
    print(machine_header(before, after))
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: a machine whose 1-minute load average is below this is quiet (2 cores here: 0.3 is ~15%)
QUIET_LOAD = 0.3
#: how long :func:`settle` waits for the load to fall before calling the machine busy
#: (``BENCH_SETTLE_S=0`` for a quick look that is not a measurement)
SETTLE_S = float(os.environ.get("BENCH_SETTLE_S", 240))
#: the fewest repeats whose median a benchmark table may report
MIN_REPEATS = 5

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LoadReading:
    """The 1-minute load average read by :func:`settle` and how long it waited for it."""

    load: float
    waited_s: float

    @property
    def quiet(self) -> bool:
        return self.load < QUIET_LOAD

    def describe(self) -> str:
        verdict = "quiet" if self.quiet else f"NOT quiet (not below {QUIET_LOAD} after waiting)"
        return f"load average {self.load:.2f} (1 min), waited {self.waited_s:.0f} s: {verdict}"


def settle(max_wait_s: float = SETTLE_S, poll_s: float = 5.0) -> LoadReading:
    """Wait until the 1-minute load average is below :data:`QUIET_LOAD` (at most ``max_wait_s``
    seconds); the last reading and the time waited."""
    start = time.monotonic()
    while True:
        load = os.getloadavg()[0]
        waited = time.monotonic() - start
        if load < QUIET_LOAD or waited >= max_wait_s:
            return LoadReading(load, waited)
        time.sleep(min(poll_s, max_wait_s - waited))


def commit_state() -> str:
    """``commit abc1234`` (``+ uncommitted changes`` when the tracked tree differs)."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return proc.stdout.strip()

    dirty = " + uncommitted changes" if git("status", "--porcelain", "-uno") else ""
    return f"commit {git('rev-parse', '--short', 'HEAD') or '?'}{dirty}"


def machine_header(before: LoadReading, after: LoadReading) -> str:
    """One line for a benchmark table: commit, machine, the load before and after."""
    verdict = ("a quiet machine" if before.quiet and after.quiet
               else "NOT a quiet machine: the timings are not comparable")  # fmt: skip
    return (f"{commit_state()}; {platform.machine()}, {os.cpu_count()} CPUs; before: "
            f"{before.describe()}; after: {after.describe()}; {verdict}.")  # fmt: skip


def alternating(variants: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """``(repeat, variant)`` in the order to run them: forwards in even repeats, backwards in
    odd ones (A B, B A, A B, ...), so a drift of the machine's speed hits each variant alike."""
    order: list[tuple[int, str]] = []
    for r in range(repeats):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        order += [(r, v) for v in names]
    return order


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))
