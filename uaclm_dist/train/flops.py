"""Training FLOPs of a (Q)LoRA causal LM, per token and per step, for MFU.

A weight that is frozen still does its forward GEMM and the GEMM that carries the gradient to
its input, but no weight-gradient GEMM; a trainable weight does all three. Each GEMM costs
2 FLOPs per weight per token, so one training token costs::

    4 * N_frozen + 6 * N_trainable + 12 * L * H * d_head * T

``N_frozen`` / ``N_trainable``: weights of the matrix multiplies a token goes through (every
linear layer of the language model and the LM head; LoRA's A and B are trainable; embedding
*lookups* cost nothing and are not counted; a head tied to the embeddings is counted as the head
GEMM it is). ``12 L H d_head T`` is the attention-score term of PaLM (appendix B) and nanoGPT's
``estimate_mfu``: ``Q K^T`` and ``A V`` cost ``2 * 2 * H * d_head * T`` FLOPs per token and layer
forward, three times that with the backward (both operands are activations, so the backward is
the full two GEMMs whatever is frozen); ``T`` is the length of the token's sequence (the
convention counts the full square, not the causal half). Hugging Face's ``6 N`` per token
overstates a LoRA run's work by about 1.5x. Bias additions, norms, activations and softmax are
not counted (they are not GEMMs), nor a vision tower's or projector's work (per image, not per
token). A mixture-of-experts model would be overcounted (every expert counted per token).

Useful work only: FLOPs are counted for the real (unpadded) tokens of each sequence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

__all__ = ["AttentionShape", "MatmulParameters", "attention_shape", "flops_per_token",
           "matmul_parameters", "sequence_flops", "EXCLUDED_MODULES"]  # fmt: skip

#: modules whose linear layers work per image, not per token (vision-language models)
EXCLUDED_MODULES = ("vision_tower", "multi_modal_projector")


@dataclass(frozen=True)
class AttentionShape:
    """``layers`` (L), ``heads`` (H, query heads) and ``head_dim`` (d_head) of the LM."""

    layers: int
    heads: int
    head_dim: int


@dataclass(frozen=True)
class MatmulParameters:
    """Weights of the GEMMs one token goes through, split by whether they are trained.

    Attributes:
        frozen: frozen weights (base linear layers, a frozen LM head), logical count (a 4-bit
            weight counts as its unpacked ``out x in``; a ZeRO-3 partitioned one in full).
        trainable: trained weights (LoRA A and B, a trained head).
    """

    frozen: int
    trainable: int


def attention_shape(config) -> AttentionShape:
    """From a Hugging Face config (a vision-language model's ``text_config`` is used)."""
    config = getattr(config, "text_config", None) or config
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return AttentionShape(int(config.num_hidden_layers), heads, int(head_dim))


def _is_excluded(name: str, exclude: Iterable[str]) -> bool:
    parts = name.split(".")
    return any(part in parts for part in exclude)


def matmul_parameters(
    model: torch.nn.Module,
    head_shape: tuple[int, int] | None = None,
    head_trainable: bool = False,
    exclude: Iterable[str] = EXCLUDED_MODULES,
) -> MatmulParameters:
    """Count the linear-layer weights of ``model`` by whether they train.

    Args:
        model: the (peft-wrapped, possibly 4-bit or ZeRO-3) model. Every ``torch.nn.Linear``
            (and GPT-2's ``Conv1D``) counts ``in_features * out_features`` (peft's LoRA
            layer wraps a base Linear and holds its A and B as Linears: each counted once).
            ``lm_head`` may have been removed
            (:func:`~uaclm_dist.modeling.sharded_head.replace_lm_head`).
        head_shape: ``(vocab, hidden)`` of an LM head kept outside ``model`` (the sharded
            head: pass the *full* vocabulary, every rank computes its share); None: none.
        head_trainable: whether that head trains.
        exclude: module-name parts whose Linears are skipped (per-image work).
    """
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layer, weight [in, out]

    frozen = trainable = 0
    for name, module in model.named_modules():
        if _is_excluded(name, exclude):
            continue
        if isinstance(module, torch.nn.Linear):
            n = int(module.in_features) * int(module.out_features)
        elif isinstance(module, Conv1D):
            n = int(module.nx) * int(module.nf)
        else:
            continue
        if module.weight.requires_grad:
            trainable += n
        else:
            frozen += n
    if head_shape is not None:
        n = int(head_shape[0]) * int(head_shape[1])
        if head_trainable:
            trainable += n
        else:
            frozen += n
    return MatmulParameters(frozen, trainable)


def flops_per_token(params: MatmulParameters, shape: AttentionShape, seq_len: float) -> float:
    """Training FLOPs of one token in a sequence of ``seq_len`` tokens (module docstring)."""
    dense = 4 * params.frozen + 6 * params.trainable
    return float(dense + 12 * shape.layers * shape.heads * shape.head_dim * seq_len)


def sequence_flops(params: MatmulParameters, shape: AttentionShape,
                   lengths: Iterable[int]) -> float:  # fmt: skip
    """Training FLOPs of a batch of sequences of these real lengths: each of a sequence's
    ``n`` tokens costs :func:`flops_per_token` at ``T = n``."""
    return float(sum(n * flops_per_token(params, shape, n) for n in lengths))
