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
its kernels rather than their launches; on CPU that is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["PHASES", "PhaseClock"]

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

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name not in self.seconds:
            raise KeyError(f"unknown phase {name!r}; phases: {', '.join(PHASES)}")
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
