"""The model-family seam: how a configured model is loaded, adapted and fed.

A :class:`ModelFamily` turns the ``model`` config section into a loaded model and its tokenizer
(or processor), attaches LoRA adapters, and loads a saved adapter back for evaluation. Training,
evaluation, the entropy probe and the benchmarks all go through :func:`load_model`, so the config
-> loader mapping exists once. Model inputs travel as keyword arguments (``input_ids``,
``attention_mask``, and whatever else a family's collator adds, e.g. ``pixel_values``), so the
training loop does not change when a family adds an input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from uaclm_dist.registry import Registry

if TYPE_CHECKING:  # torch / transformers are imported where a model is loaded, not here
    import torch

    from uaclm_dist.config import ModelConfig
    from uaclm_dist.modeling.images import ImageSpec


@dataclass
class LoadedModel:
    """A base model ready for adapters or generation.

    Attributes:
        model: the Hugging Face model (4-bit when the config quantizes it), on ``device``.
        tokenizer: its tokenizer, or its processor for families that take images.
        family: the registry name of the family that loaded it.
    """

    model: torch.nn.Module
    tokenizer: Any
    family: str


class ModelFamily:
    """Base class of a model family; subclasses set ``name`` and implement :meth:`load`."""

    name: ClassVar[str]

    def load(
        self, model_cfg: ModelConfig, device: torch.device | None, *, seed: int
    ) -> LoadedModel:
        """The base model of ``model_cfg`` (quantized as configured) and its tokenizer.

        Args:
            device: where the model lives (None: the CPU, or the current CUDA device for NF4).
            seed: initialisation seed for models built at random (``tiny-llama``); a run's
                training and its evaluation must pass the same one (``optim.seed``).
        """
        raise NotImplementedError

    def load_tokenizer(self, model_cfg: ModelConfig) -> Any:
        """Only the tokenizer / processor (driver-side data preparation)."""
        raise NotImplementedError

    def image_spec(self, model_cfg: ModelConfig) -> ImageSpec | None:
        """How the model takes images (:class:`~uaclm_dist.modeling.images.ImageSpec`), or None
        for a text-only family (image records are then refused before training starts)."""
        return None

    def lora_targets(self, model_cfg: ModelConfig) -> str | list[str]:
        """The ``target_modules`` this family gives peft for ``model.lora.target_modules``."""
        return model_cfg.lora.target_modules

    def attach_lora(self, model: torch.nn.Module, model_cfg: ModelConfig) -> torch.nn.Module:
        """Wrap ``model`` with the configured LoRA adapters, every base weight frozen."""
        from uaclm_dist.modeling.loading import attach_lora, is_quantized_4bit

        lora = model_cfg.lora
        return attach_lora(
            model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
            target_modules=self.lora_targets(model_cfg), quantized=is_quantized_4bit(model),
            gradient_checkpointing=model_cfg.gradient_checkpointing,
        )  # fmt: skip

    def load_adapter(self, model: torch.nn.Module, adapter_dir: str) -> torch.nn.Module:
        """``model`` with a saved adapter (a training run's ``adapter/`` folder) applied."""
        from peft import PeftModel

        return PeftModel.from_pretrained(model, adapter_dir)


#: Model families by name (``model.family`` in a config). Built-ins register in their modules.
FAMILIES: Registry[ModelFamily] = Registry("model family")


def load_model(
    model_cfg: ModelConfig, device: torch.device | None = None, *, seed: int
) -> LoadedModel:
    """Load the base model of ``model_cfg`` through its family (see :meth:`ModelFamily.load`)."""
    return FAMILIES.get(model_cfg.family).load(model_cfg, device, seed=seed)


def load_tokenizer_for(model_cfg: ModelConfig) -> Any:
    """The tokenizer (or processor) of ``model_cfg``'s model, without loading weights."""
    return FAMILIES.get(model_cfg.family).load_tokenizer(model_cfg)


def family_of(model_cfg: ModelConfig) -> ModelFamily:
    return FAMILIES.get(model_cfg.family)
