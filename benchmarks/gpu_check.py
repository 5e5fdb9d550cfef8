"""The GPU check: the project's GPU-only paths, proven in one prepared run (run by gpu_check.sh).

The host it is made for (docs/GPU_CHECK.md) is lent now and then for minutes: one H100 or H200,
Python 3.12 with its own CUDA torch, no network, no Ray. Each check writes one JSON line
(``name``, ``passed``, its numbers, or the error) to ``OUT/gpu_check.jsonl`` as soon as it ends,
and a Markdown table of all of them to ``OUT/gpu_check.md``; a failing check does not stop the
next one. The GPU-only branches it covers:

1. ``nf4_lora``: bitsandbytes NF4 + peft LoRA forward and backward in bf16 against the
   dequantized dense layer (outputs, input gradient, LoRA gradients);
2. ``loss_<objective>_V<V>``: the fused loss against dense logits in bf16 (``ua_clm`` and
   ``clm``, V = 32,000 and 128,256): loss and gradient agreement, time, peak memory;
3. ``collectives``: the process group created the way the trainer has Ray create it
   (``cpu:gloo,cuda:nccl``): the vocab-parallel loss over it against the fused loss, the step
   metrics reduced on the device, host decisions over gloo;
4. ``train_zero2_ua_clm`` / ``train_zero3_clm+ua``: the training worker's own code
   (:func:`uaclm_dist.train.worker.run_rank`) on one GPU without Ray
   (:mod:`uaclm_dist.train.local`): bf16 NF4 QLoRA under DeepSpeed ZeRO-2 / ZeRO-3, stopped with
   a checkpoint after 2 steps, resumed to 4; checkpoints hold trainable state only;
5. ``decoder``: the shared-prefill decoder's greedy rows against HF ``generate``;
6. ``slice_7b``: Llama-2-7B-shaped layers (hidden 4096, MLP 11008, 32 heads, V 32,000), NF4,
   LoRA r=32 on q/k/v/up/down, gradient checkpointing, 1,024 tokens: time and peak memory of
   1 and 2 layers, the per-layer cost extrapolated to 32 and 40 layers, and the MFU it implies.

``--cpu`` runs the same checks on the CPU with gloo and small shapes (``make test`` does, so the
script cannot rot). Both modes refuse to import what the GPU host lacks (Ray, datasets,
rouge-score, wandb, gguf): what passes here imports there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

#: Packages the GPU host does not have and the bundle does not carry (docs/GPU_CHECK.md).
NOT_ON_THE_HOST = ("ray", "datasets", "rouge_score", "wandb", "gguf")
for _name in NOT_ON_THE_HOST:
    sys.modules[_name] = None  # an import of any of them fails here as it would there

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NO_DEVICE = 3


class Shapes:
    """Sizes of each check: the real ones on a GPU, small ones on the CPU."""

    def __init__(self, gpu: bool):
        self.gpu = gpu
        self.device = torch.device("cuda", 0) if gpu else torch.device("cpu")
        self.linear = (4096, 4096, 2048) if gpu else (64, 96, 16)  # in, out, tokens
        self.loss_tokens, self.loss_hidden = (4096, 4096) if gpu else (64, 32)
        self.vocabs = (32000, 128256) if gpu else (500, 1000)
        self.repeats = 5 if gpu else 1
        self.slice = (dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                           num_key_value_heads=32, vocab_size=32000, seq=1024, rank=32)
                      if gpu else
                      dict(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                           num_key_value_heads=4, vocab_size=1000, seq=32, rank=8))  # fmt: skip


# ------------------------------------------------------------------------------- helpers


def _sync(shapes: Shapes) -> None:
    if shapes.gpu:
        torch.cuda.synchronize()


def _peak_reset(shapes: Shapes) -> int:
    if not shapes.gpu:
        return 0
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def _peak_mib(shapes: Shapes, base: int) -> float | None:
    return (torch.cuda.max_memory_allocated() - base) / 2**20 if shapes.gpu else None


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative max-abs difference of ``a`` to the reference ``b``."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.detach().float().flatten(),
                                                       b.detach().float().flatten(), dim=0))


# -------------------------------------------------------------------------------- checks


def check_nf4_lora(shapes: Shapes) -> dict:
    """NF4 + LoRA (peft) against the same LoRA on the dequantized dense weight, in bf16."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnb_f
    from peft import LoraConfig, get_peft_model

    d_in, d_out, n = shapes.linear
    torch.manual_seed(0)
    weight = torch.randn(d_out, d_in, dtype=torch.bfloat16) * d_in**-0.5

    class One(torch.nn.Module):
        def __init__(self, proj):
            super().__init__()
            self.proj = proj

        def forward(self, x):
            return self.proj(x)

    four_bit = bnb.nn.Linear4bit(d_in, d_out, bias=False, compute_dtype=torch.bfloat16,
                                 quant_type="nf4", compress_statistics=True,
                                 quant_storage=torch.bfloat16)  # fmt: skip
    four_bit.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4",
                                        compress_statistics=True,
                                        quant_storage=torch.bfloat16)  # fmt: skip
    four_bit = four_bit.to(shapes.device)  # quantizes
    dense_weight = bnb_f.dequantize_4bit(four_bit.weight.data, four_bit.weight.quant_state)
    dense = torch.nn.Linear(d_in, d_out, bias=False, device=shapes.device, dtype=torch.bfloat16)
    dense.weight.data.copy_(dense_weight.to(torch.bfloat16).reshape(d_out, d_in))
    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["proj"])
    models = [get_peft_model(One(layer), config) for layer in (four_bit, dense)]
    gen = torch.Generator().manual_seed(1)
    for model in models:  # the same LoRA weights in both, B non-zero so the path matters
        for p in model.parameters():
            if p.requires_grad:
                p.data = (torch.randn(p.shape, generator=gen) * 0.02).to(p.device, p.dtype)
        gen.manual_seed(1)
    x0 = torch.randn(n, d_in, generator=gen).to(shapes.device, torch.bfloat16)
    seed = torch.randn(n, d_out, generator=gen).to(shapes.device, torch.bfloat16)
    results = []
    for model in models:
        x = x0.clone().requires_grad_(True)
        y = model(x)
        (y.float() * seed.float()).sum().backward()
        grads = {n_: p.grad for n_, p in model.named_parameters() if p.requires_grad}
        results.append((y, x.grad, grads))
    (y4, gx4, g4), (yd, gxd, gd) = results
    lora = max(_rel(g4[k], gd[k]) for k in gd)
    numbers = {"out_rel": _rel(y4, yd), "input_grad_rel": _rel(gx4, gxd), "lora_grad_rel": lora,
               "shape": [d_in, d_out, n]}  # fmt: skip
    numbers["passed"] = max(numbers["out_rel"], numbers["input_grad_rel"], lora) < 2e-2
    return numbers


