"""Images -> the ``pixel_values`` a vision-language model takes, and where its image tokens go.

An :class:`ImageSpec` says what one model family member wants: the square input side, the
per-channel normalisation, the placeholder token and how many of them stand for one image (the
number of feature vectors its vision tower + projector produce). Preprocessing is the CLIP /
LLaVA-1.5 recipe, written out with PIL and numpy (transformers' image processors want torchvision,
whose PyPI wheel does not import with the CPU torch build):

    RGB -> resize the shortest edge to ``size`` (bicubic) -> centre crop ``size x size``
        -> scale to [0, 1] -> (x - mean) / std  -> float32 [3, size, size]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPEC_FILE = "uaclm_vision.json"


class ImageFileError(ValueError):
    """An image file is missing or cannot be decoded; the message names the file."""


@dataclass(frozen=True)
class ImageSpec:
    """How a vision-language model takes its images.

    Attributes:
        size: side of the square model input, in pixels.
        mean, std: per-channel (R, G, B) normalisation of pixel values scaled to [0, 1].
        image_token: the placeholder token's text (one token of the tokenizer).
        tokens_per_image: placeholders per image = feature vectors the tower + projector give.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_token: str
    tokens_per_image: int

    def __post_init__(self) -> None:
        if self.size < 1 or self.tokens_per_image < 1:
            raise ValueError(f"ImageSpec needs size >= 1 and tokens_per_image >= 1: {self}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"ImageSpec mean/std must be 3 values, std > 0: {self}")

    def placeholder(self) -> str:
        """The prompt text standing for one image: ``tokens_per_image`` placeholder tokens."""
        return self.image_token * self.tokens_per_image

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / SPEC_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> ImageSpec:
        raw = json.loads((Path(folder) / SPEC_FILE).read_text())
        return cls(size=int(raw["size"]), mean=tuple(raw["mean"]), std=tuple(raw["std"]),
                   image_token=raw["image_token"], tokens_per_image=int(raw["tokens_per_image"]))


def spec_from_llava_folder(folder: str | Path, image_token: str) -> ImageSpec:
    """The :class:`ImageSpec` of a llava-hf checkpoint folder (``preprocessor_config.json`` for
    crop size and normalisation, ``config.json`` for ``image_seq_length``; 336 px and 576 image
    tokens for llava-1.5-7b-hf / 13b-hf)."""
    folder = Path(folder)
    try:
        pre = json.loads((folder / "preprocessor_config.json").read_text())
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{folder} is not a llava-hf checkpoint folder: {exc}") from exc
    crop = pre.get("crop_size") or pre.get("size")
    size = crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop
    tokens = config.get("image_seq_length")
    if tokens is None:  # older llava-hf configs: one token per vision patch
        vision = config["vision_config"]
        tokens = (vision["image_size"] // vision["patch_size"]) ** 2
    return ImageSpec(size=int(size), mean=tuple(pre["image_mean"]), std=tuple(pre["image_std"]),
                     image_token=image_token, tokens_per_image=int(tokens))


def open_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` as RGB.

    Raises:
        ImageFileError: missing, unreadable or not an image (the message names the file).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as exc:
        raise ImageFileError(f"image file {path} does not exist") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageFileError(f"image file {path} cannot be read as an image: {exc}") from exc


def preprocess(image: Image.Image, spec: ImageSpec) -> torch.Tensor:
    """One RGB image -> ``float32 [3, size, size]`` (see the module docstring)."""
    import numpy as np
    import torch
    from PIL import Image

    width, height = image.size
    scale = spec.size / min(width, height)
    new_size = (max(spec.size, round(width * scale)), max(spec.size, round(height * scale)))
    resized = image.resize(new_size, Image.Resampling.BICUBIC)
    left = (resized.width - spec.size) // 2
    top = (resized.height - spec.size) // 2
    crop = resized.crop((left, top, left + spec.size, top + spec.size))
    pixels = np.asarray(crop, dtype=np.float32) / 255.0
    pixels = (pixels - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def pixel_values(paths: Sequence[str | Path], spec: ImageSpec) -> torch.Tensor:
    """``float32 [len(paths), 3, size, size]`` for image files, in order."""
    import torch

    if not paths:
        return torch.empty((0, 3, spec.size, spec.size), dtype=torch.float32)
    return torch.stack([preprocess(open_rgb(p), spec) for p in paths])
