"""Honest intervals: DeLong against its textbook form, stratified resampling, Holm, verdicts,
and the calibration of the AUROC-difference interval on simulated null and signal cases.

The calibration cases mimic two fine-tuned models scored on the same 120 questions: each method
has its own correct answers (partly the same questions) and its own uncertainty score; the
scores share a per-question effect (the same hard questions) and, under the null, are otherwise
pure noise, independent of correctness.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from uaclm_dist.evaluate.bootstrap import bootstrap_ci, paired_bootstrap_diff, resample_indices
from uaclm_dist.evaluate.compare import MIN_CLASS_COUNT, TOO_FEW, compare_methods
from uaclm_dist.evaluate.intervals import delong_ci, delong_paired_diff, holm
from uaclm_dist.evaluate.metrics import MetricWarning, auroc, ood_aupr, prr

N = 120
CASES = 200


def two_methods(rng, n_correct_a, n_correct_b, shared, signal_a=0.0, signal_b=0.0):
    """``(incorrect_a, u_a, incorrect_b, u_b)`` ``[N]`` each; ``shared`` questions are correct
    under both methods; ``signal_*`` lowers the uncertainty of that method's correct answers."""
    order = rng.permutation(N)
    correct_a, correct_b = np.zeros(N, bool), np.zeros(N, bool)
    correct_a[order[:n_correct_a]] = True
    start = n_correct_a - shared
    correct_b[order[start : start + n_correct_b]] = True
    question = rng.normal(size=N)
    u_a = 0.5 * question + rng.normal(size=N) - signal_a * correct_a
    u_b = 0.5 * question + rng.normal(size=N) - signal_b * correct_b
    return ~correct_a, u_a, ~correct_b, u_b


def excludes_zero_fraction(draw, seed):
    """Fraction of CASES simulated cases whose 95% AUROC-difference interval excludes 0."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(CASES):
        d = delong_paired_diff(*draw(rng))
        hits += bool(d.low > 0 or d.high < 0)
    return hits / CASES


def demo_null(rng):  # ~3-4 correct of 120 vs 4, as in the closed-book demo
    return two_methods(rng, int(rng.choice([3, 4])), 4, int(rng.integers(0, 3)))


def judged_null(rng, signal=0.0):  # 30 correct / 90 incorrect each, ~2/3 shared
    return two_methods(rng, 30, 30, int(rng.integers(15, 25)), signal, signal)


# ------------------------------------------------------------------------------------ calibration


def test_auroc_difference_interval_is_calibrated_at_demo_counts():
    # measured: 0.005 (0.015-0.045 with seeds 5-9); the stratified percentile bootstrap gave
    # 0.11-0.33 on such cases
    assert excludes_zero_fraction(demo_null, seed=1) <= 0.08


def test_auroc_difference_interval_is_calibrated_where_methods_are_judged():
    # measured: 0.050 without signal, 0.065 with the same real signal in both methods
    assert excludes_zero_fraction(judged_null, seed=2) <= 0.08
    assert excludes_zero_fraction(lambda r: judged_null(r, signal=1.0), seed=3) <= 0.08


def test_auroc_difference_interval_detects_a_real_gain():
    # positive control, so the calibration tests cannot pass by never excluding 0: measured 0.985
    gain = lambda r: two_methods(r, 30, 30, int(r.integers(15, 25)), signal_a=1.5)
    assert excludes_zero_fraction(gain, seed=4) >= 0.8


# ------------------------------------- coverage of the true difference (issue 27, item 4)
#
# Two methods scored on the demo's 320 held-out questions (~150 / 170 classes), each with its
# own labels; 2,000 simulated evaluations per case; the true difference from one draw of 400,000.

REPS, N_DEMO = 2000, 320


def independent_methods(rng, n):
    """The plain null: two unrelated methods with their own labels, equally informative."""
    pa, pb = rng.random(n) < 0.47, rng.random(n) < 0.47
    return pa, rng.normal(size=n) + 0.8 * pa, pb, rng.normal(size=n) + 0.8 * pb


def shared_labels(rng, n):
    """The same labels; scores of unequal strength sharing a per-question effect."""
    z, common = rng.normal(size=n), rng.normal(size=n)
    positive = z + 0.5 * rng.normal(size=n) > 0.1
    return (positive, 0.9 * z + 0.6 * common + 0.5 * rng.normal(size=n),
            positive, 0.6 * z + 0.6 * common + 0.7 * rng.normal(size=n))  # fmt: skip


def shared_difficulty(rng, n):
    """Two fine-tunes of one base: a question's difficulty ``z`` drives B's labels strongly and
    A's weakly, and A's score tracks ``z``: A's uncertainty follows the difficulty that drives
    B's errors (the case where fixed joint-class counts made the interval too narrow)."""
    z = rng.normal(size=n)
    pa = z + 2.0 * rng.normal(size=n) > 0.0
    pb = z + 0.2 * rng.normal(size=n) > 0.1
    return pa, z + 0.3 * rng.normal(size=n), pb, rng.normal(size=n) + 0.5 * pb


