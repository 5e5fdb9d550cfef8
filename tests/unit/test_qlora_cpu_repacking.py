"""bitsandbytes repacks 4-bit weights for CPU inference after an eval-mode forward without grad
(on CPUs with AVX512-BF16); the repacked kernel has no autograd. A training model must keep
its gradients through the frozen 4-bit layers after the probe's eval forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from uaclm_dist.config import load_config
from uaclm_dist.losses.objectives.base import build_objective
from uaclm_dist.modeling.hidden import final_hidden_states
from uaclm_dist.train.objective import CausalLMWithLoss
from uaclm_dist.train.worker import build_training_model

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny_test.yaml"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_an_eval_forward_does_not_cut_the_gradients_of_a_4bit_training_model(dtype, monkeypatch):
    import bitsandbytes.nn.modules as bnb_modules

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)  # as on such a CPU
    cfg = load_config(TINY, [f"model.dtype={dtype}", f"model.quantization.compute_dtype={dtype}",
                             f"model.quantization.storage_dtype={dtype}"])  # fmt: skip
    model, head, _ = build_training_model(cfg, 0, 1, torch.device("cpu"))
    module = CausalLMWithLoss(model, head, build_objective("clm+ua"), implementation="fused")
    ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    module.eval()
    with torch.no_grad():  # what the entropy probe does before the first step
        final_hidden_states(model, input_ids=ids, attention_mask=mask)
    module.train()
    out = module(labels=ids.clone(), step=0, total_steps=2, input_ids=ids, attention_mask=mask)
    out.loss.backward()
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    assert len(trainable) == 20  # 2 layers x 5 LoRA targets x (A, B)
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"no gradient reached {missing}"


def test_a_4bit_model_loaded_for_evaluation_keeps_the_plain_kernel(monkeypatch):
    """The same path on every CPU: no repacking after an eval forward (it also fails on small
    layers and changes greedy answers between CPUs with and without AVX512-BF16)."""
    import bitsandbytes.nn.modules as bnb_modules

    from uaclm_dist.modeling.loading import load_causal_lm

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    model = load_causal_lm("tiny-llama", dtype=torch.float32, quantization="nf4",
                           compute_dtype=torch.float32, storage_dtype=torch.float32).eval()
    four_bit = [m for m in model.modules() if isinstance(m, bnb_modules.Linear4bit)]
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3, 4]]))
    assert len(four_bit) == 14  # 2 layers x q/k/v/o/gate/up/down
    assert not [m for m in four_bit if getattr(m.weight.quant_state, "packing_format_for_cpu",
                                                  False)]  # fmt: skip
