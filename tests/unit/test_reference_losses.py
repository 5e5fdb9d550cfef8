"""The dense reference loss family against hand computation (plain Python math), gradcheck,
numerics at extreme entropies, and the behaviour the paper relies on."""

from __future__ import annotations

import math

import pytest
import torch

from uaclm_dist.losses import reference as R

# ---------------------------------------------------------------------------------------------
# A hand-computed case: vocab 4, three supervised tokens + one ignored position.
#   t0: logits [2, 0, 0, 0], label 0 -> argmax 0, correct
#   t1: logits [0, 1, 1, 0], label 2 -> exact tie between 1 and 2, argmax = 1 (lowest), incorrect
#   t2: logits [0, 0, 0, 0], label 3 -> uniform, argmax 0, incorrect, H = ln 4
#   t3: garbage logits, label -100 -> ignored everywhere
# ---------------------------------------------------------------------------------------------
ROWS = [[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [9.0, -3.0, 4.0, 1.0]]
LABELS = [0, 2, 3, -100]


def softmax(row):
    e = [math.exp(x) for x in row]
    return [x / sum(e) for x in e]


def entropy(row):
    return -sum(p * math.log(p) for p in softmax(row))


def hand_token(row, label):
    """(p_label, P_pred, H) of one token from the definitions."""
    return softmax(row)[label], max(softmax(row)), entropy(row)


def hand_stats():
    """(p_label, P_pred, H) per supervised token, computed from the definitions by hand."""
    p0, p1, p2 = softmax(ROWS[0]), softmax(ROWS[1]), softmax(ROWS[2])
    return [
        (p0[0], p0[0], entropy(ROWS[0])),  # correct
        (p1[2], p1[1], entropy(ROWS[1])),  # incorrect (tie resolved to index 1)
        (p2[3], p2[0], entropy(ROWS[2])),  # incorrect
    ]


def hand_ua(stats, correct_flags):
    inc = [(P, H) for (_, P, H), c in zip(stats, correct_flags, strict=True) if not c]
    cor = [(P, H) for (_, P, H), c in zip(stats, correct_flags, strict=True) if c]
    inc_term = -sum(P * math.log(math.tanh(H)) for P, H in inc) / len(inc) if inc else 0.0
    cor_term = -sum((1 - P) * math.log(1 - math.tanh(H)) for P, H in cor) / len(cor) if cor else 0.0
    return inc_term, cor_term


def tensors(dtype=torch.float64):
    return torch.tensor([ROWS], dtype=dtype), torch.tensor([LABELS])


def test_hand_case_statistics_and_tie_rule():
    logits, labels = tensors()
    stats = R.token_statistics(logits, labels)
    assert stats.pred[0].tolist() == [0, 1, 0, 0]  # tie at t1 -> lowest index
    assert stats.correct[0].tolist() == [True, False, False, False]
    assert stats.valid[0].tolist() == [True, True, True, False]
    assert stats.entropy[0, 2].item() == pytest.approx(math.log(4), abs=1e-12)


def test_hand_case_ua_clm():
    logits, labels = tensors()
    out = R.ua_clm_loss(logits, labels)
    inc_term, cor_term = hand_ua(hand_stats(), [True, False, False])
    assert out.loss.item() == pytest.approx(inc_term + cor_term, abs=1e-12)
    assert out.terms["ua_incorrect"].item() == pytest.approx(inc_term, abs=1e-12)
    assert out.terms["ua_correct"].item() == pytest.approx(cor_term, abs=1e-12)
    s = hand_stats()
    assert (out.n_tokens.item(), out.n_correct.item(), out.n_incorrect.item()) == (3, 1, 2)
    assert out.token_accuracy.item() == pytest.approx(1 / 3)
    assert out.entropy_correct.item() == pytest.approx(s[0][2], abs=1e-12)
    assert out.entropy_incorrect.item() == pytest.approx((s[1][2] + s[2][2]) / 2, abs=1e-12)
    assert out.prob_correct.item() == pytest.approx(s[0][1], abs=1e-12)
    assert out.prob_incorrect.item() == pytest.approx((s[1][1] + s[2][1]) / 2, abs=1e-12)


def test_hand_case_clm_and_clm_plus_ua():
    logits, labels = tensors()
    clm = -sum(math.log(p_y) for p_y, _, _ in hand_stats()) / 3
    assert R.clm_loss(logits, labels).loss.item() == pytest.approx(clm, abs=1e-12)
    inc_term, cor_term = hand_ua(hand_stats(), [True, False, False])
    out = R.clm_plus_ua_loss(logits, labels, beta=0.2)
    assert out.loss.item() == pytest.approx(clm + 0.2 * (inc_term + cor_term), abs=1e-12)
    assert out.terms["clm"].item() == pytest.approx(clm, abs=1e-12)


def test_hand_case_unlikelihood():
    logits, labels = tensors()
    p1, p2 = softmax(ROWS[1]), softmax(ROWS[2])
    clm = -sum(math.log(p_y) for p_y, _, _ in hand_stats()) / 3
    # Candidates: t0 none; t1 previous targets {0}; t2 previous targets {0, 2} (current is 3).
    ul = (0.0 - math.log(1 - p1[0]) - math.log(1 - p2[0]) - math.log(1 - p2[2])) / 3
    for alpha in (1.0, 0.5):
        out = R.unlikelihood_loss(logits, labels, alpha=alpha)
        assert out.loss.item() == pytest.approx(clm + alpha * ul, abs=1e-12)


def test_unlikelihood_candidate_excludes_current_target_and_repeats_once():
    # Labels 1, 1, 2, 1: at t1 the previous target equals the current one -> no candidate;
    # at t3 the candidates are {2} only (1 is the current target, counted once).
    logits = torch.zeros(1, 4, 3, dtype=torch.float64)
    labels = torch.tensor([[1, 1, 2, 1]])
    out = R.unlikelihood_loss(logits, labels, alpha=1.0)
    p = 1 / 3
    ul = (0 + 0 - math.log(1 - p) - math.log(1 - p)) / 4  # t2: {1}; t3: {2}
    assert out.loss.item() == pytest.approx(math.log(3) + ul, abs=1e-12)


def test_ignore_index_changes_nothing():
    logits, labels = tensors()
    out_with = R.ua_clm_loss(logits, labels)
    out_without = R.ua_clm_loss(logits[:, :3], labels[:, :3])
    assert out_with.loss.item() == pytest.approx(out_without.loss.item(), abs=1e-14)
    logits2 = logits.clone()
    logits2[0, 3] = torch.tensor([-50.0, 80.0, 3.0, 0.0])  # change the ignored position only
    for fn in (R.ua_clm_loss, R.clm_loss, lambda z, y: R.clm_plus_ua_loss(z, y, beta=0.8)):
        assert fn(logits2, labels).loss.item() == pytest.approx(fn(logits, labels).loss.item())


def test_all_correct_batch_has_zero_incorrect_term():
    logits = torch.tensor([[[3.0, 0.0, 1.0], [0.0, 2.0, 0.5]]], dtype=torch.float64)
    labels = torch.tensor([[0, 1]])
    out = R.ua_clm_loss(logits, labels)
    assert out.terms["ua_incorrect"].item() == 0.0
    assert out.n_incorrect.item() == 0 and math.isnan(out.entropy_incorrect.item())
    stats = [hand_token(r, y) for r, y in zip(logits[0].tolist(), [0, 1], strict=True)]
    _, cor_term = hand_ua(stats, [True, True])
    assert out.loss.item() == pytest.approx(cor_term, abs=1e-12)


def test_all_incorrect_batch_has_zero_correct_term():
    logits = torch.tensor([[[3.0, 0.0, 1.0], [0.0, 2.0, 0.5]]], dtype=torch.float64)
    labels = torch.tensor([[2, 0]])
    out = R.ua_clm_loss(logits, labels)
    assert out.terms["ua_correct"].item() == 0.0
    assert out.n_correct.item() == 0 and out.token_accuracy.item() == 0.0
    stats = [hand_token(r, y) for r, y in zip(logits[0].tolist(), [2, 0], strict=True)]
    inc_term, _ = hand_ua(stats, [False, False])
    assert out.loss.item() == pytest.approx(inc_term, abs=1e-12)


def test_no_supervised_tokens_gives_zero_loss_and_nan_diagnostics():
    logits = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.full((2, 3), -100)
    for out in (R.ua_clm_loss(logits, labels), R.clm_loss(logits, labels),
                R.unlikelihood_loss(logits, labels)):  # fmt: skip
        assert out.loss.item() == 0.0 and out.n_tokens.item() == 0
        assert math.isnan(out.token_accuracy.item())
        (grad,) = torch.autograd.grad(out.loss, logits)
        assert torch.count_nonzero(grad) == 0


def test_sequence_pooling_by_hand():
    # Sequence 0: the hand case (t0 correct, t1 and t2 incorrect); sequence 1: t2-like alone.
    logits = torch.tensor([ROWS[:3], [ROWS[2], ROWS[2], ROWS[2]]], dtype=torch.float64)
    labels = torch.tensor([[0, 2, 3], [3, -100, -100]])
    inc0, cor0 = hand_ua(hand_stats(), [True, False, False])
    inc1, cor1 = hand_ua([hand_stats()[2]], [False])
    out = R.ua_clm_loss(logits, labels, pooling="sequence")
    assert out.loss.item() == pytest.approx((inc0 + cor0 + inc1 + cor1) / 2, abs=1e-12)
    batch = R.ua_clm_loss(logits, labels, pooling="batch")
    inc_b, cor_b = hand_ua(hand_stats() + [hand_stats()[2]], [True, False, False, False])
    assert batch.loss.item() == pytest.approx(inc_b + cor_b, abs=1e-12)
    with pytest.raises(ValueError, match="ua_pooling"):
        R.ua_clm_loss(logits, labels, pooling="token")


def test_beta_schedule_switches_at_twenty_percent():
    assert [R.beta_schedule(s, 10) for s in range(10)] == [0.2, 0.2] + [0.8] * 8
    assert R.beta_schedule(0, 100, beta_start=0.0, beta_end=1.0, switch_fraction=0.5) == 0.0
    assert R.beta_schedule(50, 100, beta_start=0.0, beta_end=1.0, switch_fraction=0.5) == 1.0
    with pytest.raises(ValueError):
        R.beta_schedule(0, 0)


def test_shift_for_causal_lm_aligns_targets():
    logits = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    ids = torch.tensor([[5, 6, 7, 8], [1, 2, 3, -100]])
    z, y = R.shift_for_causal_lm(logits, ids)
    assert z.shape == (2, 3, 3) and y.tolist() == [[6, 7, 8], [2, 3, -100]]
    assert torch.equal(z[:, 0], logits[:, 0])


# ---------------------------------------------------------------------------------------------
# gradcheck (float64), every objective
# ---------------------------------------------------------------------------------------------

OBJECTIVES = {
    "ua_clm": lambda z, y: R.ua_clm_loss(z, y).loss,
    "ua_clm_sequence": lambda z, y: R.ua_clm_loss(z, y, pooling="sequence").loss,
    "clm": lambda z, y: R.clm_loss(z, y).loss,
    "clm+ua": lambda z, y: R.clm_plus_ua_loss(z, y, beta=0.8).loss,
    "ult": lambda z, y: R.unlikelihood_loss(z, y, alpha=1.0).loss,
}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_gradcheck_float64(name):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 7, (2, 5), generator=g)
    labels[0, 0] = int(logits[0, 0].argmax())  # at least one correct token
    labels[1, 3] = -100
    assert torch.autograd.gradcheck(lambda z: OBJECTIVES[name](z, labels), (logits,))


