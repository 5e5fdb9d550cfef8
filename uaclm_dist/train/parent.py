"""A run that starts from a trained adapter (``model.init_adapter``): its parent.

Two-stage training (e.g. ``clm`` to teach the answer format, then ``ua_clm`` to calibrate a
model that already answers, as the paper's setting has it) starts a new run from an existing
LoRA adapter (and a VLM's trained projector): the adapter's weights become the starting point,
the optimizer and schedule start fresh, any objective may follow.

``model.init_adapter`` is a run folder of this project (its ``adapter/``, ``run_info.json`` and
``split_ids.json``) or a bare adapter folder (``adapter_config.json`` +
``adapter_model.safetensors``) from elsewhere. On the driver, before Ray starts (exit 2 on any
problem):

- the adapter's LoRA rank, alpha and target modules must equal the config's (naming both);
- for a parent run of this project, none of its training questions may be in this run's test
  split (the child would be evaluated on what its parent trained on); an adapter from elsewhere
  has no recorded split: accepted, recorded as ``"split": "unknown"``, and evaluations of the
  child say so;
- ``run_info.json`` records the parent (path, run id, config hash, split), and evaluation
  follows the chain (:func:`ancestry`) to hold every ancestor's training questions out too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uaclm_dist.config import ConfigError
from uaclm_dist.data.records import DataError
from uaclm_dist.data.run_splits import RunSplit, find_run_split

KEY = "model.init_adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class Parent:
    """Where a run starts from: the adapter folder and, for a run of this project, its folder
    and ``run_info.json``."""

    adapter_dir: Path
    run_dir: Path | None
    run_info: dict | None

    def split(self) -> RunSplit | None:
        """The parent run's ``split_ids.json`` (read and checked as evaluation reads it; None
        for an adapter from elsewhere)."""
        if self.run_dir is None:
            return None
        try:
            return find_run_split("parent", self.adapter_dir)
        except DataError as exc:
            raise ConfigError(f"{KEY}: {exc}") from None

    @property
    def split_known(self) -> bool:
        return self.split() is not None

    def train_ids(self) -> frozenset[str]:
        """The parent run's training ids (empty when unknown)."""
        split = self.split()
        return split.train if split is not None else frozenset()

    def record(self) -> dict[str, Any]:
        """What the child's ``run_info.json`` keeps under ``"parent"``."""
        info = self.run_info or {}
        config = info.get("config")
        return {
            "adapter": str(self.adapter_dir),
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "run_id": info.get("run_id"),
            "objective": (config or {}).get("objective", {}).get("name"),
            "config_hash": config_hash(config) if config else None,
            "split": "recorded" if self.split_known else "unknown",
        }


def config_hash(config: dict) -> str:
    """sha256 (first 16 hex digits) of a config's canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def locate_parent(init_adapter: str) -> Parent:
    """The parent of ``model.init_adapter`` (a run folder or an adapter folder)."""
    folder = Path(init_adapter).expanduser().resolve()
    if (folder / "adapter" / ADAPTER_CONFIG).is_file():
        adapter, run_dir = folder / "adapter", folder
    elif (folder / ADAPTER_CONFIG).is_file():
        adapter = folder
        run_dir = folder.parent if (folder.parent / "run_info.json").is_file() else None
    else:
        raise ConfigError(f"{KEY} '{init_adapter}': neither a run folder with adapter/ nor an "
                          f"adapter folder ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS}) is there")
    if not (adapter / ADAPTER_WEIGHTS).is_file():
        raise ConfigError(f"{KEY} '{init_adapter}': {adapter / ADAPTER_WEIGHTS} is missing")
    info = None
    if run_dir is not None:
        try:
            info = json.loads((run_dir / "run_info.json").read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{KEY} '{init_adapter}': {run_dir / 'run_info.json'} is not "
                              f"readable ({exc})") from None
    return Parent(adapter, run_dir, info)


def check_lora_shape(parent: Parent, rank: int, alpha: float,
                     target_modules: str | list[str]) -> None:  # fmt: skip
    """:class:`ConfigError` when the parent adapter's LoRA differs from the config's (the
    ``target_modules`` the family passes to peft)."""
    saved = json.loads((parent.adapter_dir / ADAPTER_CONFIG).read_text())
    saved_targets = saved.get("target_modules")
    mine = target_modules if isinstance(target_modules, str) else sorted(target_modules)
    theirs = saved_targets if isinstance(saved_targets, str) else sorted(saved_targets or [])
    problems = []
    if saved.get("r") != rank:
        problems.append(f"rank {saved.get('r')} (config model.lora.rank {rank})")
    if saved.get("lora_alpha") != alpha:
        problems.append(f"alpha {saved.get('lora_alpha')} (config model.lora.alpha {alpha:g})")
    if theirs != mine:
        problems.append(f"target modules {theirs} (config model.lora.target_modules {mine})")
    if problems:
        raise ConfigError(f"{KEY} {parent.adapter_dir}: the adapter's LoRA differs from this "
                          f"run's: {'; '.join(problems)}; set model.lora to the adapter's")


def check_parent_split(parent: Parent, test_ids: list[str]) -> None:
    """:class:`ConfigError` when the parent run trained on questions in this run's test split
    (the child's evaluation would score what its parent learned)."""
    trained = parent.train_ids()
    overlap = [i for i in test_ids if i in trained]
    if overlap:
        shown = ", ".join(overlap[:5]) + (", ..." if len(overlap) > 5 else "")
        raise ConfigError(
            f"{KEY} {parent.run_dir}: {len(overlap)} of this run's {len(test_ids)} test "
            f"questions are in the parent run's training split (e.g. {shown}); train with the "
            "parent's data settings (data.split_seed, data.train_fraction, data.max_examples, "
            "data.format/paths) so that its training questions stay out of the test split"
        )


def ancestry(run_dir: str | Path) -> list[dict[str, Any]]:
    """The parent records of a run, nearest first (``[]`` for a run that started from the base
    model or a folder without ``run_info.json``). A recorded parent folder that is gone (or
    holds no readable ``run_info.json``) ends the chain with ``"split": "missing"``: neither its
    training questions nor its own parents can be known."""
    chain, seen = [], set()
    folder = Path(run_dir)
    while True:
        try:
            parent = json.loads((folder / "run_info.json").read_text()).get("parent")
        except (OSError, ValueError):
            if chain:
                chain[-1] = {**chain[-1], "split": "missing"}
            return chain
        if not parent or parent.get("run_dir") in seen:
            return chain
        chain.append(parent)
        if not parent.get("run_dir"):
            return chain
        seen.add(parent["run_dir"])
        folder = Path(parent["run_dir"])


def load_parent_weights(peft_model, adapter_dir: str | Path) -> None:
    """Copy the parent adapter's weights (LoRA A/B, a trained projector) into ``peft_model``,
    whose LoRA layers the config created; every saved tensor must land, every LoRA weight of the
    model must be given."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS))
    result = set_peft_model_state_dict(peft_model, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if "lora_" in k]
    if unexpected or missing:
        raise RuntimeError(f"{KEY} {adapter_dir}: the adapter does not fit the model (unexpected "
                           f"{unexpected[:3]}, missing {missing[:3]})")
