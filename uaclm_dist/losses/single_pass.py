"""Single-pass loss kernel for a frozen LM head: statistics and hidden-state gradient at once.

Tokens are processed in chunks of full vocabulary rows (``[n, V]`` logits, ``n`` chosen from a
memory budget). For each chunk the kernel computes the per-token softmax statistics (entropy,
log p of the argmax and of the label, the argmax) *and* the chunk's contribution to ``dL/dh``
while the logits are in memory, then drops them. The backward of the autograd Function only
rescales stored rows: no logits are recomputed (the two-pass kernel in
:mod:`uaclm_dist.losses.token_stats` recomputes every chunk).

Why this is exact. For a token with logits ``z``, ``p = softmax(z)``, statistics
``(log p_y, log P, H)`` and upstream gradients ``c = (alpha, beta, gamma)`` of those statistics::

    dL/dz = alpha (e_y - p) + beta (e_a - p) - gamma p (z - E_p[z])        (linear in c)
    dL/dh = (dL/dz) W

The normalisers of the UA loss (|C|, |C~|, per-sequence counts) are known only after the last
chunk, so ``c`` is not. But every objective knows, from the token's own statistics, a few
*directions* ``d_1..d_K`` (each ``[3]``) such that ``c = sum_k s_k d_k`` with unknown scalars
``s_k`` (its :meth:`~uaclm_dist.losses.objectives.Objective.gradient_directions`): ``clm`` has
``d = (-1, 0, 0)``, ``ua_clm`` the gradient of the token's own unnormalised UA term. The kernel
stores ``R_k = (dL/dz with c = d_k) W``, ``[K, H]`` per token; the backward receives the true
``c`` from autograd, solves ``c = sum_k s_k d_k`` per token (least squares, and checks the
residual, so a wrong direction raises instead of training on a wrong gradient) and returns
``sum_k s_k R_k``. With K = 1 (``clm``, ``ua_clm``) that is one matmul for the logits and one for
the gradient, as many as the dense path.

The head's own gradient would need ``sum_i (dL/dz_i) h_i^T`` with the unknown ``s``: a trainable
head keeps the two-pass kernel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from uaclm_dist.losses import token_stats as ts
from uaclm_dist.losses.types import TokenStats, supervised_token_stats

#: Default memory budget of one chunk's fp32 logits, in MiB (about three tensors of this size are
#: alive at once: logits, probabilities and the gradient coefficients).
DEFAULT_CHUNK_MIB = 64.0

#: Fewest tokens per chunk whatever the budget. Each chunk streams the whole ``[V, H]`` head weight
#: through two matmuls; with fewer rows than this the matmuls are bound by that stream rather than
#: by arithmetic (measured: 130 tokens per chunk at V = 128,256 ran 1.13x dense, 523 ran 0.79x;
#: README "Loss benchmark"). At V = 128,256 the floor makes a chunk 125 MiB, at 256k 250 MiB.
MIN_CHUNK_TOKENS = 256

#: ``(stats of n tokens) -> [n, K, 3]`` directions of each token's (alpha, beta, gamma).
DirectionsFn = Callable[[TokenStats], "torch.Tensor | None"]

#: ``SoftmaxState (this rank's columns) -> SoftmaxState (all columns)``: identity for the fused
#: loss, the collectives of :mod:`uaclm_dist.losses.vocab_parallel` for a sharded head.
ReduceFn = Callable[[ts.SoftmaxState], ts.SoftmaxState]


def chunk_tokens_for(
    vocab_columns: int, budget_mib: float | None = None, min_tokens: int = MIN_CHUNK_TOKENS
) -> int:
    """Tokens per chunk: as many as fit one ``[n, vocab_columns]`` fp32 logits chunk in the
    budget (MiB), but never fewer than ``min_tokens`` (see :data:`MIN_CHUNK_TOKENS`)."""
    budget = (budget_mib or DEFAULT_CHUNK_MIB) * 2**20
    return max(1, min_tokens, int(budget // (4 * max(1, vocab_columns))))


def identity_directions(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[n, 3, 3]``: the three statistics' own gradients (any objective; three matmuls)."""
    return torch.eye(3, dtype=dtype, device=device).expand(n, 3, 3)


