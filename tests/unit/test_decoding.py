"""Shared-prefill decoding (evaluate/decoding.py) against HF ``generate`` and a plain forward."""

from __future__ import annotations

import math

import pytest
import torch

from uaclm_dist.evaluate.decoding import _sample, decode_greedy_and_samples
from uaclm_dist.evaluate.generation import GenerationSettings, example_stats, generate_answers

PROMPTS = [[1, 17, 940, 33, 2051], [1, 88], [1, 4000, 12, 12, 7, 600, 31, 9]]  # uneven lengths
PAD = 0


@pytest.fixture
def peaked_llama(tiny_llama):
    """The tiny Llama with its final norm scaled up: peaked next-token distributions, so greedy
    argmax gaps dwarf the rounding differences between batch shapes."""
    with torch.no_grad():
        tiny_llama.model.norm.weight.mul_(40.0)
    return tiny_llama


@pytest.fixture
def spread_llama(tiny_llama):
    """Scaled less: entropies of several nats, so log p and entropy depend on every position
    (with the 40x model they are ~0 whatever the positions; a stuck position id moves these
    by ~1e-2 and goes unnoticed there)."""
    with torch.no_grad():
        tiny_llama.model.norm.weight.mul_(8.0)
    return tiny_llama


def _teacher_forced(model, prompt: list[int], answer: list[int]) -> tuple[list, list]:
    """log p of each answer token and the entropy at its position, from one unpadded forward."""
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    logp = torch.log_softmax(logits, -1)
    chosen = logp.gather(1, torch.tensor(answer).unsqueeze(1)).squeeze(1)
    return chosen.tolist(), (-(logp.exp() * logp).sum(-1)).tolist()


def test_greedy_rows_equal_hf_generate(peaked_llama):
    common = dict(pad_token_id=PAD, eos_token_ids=[2], max_new_tokens=10)
    ours = decode_greedy_and_samples(peaked_llama, PROMPTS, num_samples=3, temperature=0.3,
                                     seed=0, **common)  # fmt: skip
    hf = generate_answers(peaked_llama, PROMPTS, do_sample=False, num_return=1, temperature=1.0,
                          seed=0, **common)  # fmt: skip
    for (greedy, samples), (reference,) in zip(ours, hf, strict=True):
        assert len(samples) == 3
        assert greedy.token_ids == reference.token_ids
        assert greedy.logprobs == pytest.approx(reference.logprobs, abs=1e-4)
        assert greedy.entropies == pytest.approx(reference.entropies, abs=1e-4)


def test_answers_cut_after_first_eos(peaked_llama):
    common = dict(pad_token_id=PAD, max_new_tokens=10, num_samples=2, temperature=0.3, seed=0)
    free = decode_greedy_and_samples(peaked_llama, PROMPTS, eos_token_ids=[2], **common)
    stop = free[0][0].token_ids[3]  # make the 4th greedy token of prompt 0 the EOS token
    cut = decode_greedy_and_samples(peaked_llama, PROMPTS, eos_token_ids=[stop], **common)
    greedy = cut[0][0]
    assert greedy.token_ids == free[0][0].token_ids[: free[0][0].token_ids.index(stop) + 1]
    assert len(greedy.logprobs) == len(greedy.entropies) == len(greedy.token_ids)
    for greedy, samples in cut:
        for answer in [greedy, *samples]:
            assert stop not in answer.token_ids[:-1]  # nothing after the first EOS
            assert PAD not in answer.token_ids or PAD == stop


def test_every_row_matches_a_teacher_forced_forward(spread_llama):
    """Sampled rows share the prefill through the repeated cache; their log p and entropies
    (untempered) must equal a fresh unpadded forward over prompt + answer."""
    kwargs = dict(num_samples=4, temperature=1.5, max_new_tokens=6, seed=3)
    out = decode_greedy_and_samples(spread_llama, PROMPTS, pad_token_id=PAD, eos_token_ids=[2],
                                    **kwargs)  # fmt: skip
    for prompt, (greedy, samples) in zip(PROMPTS, out, strict=True):
        for answer in [greedy, *samples]:
            logprobs, entropies = _teacher_forced(spread_llama, prompt, answer.token_ids)
            assert answer.logprobs == pytest.approx(logprobs, abs=1e-4)
            assert answer.entropies == pytest.approx(entropies, abs=1e-4)
    sampled = {tuple(a.token_ids) for _, samples in out for a in samples}
    assert len(sampled) > 3, "temperature 1.5 should give varied samples"


