"""Progress of a sweep run: cells done / failed / remaining and an ETA.

The ETA is the mean wall time of the cells *run* by this invocation (skipped finished cells do
not count) times the cells remaining; none before the first cell has run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``; ``?`` for None."""
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class Progress:
    """Counts over the cells of one ``sweep run`` (the selected ones).

    Attributes:
        total: cells selected.
        done: finished (skipped as already finished, or run successfully).
        failed: run and failed.
        durations_s: wall seconds of each cell run by this invocation.
    """

    total: int
    done: int = 0
    failed: int = 0
    durations_s: list[float] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed

    @property
    def mean_s(self) -> float | None:
        return sum(self.durations_s) / len(self.durations_s) if self.durations_s else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the mean duration so far (0 when nothing remains)."""
        if self.remaining == 0:
            return 0.0
        return None if self.mean_s is None else self.mean_s * self.remaining

    def line(self) -> str:
        """E.g. ``3/12 done, 1 failed, 8 remaining; 12m04s per cell, ETA 1h36m``."""
        text = f"{self.done}/{self.total} done, {self.failed} failed, {self.remaining} remaining"
        if self.mean_s is not None:
            text += f"; {format_duration(self.mean_s)} per cell, ETA {format_duration(self.eta_s)}"
        return text
