"""Loss memory and time: dense reference vs the fused kernels vs vocab-parallel over gloo.

Variants (forward + backward of the UA-CLM loss from final hidden states, frozen head - the
(Q)LoRA case - so every variant computes only the hidden-state gradient):

- ``dense``: logits ``[N, V]`` materialized, the readable reference (``Objective.dense``);
- ``fused``: the single-pass kernel (what training uses for a frozen head);
- ``two_pass``: the older two-pass kernel (kept for a trainable head), for comparison;
- ``vp2`` / ``vp4``: the single-pass kernel with the vocabulary sharded over 2 / 4 gloo ranks;
- peers, ``--objective clm`` only (they compute plain cross-entropy; requirements-bench.txt):
  ``cce_compile``, Apple's Cut Cross-Entropy (``cut-cross-entropy``) in its ``torch_compile``
  implementation, the one that runs without a GPU (its default ``cce`` implementation is Triton
  kernels: CUDA only, so not run here); ``torchtune_chunked``, torchtune's
  ``CEWithChunkedOutputLoss`` (8 chunks) on logits computed chunk by chunk, as torchtune's models
  do with ``num_output_chunks``.

Memory: each variant in its own process (so one variant's allocator state cannot hide
another's peak) allocates its inputs, resets the kernel's high-water mark
(``/proc/self/clear_refs``), runs one forward+backward and reads ``VmHWM``: the peak resident set
*above the inputs*. Time: dense, fused and two_pass in *one* process, warm-up first, then
``--repeats`` alternating rounds (dense, fused, two_pass, dense, ...), median per variant, so a
change of machine load hits all of them alike. Vocab-parallel ranks are separate processes: timed
in their own run (median of the repeats), with N/g tokens and V/g head rows per rank; on a 2-core
machine more than 2 ranks share cores, so only their memory is comparable.

    python benchmarks/loss_memory.py                      # N in {4096, 8192}, V in {32000, 128256}
    python benchmarks/loss_memory.py --n 2048 --h 512 --v 32000 --repeats 1   # a quick look
    python benchmarks/loss_memory.py --objective clm \
        --variants dense fused cce_compile torchtune_chunked          # against the peers
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from quiet import machine_header, settle

#: ``--objective``: the loss every variant computes (the peers: ``clm`` only).
OBJECTIVE = "ua_clm"
#: chunks of torchtune's ``CEWithChunkedOutputLoss`` (its default, and torchtune's recipes')
TORCHTUNE_CHUNKS = 8


def _rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _make_inputs(n: int, h: int, v: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, h, generator=g) * 0.5).to(dtype)
    weight = (torch.randn(v, h, generator=g) * h**-0.5 * 4).to(dtype)
    labels = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, labels


#: ``--chunk-mib`` (None: the kernels' default, objective.chunk_mib's 64 MiB).
CHUNK_MIB: float | None = None


def _step(variant: str, hidden, weight, labels, vocab_start: int = 0):
    """One forward + backward; returns (loss, hidden gradient)."""
    from uaclm_dist.losses.fused import fused_loss
    from uaclm_dist.losses.objectives import build_objective
    from uaclm_dist.losses.vocab_parallel import vocab_parallel_loss

    objective = build_objective(OBJECTIVE)
    h = hidden.detach().requires_grad_(True)
    if variant in PEERS:
        loss = PEERS[variant](h, weight, labels)
    elif variant == "dense":
        logits = h @ weight.t()  # [N, V] materialized
        loss = objective.dense(logits.unsqueeze(0), labels.unsqueeze(0)).loss
    elif variant in ("fused", "two_pass"):
        kernel = "single_pass" if variant == "fused" else "two_pass"
        loss = fused_loss(h, weight, labels, objective=objective, kernel=kernel,
                          chunk_mib=CHUNK_MIB).loss  # fmt: skip
    else:
        loss = vocab_parallel_loss(
            h, weight, labels, vocab_start=vocab_start, group=None, objective=objective,
            chunk_mib=CHUNK_MIB,
        ).loss
    loss.backward()
    return float(loss), h.grad


def _cce_compile(h, weight, labels):
    """Cut Cross-Entropy's ``torch_compile`` implementation: mean CE of ``h @ weight.T``.

    Loaded from the installed package without running its ``__init__``, which imports the
    Triton kernels first (and Triton itself is not installed on a CPU box).
    """
    import importlib.util
    import types

    if "cut_cross_entropy" not in sys.modules:
        spec = importlib.util.find_spec("cut_cross_entropy")
        if spec is None:
            raise ImportError("cut-cross-entropy is not installed (requirements-bench.txt)")
        package = types.ModuleType("cut_cross_entropy")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["cut_cross_entropy"] = package
    from cut_cross_entropy.torch_compile import torch_compile_linear_cross_entropy

    return torch_compile_linear_cross_entropy(h, weight, labels)


def _torchtune_chunked(h, weight, labels):
    """torchtune's ``CEWithChunkedOutputLoss`` on logits computed per chunk of tokens."""
    loss_fn = _torchtune_loss_class()(num_output_chunks=TORCHTUNE_CHUNKS)
    chunks = [c @ weight.t() for c in h.unsqueeze(0).chunk(TORCHTUNE_CHUNKS, dim=1)]
    return loss_fn(chunks, labels.unsqueeze(0))


