"""The ``vision_lm`` model family (issue 12 items 1-2): the offline VLM with its real pretrained
MobileNetV2 tower, llava-hf folders, NF4 on the language model only, LoRA anchored on the
language model, the projector trained and saved with the adapter, the tower frozen in eval mode.
"""

from __future__ import annotations

import json

import pytest
import torch
from easy_vqa import get_test_image_paths

from uaclm_dist.config import load_config
from uaclm_dist.modeling.assets import mobilenet_v2_weights
from uaclm_dist.modeling.families import FAMILIES, load_model
from uaclm_dist.modeling.families.vision_lm import LANGUAGE_MODEL, PROJECTOR, TOWER
from uaclm_dist.modeling.images import pixel_values

FP32 = ("model.family=vision_lm", "model.name_or_path=tiny-llama-mobilenetv2",
        "model.dtype=float32", "model.quantization.compute_dtype=float32",
        "model.quantization.storage_dtype=float32")  # fmt: skip


def model_cfg(*overrides: str):
    return load_config("configs/tiny_test.yaml", [*FP32, *overrides]).model


def image_batch(tokenizer, spec, questions=("What shape is this?", "Which colour?")):
    """Right-padded ``input_ids`` / ``attention_mask`` with one image each + ``pixel_values``."""
    paths = get_test_image_paths()
    rows = [tokenizer(spec.placeholder() + "\n" + q)["input_ids"] for q in questions]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "pixel_values": pixel_values([paths[i] for i in range(len(rows))], spec),
    }


@pytest.fixture(scope="module")
def nf4_vlm():
    """The tiny offline VLM in NF4 with LoRA (+ trainable projector) attached."""
    cfg = model_cfg()
    loaded = load_model(cfg, seed=0)
    family = FAMILIES.get("vision_lm")
    return cfg, family.attach_lora(loaded.model, cfg), loaded.tokenizer, family.image_spec(cfg)


def test_the_offline_tower_is_the_packaged_checkpoint_tensor_for_tensor():
    loaded = load_model(model_cfg("model.quantization.method=none"), seed=0)
    tower = getattr(loaded.model.model, TOWER).state_dict()
    source = torch.load(mobilenet_v2_weights(), map_location="cpu", weights_only=True)
    features = [v for k, v in source.items() if not k.startswith("classifier.")]
    assert len(source) == 314 and len(features) == len(tower) == 312
    for (name, got), want in zip(tower.items(), features, strict=True):
        assert torch.equal(got, want.to(got.dtype)), name


def test_nf4_quantizes_the_language_model_only_and_lora_stays_in_it(nf4_vlm):
    _, model, _, _ = nf4_vlm
    quantized = {n for n, p in model.named_parameters() if type(p).__name__ == "Params4bit"}
    assert quantized and all(f".{LANGUAGE_MODEL}." in n for n in quantized)
    lora = [n for n, m in model.named_modules() if hasattr(m, "lora_A")]
    assert lora and all(f".{LANGUAGE_MODEL}." in n for n in lora)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not [n for n in trainable if f".{TOWER}." in n]
    projector = [n for n in trainable if f".{PROJECTOR}." in n]
    assert len(projector) == 4 and all("modules_to_save" in n for n in projector)


def test_a_training_step_runs_and_the_tower_stays_frozen_in_eval_mode(nf4_vlm):
    _, model, tokenizer, spec = nf4_vlm
    batch = image_batch(tokenizer, spec)
    assert (batch["input_ids"] == tokenizer.convert_tokens_to_ids(spec.image_token)).sum() == 32
    tower = getattr(model.base_model.model.model, TOWER)
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    model.train()
    model.zero_grad()
    out = model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert not tower.training  # BatchNorm kept its pretrained running statistics
    assert all(torch.equal(v, before[k]) for k, v in tower.state_dict().items())
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    projector_grads = [g for n, g in grads.items() if f".{PROJECTOR}." in n]
    assert projector_grads and all(g is not None and g.abs().sum() > 0 for g in projector_grads)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
    # the image changes the prediction: the projected features reach the language model
    model.eval()
    with torch.no_grad():
        other = dict(batch, pixel_values=batch["pixel_values"].flip(0))
        assert not torch.allclose(model(**batch).logits, model(**other).logits)


