"""Every recipe in configs/ validates (paper recipes with their data paths pointed at fixtures
written in the same official formats)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uaclm_dist.config import load_config

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "data"
PAPER = sorted((REPO / "configs" / "paper").glob("*.yaml"))
FIXTURE_FOR = {"coqa": "coqa_dev_sample.json", "triviaqa": "triviaqa_rc_sample.json",
               "okvqa": "okvqa/OpenEnded_mscoco_val2014_questions.json"}


def test_there_is_a_uaclm_and_a_clm_recipe_for_every_paper_setting():
    names = {p.stem for p in PAPER}
    settings = {n.rsplit("_", 1)[0] for n in names}
    assert {"llama2_7b_coqa", "llama2_7b_triviaqa", "llama2_13b_coqa", "llama2_13b_triviaqa",
            "gemma_2b_coqa", "llava_1.5_7b_okvqa", "llava_1.5_13b_okvqa"} <= settings  # fmt: skip
    for setting in settings:
        assert {f"{setting}_uaclm", f"{setting}_clm"} <= names, setting


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_recipe_is_valid_and_follows_the_paper(path):
    dataset = path.stem.split("_")[-2]
    cfg = load_config(path, [f"data.paths=[{FIXTURES / FIXTURE_FOR[dataset]}]"])
    vision = dataset == "okvqa"  # LLaVA-1.5: r=8, alpha=8 and L_CLM + beta L_UA
    assert cfg.model.quantization.method == "nf4"
    assert (cfg.model.lora.rank, cfg.model.lora.alpha) == ((8, 8) if vision else (32, 64))
    assert cfg.model.lora.dropout == 0.1
    assert cfg.optim.lr == 1e-4 and cfg.optim.epochs == 3 and cfg.optim.warmup_ratio == 0.03
    assert cfg.data.train_fraction == 0.2 and cfg.data.loss_on == "all"
    method = ("clm+ua" if vision else "ua_clm") if path.stem.endswith("uaclm") else "clm"
    assert cfg.objective.name == method
    assert cfg.objective.implementation == "vocab_parallel"
    # the paper's ~2 sequences per step on 2 workers, ZeRO-2 with overlapped reduction
    assert cfg.optim.global_batch_size == 2 and cfg.optim.grad_accumulation == 1
    assert cfg.distributed.num_workers == 2 and cfg.distributed.zero_stage == 2
    ds = json.loads((REPO / cfg.distributed.deepspeed_config).read_text())
    assert ds["zero_optimization"]["overlap_comm"] is True
    if vision:
        assert cfg.model.family == "vision_lm"
        assert (cfg.objective.beta_start, cfg.objective.beta_end,
                cfg.objective.beta_switch_fraction) == (0.2, 0.8, 0.2)  # fmt: skip


@pytest.mark.parametrize("name", ["demo.yaml", "tiny_test.yaml"])
def test_packaged_data_recipes_validate_as_they_are(name):
    load_config(REPO / "configs" / name)
