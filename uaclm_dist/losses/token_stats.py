"""Chunked per-token softmax statistics: the kernels behind the fused and vocab-parallel losses.

Nothing here materializes a ``[tokens, vocab]`` tensor larger than one chunk. For every token the
forward pass keeps a running *softmax state* over the vocabulary columns seen so far::

    m   = max_v z_v                       (running max logit)
    s   = sum_v exp(z_v - m)              (sum-exp, relative to m)
    t   = sum_v exp(z_v - m) (z_v - m)    (first moment, relative to m: no cancellation)
    a   = argmax_v z_v                    (lowest index among maxima, like torch.argmax)
    z_y = z_label                         (only where the label falls in the columns seen)

from which ``LSE = m + log s``, ``H = log s - t / s``, ``log P = log p[a] = -log s`` and
``log p_y = z_y - LSE`` (identities in shared/METHOD.md, verified in float64). States merge
associatively across vocabulary chunks and across ranks (see :func:`merge_states`).

The backward recomputes each logits chunk and applies the per-token gradient::

    dL/dz_v = alpha (1[v=y] - p_v) + beta (1[v=a] - p_v) - gamma p_v (z_v - E_p[z])

with alpha = dL/dlog p_y, beta = dL/dlog P, gamma = dL/dH (the upstream gradients of the three
statistics), and E_p[z] = LSE - H.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_CHUNK_TOKENS = 1024
DEFAULT_CHUNK_VOCAB = 4096


def stat_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics are float32 whatever the input dtype (float64 stays float64 for gradcheck)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@dataclass
class SoftmaxState:
    """Partial softmax statistics of N tokens over a subset of vocabulary columns, each ``[N]``.

    ``max_logit`` is -inf and ``pred`` is ``NO_PRED`` until a column is seen; ``label_logit`` is 0
    and ``has_label`` False unless the token's label lies in the seen columns.
    """

    max_logit: torch.Tensor
    sum_exp: torch.Tensor
    moment: torch.Tensor
    pred: torch.Tensor  # int64 global vocabulary index
    label_logit: torch.Tensor
    has_label: torch.Tensor  # bool

    @classmethod
    def empty(cls, n: int, dtype: torch.dtype, device: torch.device) -> SoftmaxState:
        return cls(
            max_logit=torch.full((n,), -math.inf, dtype=dtype, device=device),
            sum_exp=torch.zeros(n, dtype=dtype, device=device),
            moment=torch.zeros(n, dtype=dtype, device=device),
            pred=torch.full((n,), NO_PRED, dtype=torch.int64, device=device),
            label_logit=torch.zeros(n, dtype=dtype, device=device),
            has_label=torch.zeros(n, dtype=torch.bool, device=device),
        )


# Larger than any vocabulary index, so a MIN-reduction over ranks picks a real argmax.
NO_PRED = torch.iinfo(torch.int64).max


def rescale(state: SoftmaxState, new_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, t)`` of ``state`` re-expressed relative to ``new_max >= state.max_logit``.

    With d = m - m':  s' = s e^d  and  t' = sum e^(z-m') (z-m') = e^d (t + d s).
    """
    finite = torch.isfinite(state.max_logit)
    delta = torch.where(finite, state.max_logit - new_max, torch.zeros_like(new_max))
    scale = torch.where(finite, torch.exp(delta), torch.zeros_like(new_max))
    return state.sum_exp * scale, (state.moment + delta * state.sum_exp) * scale


def merge_states(a: SoftmaxState, b: SoftmaxState) -> SoftmaxState:
    """Associative merge of two partial states over disjoint column sets (``a``'s columns first).

    The argmax keeps ``a``'s index on exact ties, which is the lowest index as long as ``a``
    covers lower column indices than ``b``.
    """
    new_max = torch.maximum(a.max_logit, b.max_logit)
    s_a, t_a = rescale(a, new_max)
    s_b, t_b = rescale(b, new_max)
    take_b = b.max_logit > a.max_logit
    return SoftmaxState(
        max_logit=new_max,
        sum_exp=s_a + s_b,
        moment=t_a + t_b,
        pred=torch.where(take_b, b.pred, a.pred),
        label_logit=a.label_logit + b.label_logit,
        has_label=a.has_label | b.has_label,
    )


