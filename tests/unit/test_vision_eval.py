"""Evaluation of a vision-language model (issue 12 item 5): image rows in the prompt rows, their
pixels in the shared prefill (greedy equal to HF ``generate`` given the same pixels), text rows
mixed in, and image data refused for a text-only model before anything starts."""

from __future__ import annotations

import pytest
import torch

from uaclm_dist.config import ConfigError, load_config
from uaclm_dist.evaluate.decoding import decode_greedy_and_samples
from uaclm_dist.evaluate.generation import (
    GenerationSettings,
    example_stats,
    generate_answers,
    image_inputs,
)
from uaclm_dist.evaluate.runner import prompt_rows, select_eval_examples
from uaclm_dist.modeling.families import FAMILIES, load_model

VLM = ("model.family=vision_lm", "model.name_or_path=tiny-llama-mobilenetv2",
       "model.quantization.method=none", "model.dtype=float32", "data.format=easyvqa",
       "data.max_examples=40", "data.max_length=96", "eval.max_examples=6")  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    cfg = load_config("configs/tiny_test.yaml", list(VLM))
    family = FAMILIES.get("vision_lm")
    loaded = load_model(cfg.model, seed=0)
    model = loaded.model.eval()
    with torch.no_grad():  # peaked next-token distributions: greedy gaps dwarf rounding
        model.model.language_model.norm.weight.mul_(40.0)
    rows = prompt_rows(cfg, loaded.tokenizer)
    return cfg, model, loaded.tokenizer, family.image_spec(cfg.model), rows


def test_prompt_rows_carry_the_image_and_its_placeholders(setup):
    _, _, tokenizer, spec, rows = setup
    image_id = tokenizer.convert_tokens_to_ids(spec.image_token)
    assert len(rows) == 6
    for row in rows:
        assert row["image"].endswith(".png")
        assert row["prompt_ids"].count(image_id) == spec.tokens_per_image


def test_shared_prefill_greedy_equals_hf_generate_with_the_same_pixels(setup):
    _, model, tokenizer, spec, rows = setup
    text_row = dict(rows[0], id="text", image=None,
                    prompt_ids=tokenizer("Question: what is 2 plus 2?\nAnswer:")["input_ids"])
    batch = [rows[0], text_row, rows[1]]
    prefill = image_inputs(model, batch, spec)
    assert prefill["pixel_values"].shape == (2, 3, spec.size, spec.size)
    prompts = [r["prompt_ids"] for r in batch]
    common = dict(pad_token_id=tokenizer.pad_token_id, eos_token_ids=[tokenizer.eos_token_id],
                  max_new_tokens=6, prefill_inputs=prefill)  # fmt: skip
    ours = decode_greedy_and_samples(model, prompts, num_samples=2, temperature=0.5, seed=0,
                                     **common)  # fmt: skip
    hf = generate_answers(model, prompts, do_sample=False, num_return=1, temperature=1.0,
                          seed=0, **common)  # fmt: skip
    for (greedy, samples), (reference,) in zip(ours, hf, strict=True):
        assert len(samples) == 2
        assert greedy.token_ids == reference.token_ids
        assert greedy.logprobs == pytest.approx(reference.logprobs, abs=1e-4)
        assert greedy.entropies == pytest.approx(reference.entropies, abs=1e-4)
    # the pixels reach the answer: other pixels (black), other statistics
    swapped = {"pixel_values": torch.zeros_like(prefill["pixel_values"])}
    other = decode_greedy_and_samples(model, prompts, num_samples=2, temperature=0.5, seed=0,
                                      **dict(common, prefill_inputs=swapped))  # fmt: skip
    assert other[0][0].entropies != ours[0][0].entropies


def test_example_stats_decoders_agree_on_image_rows(setup):
    _, model, tokenizer, spec, rows = setup
    out = {}
    for decoder in ("shared_prefill", "hf_generate"):
        settings = GenerationSettings(num_samples=2, temperature=0.3, max_new_tokens=5,
                                      decoder=decoder)  # fmt: skip
        out[decoder] = example_stats(model, tokenizer, rows[:3], settings, spec)
    for a, b in zip(out["shared_prefill"], out["hf_generate"], strict=True):
        assert a.greedy_text == b.greedy_text and len(a.sample_texts) == 2
    with pytest.raises(ValueError, match="carry images but the model takes none"):
        example_stats(model, tokenizer, rows[:1], settings, None)


def test_image_data_with_a_text_only_model_is_refused_before_anything_starts():
    cfg = load_config("configs/tiny_test.yaml", ["data.format=easyvqa", "data.max_examples=8"])
    with pytest.raises(ConfigError, match=r"has an image .* model\.family 'causal_lm' takes "
                                          r"text only"):  # fmt: skip
        select_eval_examples(cfg)
