"""The GPU check (issue 14 item 7), for the day a CUDA device is at hand; run by gpu_check.sh.

Three parts, one table, under 8 minutes on one data-center GPU:

1. **loss**: forward + backward of the UA-CLM loss from final hidden states in bf16, frozen
   head (the QLoRA case), dense logits vs the fused single-pass kernel, at N = 8192 tokens,
   H = 4096 (a 7B model's width), V = 32,000 and 128,256: median time of 5 (synchronized),
   peak allocated memory above the inputs, and the largest |difference| of the loss and the
   hidden-state gradient between the two;
2. **train**: ``uaclm train configs/demo.yaml`` (SmolLM2-135M, NF4 QLoRA) with one GPU worker
   (Ray Train over NCCL), 40 steps: tokens/s, MFU (peak from the data-sheet table) and peak
   memory from the run's summary.json;
3. **eval**: ``uaclm eval configs/demo.yaml --base`` with one generation actor holding the GPU,
   64 questions x 5 samples: questions/s.

Where no CUDA device is present it prints why and exits with status 3.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
NO_DEVICE = 3


def _step(kind: str, hidden0, weight, labels, objective):
    """One forward + backward; (loss, hidden gradient)."""
    from uaclm_dist.losses.fused import fused_loss

    hidden = hidden0.clone().requires_grad_(True)
    if kind == "dense":  # [N, V] logits materialized
        out = objective.dense((hidden @ weight.t()).unsqueeze(0), labels.unsqueeze(0))
    else:
        out = fused_loss(hidden, weight, labels, objective=objective, kernel="single_pass")
    out.loss.backward()
    return out.loss.detach(), hidden.grad


def loss_rows(n: int = 8192, h: int = 4096, vocabs=(32000, 128256), repeats: int = 5,
              device: str = "cuda") -> list:  # fmt: skip
    """Dense vs fused in bf16 on ``device`` (a small CPU call is the script's own smoke test:
    memory is then not measured)."""
    from uaclm_dist.losses.objectives import build_objective

    objective = build_objective("ua_clm")
    cuda = device == "cuda"
    rows = []
    for v in vocabs:
        g = torch.Generator(device="cpu").manual_seed(0)
        hidden0 = (torch.randn(n, h, generator=g) * 0.5).to(device, torch.bfloat16)
        weight = (torch.randn(v, h, generator=g) * h**-0.5 * 4).to(device, torch.bfloat16)
        labels = torch.randint(0, v, (n,), generator=g).to(device)
        result: dict = {"V": v}
        outputs = {}
        for kind in ("dense", "fused"):
            _step(kind, hidden0, weight, labels, objective)  # warm-up
            if cuda:
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                outputs[kind] = _step(kind, hidden0, weight, labels, objective)
                if cuda:
                    torch.cuda.synchronize()
                times.append(1000 * (time.perf_counter() - start))
            result[f"{kind}_ms"] = statistics.median(times)
            result[f"{kind}_peak_mib"] = ((torch.cuda.max_memory_allocated() - base) / 2**20
                                          if cuda else float("nan"))  # fmt: skip
        (dense_loss, dense_grad), (fused_loss, fused_grad) = outputs["dense"], outputs["fused"]
        result["max_loss_diff"] = float((dense_loss.float() - fused_loss.float()).abs())
        result["max_grad_diff"] = float((dense_grad.float() - fused_grad.float()).abs().max())
        rows.append(result)
    return rows


def uaclm(*args: str, timeout: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "uaclm_dist.cli", *args], cwd=REPO, check=True,
                   timeout=timeout)  # fmt: skip
    return time.perf_counter() - start


def main() -> int:
    if "--smoke-cpu" in sys.argv:  # the loss part on CPU at toy size: does the script run?
        print(loss_rows(n=64, h=32, vocabs=(1000,), repeats=1, device="cpu"))
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False; this torch "
              f"is {torch.__version__}): nothing to check", file=sys.stderr)  # fmt: skip
        return NO_DEVICE
    name = torch.cuda.get_device_name(0)
    lines = [f"# GPU check on {name}, {time.strftime('%Y-%m-%d')}", ""]
    lines += ["| V | dense ms | fused ms | dense peak MiB | fused peak MiB | max loss diff | "
              "max grad diff |", "|---|---|---|---|---|---|---|"]
    for r in loss_rows():
        lines.append(f"| {r['V']:,} | {r['dense_ms']:.1f} | {r['fused_ms']:.1f} | "
                     f"{r['dense_peak_mib']:.0f} | {r['fused_peak_mib']:.0f} | "
                     f"{r['max_loss_diff']:.2e} | {r['max_grad_diff']:.2e} |")
    with tempfile.TemporaryDirectory(prefix="uaclm-gpu-") as tmp:
        run = Path(tmp) / "train"
        train_s = uaclm("train", "configs/demo.yaml", f"logging.output_dir={run}",
                        "distributed.num_workers=1", "distributed.gpus_per_worker=1",
                        "distributed.cpus_per_worker=4", "optim.max_steps=40",
                        "logging.log_every_steps=10", "logging.wandb_mode=disabled",
                        timeout=240)  # fmt: skip
        tp = json.loads((run / "summary.json").read_text())["throughput"]
        eval_s = uaclm("eval", "configs/demo.yaml", "--base", "--out", str(Path(tmp) / "eval"),
                       "eval.max_examples=64", "eval.num_generation_actors=1",
                       "eval.gpus_per_actor=1", "eval.cpus_per_actor=4",
                       "logging.wandb_mode=disabled", timeout=240)  # fmt: skip
    lines += ["", "| part | result |", "|---|---|",
              f"| train: SmolLM2-135M QLoRA, 1 GPU worker (NCCL), 40 steps | "
              f"{tp['tokens_per_s']:.0f} tokens/s, MFU {100 * tp['mfu']:.2f}% "
              f"({tp['peak_flops_source']}), peak {tp['peak_memory_mb_max']:.0f} MiB, "
              f"{train_s:.0f} s wall |",
              f"| eval: base model, 1 GPU actor, 64 questions x 5 samples | "
              f"{64 / eval_s:.2f} questions/s over {eval_s:.0f} s wall (start-up included) |"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