def _loss_step(kind: str, hidden0, weight, labels, objective):
    from uaclm_dist.losses.fused import fused_loss

    hidden = hidden0.clone().requires_grad_(True)
    if kind == "dense":  # [N, V] logits materialized
        out = objective.dense((hidden @ weight.t()).unsqueeze(0), labels.unsqueeze(0))
    else:
        out = fused_loss(hidden, weight, labels, objective=objective)
    out.loss.backward()
    return out.loss.detach(), hidden.grad


def _loss_inputs(shapes: Shapes, vocab: int):
    """``(hidden [N, H], head weight [V, H], labels [N])`` in bf16 on the device, seeded."""
    n, h = shapes.loss_tokens, shapes.loss_hidden
    g = torch.Generator().manual_seed(0)
    hidden = (torch.randn(n, h, generator=g) * 0.5).to(shapes.device, torch.bfloat16)
    weight = (torch.randn(vocab, h, generator=g) * h**-0.5 * 4).to(shapes.device, torch.bfloat16)
    labels = torch.randint(0, vocab, (n,), generator=g).to(shapes.device)
    return hidden, weight, labels


def check_loss(shapes: Shapes, objective_name: str, vocab: int) -> dict:
    """Fused against dense logits in bf16: agreement, median time, peak memory above inputs."""
    from uaclm_dist.losses.objectives import build_objective

    objective = build_objective(objective_name)
    hidden0, weight, labels = _loss_inputs(shapes, vocab)
    numbers: dict = {"N": shapes.loss_tokens, "H": shapes.loss_hidden, "V": vocab}
    outputs = {}
    for kind in ("dense", "fused"):
        _loss_step(kind, hidden0, weight, labels, objective)  # warm-up
        base = _peak_reset(shapes)
        times = []
        for _ in range(shapes.repeats):
            _sync(shapes)
            start = time.perf_counter()
            outputs[kind] = _loss_step(kind, hidden0, weight, labels, objective)
            _sync(shapes)
            times.append(1000 * (time.perf_counter() - start))
        numbers[f"{kind}_ms"] = statistics.median(times)
        numbers[f"{kind}_peak_mib"] = _peak_mib(shapes, base)
    (dense_loss, dense_grad), (fused_loss_value, fused_grad) = outputs["dense"], outputs["fused"]
    numbers["loss_rel"] = float((fused_loss_value.float() - dense_loss.float()).abs()
                                / dense_loss.float().abs().clamp(min=1e-12))  # fmt: skip
    numbers["grad_cosine"] = _cos(fused_grad, dense_grad)
    numbers["fused_vs_dense_time"] = numbers["fused_ms"] / numbers["dense_ms"]
    numbers["passed"] = numbers["loss_rel"] < 2e-2 and numbers["grad_cosine"] > 0.99
    return numbers