@functools.cache
def _torchtune_loss_class():
    """``CEWithChunkedOutputLoss``, loaded once from its module file (outside the timed steps):
    ``import torchtune`` requires torchao, which nothing here uses."""
    import importlib.util

    spec = importlib.util.find_spec("torchtune")
    if spec is None:
        raise ImportError("torchtune is not installed (requirements-bench.txt)")
    path = Path(spec.submodule_search_locations[0], "modules", "loss", "ce_chunked_output_loss.py")
    module_spec = importlib.util.spec_from_file_location("torchtune_ce_chunked", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.CEWithChunkedOutputLoss


#: Peer implementations of plain cross-entropy from hidden states and a frozen head.
PEERS = {"cce_compile": _cce_compile, "torchtune_chunked": _torchtune_chunked}


def _peak_above_inputs(variant, hidden, weight, labels, vocab_start=0):
    """(peak bytes above the inputs of one forward+backward, its loss)."""
    # Warm up on a few tokens first so one-off allocations (thread pools, BLAS workspaces) are
    # not charged to the variant.
    _step(variant, hidden[:8], weight, labels[:8], vocab_start)
    before = _rss_bytes("VmRSS")
    _reset_peak()
    loss, grad = _step(variant, hidden, weight, labels, vocab_start)
    peak = _rss_bytes("VmHWM") - before
    del grad
    return peak, loss


def _median_seconds(variants, hidden, weight, labels, repeats, vocab_start=0, barrier=None):
    """``{variant: median seconds}`` over ``repeats`` alternating rounds after one warm-up each."""
    times = {v: [] for v in variants}
    for variant in variants:
        _step(variant, hidden, weight, labels, vocab_start)
    for _ in range(repeats):
        for variant in variants:
            if barrier:
                barrier()
            t0 = time.perf_counter()
            _step(variant, hidden, weight, labels, vocab_start)
            times[variant].append(time.perf_counter() - t0)
    return {v: statistics.median(t) for v, t in times.items()}


def _input_bytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _vp_rank(rank, world, init_file, n, h, v, dtype, repeats, out_dir, chunk_mib, objective):
    global CHUNK_MIB, OBJECTIVE
    CHUNK_MIB, OBJECTIVE = chunk_mib, objective  # a spawned process starts from a fresh import
    import torch.distributed as dist

    from uaclm_dist.losses.vocab_parallel import vocab_shard_range

    torch.set_num_threads(max(1, os.cpu_count() // world))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    hidden, weight, labels = _make_inputs(n, h, v, dtype)
    tokens = slice(rank * n // world, (rank + 1) * n // world)
    start, end = vocab_shard_range(v, rank, world)
    my_hidden = hidden[tokens].clone()
    my_labels = labels[tokens].clone()
    shard = weight[start:end].clone()
    del hidden, weight, labels
    peak, loss = _peak_above_inputs("vp", my_hidden, shard, my_labels, vocab_start=start)
    seconds = _median_seconds(["vp"], my_hidden, shard, my_labels, repeats, vocab_start=start,
                              barrier=dist.barrier)["vp"]  # fmt: skip
    result = dict(peak=peak, seconds=seconds, loss=loss,
                  inputs=_input_bytes(my_hidden, shard, my_labels))  # fmt: skip
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def run_worker(args) -> dict:
    dtype = getattr(torch, args.dtype)
    if args.worker == "timing":  # the single-process variants, alternating
        hidden, weight, labels = _make_inputs(args.n, args.h, args.v, dtype)
        return _median_seconds(args.variants, hidden, weight, labels, args.repeats)
    if args.worker in SINGLE_PROCESS:
        hidden, weight, labels = _make_inputs(args.n, args.h, args.v, dtype)
        peak, loss = _peak_above_inputs(args.worker, hidden, weight, labels)
        return dict(peak=peak, loss=loss, inputs=_input_bytes(hidden, weight, labels))
    import torch.multiprocessing as mp

    world = int(args.worker.removeprefix("vp"))
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(
            _vp_rank,
            args=(world, f"{tmp}/init", args.n, args.h, args.v, dtype, args.repeats, tmp,
                  CHUNK_MIB, OBJECTIVE),
            nprocs=world,
        )
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    return dict(
        peak=max(r["peak"] for r in ranks),
        seconds=max(r["seconds"] for r in ranks),
        loss=ranks[0]["loss"],
        inputs=max(r["inputs"] for r in ranks),
    )


def _run_worker(worker, n, h, v, dtype, repeats, variants=()) -> dict:
    cmd = [sys.executable, __file__, "--worker", worker, "--n", str(n), "--h", str(h),
           "--v", str(v), "--dtype", dtype, "--repeats", str(repeats),
           "--objective", OBJECTIVE, "--variants", *variants]  # fmt: skip
    if CHUNK_MIB is not None:
        cmd += ["--chunk-mib", str(CHUNK_MIB)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if "Error" in ln] or ["failed"]
        return dict(error=errors[-1].strip())
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _dense_fits(n: int, v: int, dtype_bytes: int = 4) -> tuple[bool, float]:
    """The dense reference holds ~6 fp32 [N, V] tensors at its peak; skip it if that would not
    fit in 80% of the memory available now (an OOM kill would take the machine with it)."""
    need = 6 * n * v * dtype_bytes
    avail = _rss_field_meminfo("MemAvailable")
    return need < 0.8 * avail, need / 2**30


def _rss_field_meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


SINGLE_PROCESS = ("dense", "fused", "two_pass", *PEERS)


def main(argv=None) -> int:
    global CHUNK_MIB, OBJECTIVE
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, nargs="*", default=[4096, 8192])
    p.add_argument("--h", type=int, default=1024)
    p.add_argument("--v", type=int, nargs="*", default=[32000, 128256])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", nargs="*", default=["dense", "fused", "two_pass", "vp2"],
                   help=f"of dense fused two_pass vp2 vp4 {' '.join(PEERS)}")
    p.add_argument("--objective", default=OBJECTIVE, choices=["ua_clm", "clm"],
                   help="the loss every variant computes; the peers compute clm only")
    p.add_argument("--chunk-mib", type=float, default=None,
                   help="single-pass chunk budget (objective.chunk_mib; default 64)")
    p.add_argument("--out", default=".bench/loss_memory.md")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    CHUNK_MIB, OBJECTIVE = args.chunk_mib, args.objective
    peers = [v for v in args.variants if v in PEERS]
    if peers and args.objective != "clm":
        p.error(f"--variants {' '.join(peers)}: the peers compute plain cross-entropy; "
                "use --objective clm")
    unknown = [v for v in args.variants
               if v not in SINGLE_PROCESS and not (v.startswith("vp") and v[2:].isdigit())]
    if unknown:
        p.error(f"--variants: unknown {' '.join(unknown)}")
    if args.worker:
        (args.n,), (args.v,) = args.n, args.v  # a worker measures one setting
        print(json.dumps(run_worker(args)))
        return 0

    mib = 2**20
    before = settle()
    lines = [
        f"Loss forward+backward ({args.objective}, frozen head, {args.dtype}), H={args.h}, "
        f"median of {args.repeats} alternating repeats after a warm-up; single-pass chunk "
        f"{args.chunk_mib or 64:g} MiB; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads).",
        "",
        "| N | V | variant | inputs/rank (MiB) | peak above inputs (MiB) | vs dense | "
        "median time (s) | vs dense | loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in args.n:
        for v in args.v:
            lines += _one_setting(args, n, v, mib)
    lines += ["", machine_header(before, settle())]
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n")
    return 0


def _one_setting(args, n: int, v: int, mib: int) -> list[str]:
    """Table rows of one (N, V): memory per variant (own process), then the timings."""
    variants = list(args.variants)
    results: dict[str, dict] = {}
    if "dense" in variants:
        fits, need = _dense_fits(n, v)
        if not fits:
            results["dense"] = dict(error=f"not run: needs ~{need:.0f} GiB")
            variants.remove("dense")
    for variant in variants:
        results[variant] = _run_worker(variant, n, args.h, v, args.dtype, args.repeats)
    timed = [x for x in variants if x in SINGLE_PROCESS and "error" not in results[x]]
    if timed:
        seconds = _run_worker("timing", n, args.h, v, args.dtype, args.repeats, timed)
        for variant in timed:
            results[variant]["seconds"] = seconds.get(variant, float("nan"))
    print(f"N={n} V={v}: {results}", file=sys.stderr)
    dense = results.get("dense", {})
    rows = []
    for variant, r in results.items():
        if "error" in r:
            rows.append(f"| {n} | {v} | {variant} | | {r['error']} | | | | |")
            continue
        mem_ratio = f"{dense['peak'] / r['peak']:.1f}x less" if "peak" in dense else ""
        time_ratio = f"{r['seconds'] / dense['seconds']:.2f}x" if "seconds" in dense else ""
        rows.append(
            f"| {n} | {v} | {variant} | {r['inputs'] / mib:.0f} | {r['peak'] / mib:.0f} | "
            f"{mem_ratio} | {r['seconds']:.2f} | {time_ratio} | {r['loss']:.6f} |"
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
