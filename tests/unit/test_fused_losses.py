"""Fused and vocab-parallel losses against the dense reference (paper equations)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp
import vocab_parallel_worker as vpw

from uaclm_dist.losses import reference as R
from uaclm_dist.losses.fused import choose_kernel, fused_loss
from uaclm_dist.losses.objectives import OBJECTIVES, build_objective
from uaclm_dist.losses.single_pass import chunk_tokens_for
from uaclm_dist.losses.vocab_parallel import vocab_parallel_loss, vocab_shard_range

REFERENCE = {"clm": R.clm_loss, "ua_clm": R.ua_clm_loss, "clm+ua": R.clm_plus_ua_loss}
# Fast paths are compared with the reference evaluated in float64 on the same (rounded) inputs:
# an fp32 fast path must be within 1e-5 of the exact value (the fp32 reference itself is only
# that close, so comparing fp32 with fp32 would double the error budget).
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
UA_CLM = build_objective("ua_clm")


def _clm_plus_ua(beta: float):
    return build_objective("clm+ua", beta_start=beta, beta_end=beta)


def _reference(objective, logits, labels, **kwargs):
    return REFERENCE[objective](logits.double(), labels, **kwargs)


def _inputs(dtype, b=3, t=7, h=16, v=53, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=g, dtype=torch.float64).to(dtype)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64).to(dtype)
    bias = torch.randn(v, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:, 0] = (hidden[:, 0].double() @ weight.double().T + bias.double()).argmax(-1)
    labels[0, 2] = -100
    labels[-1, :] = -100  # a sequence with nothing supervised
    return hidden, weight, bias, labels


def _assert_close(a, b, tol, what):
    """Elementwise |a - b| <= tol + tol |b| (torch.allclose with rtol = atol = tol)."""
    a, b = a.double(), b.double()
    excess = ((a - b).abs() - tol * (1 + b.abs())).max().item() if a.numel() else -1.0
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert excess <= 0, f"{what}: max abs error {err:.3e} exceeds tol {tol:.0e} (rtol=atol)"


OBJECTIVE_CASES = [
    ("clm", {}),
    ("ua_clm", {}),
    ("ua_clm", {"pooling": "sequence"}),
    ("ua_clm", {"eps": 1e-3}),
    ("clm+ua", {"beta": 0.2}),
    ("clm+ua", {"beta": 0.8, "pooling": "sequence"}),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("objective,kwargs", OBJECTIVE_CASES)
@pytest.mark.parametrize("chunks", [(2, 7), (1024, 4096), (5, 53)])
@pytest.mark.parametrize("head", ["trainable", "frozen"])
def test_fused_matches_reference(dtype, objective, kwargs, chunks, head):
    """Trainable head: the two-pass kernel (hidden, weight and bias gradients); frozen head (the
    QLoRA case): the single-pass kernel (hidden gradient); both against float64 Eq. 2."""
    hidden, weight, bias, labels = _inputs(dtype)
    leaves = [x.double().requires_grad_(True) for x in (hidden, weight, bias)]
    ref = _reference(objective, leaves[0] @ leaves[1].T + leaves[2], labels, **kwargs)
    ref_grads = torch.autograd.grad(ref.loss, leaves)

    trainable = head == "trainable"
    fleaves = [hidden.detach().clone().requires_grad_(True)]
    fleaves += [x.detach().clone().requires_grad_(trainable) for x in (weight, bias)]
    out = fused_loss(
        fleaves[0], fleaves[1], labels, bias=fleaves[2],
        objective=vpw.objective_for(objective, kwargs), chunk_tokens=chunks[0],
        chunk_vocab=chunks[1], kernel="two_pass" if trainable else "single_pass",
    )  # fmt: skip
    grads = torch.autograd.grad(out.loss, fleaves if trainable else fleaves[:1])
    tol = TOL[dtype]
    _assert_close(out.loss, ref.loss, tol, "loss")
    for name, g, rg in zip(("hidden", "weight", "bias"), grads, ref_grads, strict=False):
        _assert_close(g, rg, tol, f"grad {name}")
    ref_diag, diag = ref.as_floats(), out.as_floats()
    if not vpw.objective_for(objective, kwargs).uses_entropy:  # clm: entropy not computed
        ref_diag = {k: v for k, v in ref_diag.items() if not k.startswith("entropy_")}
    assert ref_diag.keys() == diag.keys()
    for key, value in ref_diag.items():
        assert math.isclose(diag[key], value, rel_tol=tol, abs_tol=tol), key


def test_kernel_choice_follows_the_head():
    hidden, weight, bias, _ = _inputs(torch.float32)
    hidden.requires_grad_(True)
    assert choose_kernel("auto", hidden, weight, bias) == "single_pass"
    assert choose_kernel("auto", hidden, weight.requires_grad_(True), None) == "two_pass"
    with pytest.raises(ValueError, match="frozen"):
        choose_kernel("single_pass", hidden, weight, None)
    with torch.no_grad():  # statistics only (the entropy probe): no gradient rows to prepare
        assert choose_kernel("auto", hidden, weight, None) == "two_pass"
    with pytest.raises(ValueError, match="auto, single_pass or two_pass"):
        choose_kernel("fast", hidden, weight, None)


def test_single_pass_chunk_follows_the_memory_budget():
    assert chunk_tokens_for(32000, 64) == 524  # 64 MiB / (32,000 x 4 B)
    assert chunk_tokens_for(128256, 64) == 256  # 130 from the budget, raised to the floor
    assert chunk_tokens_for(128256, 64, min_tokens=1) == 130
    assert chunk_tokens_for(128256, 256) == 523
    assert chunk_tokens_for(10**9, 1, min_tokens=1) == 1


TOKEN_OBJECTIVES = [n for n in OBJECTIVES.names() if not OBJECTIVES.get(n).needs_full_vocab]


@pytest.mark.parametrize("name", TOKEN_OBJECTIVES)
@pytest.mark.parametrize("step", [0, 9])
def test_every_registered_objective_fused_equals_its_dense_form(name, step):
    """Whatever is registered: the fused path (statistics -> from_stats) equals the objective's
    own dense form, values and float64 gradients, early and late in its weight schedule, with a
    trainable head (two pass) and a frozen one (single pass, its gradient_directions)."""
    objective = build_objective(name)
    hidden, weight, bias, labels = _inputs(torch.float64)
    leaves = [x.clone().requires_grad_(True) for x in (hidden, weight, bias)]
    dense = objective.dense(leaves[0] @ leaves[1].T + leaves[2], labels, step=step,
                            total_steps=10)  # fmt: skip
    dense_grads = torch.autograd.grad(dense.loss, leaves)
    fleaves = [x.clone().requires_grad_(True) for x in (hidden, weight, bias)]
    out = fused_loss(fleaves[0], fleaves[1], labels, bias=fleaves[2], objective=objective,
                     step=step, total_steps=10, chunk_tokens=4, chunk_vocab=16)  # fmt: skip
    grads = torch.autograd.grad(out.loss, fleaves)
    _assert_close(out.loss, dense.loss, 1e-10, f"{name} loss")
    for what, g, dg in zip(("hidden", "weight", "bias"), grads, dense_grads, strict=True):
        _assert_close(g, dg, 1e-10, f"{name} grad {what}")
    assert out.terms.keys() == dense.terms.keys()

    h = hidden.clone().requires_grad_(True)
    single = fused_loss(h, weight, labels, bias=bias, objective=objective, step=step,
                        total_steps=10, chunk_tokens=4, kernel="single_pass")  # fmt: skip
    (grad_h,) = torch.autograd.grad(single.loss, h)
    _assert_close(single.loss, dense.loss, 1e-10, f"{name} single-pass loss")
    _assert_close(grad_h, dense_grads[0], 1e-10, f"{name} single-pass grad hidden")


class _NoDirections(type(UA_CLM)):
    """UA-CLM without gradient directions: the kernel falls back to the identity basis."""

    def gradient_directions(self, stats):
        return None


class _WrongDirections(type(UA_CLM)):
    """UA-CLM claiming cross-entropy's direction: the backward must refuse it."""

    name = "ua_clm_wrong_directions"

    def gradient_directions(self, stats):
        return build_objective("clm").gradient_directions(stats)