def gemm_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the loss's matrix multiplies run in for inputs like ``x``: the input dtype,
    except half precision on CPU, which runs in float32. CPUs without bf16 matrix units do
    bf16 GEMMs many times slower than float32 (measured on this repository's 2-core AMD EPYC
    CI machine: ``[120, 49152] @ [49152, 64]`` 0.66 s in bf16, 0.02 s in float32), and float32
    is the more accurate of the two; on accelerators the input dtype is kept."""
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return x.dtype


def _logits_chunk(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``hidden [n, H] @ weight [v, H]^T (+ bias)`` in :func:`gemm_dtype`, returned in stat
    dtype."""
    dtype = gemm_dtype(hidden)
    z = hidden.to(dtype) @ weight.to(dtype).t()
    if bias is not None:
        z = z + bias
    return z.to(stat_dtype(hidden))


def chunk_state(z: torch.Tensor, labels: torch.Tensor, col_start: int) -> SoftmaxState:
    """Softmax state of a logits chunk ``z [n, v]`` whose first column is vocab index col_start.

    ``labels [n]`` are global vocabulary ids (ignored labels are any id outside the chunk).
    """
    max_logit = z.amax(dim=-1)
    local_pred = torch.argmax(z, dim=-1)  # first maximum on ties (documented for argmax)
    shifted = z - max_logit.unsqueeze(-1)
    e = torch.exp(shifted)
    in_chunk = (labels >= col_start) & (labels < col_start + z.shape[1])
    local_label = torch.where(in_chunk, labels - col_start, torch.zeros_like(labels))
    label_logit = z.gather(1, local_label.unsqueeze(1)).squeeze(1)
    return SoftmaxState(
        max_logit=max_logit,
        sum_exp=e.sum(-1),
        moment=(e * shifted).sum(-1),
        pred=local_pred + col_start,
        label_logit=torch.where(in_chunk, label_logit, torch.zeros_like(label_logit)),
        has_label=in_chunk,
    )


def partial_state(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    vocab_start: int = 0,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    chunk_vocab: int = DEFAULT_CHUNK_VOCAB,
) -> SoftmaxState:
    """Softmax state of ``hidden [N, H]`` over the columns ``[vocab_start, vocab_start + V_local)``
    held by ``weight [V_local, H]`` (and ``bias [V_local]``), chunk by chunk."""
    n, v_local = hidden.shape[0], weight.shape[0]
    dtype = stat_dtype(hidden)
    pieces = []
    for n0 in range(0, n, chunk_tokens):
        h = hidden[n0 : n0 + chunk_tokens]
        y = labels[n0 : n0 + chunk_tokens]
        state = SoftmaxState.empty(h.shape[0], dtype, hidden.device)
        for v0 in range(0, v_local, chunk_vocab):
            b = None if bias is None else bias[v0 : v0 + chunk_vocab]
            z = _logits_chunk(h, weight[v0 : v0 + chunk_vocab], b)
            state = merge_states(state, chunk_state(z, y, vocab_start + v0))
            del z
        pieces.append(state)
    if not pieces:
        return SoftmaxState.empty(0, dtype, hidden.device)
    return SoftmaxState(
        *[torch.cat([getattr(p, f) for p in pieces]) for f in SoftmaxState.__dataclass_fields__]
    )


@dataclass
class FinalStats:
    """Per-token statistics from a complete (all-vocabulary) state, each ``[N]``."""

    log_prob_label: torch.Tensor  # log p_y  (0 where the label is ignored)
    log_prob_pred: torch.Tensor  # log P = log p[argmax]
    entropy: torch.Tensor  # H in nats
    pred: torch.Tensor  # argmax, int64
    lse: torch.Tensor  # log-sum-exp of the logits
    mean_logit: torch.Tensor  # E_p[z] = LSE - H


