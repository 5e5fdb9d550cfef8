"""DeepSpeed config files with "auto" fields, filled from the run config."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from uaclm_dist.config import RunConfig


def fill_deepspeed_config(template: dict[str, Any], cfg: RunConfig, world_size: int) -> dict:
    """Resolve every ``"auto"`` value of a DeepSpeed config from the run config.

    ``train_batch_size = micro_batch_size * grad_accumulation * world_size`` (sequences per
    optimizer step over all ranks). Mixed precision follows ``model.dtype``. A client optimizer
    (torch AdamW) is used, which ZeRO accepts only with ``zero_allow_untested_optimizer``.
    """
    ds = copy.deepcopy(template)
    optim = cfg.optim
    auto = {
        "train_micro_batch_size_per_gpu": optim.micro_batch_size,
        "gradient_accumulation_steps": optim.grad_accumulation,
        "train_batch_size": optim.micro_batch_size * optim.grad_accumulation * world_size,
        "gradient_clipping": optim.grad_clip,
    }
    for key, value in auto.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    for precision, dtype in (("bf16", "bfloat16"), ("fp16", "float16")):
        section = ds.setdefault(precision, {})
        if section.get("enabled", "auto") == "auto":
            section["enabled"] = cfg.model.dtype == dtype
    stage = ds.get("zero_optimization", {}).get("stage")
    if stage != cfg.distributed.zero_stage:
        raise ValueError(
            f"DeepSpeed config has zero_optimization.stage={stage} but "
            f"distributed.zero_stage={cfg.distributed.zero_stage}"
        )
    ds["zero_allow_untested_optimizer"] = True
    leftover = [k for k, v in _walk(ds) if v == "auto"]
    if leftover:
        raise ValueError(f"DeepSpeed config fields left as 'auto': {', '.join(leftover)}")
    return ds


def load_deepspeed_config(cfg: RunConfig, world_size: int) -> dict:
    """Read ``distributed.deepspeed_config`` and fill it (see :func:`fill_deepspeed_config`)."""
    path = Path(cfg.distributed.deepspeed_config)
    return fill_deepspeed_config(json.loads(path.read_text()), cfg, world_size)


def _walk(d: dict, prefix: str = ""):
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _walk(value, name + ".")
        else:
            yield name, value
