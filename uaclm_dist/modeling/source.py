"""Where a model comes from, decided on the driver before any Ray or DeepSpeed process starts.

``model.name_or_path`` is one of: a packaged alias (:data:`PACKAGED_ALIASES`, built from pip
packages), a local folder, or a Hugging Face hub id whose snapshot is already in the local cache,
found where ``from_pretrained`` looks (``huggingface_hub.constants``' order: ``HF_HUB_CACHE``,
else ``HUGGINGFACE_HUB_CACHE``, else ``HF_HOME/hub``, ``HF_HOME`` defaulting to
``$XDG_CACHE_HOME/huggingface`` or ``~/.cache/huggingface``; transformers 5 no longer reads
``TRANSFORMERS_CACHE``). Nothing is downloaded at run time: a name that is none of these is bad
input, said within seconds and naming where it looked, instead of a minute of hub retries and a
traceback from every worker. The cache variables reach the workers through
:data:`uaclm_dist.cluster.PASSTHROUGH_ENV`, so they look where the driver looked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from uaclm_dist.config.errors import ConfigError
from uaclm_dist.config.loading import MODEL_ALIASES

#: Names the model families build from packaged files (no hub, no folder needed).
#: (literal, like MODEL_ALIASES; a unit test checks it against the vision family's aliases)
VISION_ALIASES = ("smollm2-mobilenetv2", "tiny-llama-mobilenetv2")
PACKAGED_ALIASES = (*MODEL_ALIASES, *VISION_ALIASES)

#: The environment variables that say where the Hugging Face hub cache is, in the order
#: huggingface_hub reads them.
CACHE_ENV = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")


@dataclass(frozen=True)
class ModelSource:
    """``kind``: ``alias``, ``folder`` or ``hub-cache``; ``where``: the folder or snapshot."""

    name: str
    kind: str
    where: str = ""


def hub_cache_dir() -> tuple[Path, str]:
    """``(folder, what set it)``: the hub cache ``from_pretrained`` reads, resolved from the
    environment now, as a worker will (``huggingface_hub.constants`` froze it when first
    imported in this process)."""

    def env(name: str) -> str | None:
        value = os.environ.get(name)
        return os.path.expanduser(os.path.expandvars(value)) if value else None

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env(name):
            return Path(env(name)), name
    if env("HF_HOME"):
        return Path(env("HF_HOME")) / "hub", "HF_HOME/hub"
    base = env("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return (Path(base) / "huggingface" / "hub",
            "the default cache; set HF_HOME or HF_HUB_CACHE for another")


def locate_model(name_or_path: str, key: str = "model.name_or_path") -> ModelSource:
    """Where ``name_or_path`` loads from, or :class:`ConfigError` (exit 2) naming ``key`` and
    every place looked in. Reads the file system only."""
    if name_or_path in PACKAGED_ALIASES:
        return ModelSource(name_or_path, "alias")
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return ModelSource(name_or_path, "folder", str(folder.resolve()))
    looked = []
    if _hub_id_shaped(name_or_path):
        from huggingface_hub import try_to_load_from_cache

        cache, origin = hub_cache_dir()
        found = try_to_load_from_cache(name_or_path, "config.json", cache_dir=cache)
        if isinstance(found, str):
            return ModelSource(name_or_path, "hub-cache", str(Path(found).parent))
        looked.append(f"{cache} ({origin})")
    where = f"; not in the Hugging Face cache: {', '.join(looked)}" if looked else ""
    raise ConfigError(
        f"{key} '{name_or_path}' is not a packaged model ({', '.join(PACKAGED_ALIASES)}), not "
        f"a local folder{where}. uaclm downloads nothing at run time: download the model "
        f"beforehand (huggingface-cli download {name_or_path}) into that cache, set HF_HOME / "
        f"HF_HUB_CACHE to the cache that holds it, or give a local folder"
    )


def _hub_id_shaped(name: str) -> bool:
    """``org/name`` or ``name`` as the hub accepts them (no path separators beyond one '/')."""
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(p and not p.startswith(".") for p in parts)


def check_attention_kernel(attn_implementation: str) -> None:
    """:class:`ConfigError` when ``model.attn_implementation`` names a kernel whose package is
    not installed here (the driver's environment is the workers')."""
    import importlib.util

    missing = importlib.util.find_spec("flash_attn") is None
    if attn_implementation == "flash_attention_2" and missing:
        raise ConfigError(
            "model.attn_implementation 'flash_attention_2' needs the flash-attn package, which is "
            "not installed in this environment (pip install flash-attn, built for your CUDA "
            "torch); or use 'sdpa', PyTorch's own flash / memory-efficient attention"
        )
