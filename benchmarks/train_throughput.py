"""Training throughput against what users would run instead (issue 14 item 5).

The same model, data, LoRA settings, global batch and steps, three ways, side by side in one
script:

- ``hf_trainer``: the Hugging Face ``Trainer`` + peft in this one process (what most users start
  from): the model's own forward with dense logits and cross-entropy;
- ``uaclm_1``: ``uaclm train`` through Ray Train + DeepSpeed ZeRO-2 with 1 worker;
- ``uaclm_2``: the same with 2 workers (the global batch kept: accumulation halved).

Every run gets the machine's cores: the Trainer's torch threads, and for ours
``distributed.cpus_per_worker`` = cores / workers (Ray gives a worker as many threads as CPUs).
With Ray's default of 1 CPU a single worker would use one core of two, and the ratio would
measure cores, not orchestration.

Objective ``clm`` everywhere (the only one the Trainer has); model: the demo's SmolLM2-135M
with NF4 QLoRA (rank 32) in float32 compute (bf16 GEMMs are emulated on CPUs without bf16
units, see configs/demo.yaml), 8 sequences per optimizer step. Tokens/s counts real (unpadded)
tokens over the steps after the first ``--warmup`` (start-up excluded in all three); peak
memory is each training process's peak RSS (the Trainer's process; the busiest Ray worker).
The ratio ``uaclm_1 / hf_trainer`` (same cores, one process each) is the cost (or gain) of our
orchestration on one worker.

    python benchmarks/train_throughput.py                  # 40 steps each, 5 alternating repeats
    python benchmarks/train_throughput.py --steps 20 --warmup 5
    python benchmarks/train_throughput.py --runs uaclm_1          # one of the three
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from quiet import MIN_REPEATS, alternating, commit_state, machine_header, median, settle

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo.yaml"
# loss on every token: the Trainer's dense loss covers every position too, so neither skips work
COMMON = ["objective.name=clm", "data.loss_on=all", "optim.micro_batch_size=4",
          "logging.probe_examples=0", "logging.wandb_mode=disabled"]  # fmt: skip
GLOBAL_BATCH = 8
RUNS = ("uaclm_1", "uaclm_2", "hf_trainer")


def hf_trainer_run(steps: int, warmup: int) -> dict:
    """The Hugging Face Trainer + peft on the same model and examples, in this process."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from uaclm_dist.config import load_config
    from uaclm_dist.data.tokenize import collate
    from uaclm_dist.modeling.families import family_of
    from uaclm_dist.train.trainer import prepare_training_data

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = load_config(str(CONFIG), [*COMMON, f"optim.max_steps={steps}"])
    data = prepare_training_data(cfg)
    family = family_of(cfg.model)
    # family.load turns bitsandbytes' CPU repacking off, as for our workers: the same kernels
    model = family.attach_lora(family.load(cfg.model, None, seed=cfg.optim.seed).model, cfg.model)
    tokens_per_step: list[int] = []
    pending = [0]

    def collator(rows):
        batch = collate(rows, data.pad_token_id)
        pending[0] += int(batch["attention_mask"].sum())
        return batch

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())
            tokens_per_step.append(pending[0])
            pending[0] = 0

    with tempfile.TemporaryDirectory(prefix="uaclm-hf-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=4,
            gradient_accumulation_steps=GLOBAL_BATCH // 4, max_steps=steps,
            learning_rate=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
            # transformers 5: a float warmup_steps in [0, 1) is the ratio (warmup_ratio is gone)
            warmup_steps=float(cfg.optim.warmup_ratio), lr_scheduler_type="linear",
            logging_steps=10**6, save_strategy="no", report_to=[], use_cpu=True,
            dataloader_num_workers=0, remove_unused_columns=False, seed=cfg.optim.seed,
        )  # fmt: skip
        Trainer(model=model, args=args, train_dataset=data.train, data_collator=collator,
                callbacks=[Clock()]).train()  # fmt: skip
    seconds = times[-1] - times[warmup - 1]
    tokens = sum(tokens_per_step[warmup:])
    return {"tokens_per_s": tokens / seconds, "step_seconds": seconds / (steps - warmup),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def cpus_per_worker(workers: int) -> int:
    """The machine's cores shared among ``workers`` (at least 1 each)."""
    return max(1, (os.cpu_count() or 1) // workers)


def uaclm_run(workers: int, steps: int, warmup: int, out: Path) -> dict:
    args = [sys.executable, "-m", "uaclm_dist.cli", "train", str(CONFIG), *COMMON,
            f"optim.max_steps={steps}", f"distributed.num_workers={workers}",
            f"optim.grad_accumulation={GLOBAL_BATCH // 4 // workers}",
            f"distributed.cpus_per_worker={cpus_per_worker(workers)}",
            f"logging.log_every_steps={warmup}", f"logging.output_dir={out}"]  # fmt: skip
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"uaclm train with {workers} worker(s) failed (exit {proc.returncode}):\n"
                 f"{proc.stderr[-4000:]}")
    tp = json.loads((out / "summary.json").read_text())["throughput"]
    return {"tokens_per_s": tp["tokens_per_s"], "step_seconds": tp["step_seconds"],
            "peak_rss_mib": tp["peak_memory_mb_max"], "mfu": tp["mfu"],
            "steps_window": tp["steps"]}  # fmt: skip


def _one(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    """One run of ``name`` (``uaclm_1``, ``uaclm_2`` or ``hf_trainer``)."""
    if name == "hf_trainer":
        # in a child process: the Trainer's threads and peak RSS must not mix with this one's
        proc = subprocess.run([sys.executable, __file__, "--hf-child", "--steps",
                               str(args.steps), "--warmup", str(args.warmup)], cwd=REPO,
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            sys.exit(f"the Hugging Face Trainer run failed (exit {proc.returncode}):\n"
                     f"{proc.stderr[-4000:]}")
        return {**json.loads(proc.stdout.strip().splitlines()[-1]), "cpus": os.cpu_count()}
    workers = int(name.removeprefix("uaclm_"))
    return {**uaclm_run(workers, args.steps, args.warmup, tmp),
            "cpus": workers * cpus_per_worker(workers)}  # fmt: skip


def _medians(runs: list[dict]) -> dict:
    return {"tokens_per_s": median([r["tokens_per_s"] for r in runs]),
            "tokens_per_s_range": [min(r["tokens_per_s"] for r in runs),
                                   max(r["tokens_per_s"] for r in runs)],
            "step_seconds": median([r["step_seconds"] for r in runs]),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "cpus": runs[0]["cpus"],
            "repeats": len(runs)}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=MIN_REPEATS,
                   help=f"alternating repeats per run, medians reported (default {MIN_REPEATS})")
    p.add_argument("--out", default=".bench/train_throughput.json")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS),
                   help="which runs (default: all three)")
    p.add_argument("--hf-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.hf_child:
        print(json.dumps(hf_trainer_run(args.steps, args.warmup)))
        return 0
    before = settle()
    per_run: dict[str, list[dict]] = {name: [] for name in args.runs}
    with tempfile.TemporaryDirectory(prefix="uaclm-tp-") as tmp:
        for repeat, name in alternating(args.runs, args.repeats):
            result = _one(name, args, Path(tmp) / f"{name}-{repeat}")
            print(f"repeat {repeat} {name}: {result['tokens_per_s']:.1f} tokens/s", flush=True)
            per_run[name].append(result)
    after = settle()
    results = {name: _medians(runs) for name, runs in per_run.items()}
    base = results.get("hf_trainer", {}).get("tokens_per_s")
    lines = [f"{args.steps} steps ({args.warmup} warm-up), global batch {GLOBAL_BATCH}, median of "
             f"{args.repeats} alternating repeats (tokens/s range in brackets).",
             machine_header(before, after), "",
             "| run | CPUs | tokens/s | s/step | peak RSS MiB | tokens/s vs HF Trainer |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        ratio = f"{r['tokens_per_s'] / base:.2f}x" if base else ""
        low, high = r["tokens_per_s_range"]
        lines.append(f"| {name} | {r['cpus']} | {r['tokens_per_s']:.1f} [{low:.1f}, {high:.1f}] | "
                     f"{r['step_seconds']:.2f} | {r['peak_rss_mib']:.0f} | {ratio} |")
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    record = {"commit": commit_state(), "results": results, "repeats": per_run, "table": text}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
