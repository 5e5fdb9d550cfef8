"""Memory under load (issue 13 item 7): a long evaluation and a long training run, each a real
`uaclm` subprocess on a local Ray cluster, with the resident memory of every process sampled.

- ``eval``: `uaclm eval` of the random tiny Llama (fp32, no LoRA) on N synthetic questions
  (greedy answer + 2 samples of 4 tokens, scores te/ppl/pe/length), for each N in ``--prompts``.
  Reports the peak RSS of the driver, of each generation actor and of Ray's own processes, and
  checks the exactly-once accounting (ids in the parquet == the prompts, no duplicate). Bounded
  means: the actors' peak does not grow with N; the driver holds the results (one row per
  prompt), so its peak grows with N by the size of those rows, reported per prompt.
- ``train``: `uaclm train configs/tiny_test.yaml` for ``--steps`` optimizer steps (2 workers,
  ZeRO-2, NF4 QLoRA, checkpoint every 1000 steps). Reports each worker's RSS over the steps and
  the least-squares slope (MiB per 1000 steps) after the first 10% of the run.

The RSS is sampled once a second over the whole process tree of the `uaclm` command (the local
Ray cluster it starts is in that tree), classified by command line.

    python benchmarks/load_memory.py eval --prompts 5000 20000
    python benchmarks/load_memory.py train --steps 5000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from quiet import machine_header, settle

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny_test.yaml"


def classify(proc: psutil.Process, driver_pid: int) -> str | None:
    if proc.pid == driver_pid:
        return "driver"
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if "GenerationStage" in cmdline:
        return "generation actor"
    if "RayTrainWorker" in cmdline:
        return "train worker"
    return "ray and other"


class Sampler(threading.Thread):
    """Samples ``{(class, pid): rss}`` of the process tree under ``pid`` every ``period`` s."""

    def __init__(self, pid: int, period: float = 1.0, on_sample=None):
        super().__init__(daemon=True)
        self.pid, self.period, self.on_sample = pid, period, on_sample
        self.samples: list[tuple[float, dict[tuple[str, int], int]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        root = psutil.Process(self.pid)
        t0 = time.time()
        while not self.stop.is_set():
            snapshot = {}
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for proc in procs:
                kind = classify(proc, self.pid)
                try:
                    if kind:
                        snapshot[(kind, proc.pid)] = proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            t = time.time() - t0
            self.samples.append((t, snapshot))
            if self.on_sample:
                self.on_sample(t, snapshot)
            self.stop.wait(self.period)

    def peaks(self) -> dict[str, dict[str, float]]:
        """Per class: the largest RSS of one process and of the class summed, MiB."""
        out: dict[str, dict[str, float]] = {}
        for _, snap in self.samples:
            totals: dict[str, int] = {}
            for (kind, _pid), rss in snap.items():
                entry = out.setdefault(kind, {"one_process": 0.0, "all": 0.0})
                entry["one_process"] = max(entry["one_process"], rss / 2**20)
                totals[kind] = totals.get(kind, 0) + rss
            for kind, total in totals.items():
                out[kind]["all"] = max(out[kind]["all"], total / 2**20)
        return out


def run_watched(cmd: list[str], period: float = 1.0, on_sample=None) -> tuple[int, Sampler, float]:
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    sampler = Sampler(proc.pid, period, on_sample)
    sampler.start()
    _, stderr = proc.communicate()
    sampler.stop.set()
    sampler.join(timeout=10)
    if proc.returncode != 0:
        print(stderr[-4000:], file=sys.stderr)
    return proc.returncode, sampler, time.time() - t0


# ------------------------------------------------------------------------------------ eval


def write_questions(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i}", "question": f"Which code belongs to item {i}?",
                                "answers": [f"code {i % 97}"]}) + "\n")  # fmt: skip


def eval_load(n_prompts: int, work: Path) -> dict:
    import pandas as pd

    data = work / f"questions_{n_prompts}.jsonl"
    # train_fraction 0.05 of the rows are the (unused) training split: write enough for n_prompts.
    total = int(round(n_prompts / 0.95)) + 1
    write_questions(data, total)
    out = work / f"eval_{n_prompts}"
    cmd = [sys.executable, "-m", "uaclm_dist.cli", "eval", str(TINY), "--base", "--out", str(out),
           "model.quantization.method=none", "model.dtype=float32", "model.lora.enabled=false",
           "data.format=jsonl", f"data.paths=[{data}]", "data.train_fraction=0.05",
           "data.max_examples=null", "eval.max_examples=null", "eval.num_samples=2",
           "eval.max_new_tokens=4", "eval.batch_size=64", "eval.num_generation_actors=2",
           "eval.scores=[te,ppl,pe,length]", "eval.bootstrap_samples=100"]  # fmt: skip
    code, sampler, seconds = run_watched(cmd)
    result = {"prompts_asked": n_prompts, "exit": code, "seconds": round(seconds, 1),
              "peaks_mib": sampler.peaks()}  # fmt: skip
    if code == 0:
        df = pd.read_parquet(out / "per_example" / "base.parquet")
        expected = json.loads((out / "examples.json").read_text())["ids"]
        scored = list(df["id"])
        result.update(scored=len(scored), unique=len(set(scored)),
                      exactly_once=sorted(scored) == sorted(expected))  # fmt: skip
    return result


# ----------------------------------------------------------------------------------- train


def train_load(steps: int, work: Path) -> dict:
    out = work / "train"
    step_at: list[tuple[float, int]] = []

    def note_step(t, _snapshot):
        path = out / "metrics.jsonl"
        try:
            lines = path.read_text().splitlines()
            step_at.append((t, json.loads(lines[-1])["step"]))
        except (OSError, IndexError, ValueError, KeyError):
            pass

    cmd = [sys.executable, "-m", "uaclm_dist.cli", "train", str(TINY),
           f"logging.output_dir={out}", f"optim.max_steps={steps}", "objective.name=ua_clm",
           "logging.checkpoint_every_steps=1000", "logging.log_every_steps=10",
           "logging.probe_examples=0"]  # fmt: skip
    code, sampler, seconds = run_watched(cmd, period=2.0, on_sample=note_step)
    series: dict[int, list[tuple[int, float]]] = {}
    for (_t, snap), (_, step) in zip(sampler.samples, _align(sampler.samples, step_at),
                                     strict=True):
        for (kind, pid), rss in snap.items():
            if kind == "train worker" and step is not None:
                series.setdefault(pid, []).append((step, rss / 2**20))
    workers = {}
    for pid, points in series.items():
        tail = [(s, r) for s, r in points if s >= steps // 10]
        workers[str(pid)] = {
            "rss_first_mib": round(points[0][1], 1), "rss_last_mib": round(points[-1][1], 1),
            "rss_max_mib": round(max(r for _, r in points), 1),
            "slope_mib_per_1000_steps": round(1000 * _slope(tail), 2) if len(tail) > 2 else None,
            "samples": len(points),
        }  # fmt: skip
    return {"steps": steps, "exit": code, "seconds": round(seconds, 1),
            "peaks_mib": sampler.peaks(), "workers": workers}  # fmt: skip


def _align(samples, step_at):
    """The last logged step at each sample's time (None before the first)."""
    steps = dict(step_at)
    last = None
    for t, _ in samples:
        last = steps.get(t, last)
        yield t, last


def _slope(points: list[tuple[int, float]]) -> float:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    ev = sub.add_parser("eval")
    ev.add_argument("--prompts", type=int, nargs="+", default=[5000, 20000])
    tr = sub.add_parser("train")
    tr.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    before = settle()
    with tempfile.TemporaryDirectory(prefix="uaclm-load-") as tmp:
        if args.what == "eval":
            results = [eval_load(n, Path(tmp)) for n in args.prompts]
        else:
            results = [train_load(args.steps, Path(tmp))]
    report = {"machine": machine_header(before, settle()), "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
