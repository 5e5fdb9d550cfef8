"""What the driver decides before any worker starts, handed to every Ray Train worker."""

from __future__ import annotations

from dataclasses import dataclass, field

from uaclm_dist.config import RunConfig
from uaclm_dist.losses.objectives import Objective
from uaclm_dist.modeling.images import ImageSpec


@dataclass(frozen=True)
class TrainPlan:
    """The driver's decisions for one ``uaclm train`` invocation (pickled to the workers).

    Attributes:
        config: the resolved, validated run config (travels as the object, never re-parsed).
        objective: the objective built from ``config.objective`` on the driver, so an objective
            registered in the driver's process (a user script, a test) reaches the workers.
        examples: tokenized training examples (``TokenizedExample``), the same list on every rank.
        probe_examples: tokenized held-out examples of the entropy probe (empty: probe off).
        pad_token_id: the tokenizer's padding id (collation).
        image_spec: how a vision-language model takes images (collation of image rows); None
            for text-only models.
        total_steps: optimizer steps of the whole run (the schedules span it, also when this
            invocation stops early).
        steps_per_epoch: optimizer steps per pass over ``examples``.
        output_dir: the run folder.
        run_id: the run's id (W&B run id; kept across resumes).
        resume_dir: checkpoint folder to resume from when the run folder has none of its own.
        stop_at_step: checkpoint and stop once this many steps are done (None: run to the end).
        init_adapter_dir: the parent adapter whose weights the LoRA starts from (None: fresh;
            :mod:`uaclm_dist.train.parent`).
    """

    config: RunConfig
    objective: Objective
    examples: list
    pad_token_id: int
    total_steps: int
    steps_per_epoch: int
    output_dir: str
    run_id: str
    probe_examples: list = field(default_factory=list)
    image_spec: ImageSpec | None = None
    resume_dir: str | None = None
    stop_at_step: int | None = None
    init_adapter_dir: str | None = None