def test_single_pass_without_directions_uses_the_identity_basis():
    hidden, weight, bias, labels = _inputs(torch.float64)
    h = hidden.clone().requires_grad_(True)
    out = fused_loss(h, weight, labels, bias=bias, objective=_NoDirections(UA_CLM.config),
                     chunk_tokens=5)  # fmt: skip
    (grad,) = torch.autograd.grad(out.loss, h)
    hd = hidden.clone().requires_grad_(True)
    ref = R.ua_clm_loss(hd @ weight.T + bias, labels)
    (ref_grad,) = torch.autograd.grad(ref.loss, hd)
    _assert_close(out.loss, ref.loss, 1e-10, "loss")
    _assert_close(grad, ref_grad, 1e-10, "grad hidden")


def test_single_pass_refuses_a_gradient_outside_the_declared_directions():
    hidden, weight, _, labels = _inputs(torch.float32)
    h = hidden.clone().requires_grad_(True)
    out = fused_loss(h, weight, labels, objective=_WrongDirections(UA_CLM.config))
    with pytest.raises(RuntimeError, match="ua_clm_wrong_directions.*gradient_directions"):
        out.loss.backward()


def test_single_pass_scales_with_the_upstream_gradient():
    """Loss scaling and gradient accumulation multiply the upstream gradient: the rows scale."""
    hidden, weight, _, labels = _inputs(torch.float64)
    grads = []
    for factor in (1.0, -1024.0):
        h = hidden.clone().requires_grad_(True)
        out = fused_loss(h, weight, labels, objective=_clm_plus_ua(0.8), chunk_tokens=3)
        (out.loss * factor).backward()
        grads.append(h.grad / factor)
    _assert_close(grads[1], grads[0], 1e-12, "scaled gradient")