def _add_at(g: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> None:
    """``g[k, i, cols[i]] += values[i, k]`` where ``cols[i]`` lies in ``[0, g.shape[2])``."""
    inside = (cols >= 0) & (cols < g.shape[2])
    if not bool(inside.any()):
        return
    rows = torch.nonzero(inside, as_tuple=True)[0]
    for k in range(g.shape[0]):
        g[k].index_put_((rows, cols[rows]), values[rows, k].to(g.dtype), accumulate=True)


def _chunk_softmax(
    z: torch.Tensor, labels: torch.Tensor, col_start: int, with_entropy: bool = True
) -> tuple[ts.SoftmaxState, torch.Tensor]:
    """Softmax state of the logits chunk ``z [n, v]`` (columns from ``col_start``) and
    ``e = exp(z - m)``; ``z`` is left holding ``z - m`` (in place, to save a chunk).

    ``with_entropy`` False: no first moment (``moment`` is 0, so no entropy follows from the
    state) and ``z`` itself becomes ``e`` (no second ``[n, v]`` tensor)."""
    max_logit, local_pred = torch.max(z, dim=1)  # first maximum on ties, as torch.argmax
    in_chunk = (labels >= col_start) & (labels < col_start + z.shape[1])
    local_label = torch.where(in_chunk, labels - col_start, torch.zeros_like(labels))
    label_logit = z.gather(1, local_label.unsqueeze(1)).squeeze(1)
    z.sub_(max_logit.unsqueeze(1))
    if with_entropy:
        e = torch.exp(z)
        moment = (e * z).sum(1)
    else:
        e = z.exp_()
        moment = torch.zeros_like(max_logit)
    state = ts.SoftmaxState(
        max_logit=max_logit,
        sum_exp=e.sum(1),
        moment=moment,
        pred=local_pred + col_start,
        label_logit=torch.where(in_chunk, label_logit, torch.zeros_like(label_logit)),
        has_label=in_chunk,
    )
    return state, e


def _without_entropy(final: ts.FinalStats) -> ts.FinalStats:
    nan = torch.full_like(final.lse, float("nan"))
    return dataclasses.replace(final, entropy=nan, mean_logit=nan)


def _direction_logit_grads(
    p: torch.Tensor, q: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """``[K, n, v]`` logit gradients ``a_k p + b_k q`` of the K directions, before the one-hot
    label / argmax parts; ``p`` (and ``q``) are overwritten when K = 1 (no extra ``[n, v]``
    tensor). ``q`` None: the directions have no entropy component (``b`` is ignored)."""
    k_dirs = a.shape[1]
    if k_dirs == 1:
        g = p.mul_(a[:, :1])
        return (g if q is None else q.mul_(b[:, :1]).add_(g)).unsqueeze(0)
    g = torch.empty((k_dirs, *p.shape), dtype=p.dtype, device=p.device)
    for k in range(k_dirs):
        torch.mul(p, a[:, k : k + 1], out=g[k])
        if q is not None:
            g[k].addcmul_(q, b[:, k : k + 1])
    return g


def forward_rows(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    directions: DirectionsFn,
    *,
    vocab_start: int = 0,
    chunk_tokens: int,
    reduce: ReduceFn | None = None,
    with_entropy: bool = True,
) -> tuple[ts.FinalStats, torch.Tensor, torch.Tensor]:
    """One pass over token chunks: statistics, directions and gradient rows of every token.

    Args:
        hidden: ``[N, H]`` supervised hidden states; labels ``[N]`` global vocabulary ids.
        weight: ``[V_local, H]`` head rows ``[vocab_start, vocab_start + V_local)`` (all of them
            for the fused loss); bias ``[V_local]`` or None.
        directions: the objective's ``gradient_directions``; None from it means the identity
            basis (correct for any objective, three gradient matmuls).
        chunk_tokens: tokens per chunk; with ``reduce`` it must be the same on every rank.
        reduce: merges a chunk's partial softmax state across vocabulary shards (collectives);
            None when ``weight`` holds the whole vocabulary.
        with_entropy: False for an objective whose loss and diagnostics need no entropy
            (``Objective.uses_entropy``; its directions must then have no entropy component):
            the first moment and the entropy part of the gradient are skipped, two passes over
            each ``[n, V]`` chunk fewer, and the returned entropy is NaN.

    Returns:
        ``(stats [N] each, directions [N, K, 3], rows [N, K, H])`` in the stat dtype; ``rows``
        holds only these columns' contribution (sum over shards for the total).
    """
    n, width = hidden.shape
    dtype = ts.stat_dtype(hidden)
    weight = weight.to(ts.gemm_dtype(hidden))  # once, not per chunk (a no-op off CPU)
    pieces: list[ts.FinalStats] = []
    dirs: list[torch.Tensor] = []
    rows: list[torch.Tensor] = []
    for n0 in range(0, n, chunk_tokens):
        h, y = hidden[n0 : n0 + chunk_tokens], labels[n0 : n0 + chunk_tokens]
        z = ts._logits_chunk(h, weight, bias)  # [n, V_local], stat dtype
        local, p = _chunk_softmax(z, y, vocab_start, with_entropy)  # z: z - m_local (or p)
        final = ts.finalize(reduce(local) if reduce is not None else local)
        if not with_entropy:
            final = _without_entropy(final)
        d = directions(
            supervised_token_stats(
                final.log_prob_label, final.log_prob_pred,
                final.entropy if with_entropy else None, final.pred, y,
            )
        )
        if d is None:
            d = identity_directions(h.shape[0], dtype, hidden.device)
        d = d.to(dtype)  # [n, K, 3]
        # p = exp(z - LSE) = e * exp(m_local - LSE)
        p.mul_(torch.exp(local.max_logit - final.lse).unsqueeze(1))
        # g_k = d_alpha (e_y - p) + d_beta (e_a - p) - d_gamma q with q = p (z - E_p[z])
        a = -(d[:, :, 0] + d[:, :, 1])  # [n, K]
        q = None
        if with_entropy:
            q = z.add_((local.max_logit - final.mean_logit).unsqueeze(1)).mul_(p)
        g = _direction_logit_grads(p, q, a, -d[:, :, 2])
        del z, p, q
        _add_at(g, y - vocab_start, d[:, :, 0])
        _add_at(g, final.pred - vocab_start, d[:, :, 1])
        k_dirs = g.shape[0]
        g_in = g.reshape(k_dirs * h.shape[0], -1).to(weight.dtype)
        rows.append(
            (g_in @ weight).to(dtype).reshape(k_dirs, h.shape[0], width).transpose(0, 1)
        )
        del g, g_in
        pieces.append(final)
        dirs.append(d)
    if not pieces:
        empty = torch.zeros(0, dtype=dtype, device=hidden.device)
        final = ts.FinalStats(empty, empty, empty, empty.long(), empty, empty)
        return final, empty.reshape(0, 1, 3).expand(0, 1, 3), empty.new_zeros(0, 1, width)
    if len({d.shape[1] for d in dirs}) > 1:
        raise RuntimeError("gradient_directions returned a different K for two chunks")
    final = ts.FinalStats(
        *[torch.cat([getattr(p, f) for p in pieces]) for f in ts.FinalStats.__dataclass_fields__]
    )
    return final, torch.cat(dirs), torch.cat(rows)


def direction_scales(
    upstream: torch.Tensor, directions: torch.Tensor, *, objective: str = "objective"
) -> torch.Tensor:
    """Per-token scalars ``s [N, K]`` with ``upstream [N, 3] = sum_k s_k directions[:, k]``.

    Raises RuntimeError when a token's upstream gradient is not in the span of its directions
    (an objective whose :meth:`gradient_directions` disagrees with its ``from_stats``).
    """
    if upstream.numel() == 0:
        return upstream.new_zeros(upstream.shape[0], directions.shape[1])
    basis = directions.transpose(1, 2)  # [N, 3, K]
    if directions.shape[1] == 1:
        d = directions[:, 0]
        norm2 = (d * d).sum(1)
        scales = torch.where(norm2 > 0, (d * upstream).sum(1) / norm2.clamp_min(1e-300), 0.0)
        scales = scales.unsqueeze(1)
    else:
        scales = (torch.linalg.pinv(basis) @ upstream.unsqueeze(2)).squeeze(2)
    residual = (basis @ scales.unsqueeze(2)).squeeze(2) - upstream
    rtol = 1e-9 if upstream.dtype == torch.float64 else 1e-3
    size = upstream.norm(dim=1)
    bound = rtol * (size + 1e-3 * size.max())
    bad = residual.norm(dim=1) > bound
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise RuntimeError(
            f"{objective}: the gradient of token {i} w.r.t. (log p_y, log P, H) "
            f"{upstream[i].tolist()} is not a combination of its gradient_directions "
            f"{directions[i].tolist()}; fix {objective}.gradient_directions (or return None)"
        )
    return scales


def hidden_gradient(
    upstream: tuple[torch.Tensor | None, ...],
    directions: torch.Tensor,
    rows: torch.Tensor,
    *,
    objective: str = "objective",
) -> torch.Tensor:
    """``[N, H]`` hidden-state gradient from the autograd upstream ``(alpha, beta, gamma)``
    (each ``[N]`` or None for zero), the stored ``directions [N, K, 3]`` and ``rows [N, K, H]``:
    ``sum_k s_k rows[:, k]`` with ``s`` from :func:`direction_scales`."""
    zeros = torch.zeros(rows.shape[0], dtype=rows.dtype, device=rows.device)
    grads = torch.stack([zeros if g is None else g.to(rows.dtype) for g in upstream], dim=1)
    scales = direction_scales(grads, directions, objective=objective)
    return (scales.unsqueeze(2) * rows).sum(1)