def check_collectives(shapes: Shapes) -> dict:
    """On the trainer's process group (cpu:gloo,cuda:nccl with a GPU): the vocab-parallel
    loss equals the fused one, StepMetrics reduce on the device, host decisions over gloo."""
    import torch.distributed as dist

    from uaclm_dist.losses.fused import fused_loss
    from uaclm_dist.losses.objectives import build_objective
    from uaclm_dist.losses.vocab_parallel import vocab_parallel_loss
    from uaclm_dist.train import collectives
    from uaclm_dist.train.local import one_rank_process_group
    from uaclm_dist.train.step_metrics import StepMetrics

    objective = build_objective("ua_clm")
    hidden0, weight, labels = _loss_inputs(shapes, shapes.vocabs[0])
    with one_rank_process_group(shapes.device):
        backend = str(dist.get_backend())
        outs, grads = [], []
        for kind in ("fused", "vocab_parallel"):
            hidden = hidden0.clone().requires_grad_(True)
            out = (fused_loss(hidden, weight, labels, objective=objective) if kind == "fused"
                   else vocab_parallel_loss(hidden, weight, labels, vocab_start=0, group=None,
                                            objective=objective))  # fmt: skip
            out.loss.backward()
            outs.append(out)
            grads.append(hidden.grad)
        metrics = StepMetrics(shapes.device)
        metrics.add(outs[1])
        reduced = metrics.reduce([123.0, 4.5])
        row = metrics.metrics(reduced.tolist())
        decisions = (collectives.any_rank(True), collectives.any_rank(False),
                     collectives.gather_host_floats(7.0))  # fmt: skip
        collectives.barrier()
    fused, parallel = (o.loss.detach().float() for o in outs)
    numbers = {"backend": backend, "reduced_on": str(reduced.device),
               "loss_rel": float((parallel - fused).abs() / fused.abs()),
               "grad_cosine": _cos(grads[1], grads[0]),
               "reduced_loss_matches": abs(row["loss"] - float(parallel))
               < 1e-3 * max(1.0, abs(float(parallel))),
               "host_values": reduced[-2:].tolist(),
               "decisions_ok": decisions == (True, False, [7.0])}  # fmt: skip
    expected_backend = "cpu:gloo,cuda:nccl" if shapes.gpu else "gloo"
    numbers["passed"] = bool(
        numbers["loss_rel"] < 1e-3 and numbers["grad_cosine"] > 0.999
        and numbers["reduced_loss_matches"] and numbers["decisions_ok"]
        and numbers["host_values"] == [123.0, 4.5] and numbers["reduced_on"] == str(shapes.device)
        and expected_backend.split(",")[-1].split(":")[-1] in backend
    )
    return numbers


def _qa_rows(n: int) -> list[dict]:
    """Short synthetic QA pairs (the host has no packaged data set)."""
    colours = ["red", "blue", "green", "black", "white", "yellow", "brown", "grey"]
    return [{"id": f"q{i}", "question": f"What colour is item number {i}?",
             "answers": [colours[i % len(colours)]]} for i in range(n)]  # fmt: skip


