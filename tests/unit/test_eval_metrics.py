"""Metrics (hand-computed and limiting cases), bootstrap intervals, compute_metrics, comparison."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from uaclm_dist.evaluate.bootstrap import bootstrap_ci, paired_bootstrap_diff
from uaclm_dist.evaluate.compare import compare_methods, markdown_table
from uaclm_dist.evaluate.correctness import is_correct
from uaclm_dist.evaluate.frame import example_frame
from uaclm_dist.evaluate.metrics import (
    MetricWarning,
    auarc,
    auroc,
    ece,
    ood_aupr,
    ood_auroc,
    pearson,
    prr,
    rejection_curve,
    spearman,
)
from uaclm_dist.evaluate.stats import ExampleStats
from uaclm_dist.evaluate.summary import compute_metrics


def synthetic(n=400, seed=0, signal=1.0, ood=0):
    """A per-example frame where uncertainty tracks (1 - ROUGE-L) with noise."""
    rng = np.random.default_rng(seed)
    rouge = rng.uniform(0, 1, n)
    noise = rng.normal(0, 1, n)
    df = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(n)],
            "rouge_l": rouge,
            "confidence": np.clip(rouge + rng.normal(0, 0.1, n), 0, 1),
            "te": signal * (1 - rouge) + 0.3 * noise,
            "length": rng.integers(1, 6, n).astype(float),
            "is_ood": np.zeros(n, bool),
        }
    )
    if ood:
        extra = pd.DataFrame(
            {
                "id": [f"ood{i}" for i in range(ood)],
                "rouge_l": np.zeros(ood),
                "confidence": np.full(ood, 0.2),
                "te": 2.0 + rng.normal(0, 0.3, ood),
                "length": rng.integers(1, 6, ood).astype(float),
                "is_ood": np.ones(ood, bool),
            }
        )
        df = pd.concat([df, extra], ignore_index=True)
    return df


# ---------------------------------------------------------------------------------------- AUROC


def test_auroc_orientation():
    incorrect = np.array([1, 1, 0, 0, 0], bool)
    separating = np.array([0.9, 0.8, 0.1, 0.2, 0.3])  # incorrect answers more uncertain
    assert auroc(incorrect, separating) == 1.0
    assert auroc(incorrect, -separating) == 0.0
    # hand case: pairs (pos, neg): 0.5 > 0.1, 0.5 < 0.7, 0.2 > 0.1, 0.2 < 0.7 -> 2 / 4
    assert auroc([1, 1, 0, 0], [0.5, 0.2, 0.1, 0.7]) == pytest.approx(0.5)
    # ties count 1/2
    assert auroc([1, 0], [0.3, 0.3]) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_equals_sklearn_with_ties(seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    y = rng.random(500) < 0.3
    u = rng.integers(0, 7, 500).astype(float) + y  # many ties, some signal
    assert auroc(y, u) == pytest.approx(roc_auc_score(y, u), abs=1e-12)
    assert ood_auroc(y, -u) == pytest.approx(roc_auc_score(y, -u), abs=1e-12)


def test_auroc_one_class_is_nan_with_warning():
    with pytest.warns(MetricWarning, match="only one class"):
        assert math.isnan(auroc([0, 0, 0], [0.1, 0.2, 0.3]))


def test_ood_metrics():
    is_ood = [0, 0, 1, 1]
    assert ood_auroc(is_ood, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert ood_aupr(is_ood, [0.1, 0.2, 0.8, 0.9]) == 1.0
    # ranking OOD, ID, OOD, ID (descending): AP = (1/1 + 2/3) / 2
    assert ood_aupr([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)


# ------------------------------------------------------------------------------ rejection curves


def test_auarc_by_hand_oracle_and_random():
    correct = np.array([1, 0, 1, 0], bool)
    # score keeps order (most certain first): c, i, c, i -> prefix accs 1, 1/2, 2/3, 1/2
    score = np.array([0.1, 0.2, 0.3, 0.4])
    assert auarc(correct, score) == pytest.approx((1 + 0.5 + 2 / 3 + 0.5) / 4)
    oracle = auarc(correct, ~correct)  # prefix accs 1, 1, 2/3, 1/2
    assert oracle == pytest.approx((1 + 1 + 2 / 3 + 0.5) / 4)
    worst = auarc(correct, correct)  # prefix accs 0, 0, 1/3, 1/2
    assert worst == pytest.approx((0 + 0 + 1 / 3 + 0.5) / 4)
    # a constant score (all tied) equals the expected random-order value = accuracy
    assert auarc(correct, np.zeros(4)) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    big = rng.random(2000) < 0.4
    assert auarc(big, rng.random(2000)) == pytest.approx(big.mean(), abs=0.03)
    assert auarc(big, ~big) > auarc(big, rng.random(2000)) + 0.2


def test_rejection_curve_shape():
    rate, kept = rejection_curve([1.0, 0.0, 1.0, 0.0], [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(rate, [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(kept, [0.5, 2 / 3, 0.5, 1.0])


def test_prr_oracle_random_and_reverse():
    rng = np.random.default_rng(0)
    rouge = rng.uniform(0, 1, 3000)
    assert prr(rouge, -rouge) == pytest.approx(1.0)
    assert prr(rouge, 1 - rouge) == pytest.approx(1.0)
    random = [prr(rouge, rng.random(3000)) for _ in range(20)]
    assert abs(np.mean(random)) < 0.03 and max(map(abs, random)) < 0.15
    assert prr(rouge, rouge) < -0.9
    with pytest.warns(MetricWarning, match="constant"):
        assert math.isnan(prr(np.full(5, 0.5), np.arange(5.0)))


def test_prr_by_hand():
    rouge = np.array([1.0, 0.0, 0.5])
    score = np.array([0.0, 1.0, 2.0])  # order: 1.0, 0.0, 0.5 -> prefix means 1, .5, .5
    unc, rnd = (1 + 0.5 + 0.5) / 3, 0.5
    oracle = (1 + 0.75 + 0.5) / 3
    assert prr(rouge, score) == pytest.approx((unc - rnd) / (oracle - rnd))


# ------------------------------------------------------------------------------------ calibration


def test_correlations_sign():
    rouge = np.array([0.0, 0.2, 0.5, 0.9])
    assert spearman(rouge, [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert pearson(rouge, 1 - rouge) == pytest.approx(-1.0)
    with pytest.warns(MetricWarning):
        assert math.isnan(spearman(rouge, [1, 1, 1, 1]))


def test_ece_by_hand():
    conf = [0.05, 0.15, 0.95, 0.92, 0.55]
    correct = [0, 0, 1, 0, 1]
    # bins: 0 {0.05: wrong}, 1 {0.15: wrong}, 5 {0.55: right}, 9 {0.95 right, 0.92 wrong}
    expected = (0.05 + 0.15 + abs(1 - 0.55) + 2 * abs(0.5 - 0.935)) / 5
    assert ece(conf, correct) == pytest.approx(expected)
    assert ece([1.0, 1.0], [1, 1]) == 0.0  # 1.0 falls in the last bin
    assert ece([0.25, 0.75], [0, 1], n_bins=2) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        ece([1.5], [1])


# -------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_estimate_and_narrows_with_n():
    df_small, df_big = synthetic(n=100, seed=1), synthetic(n=2000, seed=1)
    widths = []
    for df in (df_small, df_big):
        inc = ~is_correct(df, 0.3)
        point = auroc(inc, df["te"])
        low, high = bootstrap_ci(auroc, inc, df["te"].to_numpy(), n=300, seed=0)
        assert low <= point <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2
    assert all(math.isnan(x) for x in bootstrap_ci(np.mean, [1.0, 2.0], n=0))


def test_bootstrap_is_seeded():
    x = np.random.default_rng(0).random(50)
    assert bootstrap_ci(np.mean, x, n=200, seed=3) == bootstrap_ci(np.mean, x, n=200, seed=3)
    # and the seed is used: another seed draws other resamples (equal only if it were ignored)
    assert bootstrap_ci(np.mean, x, n=200, seed=3) != bootstrap_ci(np.mean, x, n=200, seed=4)


def test_a_nan_rouge_is_an_error_naming_the_example_not_silently_incorrect():
    from uaclm_dist.evaluate.correctness import is_correct

    table = pd.DataFrame({"id": ["q1", "q2", "q3"], "rouge_l": [0.9, float("nan"), 0.1]})
    with pytest.raises(ValueError, match=r"ROUGE-L is NaN for 1 example\(s\): 'q2'"):
        is_correct(table)
    with pytest.raises(ValueError, match=r"ROUGE-L is NaN for 1 example\(s\): position 0"):
        is_correct(np.array([float("nan"), 0.5]))
    with pytest.raises(ValueError, match="ROUGE-L is NaN"):
        is_correct(float("nan"))
    assert is_correct(table.dropna()).tolist() == [True, False]


def test_paired_diff_identical_methods_is_zero_and_detects_a_real_gain():
    df = synthetic(n=300)
    inc, u = ~is_correct(df, 0.3), df["te"].to_numpy()
    d = paired_bootstrap_diff(auroc, [inc, u], [inc, u], n=200)
    assert d[:4] == (0.0, 0.0, 0.0, 0.0) and d.p_value == 1.0
    noisy = u + np.random.default_rng(5).normal(0, 2, u.size)
    gain = paired_bootstrap_diff(auroc, [inc, u], [inc, noisy], n=300)
    assert gain.diff > 0 and gain.low > 0 and gain.low <= gain.diff <= gain.high
    assert gain.p_value < 0.05 and gain.df == u.size - 1
    half = gain.high - gain.diff
    assert half == pytest.approx(gain.diff - gain.low) and half > 1.96 * gain.se  # t, not z
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap_diff(auroc, [inc, u], [inc[:10], u[:10]])


# -------------------------------------------------------------------------------- compute_metrics


def test_compute_metrics_structure_and_json():
    df = synthetic(n=300, ood=60)
    out = compute_metrics(df, ["te", "length"], threshold=0.3, n_bootstrap=50)
    json.dumps(out, allow_nan=False)
    assert out["n_examples"] == 300 and out["n_ood"] == 60
    ind = df[~df["is_ood"]]
    assert out["accuracy"] == pytest.approx(np.mean(is_correct(ind, 0.3)))
    te = out["scores"]["te"]
    for key in ("auroc", "auarc", "prr", "spearman", "pearson", "ood_auroc", "ood_aupr"):
        low, high = te[f"{key}_ci"]
        assert low <= te[key] <= high, key
    assert te["auroc"] > 0.8 and te["spearman"] < -0.5 and te["ood_auroc"] > 0.8
    n_correct = int(is_correct(ind, 0.3).sum())
    assert (out["n_correct"], out["n_incorrect"]) == (n_correct, 300 - n_correct)
    for key in ("auroc", "auarc", "prr"):  # class counts beside every value
        assert (te[f"{key}_n_correct"], te[f"{key}_n_incorrect"]) == (n_correct, 300 - n_correct)
    assert (te["ood_auroc_n_in_domain"], te["ood_aupr_n_ood"]) == (300, 60)
    assert out["intervals"]["auroc"].startswith("DeLong")
    assert out["intervals"]["ood_aupr"].startswith("percentile bootstrap resampling each class")
    assert abs(out["scores"]["length"]["auroc"] - 0.5) < 0.1
    assert out["auarc_oracle"] >= te["auarc"] >= out["accuracy"] - 0.05
    assert out["warnings"] == []


def test_compute_metrics_undefined_metrics_become_none():
    df = synthetic(n=50)
    df["rouge_l"] = 1.0  # every answer correct
    with warnings.catch_warnings():
        warnings.simplefilter("error", MetricWarning)  # nothing leaks out of compute_metrics
        out = compute_metrics(df, ["te"], n_bootstrap=20)
    text = json.dumps(out, allow_nan=False)
    assert out["scores"]["te"]["auroc"] is None and out["scores"]["te"]["auroc_ci"] == [None, None]
    assert any("te: auroc: only one class" in w for w in out["warnings"])
    assert "NaN" not in text
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(df.assign(te=np.nan), ["te"], n_bootstrap=0)


def test_example_frame_from_stats():
    ex = ExampleStats(
        id="a", question="q?", references=["Paris"], greedy_text="Paris",
        greedy_token_logprobs=[-0.1, -0.1], greedy_token_entropies=[0.2, 0.4],
        sample_texts=["Paris", "Lyon"], sample_token_logprobs=[[-0.1], [-2.0]],
        cluster_ids=[0, 1],
    )
    df = example_frame([ex], ["te", "se", "length"])
    row = df.iloc[0]
    assert row["rouge_l"] == 1.0 and bool(row["is_correct"]) and row["n_clusters"] == 2
    assert row["te"] == pytest.approx(0.3) and row["length"] == 2.0


# ------------------------------------------------------------------------------------- comparison


def test_compare_methods_table_and_paired_diffs():
    base = synthetic(n=300, seed=2, signal=0.3)
    better = base.copy()
    better["te"] = (1 - better["rouge_l"]) + 0.1 * np.random.default_rng(9).normal(size=300)
    better = better.sample(frac=1.0, random_state=0)  # row order must not matter
    cmp = compare_methods({"clm": base, "ua_clm": better}, ["te", "length"], n_bootstrap=200)
    assert list(cmp.table.index) == ["clm", "ua_clm"]
    assert list(cmp.table.columns) == [
        "Accuracy", "AUROC te", "AUROC length", "AUARC te", "AUARC length"
    ]
    row = cmp.diffs.set_index("quantity").loc["AUROC te"]
    assert row["diff"] > 0 and row["excludes_zero"] and row["interval"] == "delong"
    assert row["verdict"] == row["verdict_holm"] == "yes" and row["p_holm"] >= row["p_value"]
    acc = cmp.diffs.set_index("quantity").loc["Accuracy"]
    assert acc["diff"] == 0.0 and not acc["excludes_zero"]  # same answers
    assert acc["verdict"] == acc["verdict_holm"] == "no" and acc["interval"] == "bootstrap"
    n_correct = int(is_correct(base, 0.3).sum())
    assert cmp.counts.loc["ua_clm"].tolist() == [n_correct, 300 - n_correct]
    assert (row["n_correct"], row["baseline_n_incorrect"]) == (n_correct, 300 - n_correct)
    assert cmp.n_comparisons == 5
    md = cmp.to_markdown()
    assert "| ua_clm |" in md and "Differences vs `clm`" in md and "**" in md
    assert f"{n_correct}/{300 - n_correct}" in md and "**5 comparisons**" in md
    assert "CI excludes 0 (unadjusted)" in md and "Holm: excludes 0 (m=5)" in md
    out = cmp.to_dict()
    json.dumps(out, allow_nan=False)
    assert out["n_comparisons"] == 5 and out["counts"]["clm"]["n_correct"] == n_correct

    same = compare_methods({"a": base, "b": base.copy()}, ["te"], n_bootstrap=50)
    assert (same.diffs[["diff", "low", "high"]].to_numpy() == 0).all()
    with pytest.raises(ValueError, match="different examples"):
        compare_methods({"a": base, "b": base.iloc[:-1]}, ["te"])


def test_a_method_with_its_own_baseline_is_paired_with_it():
    base = synthetic(n=300, seed=2, signal=0.3)
    control = synthetic(n=300, seed=3, signal=0.3)
    staged = control.copy()
    staged["te"] = (1 - staged["rouge_l"]) + 0.1 * np.random.default_rng(9).normal(size=300)
    frames = {"clm": base, "then_clm": control, "then_ua": staged}
    cmp = compare_methods(frames, ["te"], baseline="clm", pairs={"then_ua": "then_clm"},
                          n_bootstrap=50)  # fmt: skip
    alone = compare_methods({"then_clm": control, "then_ua": staged}, ["te"], n_bootstrap=50)
    rows = cmp.diffs.set_index(["method", "quantity"])
    assert rows.loc[("then_clm", "AUROC te"), "baseline"] == "clm"
    paired = rows.loc[("then_ua", "AUROC te")]
    reference = alone.diffs.set_index("quantity").loc["AUROC te"]
    assert paired["baseline"] == "then_clm"
    assert (paired["diff"], paired["low"], paired["high"]) == (
        reference["diff"], reference["low"], reference["high"])
    n_control = int(is_correct(control, 0.3).sum())
    assert paired["baseline_n_correct"] == n_control
    assert cmp.pairs == {"then_ua": "then_clm"} and cmp.to_dict()["pairs"] == cmp.pairs
    md = cmp.to_markdown()
    assert "| then_ua (vs then_clm) |" in md and "| then_clm |" in md
    assert "`then_ua` vs `then_clm`" in md
    assert compare_methods(frames, ["te"], pairs={"clm": "clm"}, n_bootstrap=0).pairs == {}
    with pytest.raises(KeyError, match=r"\['nope'\] not among the methods"):
        compare_methods(frames, ["te"], pairs={"then_ua": "nope"})


def test_markdown_table():
    md = markdown_table(["a", "b"], [["x|y", 1.5]])
    assert md.splitlines() == ["| a | b |", "| :--- | ---: |", "| x\\|y | 1.5 |"]


# ---------------------------------------------------------------------------------- registry


def test_a_registered_metric_reaches_metrics_comparison_and_report(tmp_path):
    from uaclm_dist.evaluate.metrics import METRICS, MetricSpec
    from uaclm_dist.evaluate.report import write_report

    mean_gap = lambda correct, u: float(u[~correct].mean() - u[correct].mean())
    METRICS.register(MetricSpec("mean_gap", mean_gap, "is_correct", "Mean gap"))
    try:
        df = synthetic(n=200, ood=20)
        out = compute_metrics(df, ["te"], n_bootstrap=20)
        keys = list(out["scores"]["te"])
        assert keys.index("mean_gap_ci") == keys.index("mean_gap") + 1
        assert keys.index("mean_gap") < keys.index("ood_auroc")  # in-domain before OOD
        assert out["scores"]["te"]["mean_gap_n_correct"] == out["n_correct"]
        assert out["scores"]["te"]["mean_gap"] > 0.5
        cmp = compare_methods({"a": df, "b": df.copy()}, ["te"], metrics=["mean_gap"])
        assert list(cmp.table.columns) == ["Accuracy", "Mean gap te"]
        text = write_report(tmp_path, {"a": df}, {"a": out}, cmp).read_text()
        assert "| Mean gap |" in text.replace(" [95% CI]", "")
    finally:
        METRICS.unregister("mean_gap")
    with pytest.raises(ValueError, match="in-domain rows only"):
        compare_methods({"a": df}, ["te"], metrics=["ood_auroc"])
