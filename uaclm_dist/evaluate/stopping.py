"""Stopping `uaclm eval` on a signal without losing or faking results.

Inside :class:`StopSignals`, SIGTERM, SIGUSR1 (Slurm's pre-timeout signal) and SIGINT (Ctrl-C)
no longer kill the driver. The first one is recorded; the driver checks it whenever a batch of
results arrives and before each method (:meth:`StopSignals.raise_if_requested`) and then
abandons the method it is generating, whose results were never written (each method's parquet
is written whole or not at all: :mod:`uaclm_dist.evaluate.method_files`). Methods finished
before stay, and running the same command again reuses them and generates the rest. A second
signal interrupts at once (KeyboardInterrupt), still without a half-written file.

Why not raise from the handler: Python runs it wherever the main thread is, and code there may
swallow the exception (``logging`` does, in a handler's flush: seen in the integration test).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from uaclm_dist.exit_codes import CommandStopped

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class EvaluationStopped(CommandStopped):
    """The evaluation stopped on a signal; the message says what was kept."""


class StopSignals:
    """Context manager: record the first stop signal, interrupt on the second; the previous
    handlers come back on exit. Outside the main thread (where Python allows no handlers) it
    records nothing and the signals keep their usual effect."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: str | None = None
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def raise_if_requested(self) -> None:
        """Raise :class:`EvaluationStopped` (naming the signal) if a stop signal came."""
        if self.received is not None:
            raise EvaluationStopped(f"{self.received} received")