def test_the_saved_adapter_and_projector_reload_to_the_same_logits(nf4_vlm, tmp_path):
    cfg, model, tokenizer, spec = nf4_vlm
    with torch.no_grad():  # move the projector copy and LoRA B off their initial values
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.01 * torch.randn_like(param))
    batch = image_batch(tokenizer, spec)
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path / "adapter")
    family = FAMILIES.get("vision_lm")
    reloaded = family.load_adapter(load_model(cfg, seed=0).model, str(tmp_path / "adapter"))
    reloaded.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, expected)


def test_a_lora_regex_reaching_into_the_tower_is_refused():
    cfg = model_cfg("model.quantization.method=none")
    cfg = cfg.model_copy(update={"lora": cfg.lora.model_copy(update={
        "target_modules": r".*\.(conv_1x1\.convolution|q_proj)"})})  # fmt: skip
    model = load_model(cfg, seed=0).model
    with pytest.raises(ValueError, match="vision tower or projector"):
        FAMILIES.get("vision_lm").attach_lora(model, cfg)


def test_the_projector_is_frozen_when_train_projector_is_off():
    cfg = model_cfg("model.quantization.method=none", "model.vlm.train_projector=false")
    family = FAMILIES.get("vision_lm")
    model = family.attach_lora(load_model(cfg, seed=0).model, cfg)
    assert not [n for n, p in model.named_parameters() if p.requires_grad and PROJECTOR in n]


def test_the_offline_tokenizer_is_smollm2_plus_one_image_token():
    cfg = model_cfg()
    family = FAMILIES.get("vision_lm")
    tokenizer = family.load_tokenizer(cfg)
    spec = family.image_spec(cfg)
    assert len(tokenizer) == 49153 and tokenizer.convert_tokens_to_ids("<image>") == 49152
    assert spec.size == 128 and spec.tokens_per_image == 16
    ids = tokenizer(spec.placeholder() + "Hi")["input_ids"]
    assert ids[:16] == [49152] * 16 and 49152 not in ids[16:]


# ------------------------------------------------------------------------------- llava-hf


@pytest.fixture(scope="module")
def tiny_llava_folder(tmp_path_factory):
    """A random tiny ``LlavaForConditionalGeneration`` saved in llava-hf layout (CLIP tower 28 px,
    patch 14: 4 patch tokens after dropping CLS), with its processor's JSON."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from uaclm_dist.modeling.loading import load_tokenizer

    folder = tmp_path_factory.mktemp("llava") / "tiny-llava-hf"
    tokenizer = load_tokenizer("tiny-llama")
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=28, patch_size=14),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=4,
    )  # fmt: skip
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 28, "width": 28},
        "size": {"shortest_edge": 28}, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]}))  # fmt: skip
    return folder


def test_a_llava_hf_folder_loads_in_nf4_with_an_unquantized_tower(tiny_llava_folder):
    cfg = model_cfg(f"model.name_or_path={tiny_llava_folder}")
    family = FAMILIES.get("vision_lm")
    spec = family.image_spec(cfg)
    assert (spec.size, spec.tokens_per_image) == (28, 4)
    assert spec.mean[0] == pytest.approx(0.48145466)
    loaded = load_model(cfg, seed=0)
    assert type(loaded.model).__name__ == "LlavaForConditionalGeneration"
    quantized = {n for n, p in loaded.model.named_parameters() if type(p).__name__ == "Params4bit"}
    assert quantized and all(f".{LANGUAGE_MODEL}." in n for n in quantized)
    model = family.attach_lora(loaded.model, cfg)
    assert not [n for n, p in model.named_parameters() if p.requires_grad and PROJECTOR in n]
    batch = image_batch(loaded.tokenizer, spec)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()


def test_a_hub_id_finds_its_image_spec_in_the_local_hub_cache(tiny_llava_folder, tmp_path,
                                                              monkeypatch):  # fmt: skip
    """The paper recipes name ``llava-hf/llava-1.5-7b-hf``: its spec comes from the cached
    snapshot (no download); an id that is not cached is refused naming the missing file."""
    import shutil

    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--llava-hf--tiny-llava-hf"
    shutil.copytree(tiny_llava_folder, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    family = FAMILIES.get("vision_lm")
    spec = family.image_spec(model_cfg("model.name_or_path=llava-hf/tiny-llava-hf"))
    assert (spec.size, spec.tokens_per_image) == (28, 4)
    with pytest.raises(ValueError, match=r"llava-hf/not-cached is not a llava-hf checkpoint "
                                         r"folder: .*preprocessor_config\.json"):  # fmt: skip
        family.image_spec(model_cfg("model.name_or_path=llava-hf/not-cached"))
