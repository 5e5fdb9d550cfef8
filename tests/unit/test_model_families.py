"""Model families: one loader for training and evaluation, keyword model inputs, registration.

The seed regression: an adapter trained on tiny-llama with ``optim.seed=7`` must be scored on the
base it was trained on. Training builds its model with ``build_training_model`` (the Ray worker's
code) and evaluation with the generation actor (``GenerationStage``, the Ray Data actor's code);
both are run here in-process and their base logits compared.
"""

from __future__ import annotations

import pytest
import torch

from uaclm_dist.config import load_config
from uaclm_dist.evaluate.pipeline import GenerationStage, generation_settings
from uaclm_dist.losses.objectives import build_objective
from uaclm_dist.modeling.families import FAMILIES, LoadedModel, load_model
from uaclm_dist.modeling.families.causal_lm import CausalLM
from uaclm_dist.modeling.hidden import final_hidden_states
from uaclm_dist.registry import UnknownNameError
from uaclm_dist.train.objective import CausalLMWithLoss
from uaclm_dist.train.worker import build_training_model

FP32 = ["model.quantization.method=none", "model.dtype=float32"]
CPU = torch.device("cpu")


def _config(*overrides: str):
    return load_config("configs/tiny_test.yaml", [*FP32, *overrides])


def _batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding on the second row
    return ids, mask


def _training_base_logits(cfg, ids, mask):
    model, head, _ = build_training_model(cfg, rank=0, world=1, device=CPU)
    model.eval()  # LoRA B = 0 at init: the adapted model is the base
    with torch.no_grad():
        return final_hidden_states(model, input_ids=ids, attention_mask=mask) @ head.weight_shard.T


def _evaluation_base_logits(cfg, ids, mask):
    settings = generation_settings(cfg.eval, cfg.optim.seed)  # as evaluate/runner.py does
    stage = GenerationStage(cfg.model, None, settings, threads=1)
    with torch.no_grad():
        return stage.model(input_ids=ids, attention_mask=mask).logits


def test_training_and_evaluation_score_the_same_base_model_for_any_seed():
    cfg = _config("optim.seed=7")
    ids, mask = _batch(vocab=49152)
    trained_on = _training_base_logits(cfg, ids, mask)
    scored_on = _evaluation_base_logits(cfg, ids, mask)
    torch.testing.assert_close(scored_on, trained_on, rtol=1e-5, atol=1e-5)
    # The seed really changes the random base: seed 0 is a different model.
    other = _evaluation_base_logits(_config("optim.seed=0"), ids, mask)
    assert (other - trained_on).abs().max() > 1e-2


def test_load_model_returns_model_tokenizer_and_family():
    cfg = _config()
    loaded = load_model(cfg.model, CPU, seed=cfg.optim.seed)
    assert isinstance(loaded, LoadedModel) and loaded.family == "causal_lm"
    assert loaded.tokenizer.pad_token_id is not None
    assert loaded.model.config.hidden_size == cfg.model.tiny.hidden_size


def test_an_unknown_family_names_the_choices():
    # the suggestion and the choices themselves: "causal_lm" alone also matches the echoed typo
    with pytest.raises(UnknownNameError, match=r"choose from: causal_lm, vision_lm; did you mean "
                                               r"'causal_lm'\?"):
        FAMILIES.get("causal_lmm")


class _PositionShiftedLM(CausalLM):
    """Test-only family: a causal LM under another name; the test feeds it an extra keyword
    input (``position_ids``) the way a vision family feeds ``pixel_values``."""

    name = "test_shifted_positions"


def test_a_family_registered_here_loads_and_its_extra_inputs_reach_the_model():
    FAMILIES.register(_PositionShiftedLM())
    try:
        cfg = _config("model.family=test_shifted_positions")
        assert cfg.model.family == "test_shifted_positions"
        model, head, _ = build_training_model(cfg, rank=0, world=1, device=CPU)
        module = CausalLMWithLoss(model.eval(), head, build_objective("clm"))
        ids, mask = _batch(vocab=head.vocab_size, seed=1)
        mask = torch.ones_like(ids)
        labels = ids.clone()
        plain = module(labels=labels, step=0, total_steps=1, input_ids=ids, attention_mask=mask)
        zeroed = module(labels=labels, step=0, total_steps=1, input_ids=ids, attention_mask=mask,
                         position_ids=torch.zeros_like(ids))  # fmt: skip
        # the extra keyword input flowed through the training module into the backbone (RoPE
        # sees relative positions, so all-zero positions change every attention score)
        assert abs(plain.loss.item() - zeroed.loss.item()) > 1e-6
    finally:
        FAMILIES.unregister(_PositionShiftedLM.name)
