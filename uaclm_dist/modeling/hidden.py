"""Final hidden states and the LM-head weight of HF causal LMs, without full-vocabulary logits.

The fused / vocab-sharded losses take ``hidden [N, H]`` and the head ``weight [V, H]`` instead of
``logits [N, V]``. For Llama-like models (transformers 5.24 ``LlamaModel.forward`` applies the
final RMSNorm before returning ``last_hidden_state``) ``logits == hidden @ weight.T``.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel


def unwrap_model(model: torch.nn.Module) -> PreTrainedModel:
    """The HF ``*ForCausalLM`` inside DeepSpeed / DDP wrappers (``.module``) and peft models.

    For a peft model this is ``get_base_model()``: the HF model with the LoRA layers injected, so
    running it runs the adapters.
    """
    while not isinstance(model, PreTrainedModel):
        if hasattr(model, "get_base_model"):  # peft PeftModel
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), torch.nn.Module):  # DeepSpeed, DDP
            model = model.module
        else:
            raise TypeError(f"cannot find a transformers PreTrainedModel inside {type(model)}")
    return model


def backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack without the LM head (``LlamaForCausalLM.model`` for Llama)."""
    base = unwrap_model(model)
    inner = getattr(base, base.base_model_prefix, None)
    if inner is None or inner is base:
        raise TypeError(f"{type(base).__name__} has no separate backbone below its LM head")
    return inner


def final_hidden_states(model: torch.nn.Module, **inputs: torch.Tensor) -> torch.Tensor:
    """Post-final-norm hidden states of a causal LM, skipping the LM head.

    Args:
        model: an HF causal LM (Llama-like), plain, 4-bit, peft-wrapped or inside a DeepSpeed /
            DDP wrapper (the wrapper's own ``forward`` is bypassed; ZeRO-3 fetches parameters in
            per-module hooks, which still fire).
        inputs: the backbone's keyword inputs: ``input_ids [batch, seq]``, ``attention_mask
            [batch, seq]`` (1 = real token, 0 = padding), optionally ``position_ids`` (default
            ``0..seq-1``) and whatever else the model family feeds (e.g. ``pixel_values``).

    Returns:
        ``[batch, seq, hidden]`` in the model's compute dtype; ``hidden[:, t]`` predicts token
        ``t + 1`` (shift labels with ``labels[:, 1:]`` against ``hidden[:, :-1]``).
    """
    outputs = backbone(model)(**inputs, use_cache=False)
    return outputs.last_hidden_state


def image_features(vlm: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected features ``[n_images * tokens_per_image, H]`` of a LLaVA-style ``*Model``
    (``get_image_features``: a tensor ``[n, tokens, H]`` for FastVLM, a list of ``[tokens, H]``
    for LLaVA)."""
    features = vlm.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
    if isinstance(features, (list, tuple)):
        return torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
    return features.reshape(-1, features.shape[-1])


def final_hidden_states_with_images(
    model: torch.nn.Module, *, image_size: int, input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None = None, **inputs: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """:func:`final_hidden_states` of a LLaVA-style vision-language model, computed so that
    every micro-batch runs the same modules in the same order: vision tower and projector
    first, then the token embeddings, then the language model.

    Under ZeRO-3 each module's parameters are gathered by a collective as the module runs, so
    all ranks must run the same modules in the same order (DeepSpeed issue 7170). The model's
    own forward runs the tower only when a batch has images, and after the embeddings; here a
    batch without images runs one black ``image_size`` image whose features enter at zero
    weight (``+ 0 * sum``), which changes no value and no gradient.

    Args:
        image_size: side of the tower's input images (the blank image's size).
        input_ids: ``[B, T]`` with ``config.image_token_id`` at each image placeholder.
        pixel_values: ``[n_images, 3, S, S]`` in the tower's dtype, one image per row that has
            placeholders, in row order; None for a batch without images.
        inputs: ``attention_mask`` and the rest of the language model's keyword inputs.

    Returns:
        ``[B, T, H]`` equal to the model's own forward (tested).
    """
    vlm = backbone(model)
    embed = vlm.get_input_embeddings()
    images = pixel_values
    if images is None:
        images = torch.zeros(1, 3, image_size, image_size, dtype=embed.weight.dtype,
                             device=input_ids.device)  # fmt: skip
    features = image_features(vlm, images)  # tower + projector before the embeddings: always
    embeds = embed(input_ids)
    if pixel_values is None:
        return vlm(inputs_embeds=embeds + 0.0 * features.sum().to(embeds.dtype),
                   use_cache=False, **inputs).last_hidden_state  # fmt: skip
    slots = input_ids == vlm.config.image_token_id
    if int(slots.sum()) != features.shape[0]:
        raise ValueError(f"{int(slots.sum())} image tokens in the batch but "
                         f"{features.shape[0]} image feature vectors")  # fmt: skip
    embeds = embeds.masked_scatter(slots.unsqueeze(-1), features.to(embeds.dtype))
    return vlm(inputs_embeds=embeds, use_cache=False, **inputs).last_hidden_state


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The model's output-embedding module (``lm_head``), peft / wrapper aware."""
    head = unwrap_model(model).get_output_embeddings()
    if head is None:
        raise TypeError(f"{type(unwrap_model(model)).__name__} has no output embeddings (lm_head)")
    return head


def lm_head_weight(model: torch.nn.Module) -> torch.Tensor:
    """The LM-head weight ``[vocab, hidden]``; ``logits = hidden @ weight.T``.

    - Tied heads (SmolLM2) return the parameter shared with the input embeddings.
    - bitsandbytes quantization keeps the head unquantized by default (transformers skips the
      output embeddings); a 4-bit head would be dequantized here.
    - Under ZeRO-3 the parameter is partitioned (``numel() == 0``); gather it with
      ``deepspeed.zero.GatheredParameters`` before reading it (``ShardedLMHead.from_model`` does).

    Raises:
        ValueError: the head carries LoRA adapters (their delta would be ignored), or the head was
            replaced by :func:`uaclm_dist.modeling.sharded_head.replace_lm_head`.
    """
    head = output_head(model)
    if hasattr(head, "base_layer"):
        raise ValueError("LoRA on lm_head is not supported: the loss reads the frozen head weight")
    weight = getattr(head, "weight", None)
    if weight is None or getattr(head, "is_removed_lm_head", False):
        raise ValueError(
            f"the lm_head of this model ({type(head).__name__}) holds no weight; was it replaced "
            "by replace_lm_head()? Use the ShardedLMHead instead."
        )
    if type(weight).__name__ == "Params4bit":
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state)
    return weight