def true_difference(draw) -> float:
    pa, sa, pb, sb = draw(np.random.default_rng(12345), 400_000)
    return auroc(pa, sa) - auroc(pb, sb)


def miss_rate(draw, variance=None, seed=0) -> float:
    """Fraction of REPS evaluations whose 95% interval misses the true difference; ``variance``
    replaces the SE's variance (to measure the old form)."""
    from uaclm_dist.evaluate.intervals import _smallest_class, auroc_influence, t_difference

    truth, rng, misses = true_difference(draw), np.random.default_rng(seed), 0
    for _ in range(REPS):
        pa, sa, pb, sb = draw(rng, N_DEMO)
        if variance is None:
            d = delong_paired_diff(pa, sa, pb, sb)
        else:
            (auc_a, g_a), (auc_b, g_b) = auroc_influence(pa, sa), auroc_influence(pb, sb)
            d = t_difference(auc_a - auc_b, variance(g_a - g_b, 2 * pa + pb) ** 0.5,
                             _smallest_class(pa, pb) - 1, 0.05)  # fmt: skip
        misses += not (d.low <= truth <= d.high)
    return misses / REPS


@pytest.mark.parametrize("draw", [independent_methods, shared_labels, shared_difficulty],
                         ids=lambda f: f.__name__)  # fmt: skip
def test_the_paired_auroc_interval_covers_the_true_difference(draw):
    # measured (seed 0): 0.0405, 0.044, 0.0545 (the within-class-centred form: 0.0415, 0.044,
    # 0.1005); true differences -0.0009, 0.093, 0.060
    rate = miss_rate(draw)
    assert rate <= 0.065, f"the 95% interval missed the truth in {rate:.1%} of {REPS} cases"
    if draw is independent_methods:
        assert rate >= 0.02, f"{rate:.1%}: the interval is absurdly wide under the null"


def test_centring_within_joint_classes_was_too_narrow_where_difficulty_is_shared():
    # the power of the test above: the earlier within-class-centred variance misses 0.1005
    from uaclm_dist.evaluate.intervals import stratified_variance

    assert miss_rate(shared_difficulty, variance=stratified_variance) > 0.08


# ----------------------------------------------------------------------------------------- DeLong


def test_delong_matches_the_textbook_formula_and_has_t_width():
    rng = np.random.default_rng(0)
    positive = rng.random(80) < 0.3
    score = rng.integers(0, 6, 80) + positive  # ties
    pos, neg = score[positive], score[~positive]
    psi = (pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])
    var = psi.mean(1).var(ddof=1) / pos.size + psi.mean(0).var(ddof=1) / neg.size
    value = auroc(positive, score)
    low, high = delong_ci(positive, score)
    df = min(pos.size, neg.size) - 1
    assert (high - low) / 2 == pytest.approx(sps.t.ppf(0.975, df) * var**0.5)
    assert low + high == pytest.approx(2 * value)


def test_delong_paired_diff_reduces_to_delong_with_equal_labels():
    rng = np.random.default_rng(1)
    positive = rng.random(100) < 0.4
    a, b = rng.normal(size=100) + positive, rng.normal(size=100) + 0.3 * positive
    d = delong_paired_diff(positive, a, positive, b)
    pos, neg = positive, ~positive
    comps = []
    for u in (a, b):
        psi = (u[pos][:, None] > u[neg][None]).astype(float)
        comps.append((psi.mean(1), psi.mean(0)))
    v10, v01 = comps[0][0] - comps[1][0], comps[0][1] - comps[1][1]
    var = v10.var(ddof=1) / pos.sum() + v01.var(ddof=1) / neg.sum()
    assert d.diff == pytest.approx(auroc(pos, a) - auroc(pos, b))
    assert d.se == pytest.approx(var**0.5)
    assert d.p_value < 0.05 and d.low > 0