def check_train(shapes: Shapes, zero_stage: int, objective: str, work: Path) -> dict:
    """The training worker's code, one rank without Ray: 2 steps, stop with a checkpoint,
    resume to 4; bf16 NF4 QLoRA under ZeRO-2 or ZeRO-3."""
    from uaclm_dist.config import load_config
    from uaclm_dist.train.checkpoint import checkpointed_module_keys
    from uaclm_dist.train.local import train_in_this_process

    data = work / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _qa_rows(64)))
    out = work / f"train_zero{zero_stage}_{objective.replace('+', '_')}"
    overrides = [
        "model.name_or_path=tiny-llama", "model.dtype=bfloat16",
        "model.quantization.method=nf4", "model.quantization.compute_dtype=bfloat16",
        "model.quantization.storage_dtype=bfloat16", f"objective.name={objective}",
        "data.format=jsonl", f"data.paths=[{data}]", "data.max_length=64",
        "optim.max_steps=4", "optim.micro_batch_size=2", "optim.global_batch_size=4",
        "distributed.num_workers=1", f"distributed.gpus_per_worker={1 if shapes.gpu else 0}",
        f"distributed.deepspeed_config=ds_configs/zero{zero_stage}.json",
        f"distributed.zero_stage={zero_stage}", "logging.wandb_mode=disabled",
        "logging.probe_examples=4", f"logging.output_dir={out}",
    ]  # fmt: skip
    cfg = load_config(None, overrides)
    started = time.perf_counter()
    first = train_in_this_process(cfg, stop_after_steps=2)
    resumed = train_in_this_process(cfg, resume_dir=str(out))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    keys = checkpointed_module_keys(out / "ray" / "train")
    tp = resumed.get("throughput") or {}
    numbers = {
        "stopped_first": first.get("stopped"), "steps_done": resumed.get("steps_done"),
        "steps_logged": [r["step"] for r in rows],
        "losses": [r["loss"] for r in rows], "tokens_per_s": tp.get("tokens_per_s"),
        "peak_memory_mb": tp.get("peak_memory_mb_max"), "device": tp.get("device"),
        "checkpoint_keys_trainable_only": bool(keys) and all("lora_" in k for k in keys),
        "seconds": time.perf_counter() - started,
    }  # fmt: skip
    numbers["passed"] = bool(
        numbers["stopped_first"] is True and numbers["steps_done"] == 4
        and numbers["steps_logged"] == [1, 2, 3, 4]
        and all(x is not None and math.isfinite(x) for x in numbers["losses"])
        and numbers["checkpoint_keys_trainable_only"]
    )
    return numbers


def check_decoder(shapes: Shapes) -> dict:
    """Greedy rows of the shared-prefill decoder equal HF generate's (tiny Llama, peaked)."""
    from uaclm_dist.evaluate.decoding import decode_greedy_and_samples
    from uaclm_dist.evaluate.generation import generate_answers
    from uaclm_dist.modeling.loading import load_causal_lm

    model = load_causal_lm("tiny-llama", dtype=torch.float32).to(shapes.device).eval()
    with torch.no_grad():
        model.model.norm.weight.mul_(40.0)  # peaked: argmax gaps dwarf batch-shape rounding
    prompts = [[1, 17, 940, 33, 2051], [1, 88], [1, 4000, 12, 12, 7, 600, 31, 9]]
    common = dict(pad_token_id=0, eos_token_ids=[2], max_new_tokens=12)
    ours = decode_greedy_and_samples(model, prompts, num_samples=3, temperature=0.3, seed=0,
                                     **common)  # fmt: skip
    hf = generate_answers(model, prompts, do_sample=False, num_return=1, temperature=1.0, seed=0,
                          **common)  # fmt: skip
    same = [greedy.token_ids == ref.token_ids for (greedy, _), (ref,) in zip(ours, hf,
                                                                             strict=True)]
    logp = max(abs(a - b) for (greedy, _), (ref,) in zip(ours, hf, strict=True)
               for a, b in zip(greedy.logprobs, ref.logprobs, strict=True))  # fmt: skip
    return {"rows_equal": same, "max_logprob_diff": logp, "passed": all(same) and logp < 1e-3}


