"""Where one training worker's time goes, next to the Hugging Face Trainer's (issue 28 item 2).

Runs ``train_throughput.py``'s ``uaclm_1`` (``uaclm train``, 1 Ray worker with every core,
DeepSpeed ZeRO-2) and ``hf_trainer`` (the Trainer + peft in one process) on the same model, data,
global batch and cores, one after the other, and samples each training thread with py-spy
(wall clock, idle time included, ``--nonblocking`` so the sampled process is never paused)
from ``--delay`` seconds after its command started for ``--duration`` seconds: steady-state
steps, start-up and model loading left out. Each sample of the training thread is put in the
first bucket of :data:`BUCKETS` whose pattern matches a frame of its stack; the table gives each
bucket's share of the samples and, times the run's measured seconds per step, its seconds per
step.

Read the table with one asymmetry in mind: our loss is a custom autograd Function written in
Python, so its backward shows up under ``loss``; the Trainer's cross-entropy backward runs in
C++ under ``backward``. Compare ``forward + loss + backward`` as one, and the other buckets each.

    pip install py-spy               # a profiler, not a dependency of the project
    python benchmarks/train_profile.py [--steps 40] [--delay 150] [--duration 90]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from quiet import commit_state, machine_header, settle
from train_throughput import COMMON, CONFIG, GLOBAL_BATCH, REPO, cpus_per_worker

#: (bucket, regex over one frame "[Class.]function (file:line)", py-spy's form); the first
#: bucket matching any frame of a sample's stack takes it
BUCKETS: tuple[tuple[str, str], ...] = (
    ("loss", r"uaclm_dist/losses/|loss_utils\.py|cross_entropy"),
    ("optimizer step", r"^(\w+\.)?(step|_take_model_step) \(.*deepspeed/|torch/optim/|"
                       r"accelerate/optimizer\.py|lr_scheduler"),
    ("backward", r"^(\w+\.)?backward \("),
    ("model forward", r"transformers/models/|peft/|bitsandbytes/|torch/nn/modules/"),
    ("data", r"collate|batch_to|split_batch|step_micro_batches|torch/utils/data|_prepare_input"),
    ("our per-step statistics", r"step_metrics\.py|read_metrics|flops\.py|metrics_sink|"
                                r"probe\.py|step_timing\.py"),
    ("collectives", r"torch/distributed/|deepspeed/comm/"),
    ("Ray", r"/ray/"),
)
#: a frame every sample of the training thread has (the other threads' samples are dropped)
TRAINING_THREAD = {"uaclm_1": r"^(\w+\.)?train_step \(.*uaclm_dist/train/worker\.py",
                   "hf_trainer": r"^(\w+\.)?_inner_training_loop \(.*transformers/trainer\.py"}


def buckets_of(raw: str, marker: str) -> collections.Counter:
    """Samples per bucket of py-spy's ``--format raw`` output (``frame;frame;... count`` lines,
    outermost frame first), counting only the stacks with a frame matching ``marker``."""
    counts: collections.Counter = collections.Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f.strip() for f in stack.split(";")]
        if not n.isdigit() or not any(re.search(marker, f) for f in frames):
            continue
        bucket = next((name for name, pattern in BUCKETS
                       if any(re.search(pattern, f) for f in frames)), "other")  # fmt: skip
        counts[bucket] += int(n)
    return counts


def _training_process(root: psutil.Process, name: str, timeout_s: float = 300) -> psutil.Process:
    """The process that runs the training loop: the Ray Train worker actor under ``root``
    (``uaclm_1``), or ``root`` itself (``hf_trainer``)."""
    if name == "hf_trainer":
        return root
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in root.children(recursive=True):
            try:
                if "RayTrainWorker" in " ".join(child.cmdline()):
                    return child
            except psutil.Error:
                continue
        time.sleep(2)
    raise RuntimeError("no Ray Train worker process appeared")


def _command(name: str, steps: int, out: Path) -> list[str]:
    if name == "hf_trainer":
        return [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--hf-child",
                "--steps", str(steps), "--warmup", "5"]  # fmt: skip
    return [sys.executable, "-m", "uaclm_dist.cli", "train", str(CONFIG), *COMMON,
            f"optim.max_steps={steps}", "distributed.num_workers=1",
            f"optim.grad_accumulation={GLOBAL_BATCH // 4}",
            f"distributed.cpus_per_worker={cpus_per_worker(1)}", "logging.log_every_steps=5",
            f"logging.output_dir={out}"]  # fmt: skip


def profile_one(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    """Run ``name`` to its end, sampling its training thread; buckets and its s/step."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = tmp / name
    log = (tmp / f"{name}.log").open("w")
    started = time.monotonic()
    proc = subprocess.Popen(_command(name, args.steps, out), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=log, text=True)  # fmt: skip
    target = _training_process(psutil.Process(proc.pid), name)
    time.sleep(max(0.0, args.delay - (time.monotonic() - started)))
    raw = args.raw_dir / f"train_profile_{name}.raw"
    subprocess.run([py_spy, "record", "--pid", str(target.pid), "--duration", str(args.duration),
                    "--rate", str(args.rate), "--format", "raw", "--idle", "--nonblocking",
                    "--output", str(raw)], check=True, capture_output=True)  # fmt: skip
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{name} failed (exit {proc.returncode}); its log: {tmp / f'{name}.log'}")
    if name == "hf_trainer":
        step_seconds = json.loads(stdout.strip().splitlines()[-1])["step_seconds"]
    else:
        step_seconds = json.loads((out / "summary.json").read_text())["throughput"]["step_seconds"]
    buckets = buckets_of(raw.read_text(), TRAINING_THREAD[name])
    if not buckets:
        sys.exit(f"{name}: no sample of the training thread (no frame matches "
                 f"{TRAINING_THREAD[name]!r}); py-spy's samples are in {raw}")
    return {"buckets": buckets, "step_seconds": step_seconds}