def finalize(state: SoftmaxState) -> FinalStats:
    """Turn a complete softmax state into per-token statistics (see module docstring)."""
    log_s = torch.log(state.sum_exp)
    lse = state.max_logit + log_s
    entropy = log_s - state.moment / state.sum_exp
    log_prob_label = torch.where(state.has_label, state.label_logit - lse, torch.zeros_like(lse))
    return FinalStats(
        log_prob_label=log_prob_label,
        log_prob_pred=-log_s,
        entropy=entropy,
        pred=state.pred,
        lse=lse,
        mean_logit=lse - entropy,
    )


def backward_chunks(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    stats: FinalStats,
    grad_label: torch.Tensor,
    grad_pred: torch.Tensor,
    grad_entropy: torch.Tensor,
    *,
    vocab_start: int = 0,
    need_weight_grad: bool,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    chunk_vocab: int = DEFAULT_CHUNK_VOCAB,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of the loss w.r.t. ``hidden``, ``weight`` and ``bias`` from this weight's columns.

    Args:
        grad_label, grad_pred, grad_entropy: ``[N]`` upstream gradients alpha, beta, gamma of
            ``log p_y``, ``log P`` and ``H`` (stat dtype).
        need_weight_grad: compute ``[V_local, H]`` weight (and bias) gradients; False for a frozen
            head, which then costs nothing extra.

    Returns:
        ``(grad_hidden [N, H] stat dtype, grad_weight [V_local, H] or None, grad_bias or None)``.
        grad_hidden holds only the contribution of these columns (sum over shards for the total).
    """
    n, v_local = hidden.shape[0], weight.shape[0]
    dtype = stat_dtype(hidden)
    grad_hidden = torch.zeros(hidden.shape, dtype=dtype, device=hidden.device)
    grad_weight = (
        torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_weight_grad else None
    )
    grad_bias = (
        torch.zeros(bias.shape, dtype=dtype, device=bias.device)
        if need_weight_grad and bias is not None
        else None
    )
    for n0 in range(0, n, chunk_tokens):
        rows = slice(n0, n0 + chunk_tokens)
        h, y = hidden[rows], labels[rows]
        alpha, beta, gamma = grad_label[rows], grad_pred[rows], grad_entropy[rows]
        lse, mean_z, pred = stats.lse[rows], stats.mean_logit[rows], stats.pred[rows]
        for v0 in range(0, v_local, chunk_vocab):
            cols = slice(v0, v0 + chunk_vocab)
            w = weight[cols]
            b = None if bias is None else bias[cols]
            z = _logits_chunk(h, w, b)  # [n, v]
            p = torch.exp(z - lse.unsqueeze(1))
            # g_v = alpha 1[v=y] + beta 1[v=a] - p_v (alpha + beta + gamma (z_v - E[z]))
            g = -p * ((alpha + beta).unsqueeze(1) + gamma.unsqueeze(1) * (z - mean_z.unsqueeze(1)))
            del z, p
            col0 = vocab_start + v0
            _add_at_columns(g, y - col0, alpha)
            _add_at_columns(g, pred - col0, beta)
            g_in = g.to(gemm_dtype(h))
            grad_hidden[rows] += (g_in @ w.to(g_in.dtype)).to(dtype)
            if grad_weight is not None:
                grad_weight[cols] += (g_in.t() @ h.to(g_in.dtype)).to(dtype)
                if grad_bias is not None:
                    grad_bias[cols] += g.sum(0)
            del g, g_in
    return grad_hidden, grad_weight, grad_bias


def _add_at_columns(g: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> None:
    """``g[i, cols[i]] += values[i]`` for rows whose column lies inside the chunk ``g [n, v]``."""
    inside = (cols >= 0) & (cols < g.shape[1])
    if not bool(inside.any()):
        return
    rows = torch.nonzero(inside, as_tuple=True)[0]
    g.index_put_((rows, cols[rows]), values[rows].to(g.dtype), accumulate=True)