def _slice_model(shapes: Shapes, layers: int, folder: Path):
    """A Llama of the slice's sizes and ``layers`` layers, loaded as training loads it (NF4 from
    a saved folder, LoRA on q/k/v/up/down, gradient checkpointing, the fused ua_clm head)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from uaclm_dist.losses.objectives import build_objective
    from uaclm_dist.modeling.loading import attach_lora, load_causal_lm
    from uaclm_dist.modeling.sharded_head import ShardedLMHead, replace_lm_head
    from uaclm_dist.train.objective import CausalLMWithLoss

    s = shapes.slice
    config = LlamaConfig(hidden_size=s["hidden_size"], intermediate_size=s["intermediate_size"],
                         num_attention_heads=s["num_attention_heads"],
                         num_key_value_heads=s["num_key_value_heads"],
                         vocab_size=s["vocab_size"], num_hidden_layers=layers,
                         max_position_embeddings=4096)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(shapes.device):
        LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    model = load_causal_lm(folder, dtype=torch.bfloat16, quantization="nf4",
                           device_map={"": shapes.device} if shapes.gpu else None)  # fmt: skip
    head = ShardedLMHead.from_model(model)
    replace_lm_head(model, head)
    model = attach_lora(model, rank=s["rank"], alpha=2 * s["rank"], dropout=0.0,
                        target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
                        quantized=True, gradient_checkpointing=True)  # fmt: skip
    module = CausalLMWithLoss(model, head.to(shapes.device), build_objective("ua_clm"),
                              implementation="fused")  # fmt: skip
    return module, model, head


def check_slice_7b(shapes: Shapes, work: Path) -> dict:
    """Time and peak memory of a micro-batch (forward + backward) with 1 and 2 layers; the
    difference is one layer's cost, extrapolated to 32 (7B) and 40 (13B) layers."""
    from uaclm_dist.train.flops import attention_shape, matmul_parameters, sequence_flops
    from uaclm_dist.train.peak_flops import peak_flops

    s = shapes.slice
    measured = {}
    for layers in (1, 2):
        module, model, head = _slice_model(shapes, layers, work / f"slice{layers}")
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, s["vocab_size"], (1, s["seq"]), generator=g).to(shapes.device)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        module.train()
        module(step=0, total_steps=1, **batch).loss.backward()  # warm-up
        base = _peak_reset(shapes)
        times = []
        for _ in range(max(3, shapes.repeats)):
            _sync(shapes)
            start = time.perf_counter()
            module(step=0, total_steps=1, **batch).loss.backward()
            _sync(shapes)
            times.append(time.perf_counter() - start)
        matmul = matmul_parameters(model, (head.vocab_size, head.hidden_size))
        measured[layers] = {"seconds": statistics.median(times),
                            "peak_mib": _peak_mib(shapes, base),
                            "matmul": matmul, "attention": attention_shape(model.config)}
        del module, model, head
        if shapes.gpu:
            torch.cuda.empty_cache()
    one, two = measured[1], measured[2]
    per_layer_s = two["seconds"] - one["seconds"]
    peak = peak_flops(shapes.device, torch.bfloat16, None)
    numbers: dict = {"seq": s["seq"], "hidden": s["hidden_size"], "lora_rank": s["rank"],
                     "seconds_1_layer": one["seconds"], "seconds_2_layers": two["seconds"],
                     "per_layer_s": per_layer_s, "peak_flops": peak.flops_per_s,
                     "peak_flops_source": peak.source}  # fmt: skip
    if shapes.gpu:
        numbers["per_layer_peak_mib"] = two["peak_mib"] - one["peak_mib"]
    for total in (32, 40):
        seconds = one["seconds"] + (total - 1) * per_layer_s
        # the FLOPs of `total` layers: one layer's matmul weights added total - 1 times
        frozen = one["matmul"].frozen + (total - 1) * (two["matmul"].frozen - one["matmul"].frozen)
        trainable = one["matmul"].trainable + (total - 1) * (
            two["matmul"].trainable - one["matmul"].trainable)
        shape = type(one["attention"])(total, one["attention"].heads, one["attention"].head_dim)
        flops = sequence_flops(type(one["matmul"])(frozen, trainable), shape, [s["seq"]])
        numbers[f"seconds_{total}_layers"] = seconds
        numbers[f"mfu_{total}_layers"] = flops / (seconds * peak.flops_per_s)
        if shapes.gpu:
            numbers[f"peak_mib_{total}_layers"] = (one["peak_mib"] + (total - 1)
                                                  * numbers["per_layer_peak_mib"])  # fmt: skip
    numbers["passed"] = per_layer_s > 0 and all(
        0 < numbers[f"mfu_{t}_layers"] < 1 for t in (32, 40))
    return numbers


