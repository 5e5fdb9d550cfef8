"""Evaluation throughput: the Ray Data pipeline vs a plain sequential loop, in one run.

Both evaluate the same model (SmolLM2-135M-Instruct, fp32, packaged), the same prompts
(FanOutQA test questions, chat template) and the same protocol (greedy answer + K samples at
temperature 0.3, untempered token log-probs and entropies, semantic clustering, scores):

- sequential: one prompt at a time, `model.generate` for the greedy answer and again for the
  K samples (how per-question research code runs: `eval.decoder=hf_generate`), clustering and
  scoring in the same loop;
- pipeline: `run_pipeline` (generation actors over Ray Data, batched prompts, shared-prefill
  decoding of the greedy answer and the samples together, a clustering actor, vectorized
  scoring), on a local Ray cluster started before the clock starts.

Both timings include loading the model (the pipeline's actors load it themselves).
Reports answers scored per second and the ratio.

With ``--vqa`` the model is the offline vision-language model (SmolLM2-135M + MobileNetV2,
fp32, projector as built) on easy-VQA image questions: one image per answer, so answers per
second are images per second; the image goes into the prefill (shared by the greedy answer and
the samples in the pipeline, re-encoded by each ``generate`` call in the loop).

    python benchmarks/eval_throughput.py [--prompts 48] [--samples 5] [--actors 2] [--vqa]
                                         [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from quiet import MIN_REPEATS, alternating, machine_header, median, settle

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _config(args):
    from uaclm_dist.config import RunConfig

    model = {"name_or_path": "smollm2-135m", "dtype": "float32",
             "quantization": {"method": "none"}, "lora": {"enabled": False}}
    data = {"format": "fanoutqa", "max_examples": args.prompts * 2, "train_fraction": 0.5,
            "prompt_template": "chat", "max_length": 160}
    if args.vqa:
        model.update(family="vision_lm", name_or_path="smollm2-mobilenetv2")
        data.update(format="easyvqa", max_length=96)
    return RunConfig.model_validate({
        "model": model,
        "data": data,
        "eval": {"num_samples": args.samples, "max_new_tokens": args.max_new_tokens,
                 "batch_size": args.batch_size, "num_generation_actors": args.actors,
                 "cpus_per_actor": max(1, (os.cpu_count() or 2) // args.actors),
                 "scores": ["te", "ppl", "pe", "se", "dse", "length"]},
    })  # fmt: skip


def sequential(cfg, rows) -> float:
    import torch

    from uaclm_dist.evaluate.clustering import assign_clusters, build_clusterer
    from uaclm_dist.evaluate.frame import example_frame
    from uaclm_dist.evaluate.generation import (
        GenerationSettings,
        example_stats,
        load_generation_model,
    )  # fmt: skip
    from uaclm_dist.modeling.families import family_of, load_tokenizer_for

    torch.set_num_threads(os.cpu_count() or 2)
    t0 = time.perf_counter()
    tokenizer = load_tokenizer_for(cfg.model)
    image_spec = family_of(cfg.model).image_spec(cfg.model)
    model = load_generation_model(cfg.model, None, seed=cfg.optim.seed)
    clusterer = build_clusterer(cfg.eval)
    settings = GenerationSettings(cfg.eval.num_samples, cfg.eval.temperature,
                                  cfg.eval.max_new_tokens, decoder="hf_generate")  # fmt: skip
    for row in rows:
        (stats,) = example_stats(model, tokenizer, [row], settings, image_spec)
        example_frame([assign_clusters(stats, clusterer)], list(cfg.eval.scores))
    return time.perf_counter() - t0


def pipeline(cfg, rows) -> float:
    from uaclm_dist.cluster import ray_session
    from uaclm_dist.evaluate.pipeline import run_pipeline

    with ray_session(cfg):
        t0 = time.perf_counter()
        df = run_pipeline(rows, model_cfg=cfg.model, adapter_dir=None, eval_cfg=cfg.eval,
                          seed=cfg.optim.seed)  # fmt: skip
        seconds = time.perf_counter() - t0
    assert len(df) == len(rows)
    return seconds


def _range(values: list[float]) -> str:
    return f"[{min(values):.1f}, {max(values):.1f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--repeats", type=int, default=MIN_REPEATS,
                   help=f"alternating repeats of both variants, medians reported (default "
                   f"{MIN_REPEATS})")
    p.add_argument("--vqa", action="store_true",
                   help="the offline vision-language model on easy-VQA image questions")
    p.add_argument("--out", default=None,
                   help="default: .bench/eval_throughput.md (--vqa: eval_throughput_vqa.md)")
    args = p.parse_args(argv)
    args.out = args.out or f".bench/eval_throughput{'_vqa' if args.vqa else ''}.md"

    from uaclm_dist.evaluate.runner import pipeline_rows, prompt_rows
    from uaclm_dist.modeling.families import load_tokenizer_for

    cfg = _config(args)
    rows = pipeline_rows(prompt_rows(cfg, load_tokenizer_for(cfg.model))[: args.prompts])
    before = settle()
    seconds: dict[str, list[float]] = {"sequential": [], "pipeline": []}
    for repeat, variant in alternating(list(seconds), args.repeats):
        seconds[variant].append((sequential if variant == "sequential" else pipeline)(cfg, rows))
        print(f"repeat {repeat} {variant}: {seconds[variant][-1]:.1f} s", flush=True)
    after = settle()
    seq_s, pipe_s = median(seconds["sequential"]), median(seconds["pipeline"])
    n = len(rows)
    what = ("offline VLM (SmolLM2-135M + MobileNetV2) fp32, {n} easy-VQA image prompts"
            if args.vqa else "SmolLM2-135M-Instruct fp32, {n} FanOutQA prompts").format(n=n)
    table = "\n".join([
        f"Evaluation throughput, {what}, greedy + "
        f"{args.samples} samples x {args.max_new_tokens} new tokens, clustering + scores; "
        f"median seconds of {args.repeats} alternating repeats (range in brackets).",
        machine_header(before, after),
        "",
        "| variant | seconds | answers scored / s | vs sequential |",
        "|---|---|---|---|",
        f"| sequential loop (1 prompt at a time) | {seq_s:.1f} {_range(seconds['sequential'])} | "
        f"{n / seq_s:.3f} | 1.00x |",
        f"| Ray Data pipeline ({args.actors} actors, batch {args.batch_size}) | {pipe_s:.1f} "
        f"{_range(seconds['pipeline'])} | {n / pipe_s:.3f} | {seq_s / pipe_s:.2f}x |",
    ])  # fmt: skip
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
