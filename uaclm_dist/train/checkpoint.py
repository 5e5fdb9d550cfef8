"""Checkpoint layout: DeepSpeed state of every rank + peft adapter + run state.

One checkpoint directory (what every rank writes into its own local folder before
``ray.train.report`` merges them)::

    ds/                    DeepSpeed engine state (model, optimizer, scheduler), tag "ds",
                           one optimizer shard per rank (ZeRO) + the "latest" file
    adapter/               rank 0: LoRA adapter in peft format (PeftModel.from_pretrained)
    run_state.json         rank 0: next step, total steps, epoch, wandb run id
    rng/rank{r}.pt         every rank: python / numpy / torch RNG states
    portable/trainable_state.pt   rank 0: the same trainable state, independent of the world
                           size (:mod:`uaclm_dist.train.portable_state`)
    manifest/rank{r}.json  every rank, written last: its files, sizes, sha256
                           (:mod:`uaclm_dist.train.manifest`)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

# Reading a checkpoint's state needs no torch (the sweep runner checks checkpoints too).
from uaclm_dist.train.run_state import (  # noqa: F401 (re-exported)
    RUN_STATE,
    is_complete,
    latest_checkpoint,
    read_run_state,
    write_run_state,
)

DS_TAG = "ds"


def rng_state() -> dict:
    """python / numpy / torch (/ CUDA) RNG states, in types ``torch.load(weights_only=True)``
    accepts (tensors, tuples, ints, floats, str): a checkpoint file is never unpickled as code."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos,
                         has_gauss, cached))  # fmt: skip
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def trainable_state_only(module: torch.nn.Module) -> Iterator[None]:
    """While active, ``module.state_dict()`` holds its trainable parameters only.

    DeepSpeed's ``exclude_frozen_parameters`` drops the names of frozen *parameters*, but a
    4-bit layer also writes its quantization state (``.absmax``, ``.quant_map``,
    ``.nested_absmax``, ``.quant_state.bitsandbytes__nf4``) as extra state, which every rank
    would then write into every checkpoint. The frozen base is reloaded from the model source.
    """
    keep = {name for name, p in module.named_parameters() if p.requires_grad}

    def drop_frozen(_module, state_dict, prefix, _metadata):
        for key in [k for k in state_dict if k[len(prefix):] not in keep]:
            del state_dict[key]

    handle = module.register_state_dict_post_hook(drop_frozen)
    try:
        yield
    finally:
        handle.remove()


def checkpointed_module_keys(storage: Path) -> set[str]:
    """The module-state keys in every DeepSpeed model-states file under ``storage`` (a run's
    ``ray/train`` or one checkpoint; ZeRO-2 ``mp_rank_00_model_states.pt``, ZeRO-3
    ``zero_pp_rank_R_..._model_states.pt``): what :func:`trainable_state_only` let through."""
    keys: set[str] = set()
    for path in sorted(Path(storage).rglob("*model_states.pt")):
        keys |= set(torch.load(path, map_location="cpu", weights_only=False)["module"])
    return keys


def save_rank_files(directory: Path, engine, rank: int) -> None:
    """Collective: every rank writes its DeepSpeed shard (trainable state only) and RNG state
    under ``directory``."""
    with trainable_state_only(engine.module):
        engine.save_checkpoint(str(directory / "ds"), tag=DS_TAG, exclude_frozen_parameters=True)
    (directory / "rng").mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), directory / "rng" / f"rank{rank}.pt")


def load_rank_files(directory: Path, engine, rank: int) -> None:
    """Restore the DeepSpeed engine (model, optimizer, LR schedule) and this rank's RNG."""
    load_path, _ = engine.load_checkpoint(
        str(Path(directory) / "ds"), tag=DS_TAG, load_module_strict=False
    )
    if load_path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint under {directory}/ds")
    load_rng_if_present(directory, rank)


def load_rng_if_present(directory: Path, rank: int) -> bool:
    """This rank's RNG state, if the checkpoint has one (a rank beyond its world size has
    none and keeps its seeded streams)."""
    rng_file = Path(directory) / "rng" / f"rank{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=True))
    return rng_file.exists()