def table(results: dict[str, dict]) -> str:
    names = [b for b, _ in BUCKETS] + ["other"]
    header = "| bucket | " + " | ".join(f"{r}: share | {r}: s/step" for r in results) + " |"
    lines = [header, "|---|" + "---|---|" * len(results)]
    for bucket in [*names, "all"]:
        cells = []
        for r in results.values():
            total = sum(r["buckets"].values())
            share = 1.0 if bucket == "all" else r["buckets"][bucket] / total
            cells += [f"{share:.1%}", f"{share * r['step_seconds']:.2f}"]
        lines.append(f"| {bucket} | " + " | ".join(cells) + " |")
    samples = ", ".join(f"{n}: {sum(r['buckets'].values())} samples" for n, r in results.items())
    return "\n".join(lines) + f"\n\n({samples} of the training thread.)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--delay", type=float, default=150,
                   help="seconds after the command starts before sampling (start-up, "
                   "model loading and the first steps left out)")
    p.add_argument("--duration", type=int, default=90, help="seconds sampled")
    p.add_argument("--rate", type=int, default=50, help="samples per second")
    p.add_argument("--runs", nargs="+", default=["uaclm_1", "hf_trainer"],
                   choices=["uaclm_1", "hf_trainer"])
    p.add_argument("--out", default=".bench/train_profile.md")
    args = p.parse_args(argv)
    args.raw_dir = Path(args.out).parent  # py-spy's raw samples are kept beside the table
    args.raw_dir.mkdir(parents=True, exist_ok=True)
    before = settle()
    with tempfile.TemporaryDirectory(prefix="uaclm-profile-") as tmp:
        results = {name: profile_one(name, args, Path(tmp)) for name in args.runs}
    text = (f"{commit_state()}: {args.steps} steps, sampled {args.duration} s from "
            f"{args.delay:g} s after each command started, {args.rate} Hz.\n"
            f"{machine_header(before, settle())}\n\n{table(results)}")
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