def test_seeded_and_cold_samples(peaked_llama):
    kwargs = dict(pad_token_id=PAD, eos_token_ids=[2], num_samples=3, max_new_tokens=6)
    a = decode_greedy_and_samples(peaked_llama, PROMPTS, temperature=1.5, seed=7, **kwargs)
    b = decode_greedy_and_samples(peaked_llama, PROMPTS, temperature=1.5, seed=7, **kwargs)
    assert [[s.token_ids for s in ss] for _, ss in a] == [[s.token_ids for s in ss] for _, ss in b]
    cold = decode_greedy_and_samples(peaked_llama, PROMPTS, temperature=1e-4, seed=7, **kwargs)
    for greedy, samples in cold:  # temperature -> 0 is greedy decoding
        assert all(s.token_ids == greedy.token_ids for s in samples)


def test_peft_adapter_is_active(peaked_llama):
    from peft import LoraConfig, get_peft_model

    kwargs = dict(pad_token_id=PAD, eos_token_ids=[2], max_new_tokens=4, seed=0)
    base = decode_greedy_and_samples(peaked_llama, PROMPTS, num_samples=1, temperature=1.0,
                                     **kwargs)  # fmt: skip
    lora = get_peft_model(peaked_llama, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                   init_lora_weights=False))  # fmt: skip
    lora.eval()
    ours = decode_greedy_and_samples(lora, PROMPTS, num_samples=1, temperature=1.0, **kwargs)
    hf = generate_answers(lora, PROMPTS, do_sample=False, num_return=1, temperature=1.0, **kwargs)
    assert [g.token_ids for g, _ in ours] == [r.token_ids for (r,) in hf]
    assert [g.logprobs for g, _ in ours] != [g.logprobs for g, _ in base]


def test_sample_follows_tempered_top_k_softmax():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    rows, temperature = 20000, 0.7
    gen = torch.Generator().manual_seed(0)
    for top_k in (0, 3):
        drawn = _sample(logits.expand(rows, -1), temperature, top_k, gen)
        scaled = logits / temperature
        if top_k:
            scaled[top_k:] = float("-inf")  # logits are sorted: the top k are the first k
        expected = torch.softmax(scaled, -1)
        freq = torch.bincount(drawn, minlength=6).double() / rows
        for p, f in zip(expected.tolist(), freq.tolist(), strict=True):
            assert abs(f - p) <= 5 * math.sqrt(p * (1 - p) / rows) + 1e-12
        if top_k:
            assert int((drawn >= top_k).sum()) == 0


def test_example_stats_decoders_agree_on_greedy(peaked_llama, smollm2_tokenizer):
    rows = [dict(id=f"q{i}", question="q", references=["a"], prompt_ids=p)
            for i, p in enumerate(PROMPTS)]  # fmt: skip
    out = {}
    for decoder in ("shared_prefill", "hf_generate"):
        settings = GenerationSettings(num_samples=2, temperature=0.3, max_new_tokens=5,
                                      decoder=decoder)  # fmt: skip
        out[decoder] = example_stats(peaked_llama, smollm2_tokenizer, rows, settings)
    for a, b in zip(out["shared_prefill"], out["hf_generate"], strict=True):
        assert a.id == b.id and a.greedy_text == b.greedy_text
        assert len(a.sample_texts) == len(b.sample_texts) == 2
    with pytest.raises(ValueError, match="decoder"):
        example_stats(peaked_llama, smollm2_tokenizer, rows,
                      GenerationSettings(2, 0.3, 5, decoder="beam"))  # fmt: skip
