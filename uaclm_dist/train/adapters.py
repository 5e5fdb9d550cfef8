"""The trainable (LoRA) parameters of a DeepSpeed-wrapped model, and saving them."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch


def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` of everything that requires grad (the adapters under LoRA)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def gathered(params, zero_stage: int, modifier_rank: int | None = None):
    """Full (un-partitioned) values of ZeRO-3 parameters inside the context; with
    ``modifier_rank``, that rank's values are written back to every partition on exit. Other
    stages hold full parameters already."""
    if zero_stage != 3:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


def save_adapter(model, out_dir: Path, rank: int, zero_stage: int) -> dict:
    """Collective: gather the trainable weights and (rank 0) save them in peft format: the LoRA
    adapters and any ``modules_to_save`` (a vision-language model's projector).

    peft's ``save_pretrained(state_dict=...)`` takes the model's own state-dict keys and picks
    the adapter's entries from them itself, so the gathered values go in under those keys.

    Returns a fingerprint of what was saved (``adapter_numel``, ``adapter_l1``, from the
    gathered values) so tests can check the file holds what the workers held.
    """
    named = trainable_parameters(model)
    with gathered([p for _, p in named], zero_stage):
        state = {name: p.detach().to("cpu").clone() for name, p in named}
        if rank == 0:
            model.save_pretrained(str(out_dir), state_dict=state)
    return {
        "adapter_numel": int(sum(v.numel() for v in state.values())),
        "adapter_l1": float(sum(v.float().abs().sum() for v in state.values())),
    }


