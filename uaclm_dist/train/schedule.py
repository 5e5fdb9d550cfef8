"""Optimizer-step arithmetic and the paper's learning-rate schedule."""

from __future__ import annotations

import math


def steps_per_epoch(n_train: int, micro_batch_size: int, grad_accumulation: int, world: int) -> int:
    """Optimizer steps that cover ``n_train`` sequences once (the last step may wrap around)."""
    global_batch = micro_batch_size * grad_accumulation * world
    return max(1, math.ceil(n_train / global_batch))


def total_steps(n_train: int, *, micro_batch_size, grad_accumulation, world, epochs, max_steps):
    """``max_steps`` when set, else ``epochs`` full passes."""
    if max_steps:
        return max_steps
    return epochs * steps_per_epoch(n_train, micro_batch_size, grad_accumulation, world)


def linear_warmup_decay(step: int, total: int, warmup_ratio: float) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): linear warm-up over
    ``ceil(warmup_ratio * total)`` steps to 1, then linear decay to 0 at ``total``
    (the HF ``get_linear_schedule_with_warmup`` shape the paper's setup implies)."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))
