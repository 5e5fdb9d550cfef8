"""Per-example statistics, uncertainty scores (hand-computed) and correctness."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from uaclm_dist.evaluate.correctness import (
    confidence,
    correctness_row,
    exact_match,
    is_correct,
    normalize_answer,
    rouge_l,
)
from uaclm_dist.evaluate.scores import (
    DEFAULT_SCORES,
    SCORES,
    ScoreSpec,
    answer_length,
    discrete_semantic_entropy,
    perplexity,
    predictive_entropy,
    score_all,
    scores_needing_clusters,
    semantic_entropy,
    token_entropy,
)
from uaclm_dist.evaluate.stats import ExampleStats


def make(
    greedy_lp=(-0.5, -1.5),
    greedy_h=(1.0, 2.0),
    samples=None,
    cluster_ids=None,
    greedy_text="Paris",
    references=("Paris",),
    **kw,
) -> ExampleStats:
    samples = samples if samples is not None else [[-1.0], [-2.0]]
    return ExampleStats(
        id=kw.pop("id", "q1"),
        question=kw.pop("question", "What is the capital of France?"),
        references=list(references),
        greedy_text=greedy_text,
        greedy_token_logprobs=list(greedy_lp),
        greedy_token_entropies=list(greedy_h),
        sample_texts=[f"s{i}" for i in range(len(samples))],
        sample_token_logprobs=[list(s) for s in samples],
        cluster_ids=cluster_ids,
        **kw,
    )


# ------------------------------------------------------------------------------------------ stats


def test_stats_parquet_round_trip(tmp_path):
    a = make(cluster_ids=[0, 1], is_ood=True)
    b = make(id="q2", cluster_ids=None)
    path = tmp_path / "stats.parquet"
    pd.DataFrame([a.to_row(), b.to_row()]).to_parquet(path)
    back = pd.read_parquet(path)
    rows = [ExampleStats.from_row(r) for r in back.to_dict(orient="records")]
    assert rows == [a, b]
    assert isinstance(rows[0].sample_token_logprobs[0], list)
    assert rows[1].cluster_ids is None and rows[0].is_ood is True


def test_stats_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="example 'q1'.*greedy_token_entropies"):
        make(greedy_lp=[-1.0], greedy_h=[1.0, 2.0])
    with pytest.raises(ValueError, match="cluster_ids"):
        make(cluster_ids=[0])


# ----------------------------------------------------------------------------------------- scores


def test_token_entropy_and_perplexity_by_hand():
    s = make(greedy_lp=[-0.5, -1.5], greedy_h=[1.0, 2.0])
    assert token_entropy(s) == pytest.approx(1.5)
    assert perplexity(s) == pytest.approx(math.exp(1.0))
    assert answer_length(s) == 2.0


def test_predictive_entropy_by_hand():
    # lbar = [-1, (-2 - 4) / 2 = -3]  ->  PE = -(-1 - 3) / 2 = 2
    s = make(samples=[[-1.0], [-2.0, -4.0]])
    assert predictive_entropy(s) == pytest.approx(2.0)


def test_semantic_entropy_by_hand():
    # lbar = [-1, -2, -3]; clusters {0, 1}, {2}
    s = make(samples=[[-1.0], [-2.0], [-3.0]], cluster_ids=[0, 0, 1])
    w = np.exp([-1.0, -2.0, -3.0])
    p = np.array([w[0] + w[1], w[2]]) / w.sum()
    assert semantic_entropy(s) == pytest.approx(-np.sum(p * np.log(p)))
    q = np.array([2, 1]) / 3
    assert discrete_semantic_entropy(s) == pytest.approx(-np.sum(q * np.log(q)))


def test_semantic_entropy_limits():
    same = make(samples=[[-1.0], [-5.0], [-0.1]], cluster_ids=[0, 0, 0])
    assert semantic_entropy(same) == 0.0 and discrete_semantic_entropy(same) == 0.0
    k = 5
    distinct = make(samples=[[-2.0, -1.0]] * k, cluster_ids=list(range(k)))
    assert semantic_entropy(distinct) == pytest.approx(math.log(k))
    assert discrete_semantic_entropy(distinct) == pytest.approx(math.log(k))


def test_semantic_entropy_is_stable_for_very_unlikely_samples():
    s = make(samples=[[-900.0], [-1000.0]], cluster_ids=[0, 1])
    assert semantic_entropy(s) == pytest.approx(0.0, abs=1e-30)  # p = (1, e^-100): finite
    s = make(samples=[[-1000.0], [-1000.0]], cluster_ids=[0, 1])
    assert semantic_entropy(s) == pytest.approx(math.log(2))


def test_empty_answer_text_is_scored_from_its_eos_token():
    # The token lists include the terminating EOS: "" has one scored token.
    s = make(greedy_text="", greedy_lp=[-0.2], greedy_h=[0.7])
    assert token_entropy(s) == pytest.approx(0.7)
    assert perplexity(s) == pytest.approx(math.exp(0.2))
    assert answer_length(s) == 1.0
    assert confidence(s) == pytest.approx(math.exp(-0.2))


def test_no_generated_tokens_is_an_error_naming_the_example():
    s = make(id="broken", greedy_lp=[], greedy_h=[])
    for fn in (token_entropy, perplexity, confidence):
        with pytest.raises(ValueError, match="'broken'"):
            fn(s)
    assert answer_length(s) == 0.0
    with pytest.raises(ValueError, match=r"sample_token_logprobs\[1\]"):
        predictive_entropy(make(samples=[[-1.0], []]))


def test_semantic_entropy_needs_clusters():
    with pytest.raises(ValueError, match="cluster_ids"):
        semantic_entropy(make())


def test_score_registry():
    assert SCORES.names() == DEFAULT_SCORES == ("te", "ppl", "pe", "se", "dse", "length")
    s = make(cluster_ids=[0, 1])
    out = score_all(s, ["te", "length", "se"])
    assert list(out) == ["te", "length", "se"] and out["te"] == pytest.approx(1.5)
    assert tuple(score_all(s)) == DEFAULT_SCORES
    with pytest.raises(KeyError, match="unknown score 'nope'"):
        score_all(s, ["nope"])
    assert scores_needing_clusters(DEFAULT_SCORES) == ["se", "dse"]
    assert scores_needing_clusters(["te", "length"]) == []
    te = SCORES.get("te")
    assert (te.fn, te.label, te.axis_label) == (token_entropy, "TE", "token entropy (nats)")
    assert SCORES.get("ppl").axis_label == "perplexity" and SCORES.get("ppl").log_x


def test_a_registered_score_is_computed_and_cleaned_up():
    spec = ScoreSpec("n_samples", lambda s: float(s.num_samples), "N", "samples drawn")
    SCORES.register(spec)
    try:
        assert score_all(make(), ["te", "n_samples"])["n_samples"] == 2.0
        with pytest.raises(ValueError, match="already registered"):
            SCORES.register(spec)
    finally:
        SCORES.unregister("n_samples")
    assert "n_samples" not in SCORES


# ------------------------------------------------------------------------------------ correctness


def test_normalize_and_exact_match():
    assert normalize_answer("  The  Eiffel Tower! ") == "eiffel tower"
    assert exact_match("the eiffel tower", ["Eiffel Tower."])
    assert not exact_match("Eiffel", ["Eiffel Tower"])


def test_rouge_l_max_over_references_and_threshold():
    # answer "in Paris" vs "Paris": LCS 1, P = 1/2, R = 1 -> F = 2/3
    assert rouge_l("in Paris", ["London", "Paris"]) == pytest.approx(2 / 3)
    assert rouge_l("London", ["Paris"]) == 0.0
    assert rouge_l("", ["Paris"]) == 0.0
    assert rouge_l("he wins", ["he win"], use_stemmer=True) == pytest.approx(1.0)
    assert rouge_l("he wins", ["he win"], use_stemmer=False) == pytest.approx(0.5)
    assert is_correct(0.31) is True and is_correct(0.3) is False  # strictly greater
    with pytest.raises(ValueError, match="no reference"):
        rouge_l("x", [])


def test_correctness_row():
    s = make(greedy_text="It is Paris", references=["Paris"], greedy_lp=[-0.1, -0.3])
    row = correctness_row(s, threshold=0.3)
    assert row["rouge_l"] == pytest.approx(0.5)  # P = 1/3, R = 1
    assert row["is_correct"] is True and row["exact_match"] is False
    assert row["confidence"] == pytest.approx(math.exp(-0.2))
    assert correctness_row(s, threshold=0.6)["is_correct"] is False


def test_is_correct_on_a_table_an_array_and_a_value():
    rouge = [0.0, 0.3, 0.30001, 1.0]
    expected = [False, False, True, True]
    assert is_correct(np.array(rouge), 0.3).tolist() == expected
    assert is_correct(pd.DataFrame({"rouge_l": rouge}), 0.3).tolist() == expected
    assert is_correct(pd.DataFrame({"rouge_l": rouge}), 0.0).tolist() == [False, True, True, True]
    assert is_correct(np.float64(0.5), 0.3) is True
