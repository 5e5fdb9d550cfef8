"""Image preprocessing (``uaclm_dist.modeling.images``): CLIP / LLaVA-1.5 recipe with PIL and
numpy, checked on images whose expected pixels are known, and file errors that name the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from uaclm_dist.modeling.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFileError,
    ImageSpec,
    pixel_values,
    spec_from_llava_folder,
)

SPEC = ImageSpec(size=8, mean=IMAGENET_MEAN, std=IMAGENET_STD, image_token="<image>",
                 tokens_per_image=4)  # fmt: skip


def test_a_solid_image_becomes_its_normalised_colour(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (20, 12), (255, 0, 51)).save(path)
    values = pixel_values([path], SPEC)
    assert values.shape == (1, 3, 8, 8) and values.dtype == torch.float32
    colour = zip((255, 0, 51), IMAGENET_MEAN, IMAGENET_STD, strict=True)
    expected = [(c / 255 - m) / s for c, m, s in colour]
    for channel, value in enumerate(expected):
        assert torch.allclose(values[0, channel], torch.full((8, 8), value), atol=1e-5)


def test_the_shortest_edge_is_resized_and_the_centre_cropped(tmp_path):
    # 3 vertical bands, 24 x 8 px: the shortest edge is already 8 (no resize), then
    # the centre 8 columns are cropped: only the middle (green) band remains.
    pixels = np.zeros((8, 24, 3), np.uint8)
    pixels[:, :8, 0] = 255
    pixels[:, 8:16, 1] = 255
    pixels[:, 16:, 2] = 255
    path = tmp_path / "bands.png"
    Image.fromarray(pixels).save(path)
    values = pixel_values([path], SPEC)[0]
    green = (1.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert torch.allclose(values[1], torch.full((8, 8), green), atol=1e-5)
    assert torch.allclose(values[0], torch.full((8, 8), -IMAGENET_MEAN[0] / IMAGENET_STD[0]),
                          atol=1e-5)  # fmt: skip


def test_grey_and_rgba_images_become_rgb(tmp_path):
    Image.new("L", (8, 8), 128).save(tmp_path / "grey.png")
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    values = pixel_values([tmp_path / "grey.png", tmp_path / "rgba.png"], SPEC)
    assert values.shape == (2, 3, 8, 8)
    assert pixel_values([], SPEC).shape == (0, 3, 8, 8)


def test_missing_and_unreadable_images_name_the_file(tmp_path):
    with pytest.raises(ImageFileError, match="nowhere.png does not exist"):
        pixel_values([tmp_path / "nowhere.png"], SPEC)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageFileError, match="bad.png cannot be read as an image"):
        pixel_values([bad], SPEC)


def test_a_spec_round_trips_through_its_folder_file(tmp_path):
    SPEC.save(tmp_path)
    assert ImageSpec.load(tmp_path) == SPEC
    assert SPEC.placeholder() == "<image>" * 4


def test_the_llava_hf_folder_spec_is_336_px_and_576_tokens(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": 336, "width": 336}, "size": {"shortest_edge": 336},
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]}))  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llava", "vision_config": {"image_size": 336, "patch_size": 14}}))
    spec = spec_from_llava_folder(tmp_path, "<image>")
    assert (spec.size, spec.tokens_per_image) == (336, 576)


def test_bad_specs_are_refused():
    with pytest.raises(ValueError):
        ImageSpec(size=0, mean=IMAGENET_MEAN, std=IMAGENET_STD, image_token="<image>",
                  tokens_per_image=1)  # fmt: skip
    with pytest.raises(ValueError):
        ImageSpec(size=8, mean=IMAGENET_MEAN, std=(1.0, 0.0, 1.0), image_token="<image>",
                  tokens_per_image=1)  # fmt: skip
