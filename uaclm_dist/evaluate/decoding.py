"""Shared-prefill decoding: the greedy answer and K samples of each prompt in one decode loop.

The evaluation protocol needs, per prompt, one greedy answer and K sampled answers. Two calls
to HF ``generate`` (what per-question research code does, and :func:`.generation.generate_answers`)
run the prompt's prefill 1 + K times (``num_return_sequences`` copies the prompt before the
prefill) and two separate decode loops, each of which reads every weight of the model once per
step. On CPU, and on GPU at small batch, a decode step costs about one pass over the weights
whatever the number of rows, so this module:

1. runs the prefill once per prompt (B rows, only the last position's logits);
2. repeats the KV cache to B * (1 + K) rows: row ``b * (1 + K)`` decodes greedily, rows
   ``b * (1 + K) + 1 .. K`` sample at ``temperature`` (optionally top-k);
3. decodes all rows together until every row has emitted EOS or ``max_new_tokens`` tokens.

Log-probabilities and entropies come from the raw, untempered logits in fp32 (natural log), as
in :mod:`.generation`; the sampling distribution is HF's: softmax((z / T) restricted to the top
k). Greedy rows equal HF greedy decoding (tested against ``generate``); sampled rows follow the
same distribution with a different random stream (seeded, reproducible).
"""

from __future__ import annotations

import torch

from uaclm_dist.evaluate.generation import GeneratedAnswer


def _left_pad(prompt_ids: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (input_ids [B, W], attention_mask [B, W]) with prompts right-aligned."""
    width = max(len(p) for p in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for i, ids in enumerate(prompt_ids):
        input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[i, width - len(ids) :] = 1
    return input_ids, attention


def _sample(
    logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator
) -> torch.Tensor:
    """``logits [R, V]`` raw -> one token per row [R] from softmax(top_k(logits / temperature))."""
    scaled = logits.float() / temperature
    if 0 < top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def decode_greedy_and_samples(
    model, prompt_ids: list[list[int]], *, pad_token_id: int, eos_token_ids: list[int],
    num_samples: int, temperature: float, max_new_tokens: int, seed: int, top_k: int = 0,
    prefill_inputs: dict[str, torch.Tensor] | None = None,
) -> list[tuple[GeneratedAnswer, list[GeneratedAnswer]]]:  # fmt: skip
    """Greedy answer and ``num_samples`` samples for each of ``B`` prompts, in one decode loop.

    Args:
        model: an HF causal LM (or a peft model around one) in eval mode.
        prompt_ids: ``B`` token-id lists (any lengths; left-padded here).
        seed: seeds the sampling stream (a CPU generator on CPU, the device's otherwise).
        prefill_inputs: extra keyword inputs of the prefill only, e.g. a vision-language
            model's ``pixel_values`` (its image features then live in the KV cache, shared by
            the greedy row and the samples).

    Returns:
        ``[(greedy, [sample_1 .. sample_K])]`` per prompt; each answer is cut after its first EOS
        token (kept) and carries per-token log p and full-vocabulary entropy (fp32, nats).
    """
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # LoRA stays active
    device = next(lm.parameters()).device
    group = 1 + num_samples  # rows per prompt: greedy first, then the samples
    input_ids, attention = _left_pad(prompt_ids, pad_token_id)
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)

    out = lm(input_ids=input_ids, attention_mask=attention, position_ids=positions,
             use_cache=True, logits_to_keep=1, **(prefill_inputs or {}))  # fmt: skip
    cache = out.cache
    cache.batch_repeat_interleave(group)
    logits = out.logits[:, -1, :].repeat_interleave(group, dim=0)  # [R, V]
    attention = attention.repeat_interleave(group, dim=0)  # [R, W]
    next_position = positions[:, -1:].repeat_interleave(group, dim=0) + 1  # [R, 1]

    rows = logits.shape[0]
    is_greedy = torch.zeros(rows, dtype=torch.bool, device=device)
    is_greedy[::group] = True
    generator = torch.Generator(device=device).manual_seed(seed)
    eos = torch.tensor(eos_token_ids, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens, logprobs, entropies = [], [], []  # per step: [R] each
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(logits.float(), dim=-1)
        chosen = torch.where(is_greedy, logits.argmax(-1),
                             _sample(logits, temperature, top_k, generator))  # fmt: skip
        chosen = chosen.masked_fill(finished, pad_token_id)
        tokens.append(chosen)
        logprobs.append(logp.gather(1, chosen.unsqueeze(1)).squeeze(1))
        entropies.append(-(logp.exp() * logp).sum(-1))
        finished = finished | torch.isin(chosen, eos)
        if bool(finished.all()):
            break
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
        out = lm(input_ids=chosen.unsqueeze(1), attention_mask=attention,
                 position_ids=next_position, cache=cache, use_cache=True)  # fmt: skip
        cache = out.cache
        logits = out.logits[:, -1, :]
        next_position = next_position + 1

    return _split_rows(tokens, logprobs, entropies, eos_token_ids, group)


def _split_rows(tokens, logprobs, entropies, eos_token_ids, group):
    """Per-step [R] tensors -> per-prompt (greedy, samples), each row cut after its first EOS."""
    ids = torch.stack(tokens, 1).tolist()  # [R, T]
    lps = torch.stack(logprobs, 1).tolist()
    ents = torch.stack(entropies, 1).tolist()
    eos = set(eos_token_ids)
    answers = []
    for r in range(len(ids)):
        end = next((t + 1 for t, tok in enumerate(ids[r]) if tok in eos), len(ids[r]))
        answers.append(GeneratedAnswer(ids[r][:end], lps[r][:end], ents[r][:end]))
    return [(answers[b], answers[b + 1 : b + group]) for b in range(0, len(answers), group)]
