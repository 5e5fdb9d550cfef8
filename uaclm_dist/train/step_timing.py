"""Where an optimizer step's wall time goes, phase by phase, on one rank.

Phases (seconds per optimizer step, summed over its micro-batches):

- ``data``: picking, collating and moving the micro-batches to the device;
- ``forward``: the model up to its final hidden states (LoRA, QLoRA dequantisation, ZeRO-3
  parameter gathers);
- ``loss``: the LM head and the objective (the fused / vocab-parallel kernel's forward, with
  its collectives for a sharded vocabulary);
- ``backward``: ``engine.backward``: the whole backward (model and loss) and DeepSpeed's gradient
  reduction where it happens there (ZeRO-2 buckets);
- ``optimizer``: ``engine.step``: the rest of the gradient reduction, clipping, AdamW, ZeRO
  parameter updates;
- ``comm``: the step's own collectives (metrics, token and FLOP counts, peak memory): the part
  of communication measured by itself; DeepSpeed's gradient traffic sits in backward / optimizer
  and is not separated.

On an accelerator every boundary synchronizes the device (``synchronize``), so a phase holds
its kernels rather than their launches; on CPU that is a no-op. Those synchronizations cost the
overlap of host and device, so the training loop times its logging steps only
(``PhaseClock.enabled``); :class:`StepWindow` keeps the steps between two rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["PHASES", "PhaseClock", "StepWindow"]

PHASES = ("data", "forward", "loss", "backward", "optimizer", "comm")


class PhaseClock:
    """Accumulates wall seconds per phase until :meth:`take`.

    Args:
        synchronize: called before a phase starts and when it ends (the device's synchronize;
            None: nothing to wait for).
        clock: seconds (tests pass a fake).
    """

    def __init__(self, synchronize: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter):  # fmt: skip
        self._synchronize = synchronize or (lambda: None)
        self._clock = clock
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.enabled = True  # False: phases run untimed and unsynchronized

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name not in self.seconds:
            raise KeyError(f"unknown phase {name!r}; phases: {', '.join(PHASES)}")
        if not self.enabled:
            yield
            return
        self._synchronize()
        start = self._clock()
        try:
            yield
        finally:
            self._synchronize()
            self.seconds[name] += self._clock() - start

    def take(self) -> dict[str, float]:
        """The seconds per phase since the last call, and start again from zero."""
        seconds, self.seconds = self.seconds, dict.fromkeys(PHASES, 0.0)
        return seconds


class NoClock(PhaseClock):
    """A clock that times nothing (the module outside a training loop: eval, the probe)."""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield


@dataclass
class WindowTimes:
    """The steps since the last metrics row: how many, their host seconds, and the summed
    phases of the timed ones (None when none was timed)."""

    steps: int
    seconds: float
    timed_steps: int
    phases: dict[str, float] | None


class StepWindow:
    """Host seconds and timed phases of the optimizer steps since the last metrics row.

    A step's host seconds run from its start until its work is queued (done, on the CPU); the
    row that reads the device's numbers adds the time it waited for them (``extra_seconds``), so
    the window holds the steps' wall time as far as the host sees it. Not counted, as before:
    what runs between two steps (the stop flag's all-reduce, logging, probes, checkpoints).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.steps, self.seconds, self.timed_steps = 0, 0.0, 0
        self.phases: dict[str, float] | None = None

    def add(self, *, seconds: float, phases: dict[str, float] | None) -> None:
        self.steps += 1
        self.seconds += seconds
        if phases is not None:
            self.timed_steps += 1
            self.phases = {p: (self.phases or {}).get(p, 0.0) + v for p, v in phases.items()}

    def take(self, extra_seconds: float = 0.0) -> WindowTimes:
        """The window so far (with ``extra_seconds`` added), and start a new one."""
        out = WindowTimes(max(1, self.steps), self.seconds + extra_seconds, self.timed_steps,
                          self.phases)  # fmt: skip
        self._reset()
        return out
