"""Worker for the vocab-parallel tests: one gloo process per rank (spawned by test_fused_losses).

Every rank builds the same global inputs from a seed, keeps its own tokens and its vocabulary
shard, runs ``vocab_parallel_loss`` + backward for each case, and saves what it computed.
"""

from __future__ import annotations

import itertools
import os

import torch
import torch.distributed as dist

from uaclm_dist.losses.objectives import Objective, build_objective
from uaclm_dist.losses.vocab_parallel import vocab_parallel_loss, vocab_shard_range
from uaclm_dist.modeling.sharded_head import ShardedLMHead

VOCAB = 37
HIDDEN = 6
SEQ = 4


def objective_for(name: str, kwargs: dict) -> Objective:
    """The objective the reference function ``R.<name>_loss(**kwargs)`` computes: ``pooling``,
    ``eps`` and a fixed ``beta`` become ObjectiveConfig fields."""
    fields = {}
    if "pooling" in kwargs:
        fields["ua_pooling"] = kwargs["pooling"]
    if "eps" in kwargs:
        fields["ua_eps"] = kwargs["eps"]
    if "beta" in kwargs:
        fields.update(beta_start=kwargs["beta"], beta_end=kwargs["beta"])
    return build_objective(name, **fields)


def rank_batch(rank: int) -> int:
    """Uneven micro-batches: rank r holds 1 + r sequences."""
    return 1 + rank


def make_inputs(world: int, dtype: torch.dtype, case: str, seed: int = 0):
    """Global inputs: per-rank hidden [B_r, SEQ, H] and labels [B_r, SEQ]; head [V, H], bias [V]."""
    g = torch.Generator().manual_seed(seed)
    if case == "ties":
        # Small integers make every logit exact, and duplicated head rows (across shard
        # boundaries) make exact ties whose lowest index must win, as torch.argmax does.
        weight = torch.randint(-2, 3, (VOCAB, HIDDEN), generator=g).to(dtype)
        weight[VOCAB - 1] = weight[0]
        weight[VOCAB // 2] = weight[1]
        weight[VOCAB // 2 + 1] = weight[0]
        bias = torch.zeros(VOCAB, dtype=dtype)
    else:
        weight = torch.randn(VOCAB, HIDDEN, generator=g, dtype=torch.float64).to(dtype)
        bias = torch.randn(VOCAB, generator=g, dtype=torch.float64).to(dtype) * 0.5
    hiddens, labels = [], []
    for r in range(world):
        shape = (rank_batch(r), SEQ, HIDDEN)
        if case == "ties":
            h = torch.randint(-2, 3, shape, generator=g).to(dtype)
        else:
            h = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
        y = torch.randint(0, VOCAB, shape[:2], generator=g)
        pred = (h.double() @ weight.double().T + bias.double()).argmax(-1)
        if case == "all_correct":
            y = pred.clone()
        elif case == "all_incorrect":
            y = (pred + 1) % VOCAB
        else:
            y[:, 0] = pred[:, 0]  # some correct tokens
        y[0, 1] = -100
        if r == 1 and world > 2:
            y[:] = -100  # a rank with no supervised token must still take part
        hiddens.append(h)
        labels.append(y)
    return hiddens, labels, weight, bias


CASES = [
    # (case, objective, kwargs)
    ("random", "clm", {}),
    ("random", "ua_clm", {}),
    ("random", "ua_clm", {"pooling": "sequence"}),
    ("random", "clm+ua", {"beta": 0.3}),
    ("all_correct", "ua_clm", {}),
    ("all_incorrect", "ua_clm", {}),
    ("ties", "ua_clm", {}),
]


#: "trainable": weight and bias shards require grad (two-pass kernel, head gradients checked);
#: "frozen": they do not (the single-pass kernel, the QLoRA case).
HEADS = ("trainable", "frozen")


def head_token_stats(rank: int, world: int) -> dict:
    """``ShardedLMHead.token_stats`` (no grad) on this rank's supervised tokens, per case."""
    out = {}
    for case in ("random", "ties"):
        hiddens, labels, weight, bias = make_inputs(world, torch.float64, case)
        start, end = vocab_shard_range(VOCAB, rank, world)
        head = ShardedLMHead(weight[start:end], vocab_start=start, vocab_size=VOCAB, rank=rank,
                             world_size=world, bias_shard=bias[start:end])  # fmt: skip
        keep = labels[rank].reshape(-1) != -100
        flat = hiddens[rank].reshape(-1, HIDDEN)[keep]
        entropy, pred = head.token_stats(flat, labels[rank].reshape(-1)[keep], chunk_tokens=3,
                                         chunk_vocab=5)  # fmt: skip
        out[case] = (entropy, pred)
    return out


def run_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = []
        for dtype, (case, objective, kwargs), head in itertools.product(
            (torch.float64, torch.float32), CASES, HEADS
        ):
            hiddens, labels, weight, bias = make_inputs(world, dtype, case)
            start, end = vocab_shard_range(VOCAB, rank, world)
            trainable = head == "trainable"  # frozen: the single-pass kernel, else two pass
            h = hiddens[rank].clone().requires_grad_(True)
            w = weight[start:end].clone().requires_grad_(trainable)
            b = bias[start:end].clone().requires_grad_(trainable)
            out = vocab_parallel_loss(
                h, w, labels[rank], vocab_start=start, group=None,
                objective=objective_for(objective, kwargs), bias_shard=b, chunk_tokens=3,
                chunk_vocab=5,
            )  # fmt: skip
            out.loss.backward()
            results.append(
                dict(
                    dtype=dtype, case=case, objective=objective, kwargs=kwargs, head=head,
                    loss=out.loss.detach(), grad_hidden=h.grad, grad_weight=w.grad,
                    grad_bias=b.grad, start=start, end=end, diagnostics=out.as_floats(),
                )
            )  # fmt: skip
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        torch.save(head_token_stats(rank, world), os.path.join(out_dir, f"rank{rank}_stats.pt"))
    finally:
        dist.destroy_process_group()