# ---------------------------------------------------------------------------------- run


def environment(shapes: Shapes) -> dict:
    import importlib.metadata as md

    versions = {}
    for name in ("torch", "transformers", "peft", "deepspeed", "bitsandbytes", "pydantic"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    commit_file = Path(os.environ.get("UACLM_GPU_BUNDLE", REPO / ".gpu-bundle")) / "commit"
    return {"device": torch.cuda.get_device_name(0) if shapes.gpu else "cpu",
            "cuda": torch.version.cuda, "python": sys.version.split()[0],
            "versions": versions,
            "commit": commit_file.read_text().strip() if commit_file.exists() else None,
            "passed": True}  # fmt: skip


def run_checks(shapes: Shapes, out: Path, only: set[str] | None = None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "gpu_check.jsonl"
    jsonl.write_text("")
    work = Path(tempfile.mkdtemp(prefix="uaclm-gpu-check-"))
    checks: list[tuple[str, Callable[[], dict]]] = [("environment", lambda: environment(shapes)),
                                                   ("nf4_lora", lambda: check_nf4_lora(shapes))]
    for objective in ("ua_clm", "clm"):
        for vocab in shapes.vocabs:
            checks.append((f"loss_{objective}_V{vocab}",
                           lambda o=objective, v=vocab: check_loss(shapes, o, v)))
    checks += [
        ("collectives", lambda: check_collectives(shapes)),
        ("train_zero2_ua_clm", lambda: check_train(shapes, 2, "ua_clm", work)),
        ("train_zero3_clm+ua", lambda: check_train(shapes, 3, "clm+ua", work)),
        ("decoder", lambda: check_decoder(shapes)),
        ("slice_7b", lambda: check_slice_7b(shapes, work)),
    ]  # fmt: skip
    results = []
    for name, fn in checks:
        if only and name not in only:
            continue
        started = time.perf_counter()
        try:
            result = {"name": name, **fn()}
        except Exception as exc:  # the next check still runs
            result = {"name": name, "passed": False, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()[-4000:]}  # fmt: skip
        result["check_seconds"] = round(time.perf_counter() - started, 2)
        results.append(result)
        with jsonl.open("a") as f:
            f.write(json.dumps(result, default=str) + "\n")
        status = "ok  " if result["passed"] else "FAIL"
        print(f"[gpu_check] {status} {name} ({result['check_seconds']:.1f} s)"
              + (f": {result['error']}" if "error" in result else ""), flush=True)
    (out / "gpu_check.md").write_text(markdown(results))
    return results


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 6:
        return f"[{', '.join(_short(v) for v in value[:6])}, ...]"
    return str(value)


def markdown(results: list[dict]) -> str:
    """One row per check: its name, pass / fail, and its numbers."""
    env = next((r for r in results if r["name"] == "environment"), {})
    lines = [f"GPU check on {env.get('device')} (CUDA {env.get('cuda')}, Python "
             f"{env.get('python')}, commit {env.get('commit')}): "
             f"{sum(r['passed'] for r in results)} of {len(results)} passed", "",
             "| check | passed | numbers |", "|---|---|---|"]  # fmt: skip
    for r in results:
        numbers = ", ".join(f"{k} {_short(v)}" for k, v in r.items()
                            if k not in ("name", "passed", "traceback"))  # fmt: skip
        lines.append(f"| {r['name']} | {'yes' if r['passed'] else 'NO'} | {numbers} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="small shapes on the CPU, gloo")
    parser.add_argument("--out", default=os.environ.get("OUT", str(REPO / ".gpu-check-out")))
    parser.add_argument("--only", nargs="*", help="run only these checks (by name)")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}); --cpu runs the same "
              "checks on the CPU", file=sys.stderr)  # fmt: skip
        return NO_DEVICE
    results = run_checks(Shapes(gpu=not args.cpu), Path(args.out),
                         set(args.only) if args.only else None)  # fmt: skip
    print((Path(args.out) / "gpu_check.md").read_text(), flush=True)
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # DeepSpeed's engines keep their process groups' threads alive past destroy (see
    # tests/fixtures/scripts/portable_state_ranks.py); skip the C++ static destructors
    os._exit(code)
