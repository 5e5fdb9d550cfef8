"""The entropy probe (train/probe.py): fixed token sets, hand-computed summaries, measurement."""

from __future__ import annotations

import math

import pytest
import torch

from uaclm_dist.config import ObjectiveConfig
from uaclm_dist.data.records import QARecord
from uaclm_dist.data.tokenize import TokenizedExample, tokenize_records
from uaclm_dist.losses.objectives import build_objective
from uaclm_dist.modeling.sharded_head import ShardedLMHead, replace_lm_head
from uaclm_dist.train.objective import CausalLMWithLoss
from uaclm_dist.train.probe import ProbeTokens, measure, summarize


def test_summary_uses_the_base_sets_hand_computed():
    base = ProbeTokens(torch.tensor([0.5, 3.0, 0.4, 2.0], dtype=torch.float64),
                       torch.tensor([True, False, True, False]))  # fmt: skip
    now = ProbeTokens(torch.tensor([0.1, 2.0, 0.3, 1.0], dtype=torch.float64),
                      torch.tensor([True, False, False, True]))  # fmt: skip
    got = summarize(base, now)
    assert got["n_tokens"] == 4 and got["n_base_correct"] == 2
    assert got["entropy_base_correct"] == pytest.approx((0.1 + 0.3) / 2)
    assert got["entropy_base_incorrect"] == pytest.approx((2.0 + 1.0) / 2)
    assert got["token_accuracy"] == pytest.approx(0.5)
    assert got["entropy_correct"] == pytest.approx((0.1 + 1.0) / 2)  # the model's own sets
    assert got["entropy_incorrect"] == pytest.approx((2.0 + 0.3) / 2)
    # own-incorrect {2.0, 0.3} vs own-correct {0.1, 1.0}: 3 of 4 pairs ordered -> 0.75
    assert got["entropy_auroc"] == pytest.approx(0.75)
    assert summarize(base, base)["entropy_auroc"] == 1.0  # base entropies separate perfectly


def test_summary_edge_cases():
    entropy = torch.tensor([0.2, 0.3], dtype=torch.float64)
    all_right = ProbeTokens(entropy, torch.tensor([True, True]))
    got = summarize(all_right, all_right)
    assert got["entropy_base_incorrect"] is None and got["entropy_auroc"] is None
    with pytest.raises(ValueError, match="token counts differ"):
        summarize(all_right, ProbeTokens(torch.zeros(3, dtype=torch.float64), torch.ones(3) > 0))
    again = ProbeTokens.from_state(all_right.to_state())
    assert torch.equal(again.entropy, all_right.entropy)
    assert torch.equal(again.correct, all_right.correct)


def test_measure_equals_the_dense_logits_path(tiny_llama, smollm2_tokenizer):
    """Per supervised token: the probe's entropy and correctness equal softmax over the model's
    own shifted logits (micro-batching and padding included); train mode is restored."""
    records = [QARecord(id=str(i), question=q, answers=(a,)) for i, (q, a) in enumerate(
        [("What is the capital of France?", "Paris"), ("Who wrote Hamlet?", "Shakespeare"),
         ("2 + 2?", "4")])]  # fmt: skip
    examples, _ = tokenize_records(records, smollm2_tokenizer, template="paper", loss_on="all",
                                   max_length=64)  # fmt: skip
    with torch.no_grad():
        tiny_llama.model.norm.weight.mul_(8.0)
        # A random model gets no QA token right: add a sequence continued greedily by the model
        # itself, whose continuation tokens are correct by construction.
        ids = list(examples[0].input_ids[:5])
        for _ in range(4):
            ids.append(int(tiny_llama(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        examples.append(TokenizedExample(id="greedy", input_ids=tuple(ids), labels=tuple(ids),
                                         attention_mask=(1,) * len(ids), prompt_length=0,
                                         context_cut=False))  # fmt: skip
        expected_h, expected_c = [], []
        for ex in examples:
            logits = tiny_llama(input_ids=torch.tensor([ex.input_ids])).logits[0, :-1]
            labels = torch.tensor(ex.labels[1:])
            keep = labels != -100
            logp = torch.log_softmax(logits[keep].double(), -1)
            expected_h.append(-(logp.exp() * logp).sum(-1))
            expected_c.append(logits[keep].argmax(-1) == labels[keep])
    head = ShardedLMHead.from_model(tiny_llama)
    replace_lm_head(tiny_llama, head)
    module = CausalLMWithLoss(tiny_llama, head, build_objective(ObjectiveConfig())).train()
    got = measure(module, examples, smollm2_tokenizer.pad_token_id, torch.device("cpu"), micro=2)
    assert module.training
    assert torch.allclose(got.entropy, torch.cat(expected_h), atol=1e-4)
    assert torch.equal(got.correct, torch.cat(expected_c))
    assert 0 < int(got.correct.sum()) < got.correct.numel()
    assert not math.isnan(summarize(got, got)["entropy_auroc"])