def test_clm_plus_ua_weight_follows_the_paper_schedule():
    objective = build_objective("clm+ua")  # beta 0.2 for the first 20% of steps, 0.8 after
    assert [objective.weight(s, 10) for s in range(4)] == [0.2, 0.2, 0.8, 0.8]
    assert build_objective("ua_clm").weight(0, 10) is None


def test_fused_frozen_head_gets_no_gradient_and_flat_inputs_work():
    hidden, weight, _, labels = _inputs(torch.float64)
    h = hidden.reshape(-1, hidden.shape[-1]).clone().requires_grad_(True)
    seq = torch.arange(hidden.shape[0]).repeat_interleave(hidden.shape[1])
    out = fused_loss(h, weight, labels.reshape(-1), objective=build_objective(
        "ua_clm", ua_pooling="sequence"), sequence_ids=seq)  # fmt: skip
    out.loss.backward()
    assert weight.grad is None and h.grad is not None
    ref = R.ua_clm_loss(hidden @ weight.T, labels, pooling="sequence")
    _assert_close(out.loss.detach(), ref.loss, 1e-10, "loss")


def test_fused_gradcheck_float64():
    hidden, weight, bias, labels = _inputs(torch.float64, b=3, t=3, h=4, v=11)
    leaves = tuple(x.clone().requires_grad_(True) for x in (hidden, weight, bias))
    for objective, kwargs in OBJECTIVE_CASES:

        def f(h, w, b, objective=objective, kwargs=kwargs):
            return fused_loss(h, w, labels, bias=b, objective=vpw.objective_for(objective, kwargs),
                              chunk_tokens=2, chunk_vocab=4).loss  # fmt: skip

        assert torch.autograd.gradcheck(f, leaves), objective

        def single(h, objective=objective, kwargs=kwargs):
            return fused_loss(h, weight, labels, bias=bias,
                              objective=vpw.objective_for(objective, kwargs), chunk_tokens=2,
                              kernel="single_pass").loss  # fmt: skip

        assert torch.autograd.gradcheck(single, (leaves[0],)), f"single pass {objective}"


def test_fused_exact_ties_follow_torch_argmax():
    g = torch.Generator().manual_seed(1)
    weight = torch.randint(-2, 3, (29, 5), generator=g).double()
    weight[20] = weight[3]
    weight[28] = weight[0]
    hidden = torch.randint(-2, 3, (40, 5), generator=g).double()
    logits = hidden @ weight.T
    labels = logits.argmax(-1)  # lowest index among maxima
    ref = R.ua_clm_loss(logits.unsqueeze(0), labels.unsqueeze(0))
    n_ties = int(((logits == logits.max(-1, keepdim=True).values).sum(-1) > 1).sum())
    assert n_ties > 0, "fixture should contain exact ties"
    for kernel in ("two_pass", "single_pass"):
        out = fused_loss(hidden, weight, labels, objective=UA_CLM, chunk_tokens=7, chunk_vocab=4,
                         kernel=kernel)  # fmt: skip
        assert out.as_floats()["n_incorrect"] == 0.0 == ref.as_floats()["n_incorrect"], kernel
        _assert_close(out.loss, ref.loss, 1e-12, f"{kernel} loss")


def test_fused_no_supervised_tokens_gives_zero_loss_and_zero_grad():
    hidden, weight, _, labels = _inputs(torch.float64)
    h = hidden.clone().requires_grad_(True)
    out = fused_loss(h, weight, torch.full_like(labels, -100), objective=_clm_plus_ua(0.5))
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.count_nonzero(h.grad) == 0
    assert out.as_floats()["n_tokens"] == 0.0


def test_fused_bf16_is_finite_and_close_to_fp32():
    hidden, weight, _, labels = _inputs(torch.float32, b=4, t=16, h=64, v=1000)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        h = hidden.to(dtype).detach().requires_grad_(True)
        out = fused_loss(h, weight.to(dtype), labels, objective=_clm_plus_ua(0.8))
        out.loss.backward()
        assert out.loss.dtype == torch.float32
        assert torch.isfinite(out.loss) and torch.isfinite(h.grad.float()).all()
        results[dtype] = (out.loss.item(), h.grad.float())
    (l32, g32), (l16, g16) = results[torch.float32], results[torch.bfloat16]
    assert abs(l16 - l32) <= 0.02 * abs(l32)
    cos = torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
    assert cos > 0.99