def test_delong_needs_two_per_class():
    one = np.array([True] + [False] * 9)
    assert all(np.isnan(delong_ci(one, np.arange(10.0))))
    assert np.isnan(delong_paired_diff(one, np.arange(10.0), one, -np.arange(10.0)).low)


# ---------------------------------------------------------------------------- stratified resampling


def test_stratified_resamples_keep_class_counts_and_stay_defined():
    labels = np.array([1] * 2 + [0] * 28)
    idx = resample_indices(np.random.default_rng(0), 30, 500, labels)
    assert idx.shape == (500, 30) and (labels[idx].sum(axis=1) == 2).all()
    score = np.random.default_rng(1).normal(size=30)
    with_two = np.where(labels == 1, 2.0, score)
    low, high = bootstrap_ci(ood_aupr, labels.astype(bool), with_two, n=300, strata=labels)
    assert low == high == 1.0  # every resample has both positives, ranked first


def test_undefined_resamples_are_counted_not_dropped_silently():
    rouge = np.array([0.0] * 29 + [1.0])  # a resample without the 1.0 has constant ROUGE-L
    with pytest.warns(MetricWarning, match=r"of 200 bootstrap resamples undefined; interval not"):
        low, high = bootstrap_ci(prr, rouge, np.arange(30.0), n=200)
    assert np.isnan(low) and np.isnan(high)


def test_joint_class_strata_keep_both_methods_counts():
    rng = np.random.default_rng(2)
    inc_a, u_a, inc_b, u_b = two_methods(rng, 12, 15, 6)
    seen = []
    fn = lambda inc, u: seen.append(int(inc.sum())) or auroc(inc, u)
    strata = 2 * inc_a + inc_b
    d = paired_bootstrap_diff(fn, [inc_a, u_a], [inc_b, u_b], n=50, strata=strata, df=11)
    assert set(seen[2::2]) == {N - 12} and set(seen[3::2]) == {N - 15}
    assert np.isfinite(d.low) and d.df == 11


# ------------------------------------------------------------------------------- Holm and verdicts


def test_holm_by_hand():
    adjusted = holm([0.01, 0.04, np.nan, 0.03, 0.5])
    # m = 4 finite: sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.09, max(0.09, 0.08), max(.., 0.5)
    np.testing.assert_allclose(adjusted, [0.04, 0.09, np.nan, 0.09, 0.5])
    assert holm([]).size == 0


def frame(rng, n_correct, signal):
    correct = np.zeros(N, bool)
    correct[:n_correct] = True
    return pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(N)],
            "rouge_l": np.where(correct, 0.9, 0.1),
            "te": rng.normal(size=N) - signal * correct,
        }
    )


def test_too_few_to_judge_and_holm_columns():
    rng = np.random.default_rng(3)
    base, strong = frame(rng, 40, 0.0), frame(rng, 40, 3.0)
    rare = frame(rng, MIN_CLASS_COUNT - 1, 3.0)
    cmp = compare_methods({"base": base, "strong": strong, "rare": rare}, ["te"], n_bootstrap=50)
    rows = cmp.diffs.set_index(["method", "quantity"])
    assert rows.loc[("strong", "AUROC te"), "verdict"] == "yes"
    assert rows.loc[("strong", "AUROC te"), "verdict_holm"] == "yes"
    rare_rows = rows.loc["rare"]
    assert (rare_rows["verdict"] == TOO_FEW).all() and (rare_rows["verdict_holm"] == TOO_FEW).all()
    assert rare_rows.loc["AUROC te", "excludes_zero"]  # the interval alone would have said yes
    assert cmp.n_comparisons == 6  # 2 methods x (accuracy, AUROC, AUARC)
    expected = holm(cmp.diffs["p_value"].to_numpy())
    np.testing.assert_allclose(cmp.diffs["p_holm"], expected)
    md = cmp.to_markdown()
    assert f"| rare | AUROC te | {MIN_CLASS_COUNT - 1}/{N - MIN_CLASS_COUNT + 1} vs 40/80" in md
    assert TOO_FEW in md and "**6 comparisons**" in md and "Holm: excludes 0 (m=6)" in md

    off = compare_methods({"base": base, "strong": strong}, ["te"], n_bootstrap=0)
    assert (off.diffs["verdict"] == "n/a").all() and off.n_comparisons == 0
