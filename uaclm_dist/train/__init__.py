"""Distributed fine-tuning: Ray Train workers running DeepSpeed over a (Q)LoRA model."""

from __future__ import annotations


def run_training(config, resume_dir: str | None = None, stop_after_steps: int | None = None):
    """See :func:`uaclm_dist.train.trainer.run_training` (imported lazily: Ray is heavy)."""
    from uaclm_dist.train.trainer import run_training as _run

    return _run(config, resume_dir=resume_dir, stop_after_steps=stop_after_steps)
