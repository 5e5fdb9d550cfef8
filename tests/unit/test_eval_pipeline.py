"""The pipeline's driver-side pieces, without Ray: settings from the typed section, scoring."""

from __future__ import annotations

import pandas as pd
import pytest

from uaclm_dist.config import EvalConfig
from uaclm_dist.evaluate.frame import score_frame
from uaclm_dist.evaluate.pipeline import check_each_id_once, generation_settings
from uaclm_dist.evaluate.stats import ExampleStats


def stats_rows() -> pd.DataFrame:
    examples = [
        ExampleStats(
            id=f"q{i}", question="q?", references=["Paris"], greedy_text=text,
            greedy_token_logprobs=[-0.5] * (i + 1), greedy_token_entropies=[1.0] * (i + 1),
            sample_texts=["Paris", "Lyon"], sample_token_logprobs=[[-0.1], [-2.0]],
            cluster_ids=[0, 1], is_ood=i == 2,
        )  # fmt: skip
        for i, text in enumerate(["Paris", "Lyon", "Rome"])
    ]
    return pd.DataFrame([ex.to_row() for ex in examples])


def test_generation_settings_come_from_the_typed_section():
    cfg = EvalConfig(num_samples=4, temperature=0.7, max_new_tokens=9, top_k=5)
    settings = generation_settings(cfg, seed=7)
    assert (settings.num_samples, settings.temperature, settings.max_new_tokens) == (4, 0.7, 9)
    assert (settings.seed, settings.top_k, settings.decoder) == (7, 5, cfg.decoder)


def test_score_frame_keeps_order_scores_and_the_raw_statistics():
    df = score_frame(stats_rows(), ["te", "length", "se"], threshold=0.3)
    assert df["id"].tolist() == ["q0", "q1", "q2"]
    assert df["is_correct"].tolist() == [True, False, False]
    assert df["length"].tolist() == [1.0, 2.0, 3.0] and df["te"].tolist() == [1.0, 1.0, 1.0]
    head = ["id", "question", "greedy_text", "rouge_l", "is_correct", "exact_match",
            "confidence", "is_ood", "n_clusters", "te", "length", "se"]  # fmt: skip
    raw = ["references", "greedy_token_logprobs", "greedy_token_entropies", "sample_texts",
           "sample_token_logprobs", "cluster_ids"]  # fmt: skip
    assert list(df.columns) == head + raw


def test_check_each_id_once():
    check_each_id_once(["a", "b"], pd.DataFrame({"id": ["b", "a"]}))
    with pytest.raises(RuntimeError, match=r"missing \['b'\], duplicated \['a'\]"):
        check_each_id_once(["a", "b"], pd.DataFrame({"id": ["a", "a"]}))
