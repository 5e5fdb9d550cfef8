"""``causal_lm``: any Hugging Face causal LM (Llama-2, Gemma, SmolLM2, a tiny random Llama).

The one place where the ``model`` config section becomes loader arguments: dtype, NF4 options,
the ``tiny-llama`` shape and its init seed, the device map.
"""

from __future__ import annotations

from uaclm_dist.modeling.families.base import FAMILIES, LoadedModel, ModelFamily


def causal_lm_kwargs(model_cfg, device, seed: int) -> dict:
    """Keyword arguments of :func:`~uaclm_dist.modeling.loading.load_causal_lm` for a config."""
    import torch

    from uaclm_dist.modeling.loading import TINY_LLAMA

    q = model_cfg.quantization
    is_tiny = model_cfg.name_or_path == TINY_LLAMA
    return dict(
        dtype=getattr(torch, model_cfg.dtype),
        quantization=None if q.method == "none" else q.method,
        double_quant=q.double_quant,
        compute_dtype=getattr(torch, q.compute_dtype),
        storage_dtype=getattr(torch, q.storage_dtype),
        tiny_kwargs=model_cfg.tiny.model_dump(exclude={"tokenizer"}) if is_tiny else None,
        seed=seed,
        device_map={"": device} if device is not None and device.type == "cuda" else None,
        trust_remote_code=model_cfg.trust_remote_code,
        attn_implementation=model_cfg.attn_implementation,
    )


class CausalLM(ModelFamily):
    name = "causal_lm"

    def load(self, model_cfg, device=None, *, seed):
        from uaclm_dist.modeling.loading import load_causal_lm

        model = load_causal_lm(model_cfg.name_or_path, **causal_lm_kwargs(model_cfg, device, seed))
        return LoadedModel(model=model, tokenizer=self.load_tokenizer(model_cfg), family=self.name)

    def load_tokenizer(self, model_cfg):
        from uaclm_dist.modeling.loading import load_tokenizer

        return load_tokenizer(model_cfg.name_or_path, trust_remote_code=model_cfg.trust_remote_code)


FAMILIES.register(CausalLM())
