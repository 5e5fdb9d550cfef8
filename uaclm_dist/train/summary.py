"""The end-of-run summary (``summary.json`` and the console table) of ``uaclm train``.

Besides the first/last-step training metrics it reports the paper's training signature
(shared/METHOD.md section 4: under UA-CLM the entropy of incorrect tokens rises while that of
correct tokens stays low; under CLM both fall) as measured numbers on a fixed token set: the
entropy probe's held-out answer tokens, split by whether the *starting* model predicted them
correctly. Nothing is asserted here; a run reports what it did.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from uaclm_dist.train.throughput import read_compute_setup, throughput_summary

STEP_KEYS = ("loss", "entropy_correct", "entropy_incorrect", "token_accuracy")


def fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def probe_rows(out: Path) -> dict | None:
    """``{"start": row, "end": row}`` of probe.jsonl (None when the probe is off)."""
    path = out / "probe.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return {"start": rows[0], "end": rows[-1]} if rows else None


def paper_signature(probe: dict | None) -> dict | None:
    """Entropy (nats) of the starting model's incorrect and correct probe tokens, at the start
    and at the end of training, and their changes; None without a probe or a step between.

    ``incorrect_entropy_rose`` / ``correct_entropy_fell`` are the two directions the paper's
    signature is about (UA-CLM: rose / stayed low or fell; CLM: fell / fell); None where the
    token set is empty.
    """
    if not probe or probe["end"]["step"] <= probe["start"]["step"]:
        return None
    start, end = probe["start"], probe["end"]

    def change(key: str) -> dict:
        a, b = start.get(key), end.get(key)
        delta = None if a is None or b is None else b - a
        return {"start": a, "end": b, "change": delta}

    incorrect = change("entropy_base_incorrect")
    correct = change("entropy_base_correct")
    return {
        "token_set": "held-out answer tokens (target span + EOS) of the probe examples, split by "
        "the starting model's argmax errors",
        "steps": [start["step"], end["step"]],
        "n_tokens": end["n_tokens"],
        "n_base_incorrect": end["n_tokens"] - end["n_base_correct"],
        "n_base_correct": end["n_base_correct"],
        "entropy_base_incorrect": incorrect,
        "entropy_base_correct": correct,
        "incorrect_entropy_rose": None if incorrect["change"] is None else incorrect["change"] > 0,
        "correct_entropy_fell": None if correct["change"] is None else correct["change"] < 0,
    }


def summarize(out: Path, result_metrics: dict, stopped: bool) -> dict:
    """Write and return ``summary.json``: first/last 3 logged steps (means), the probe's first
    and last rows, the paper signature on the probe tokens, the adapter's fingerprint."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    probe = probe_rows(out)
    summary = {
        "output_dir": str(out),
        "adapter": str(out / "adapter") if not stopped else None,
        "stopped": stopped,
        "steps_done": rows[-1]["step"] if rows else 0,
        "total_steps": rows[-1]["total_steps"] if rows else None,
        "first_steps": {k: _mean(rows[:3], k) for k in STEP_KEYS},
        "last_steps": {k: _mean(rows[-3:], k) for k in STEP_KEYS},
        "probe": probe,
        "signature": paper_signature(probe),
        "adapter_numel": result_metrics.get("adapter_numel"),
        "adapter_l1": result_metrics.get("adapter_l1"),
        "throughput": throughput_summary(rows, read_compute_setup(out)),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict) -> None:
    a, b = summary["first_steps"], summary["last_steps"]
    print(f"\nrun folder: {summary['output_dir']}")
    if summary["stopped"]:
        print(
            f"stopped after step {summary['steps_done']}/{summary['total_steps']} with a "
            f"checkpoint; continue with: uaclm train CONFIG --resume {summary['output_dir']}"
        )
    else:
        print(f"adapter:    {summary['adapter']}  (PeftModel.from_pretrained(base, path))")
    print("                      first steps   last steps")
    for key in STEP_KEYS:
        print(f"  {key:<20}{fmt(a[key]):>12}{fmt(b[key]):>13}")
    signature = summary.get("signature")
    if signature:
        first, last = signature["steps"]
        print(f"entropy probe, step {first} -> {last}: {signature['n_tokens']} held-out answer "
              f"tokens, split by the starting model's errors (METHOD.md section 4)")  # fmt: skip
        for label, key, n in (("incorrect at start", "entropy_base_incorrect", "n_base_incorrect"),
                              ("correct at start", "entropy_base_correct", "n_base_correct")):
            e = signature[key]
            print(f"  entropy of tokens {label} (n={signature[n]}): {fmt(e['start'])} -> "
                  f"{fmt(e['end'])} nats")  # fmt: skip
    throughput = summary.get("throughput")
    if throughput and throughput.get("tokens_per_s"):
        mfu = throughput.get("mfu")
        first, last = throughput["steps"]
        print(f"throughput, steps {first} -> {last}: {throughput['tokens_per_s']:.1f} tokens/s "
              f"({throughput['tokens_per_s_per_worker']:.1f} per worker), "
              f"{throughput['step_seconds']:.3f} s/step, MFU "
              f"{'-' if mfu is None else f'{100 * mfu:.2f}%'}, peak memory "
              f"{fmt(throughput.get('peak_memory_mb_max'))} MiB")  # fmt: skip
