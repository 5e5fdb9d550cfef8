"""The trainable state in a form that does not depend on the number of workers.

DeepSpeed's own checkpoint holds one optimizer partition per rank (ZeRO), so it loads only on
the world size that wrote it. Next to it every checkpoint holds ``portable/trainable_state.pt``
(rank 0 writes it; gathering it is collective):

    params[name]      {"fp32": full fp32 master weight, "exp_avg": ..., "exp_avg_sq": ...}
                      for every trainable (LoRA) parameter, full shapes
    optimizer_steps   Adam's step count (the bias correction)
    lr_scheduler      the LR schedule's state dict
    global_steps      DeepSpeed's optimizer-step counter

Resuming on another world size (:func:`load_portable_state`) builds the engine as for a fresh
run, then puts every value back through DeepSpeed's tensor-fragment API
(``safe_set_full_fp32_param`` / ``safe_set_full_optimizer_state``), which writes each rank's
own partition under ZeRO-1/2/3, and sets the model's (low-precision) weights to the same
values. What is not carried over: the per-rank RNG streams of ranks that did not exist before
(dropout masks differ from an uninterrupted run; with ``lora.dropout=0`` nothing else draws).
"""

from __future__ import annotations

from pathlib import Path

import torch

PORTABLE_FILE = Path("portable") / "trainable_state.pt"
ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


def _base_optimizer(engine) -> torch.optim.Optimizer:
    """The torch optimizer under DeepSpeed's ZeRO wrapper (holds ``state[p]["step"]``)."""
    wrapped = engine.optimizer
    return getattr(wrapped, "optimizer", wrapped)


def _ensure_adam_state(engine, zero_stage: int) -> None:
    """Create AdamW's per-partition state (zeros) in an engine that has not stepped yet.

    torch's AdamW creates its state lazily at the first ``step()``, and DeepSpeed links each
    parameter's fragment of it only then; a resume before any step must do both, or there is
    nowhere to write the saved moments. Uses DeepSpeed's ZeRO attributes for the flat fp32
    partitions (stable through 0.19; checked here so a change fails loudly).
    """
    wrapper, base = engine.optimizer, _base_optimizer(engine)
    attribute = ("fp32_partitioned_groups_flat" if zero_stage == 3
                 else "single_partition_of_fp32_groups")  # fmt: skip
    partitions = getattr(wrapper, attribute, None)
    if partitions is None:
        raise RuntimeError(f"DeepSpeed's ZeRO-{zero_stage} optimizer has no {attribute}: the "
                           "portable resume needs updating for this DeepSpeed version")
    for flat in partitions:
        state = base.state[flat]
        if "exp_avg" not in state:
            state["step"] = torch.tensor(0.0)
            for key in ADAM_MOMENTS:
                state[key] = torch.zeros_like(flat, memory_format=torch.preserve_format)
    if zero_stage != 3:
        wrapper._hp_optimizer_states_linked = False
        wrapper._lazy_init_hp_params_optimizer_state()


def _set_zero3_partition(optimizer, param: torch.nn.Parameter, value: torch.Tensor,
                         key: str | None) -> None:  # fmt: skip
    """This rank's slice of ``value`` (the full fp32 weight, or optimizer state ``key``) into
    the ZeRO-3 partition of ``param``.

    DeepSpeed 0.19.8's ``set_full_hp_param`` slices ``partition_size * rank`` elements onward
    and fails on the last rank whenever the size does not divide by the world size (512
    elements over 3 ranks: partitions of 171, the last one padded); here the padding is zeroed.
    """
    part, group = optimizer._get_fp32_opt_state_partition(param, release_swap_buffers=False,
                                                           optim_state_key=key)  # fmt: skip
    start = part.numel() * optimizer._get_param_partition_rank(param)
    mine = value.flatten()[start:start + part.numel()]
    part.data.zero_()
    part.data[: mine.numel()].copy_(mine)
    if optimizer._swappable_optimizer_subgroup(group):
        optimizer._optimizer_states_and_gradient_swap_out(group)


def _optimizer_steps(engine) -> int:
    steps = [int(s["step"]) for s in _base_optimizer(engine).state.values() if "step" in s]
    return max(steps, default=0)


def gather_portable_state(engine, named_params: list[tuple[str, torch.nn.Parameter]],
                          rank: int) -> dict | None:  # fmt: skip
    """Collective (every rank, same parameter order): the full trainable state on rank 0,
    None on the other ranks."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    params = {}
    for name, param in named_params:
        entry = {"fp32": safe_get_full_fp32_param(param)}
        for key in ADAM_MOMENTS:
            entry[key] = safe_get_full_optimizer_state(param, key)
        missing = [k for k, v in entry.items() if v is None]
        if missing:
            raise RuntimeError(f"DeepSpeed gave no full {missing} for {name}: a world-size-"
                               "independent checkpoint needs ZeRO-1/2/3's fragment mapping")
        if rank == 0:
            params[name] = {k: v.detach().float().cpu().clone() for k, v in entry.items()}
    if rank != 0:
        return None
    return {
        "params": params,
        "optimizer_steps": _optimizer_steps(engine),
        "lr_scheduler": engine.lr_scheduler.state_dict(),
        "global_steps": int(engine.global_steps),
        "global_samples": int(engine.global_samples),
    }


def save_portable_state(directory: Path, state: dict | None) -> None:
    if state is None:
        return
    path = Path(directory) / PORTABLE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def read_portable_state(directory: Path) -> dict:
    path = Path(directory) / PORTABLE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: this checkpoint resumes only on its own world "
                                "size")  # fmt: skip
    return torch.load(path, weights_only=True)


def load_portable_state(engine, named_params: list[tuple[str, torch.nn.Parameter]],
                        state: dict, zero_stage: int) -> None:  # fmt: skip
    """Collective: restore weights, Adam moments and step, LR schedule and counters from
    ``state`` into a freshly initialized engine (any world size)."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    from uaclm_dist.train.adapters import gathered

    _ensure_adam_state(engine, zero_stage)
    saved = state["params"]
    names = [n for n, _ in named_params]
    if sorted(names) != sorted(saved):
        raise RuntimeError(f"the checkpoint's trainable parameters differ from the model's: "
                           f"{sorted(set(names) ^ set(saved))[:5]}")  # fmt: skip
    for name, param in named_params:
        entry = saved[name]
        device = param.device
        if zero_stage == 3:
            for key in (None, *ADAM_MOMENTS):
                _set_zero3_partition(engine.optimizer, param, entry[key or "fp32"].to(device), key)
        else:
            safe_set_full_fp32_param(param, entry["fp32"].to(device))
            for key in ADAM_MOMENTS:
                safe_set_full_optimizer_state(param, entry[key].to(device), key)
        # The model's own (possibly low-precision) copy, which the next forward reads.
        with gathered([param], zero_stage, modifier_rank=0), torch.no_grad():
            param.data.copy_(entry["fp32"].to(device=device, dtype=param.dtype))
    for per_param in _base_optimizer(engine).state.values():
        if "step" in per_param:
            step = per_param["step"]
            steps = state["optimizer_steps"]
            per_param["step"] = torch.full_like(step, steps) if torch.is_tensor(step) else steps
    scheduler = engine.lr_scheduler
    scheduler.load_state_dict(state["lr_scheduler"])
    # A scheduler's state does not include the optimizer's current LR, which it set at its last
    # step (DeepSpeed's own checkpoint restores it with the optimizer's param groups).
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr(), strict=True):
        group["lr"] = lr
    engine.global_steps = state["global_steps"]
    engine.global_samples = state["global_samples"]
