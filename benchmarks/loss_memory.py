"""Loss memory and time: dense reference vs fused vs vocab-parallel (2 and 4 gloo ranks).

Each variant runs forward + backward of the UA-CLM loss from final hidden states in its own
process (so one variant's allocator state cannot hide another's peak). Memory is the peak resident
set *above the inputs*: the process allocates its inputs, resets the kernel's high-water mark
(``/proc/self/clear_refs``), runs one forward+backward, and reads ``VmHWM``. Time is the median of
``--repeats`` further forward+backward runs. The head is frozen (the LoRA default), so only the
hidden-state gradient is computed by every variant.

    python benchmarks/loss_memory.py            # N=8192, H=1024, V in {32000, 128256}
    python benchmarks/loss_memory.py --quick    # N=2048, H=512

Vocab-parallel ranks hold N/g tokens each and a V/g-row shard; their figures are per rank (the
largest over ranks). On a 2-core machine 4 ranks share 2 cores, so their time is not comparable;
their memory is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

OBJECTIVE = "ua_clm"


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


def _step(variant: str, hidden, weight, labels, vocab_start: int = 0):
    from uaclm_dist.losses.fused import fused_loss
    from uaclm_dist.losses.objectives import build_objective
    from uaclm_dist.losses.vocab_parallel import vocab_parallel_loss

    objective = build_objective(OBJECTIVE)
    h = hidden.detach().requires_grad_(True)
    if variant == "dense":
        logits = h @ weight.t()  # [N, V] materialized
        loss = objective.dense(logits.unsqueeze(0), labels.unsqueeze(0)).loss
    elif variant == "fused":
        loss = fused_loss(h, weight, labels, objective=objective).loss
    else:
        loss = vocab_parallel_loss(
            h, weight, labels, vocab_start=vocab_start, group=None, objective=objective
        ).loss
    loss.backward()
    return float(loss), h.grad


def _measure(variant, hidden, weight, labels, repeats, vocab_start=0, barrier=None):
    """(peak bytes above inputs for one fwd+bwd, median seconds over repeats, loss)."""
    # Warm up on a few tokens first so one-off allocations (thread pools, BLAS workspaces) are
    # not charged to the variant.
    _step(variant, hidden[:8], weight, labels[:8], vocab_start)
    before = _rss_bytes("VmRSS")
    _reset_peak()
    loss, grad = _step(variant, hidden, weight, labels, vocab_start)
    peak = _rss_bytes("VmHWM") - before
    del grad
    times = []
    for _ in range(repeats):
        if barrier:
            barrier()
        t0 = time.perf_counter()
        _step(variant, hidden, weight, labels, vocab_start)
        times.append(time.perf_counter() - t0)
    return peak, statistics.median(times), loss


def _input_bytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _vp_rank(rank, world, init_file, n, h, v, dtype, repeats, out_dir):
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
    peak, seconds, loss = _measure(
        "vp", my_hidden, shard, my_labels, repeats, vocab_start=start, barrier=dist.barrier
    )
    result = dict(peak=peak, seconds=seconds, loss=loss,
                  inputs=_input_bytes(my_hidden, shard, my_labels))  # fmt: skip
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def run_worker(args) -> dict:
    dtype = getattr(torch, args.dtype)
    (args.v,) = args.v  # a worker measures one vocabulary size
    if args.variant in ("dense", "fused"):
        hidden, weight, labels = _make_inputs(args.n, args.h, args.v, dtype)
        peak, seconds, loss = _measure(args.variant, hidden, weight, labels, args.repeats)
        return dict(peak=peak, seconds=seconds, loss=loss,
                    inputs=_input_bytes(hidden, weight, labels))  # fmt: skip
    import torch.multiprocessing as mp

    world = int(args.variant.removeprefix("vp"))
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(
            _vp_rank,
            args=(world, f"{tmp}/init", args.n, args.h, args.v, dtype, args.repeats, tmp),
            nprocs=world,
        )
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    return dict(
        peak=max(r["peak"] for r in ranks),
        seconds=max(r["seconds"] for r in ranks),
        loss=ranks[0]["loss"],
        inputs=max(r["inputs"] for r in ranks),
    )


def _run_variant(variant, n, h, v, dtype, repeats) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--n", str(n), "--h", str(h),
           "--v", str(v), "--dtype", dtype, "--repeats", str(repeats)]  # fmt: skip
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N=2048, H=512")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--h", type=int, default=None)
    p.add_argument("--v", type=int, nargs="*", default=[32000, 128256])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--variants", nargs="*", default=["dense", "fused", "vp2", "vp4"])
    p.add_argument("--out", default=".bench/loss_memory.md")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.variant = args.worker
        print(json.dumps(run_worker(args)))
        return 0

    n = args.n or (2048 if args.quick else 8192)
    h = args.h or (512 if args.quick else 1024)
    repeats = args.repeats or (3 if args.quick else 2)
    mib = 2**20
    lines = [
        f"Loss forward+backward ({OBJECTIVE}, frozen head, {args.dtype}), N={n} tokens, H={h}; "
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "",
        "| V | variant | inputs/rank (MiB) | peak above inputs (MiB) | vs dense | median time (s) "
        "| vs dense |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in args.v:
        results = {}
        for variant in args.variants:
            if variant == "dense":
                fits, need = _dense_fits(n, v)
                if not fits:
                    results[variant] = dict(error=f"not run: needs ~{need:.0f} GiB")
                    continue
            results[variant] = _run_variant(variant, n, h, v, args.dtype, repeats)
            print(f"V={v} {variant}: {results[variant]}", file=sys.stderr)
        dense = results.get("dense", {})
        for variant, r in results.items():
            if "error" in r:
                lines.append(f"| {v} | {variant} | | {r['error']} | | | |")
                continue
            mem_ratio = f"{dense['peak'] / r['peak']:.1f}x less" if "peak" in dense else ""
            time_ratio = f"{r['seconds'] / dense['seconds']:.2f}x" if "seconds" in dense else ""
            lines.append(
                f"| {v} | {variant} | {r['inputs'] / mib:.0f} | {r['peak'] / mib:.0f} | "
                f"{mem_ratio} | {r['seconds']:.2f} | {time_ratio} |"
            )
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