def test_fused_rejects_ult_with_a_pointer_to_the_reference():
    hidden, weight, _, labels = _inputs(torch.float32)
    with pytest.raises(ValueError, match="ult"):
        fused_loss(hidden, weight, labels, objective=build_objective("ult"))


def test_vocab_shard_range_tiles_the_vocabulary():
    for vocab in (1, 7, 37, 49152):
        for world in (1, 2, 3, 4, 8):
            ranges = [vocab_shard_range(vocab, r, world) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == vocab
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
            sizes = [e - s for s, e in ranges]
            assert max(sizes) - min(sizes) <= 1


def test_vocab_parallel_without_process_group_is_the_fused_loss():
    hidden, weight, _, labels = _inputs(torch.float64)
    a = vocab_parallel_loss(hidden, weight, labels, vocab_start=0, group=None, objective=UA_CLM)
    b = fused_loss(hidden, weight, labels, objective=UA_CLM)
    assert a.loss.item() == b.loss.item()


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_vocab_parallel_matches_reference_over_gloo(world, tmp_path):
    mp.spawn(
        vpw.run_rank,
        args=(world, str(tmp_path / "init"), str(tmp_path)),
        nprocs=world,
        join=True,
    )
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for i, first in enumerate(per_rank[0]):
        dtype, case, objective, kwargs = (
            first["dtype"],
            first["case"],
            first["objective"],
            first["kwargs"],
        )
        what = f"world={world} {dtype} {case} {objective} {kwargs} {first['head']} head"
        hiddens, labels, weight, bias = vpw.make_inputs(world, dtype, case)
        w = weight.double().requires_grad_(True)
        b = bias.double().requires_grad_(True)
        total = 0.0
        for rank in range(world):
            got = per_rank[rank][i]
            h = hiddens[rank].double().requires_grad_(True)
            ref = _reference(objective, h @ w.T + b, labels[rank], **kwargs)
            (grad_h,) = torch.autograd.grad(ref.loss, h, retain_graph=True)
            total = total + ref.loss
            tol = TOL[dtype]
            _assert_close(got["loss"], ref.loss.detach(), tol, f"{what} rank {rank} loss")
            _assert_close(got["grad_hidden"], grad_h, tol, f"{what} rank {rank} grad hidden")
            uses_entropy = vpw.objective_for(objective, kwargs).uses_entropy
            for key, value in ref.as_floats().items():
                if key.startswith("entropy_") and not uses_entropy:
                    assert key not in got["diagnostics"], f"{what}: {key} computed for {objective}"
                    continue
                g = got["diagnostics"][key]
                assert (math.isnan(g) and math.isnan(value)) or math.isclose(
                    g, value, rel_tol=tol, abs_tol=tol
                ), f"{what} rank {rank} {key}: {g} vs {value}"
        # The shard's weight gradient is d(sum of the ranks' losses)/dW_shard.
        grad_w, grad_b = torch.autograd.grad(total, (w, b))
        if first["head"] == "frozen":
            assert all(per_rank[r][i]["grad_weight"] is None for r in range(world)), what
            continue
        for rank in range(world):
            got = per_rank[rank][i]
            rows = slice(got["start"], got["end"])
            _assert_close(got["grad_weight"], grad_w[rows], TOL[dtype], f"{what} rank {rank} dW")
            _assert_close(got["grad_bias"], grad_b[rows], TOL[dtype], f"{what} rank {rank} db")


@pytest.mark.parametrize("world", [1, 3])
def test_sharded_head_token_stats_match_dense(world, tmp_path):
    """Per-token entropy and argmax (the entropy probe's statistics) from the sharded head
    equal the dense softmax over the full vocabulary, exact ties included."""
    mp.spawn(vpw.run_rank, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world,
             join=True)  # fmt: skip
    for case in ("random", "ties"):
        hiddens, labels, weight, bias = vpw.make_inputs(world, torch.float64, case)
        for rank in range(world):
            entropy, pred = torch.load(tmp_path / f"rank{rank}_stats.pt")[case]
            keep = labels[rank].reshape(-1) != -100
            logits = (hiddens[rank].reshape(-1, vpw.HIDDEN) @ weight.T + bias)[keep]
            logp = torch.log_softmax(logits, -1)
            assert torch.equal(pred, logits.argmax(-1)), (case, rank)
            _assert_close(entropy, -(logp.exp() * logp).sum(-1), 1e-10, f"{case} rank {rank}")
