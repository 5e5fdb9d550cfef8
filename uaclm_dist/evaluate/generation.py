"""Generation statistics: greedy answer + K samples, with per-token log p and entropy.

For every prompt the model produces, once:
- the greedy answer (the scored answer), its token log-probabilities and the full-vocabulary
  entropy at each generated position;
- K stochastic answers at ``eval.temperature`` (top-p off; top-k off unless ``eval.top_k``),
  with their token log-probabilities.
Log-probabilities and entropies are computed from the **raw, untempered** logits (HF
``output_logits``, taken before any logits processor), in fp32, natural log. Token lists include
the EOS token that ended an answer and nothing after it (see :mod:`.stats`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import torch

from uaclm_dist.evaluate.stats import ExampleStats


@dataclass(frozen=True)
class GenerationSettings:
    num_samples: int
    temperature: float
    max_new_tokens: int
    seed: int = 0
    top_k: int = 0  # 0: pure temperature sampling (top-p is always off)
    decoder: str = "shared_prefill"  # or "hf_generate" (see EvalConfig.decoder)


@dataclass
class GeneratedAnswer:
    """One generated continuation: token ids, their log p and the entropy at each position."""

    token_ids: list[int]
    logprobs: list[float]
    entropies: list[float]


def load_generation_model(
    model_cfg, adapter_dir: str | None, *, seed: int, device: torch.device | None = None
) -> torch.nn.Module:
    """Base model with the training quantization, plus the LoRA adapter (if any), in eval mode.

    The adapter is scored on the base it was trained against: the same family loader, 4-bit NF4
    settings, dtype and init ``seed`` (the run's ``optim.seed``) as training.
    """
    from uaclm_dist.modeling.families import family_of

    family = family_of(model_cfg)
    model = family.load(model_cfg, device, seed=seed).model
    if adapter_dir:
        model = family.load_adapter(model, adapter_dir)
    return model.eval()


def _token_stats(logits: torch.Tensor, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``logits [R, V]`` raw, ``chosen [R]`` -> (log p of chosen [R], entropy [R]) in fp32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(1, chosen.unsqueeze(1)).squeeze(1), entropy


def generate_answers(
    model, prompt_ids: list[list[int]], *, pad_token_id: int, eos_token_ids: list[int],
    do_sample: bool, num_return: int, temperature: float, max_new_tokens: int,
    seed: int, top_k: int = 0, prefill_inputs: dict[str, torch.Tensor] | None = None,
) -> list[list[GeneratedAnswer]]:  # fmt: skip
    """Batched generation for ``B`` prompts (left-padded); ``num_return`` answers per prompt.
    ``prefill_inputs``: extra model inputs such as ``pixel_values`` (HF ``generate`` passes
    them to the prefill only).

    Returns ``[B][num_return]`` answers, each cut after its first EOS token.
    """
    device = next(model.parameters()).device
    width = max(len(p) for p in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for i, ids in enumerate(prompt_ids):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention[i, width - len(ids) :] = 1
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens, do_sample=do_sample, num_return_sequences=num_return,
        output_logits=True, return_dict_in_generate=True, pad_token_id=pad_token_id,
        eos_token_id=eos_token_ids,
    )  # fmt: skip
    if do_sample:
        kwargs.update(temperature=temperature, top_k=top_k, top_p=1.0)  # top_k 0 disables it
        torch.manual_seed(seed)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs,
            **(prefill_inputs or {}),
        )
    generated = out.sequences[:, width:]  # [B * R, T]
    steps = [_token_stats(step_logits, generated[:, t]) for t, step_logits in enumerate(out.logits)]
    eos = set(eos_token_ids)
    answers: list[GeneratedAnswer] = []
    for row in range(generated.shape[0]):
        ids, lps, ents = [], [], []
        for t in range(generated.shape[1]):
            token = int(generated[row, t])
            ids.append(token)
            lps.append(float(steps[t][0][row]))
            ents.append(float(steps[t][1][row]))
            if token in eos:
                break
        answers.append(GeneratedAnswer(ids, lps, ents))
    return [answers[i * num_return : (i + 1) * num_return] for i in range(len(prompt_ids))]


def batch_seed(base_seed: int, ids: list[str]) -> int:
    """A sampling seed fixed by the batch's example ids (reproducible whatever actor runs it)."""
    return (base_seed * 1_000_003 + zlib.crc32("\x1f".join(ids).encode())) % 2**31


def image_inputs(model, rows: list[dict], image_spec) -> dict[str, torch.Tensor]:
    """``{"pixel_values": [n_images, 3, S, S]}`` (the model's dtype and device) for the rows
    that carry an ``image`` path, in row order; ``{}`` when none does."""
    paths = [r["image"] for r in rows if r.get("image")]
    if not paths:
        return {}
    if image_spec is None:
        raise ValueError("prompt rows carry images but the model takes none")
    from uaclm_dist.modeling.images import pixel_values

    weight = model.get_input_embeddings().weight
    return {"pixel_values": pixel_values(paths, image_spec).to(weight.device, weight.dtype)}


def example_stats(
    model, tokenizer, rows: list[dict], settings: GenerationSettings, image_spec=None
) -> list[ExampleStats]:
    """Greedy + sampled statistics for a batch of prompt rows.

    Args:
        rows: dicts with ``id``, ``question``, ``references``, ``prompt_ids``, ``is_ood`` and,
            for a vision-language model, ``image`` (a path or None: text rows mix in freely).
        image_spec: the model's :class:`~uaclm_dist.modeling.images.ImageSpec` (None: text).
    """
    prompts = [list(r["prompt_ids"]) for r in rows]
    prefill = image_inputs(model, rows, image_spec)
    eos = [tokenizer.eos_token_id]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    seed = batch_seed(settings.seed, [str(r["id"]) for r in rows])
    common = dict(pad_token_id=pad, eos_token_ids=eos, max_new_tokens=settings.max_new_tokens,
                  prefill_inputs=prefill)  # fmt: skip
    if settings.decoder == "shared_prefill":
        from uaclm_dist.evaluate.decoding import decode_greedy_and_samples

        pairs = decode_greedy_and_samples(model, prompts, num_samples=settings.num_samples,
                                          temperature=settings.temperature, seed=seed,
                                          top_k=settings.top_k, **common)  # fmt: skip
    elif settings.decoder == "hf_generate":
        greedy = generate_answers(model, prompts, do_sample=False, num_return=1,
                                  temperature=1.0, seed=0, **common)  # fmt: skip
        samples = generate_answers(model, prompts, do_sample=True, num_return=settings.num_samples,
                                   temperature=settings.temperature, seed=seed,
                                   top_k=settings.top_k, **common)  # fmt: skip
        pairs = [(g, s) for (g,), s in zip(greedy, samples, strict=True)]
    else:
        raise ValueError(f"unknown decoder {settings.decoder!r}")

    def text(a: GeneratedAnswer) -> str:
        return tokenizer.decode(a.token_ids, skip_special_tokens=True).strip()

    out = []
    for row, (g, s) in zip(rows, pairs, strict=True):
        out.append(
            ExampleStats(
                id=str(row["id"]),
                question=row["question"],
                references=list(row["references"]),
                greedy_text=text(g),
                greedy_token_logprobs=g.logprobs,
                greedy_token_entropies=g.entropies,
                sample_texts=[text(a) for a in s],
                sample_token_logprobs=[a.logprobs for a in s],
                is_ood=bool(row.get("is_ood")),
            )  # fmt: skip
        )
    return out