# ---------------------------------------------------------------------------------------------
# Numerics: entropies near 0 and near ln V at V = 256,000, low-precision inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_extreme_entropies_are_finite(dtype, name):
    vocab = 256_000
    logits = torch.zeros(1, 4, vocab)
    logits[0, 0, 7] = 60.0  # H ~ 0, correct
    logits[0, 1, 9] = 60.0  # H ~ 0, incorrect (label 3): log tanh H hits the eps clamp
    # rows 2 and 3 uniform: H = ln V ~ 12.45, where fp32 tanh(H) == 1 exactly
    labels = torch.tensor([[7, 3, 0, 5]])
    z = logits.to(dtype).requires_grad_(True)
    out = OBJECTIVES[name](z, labels)
    (grad,) = torch.autograd.grad(out, z)
    assert torch.isfinite(out) and torch.isfinite(grad.float()).all()
    assert out.dtype == torch.float32  # statistics in fp32 whatever the input dtype
    stats = R.token_statistics(z.detach(), labels)
    assert stats.entropy[0, 2].item() == pytest.approx(math.log(vocab), rel=1e-4)


def test_stable_log_forms_match_naive_where_naive_is_finite():
    h = torch.linspace(0.01, 8.0, 200, dtype=torch.float64)
    assert torch.allclose(R.log_one_minus_tanh(h), torch.log(1 - torch.tanh(h)), atol=1e-9)
    assert torch.allclose(R.log_tanh(h), torch.log(torch.tanh(h)), atol=1e-12)
    big = torch.tensor([12.45, 30.0], dtype=torch.float32)
    assert torch.isfinite(R.log_one_minus_tanh(big)).all()  # naive form is log(0) = -inf here
    assert torch.isinf(torch.log(1 - torch.tanh(big))).all()
    eps = 1e-6
    assert R.log_tanh(torch.tensor([0.0, -1e-7]), eps).tolist() == pytest.approx(
        [math.log(eps)] * 2, rel=1e-5
    )


# ---------------------------------------------------------------------------------------------
# Behaviour: the direction of the entropy update
# ---------------------------------------------------------------------------------------------


def _entropy_after_one_step(logits_row, label, lr=0.5):
    z = torch.tensor([[logits_row]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[label]])
    before = R.token_statistics(z, y).entropy.item()
    R.ua_clm_loss(z, y).loss.backward()
    with torch.no_grad():
        z -= lr * z.grad
    return before, R.token_statistics(z, y).entropy.item()


def test_gradient_step_lowers_entropy_of_a_correct_token():
    before, after = _entropy_after_one_step([1.0, 0.5, 0.0, -0.5], label=0)
    assert after < before


def test_gradient_step_raises_entropy_of_an_incorrect_token():
    before, after = _entropy_after_one_step([1.0, 0.5, 0.0, -0.5], label=2)
    assert after > before
