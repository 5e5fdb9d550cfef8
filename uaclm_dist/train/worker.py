"""The Ray Train worker loop: one DeepSpeed rank fine-tuning a (Q)LoRA model with the objective.

Read top to bottom: set up -> model -> DeepSpeed -> resume -> train steps -> checkpoint -> end.
Every rank runs the same code; rank 0 also writes metrics.jsonl, W&B and the adapter.
"""

from __future__ import annotations

import json
import math
import random
import resource
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import ray.train
import torch
import torch.distributed as dist

from uaclm_dist.config import RunConfig
from uaclm_dist.train import checkpoint as ckpt
from uaclm_dist.train.ds_config import load_deepspeed_config
from uaclm_dist.train.objective import CausalLMWithLoss, beta_at
from uaclm_dist.train.probe import ProbeTokens, measure, summarize
from uaclm_dist.train.schedule import linear_warmup_decay
from uaclm_dist.train.sharding import step_micro_batches
from uaclm_dist.train.step_metrics import StepMetrics

STOP_FILE = "STOP"  # written by the driver on SIGTERM / SIGUSR1, or by `uaclm stop RUN_DIR`


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated accelerator memory, or this process's peak resident set on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build_model(cfg: RunConfig, rank: int, world: int, device: torch.device):
    """(Q)LoRA model with its LM head replaced by this rank's head shard."""
    import logging as _logging

    from uaclm_dist.modeling.loading import attach_lora, count_parameters, load_causal_lm
    from uaclm_dist.modeling.sharded_head import ShardedLMHead, replace_lm_head

    m = cfg.model
    quantization = None if m.quantization.method == "none" else m.quantization.method
    model = load_causal_lm(
        m.name_or_path,
        dtype=_dtype(m.dtype),
        quantization=quantization,
        double_quant=m.quantization.double_quant,
        compute_dtype=_dtype(m.quantization.compute_dtype),
        storage_dtype=_dtype(m.quantization.storage_dtype),
        tiny_kwargs=m.tiny.model_dump(exclude={"tokenizer"})
        if m.name_or_path == "tiny-llama"
        else None,
        seed=cfg.optim.seed,
        device_map={"": device} if device.type == "cuda" else None,
    )
    sharded = cfg.objective.implementation == "vocab_parallel" and cfg.objective.name != "ult"
    head = ShardedLMHead.from_model(model, rank if sharded else 0, world if sharded else 1)
    replace_lm_head(model, head)
    if m.lora.enabled:
        model = attach_lora(
            model, rank=m.lora.rank, alpha=m.lora.alpha, dropout=m.lora.dropout,
            target_modules=m.lora.target_modules, quantized=quantization is not None,
            gradient_checkpointing=m.gradient_checkpointing,
        )  # fmt: skip
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise RuntimeError("no trainable parameters: LoRA attached to nothing")
    _logging.getLogger(__name__).info("trainable %d / total %d parameters", trainable, total)
    return model, head.to(device), (trainable, total)


def lora_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def gathered(params, zero_stage: int):
    """Full (un-partitioned) values of ZeRO-3 parameters inside the context."""
    if zero_stage != 3:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def save_adapter(model, out_dir: Path, rank: int, zero_stage: int) -> dict:
    """Collective: gather the LoRA weights and (rank 0) save them in peft format.

    Returns a fingerprint of what was saved (``numel``, ``l1``, from the gathered values) so
    tests can check the file holds what the workers held.
    """
    from peft import get_peft_model_state_dict

    params = [p for _, p in lora_parameters(model)]
    with gathered(params, zero_stage):
        state = {
            k: v.detach().to("cpu").clone() for k, v in get_peft_model_state_dict(model).items()
        }
        if rank == 0:
            model.save_pretrained(str(out_dir), state_dict=state)
    return {
        "adapter_numel": int(sum(v.numel() for v in state.values())),
        "adapter_l1": float(sum(v.float().abs().sum() for v in state.values())),
    }


def _all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is True on any rank (one MAX all-reduce)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


class _MetricsSink:
    """Rank 0's jsonl files (metrics.jsonl per step, probe.jsonl) and (optional) W&B run."""

    def __init__(self, cfg: RunConfig, out_dir: Path, run_id: str, rank: int, start_step: int):
        self.rank = rank
        self.path = out_dir / "metrics.jsonl"
        self.probe_path = out_dir / "probe.jsonl"
        self.wandb = None
        if rank != 0:
            return
        for path in (self.path, self.probe_path):
            if start_step > 0 and path.exists():
                _set_aside_rows_from(path, start_step)
        if cfg.logging.wandb_mode != "disabled":
            import wandb

            self.wandb = wandb.init(
                project=cfg.logging.wandb_project, name=cfg.logging.run_name or out_dir.name,
                id=run_id, resume="allow", mode=cfg.logging.wandb_mode, dir=str(out_dir),
                config=cfg.to_dict(),
            )  # fmt: skip

    def log(self, row: dict, *, probe: bool = False) -> None:
        """Append a row (``row["step"]``: optimizer steps done) to metrics.jsonl, or to
        probe.jsonl with ``probe`` (W&B keys then get a ``probe/`` prefix)."""
        if self.rank != 0:
            return
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        with (self.probe_path if probe else self.path).open("a") as f:
            f.write(json.dumps(clean) + "\n")
        if self.wandb is not None:
            prefix = "probe/" if probe else ""
            values = {prefix + k: v for k, v in clean.items() if v is not None}
            self.wandb.log(values, step=row["step"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def _set_aside_rows_from(path: Path, start_step: int) -> None:
    """On resume at 0-based ``start_step``, move rows of steps done after the checkpoint (row
    ``step`` is the 1-based count, so rows > start_step: an abandoned trajectory) aside, to
    ``<name>.superseded.jsonl``."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keep = [r for r in rows if r["step"] <= start_step]
    dropped = [r for r in rows if r["step"] > start_step]
    if dropped:
        with path.with_name(path.stem + ".superseded.jsonl").open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in dropped)
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))


def _log_probe(sink, module, examples, base, pad_token_id, device, micro, step) -> None:
    """Collective: measure the probe now and (rank 0) log it against the baseline sets."""
    sink.log({"step": step, **summarize(base, measure(module, examples, pad_token_id, device,
                                                      micro))}, probe=True)  # fmt: skip


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point. ``loop_config`` holds the resolved run config, the tokenized
    training examples and the driver's decisions (total steps, run id, resume folder)."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    from uaclm_dist.data.tokenize import collate

    cfg = RunConfig.model_validate(loop_config["config"])
    examples, pad_token_id = loop_config["examples"], loop_config["pad_token_id"]
    total_steps, steps_per_epoch = loop_config["total_steps"], loop_config["steps_per_epoch"]
    out_dir = Path(loop_config["output_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    seed_everything(cfg.optim.seed)  # identical LoRA init on every rank

    # --- model, optimizer, schedule, DeepSpeed -------------------------------------------
    peft_model, head, (n_trainable, n_total) = build_model(cfg, rank, world, device)
    wrapped = CausalLMWithLoss(peft_model, head, cfg.objective)
    params = [p for _, p in lora_parameters(wrapped)]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: linear_warmup_decay(s, total_steps, cfg.optim.warmup_ratio)
    )
    engine, _, _, _ = deepspeed.initialize(
        model=wrapped, optimizer=optimizer, lr_scheduler=scheduler,
        config=load_deepspeed_config(cfg, world), dist_init_required=False,
    )  # fmt: skip

    # --- resume: the newest complete checkpoint of this run (after a worker failure Ray
    # restarts this function; --resume points the driver at the same folder) ---------------
    start_step, run_id = 0, loop_config["run_id"]
    resume_dir = ckpt.latest_checkpoint(out_dir / "ray" / "train")
    if resume_dir is None and loop_config.get("resume_dir"):
        resume_dir = Path(loop_config["resume_dir"])
    if resume_dir is not None:
        start_step = ckpt.read_run_state(resume_dir)["next_step"]
        ckpt.load_rank_files(resume_dir, engine, rank)
    sink = _MetricsSink(cfg, out_dir, run_id, rank, start_step)
    micro, accum = cfg.optim.micro_batch_size, cfg.optim.grad_accumulation

    # --- entropy probe: token sets fixed by the starting model (kept in the run state) -----
    probe_examples, probe_base = loop_config.get("probe") or [], None
    if probe_examples and resume_dir is not None:
        saved = ckpt.read_run_state(resume_dir).get("probe_baseline")
        probe_base = ProbeTokens.from_state(saved) if saved else None
    elif probe_examples:
        probe_base = measure(wrapped, probe_examples, pad_token_id, device, micro)
        sink.log({"step": 0, **summarize(probe_base, probe_base)}, probe=True)
    if rank == 0:
        print(f"[uaclm] rank 0/{world}: {n_trainable:,} trainable of {n_total:,} parameters; "
              f"steps {start_step}..{total_steps}", flush=True)  # fmt: skip

    def save_checkpoint(next_step: int, metrics: dict, final: bool) -> None:
        with tempfile.TemporaryDirectory(prefix="uaclm-ckpt-") as tmp:
            tmp_path = Path(tmp)
            ckpt.save_rank_files(tmp_path, engine, rank)
            fingerprint = save_adapter(
                peft_model, tmp_path / "adapter", rank, cfg.distributed.zero_stage
            )
            if final:  # the user-facing adapter, outside Ray's storage
                save_adapter(peft_model, out_dir / "adapter", rank, cfg.distributed.zero_stage)
            if rank == 0:
                ckpt.write_run_state(tmp_path, {
                    "next_step": next_step, "total_steps": total_steps, "run_id": run_id,
                    "world_size": world, "final": final,
                    "probe_baseline": probe_base.to_state() if probe_base else None,
                })  # fmt: skip
            ray.train.report({**metrics, **fingerprint, "next_step": next_step, "final": final},
                             checkpoint=ray.train.Checkpoint.from_directory(tmp))  # fmt: skip

    # --- training steps ---------------------------------------------------------------------
    metrics: dict = {}
    stopped, steps_done = False, start_step
    for step in range(start_step, total_steps):
        t0 = time.perf_counter()
        step_metrics, n_seen_tokens = StepMetrics(), 0
        beta = beta_at(cfg.objective, step, total_steps)
        lr = engine.get_lr()[0]
        for indices in step_micro_batches(
            len(examples), step, steps_per_epoch=steps_per_epoch, micro=micro, accum=accum,
            world=world, rank=rank, seed=cfg.optim.seed,
        ):  # fmt: skip
            rows = [examples[i] for i in indices]
            batch = {k: v.to(device) for k, v in collate(rows, pad_token_id).items()}
            out = engine(batch["input_ids"], batch["attention_mask"], batch["labels"], beta)
            engine.backward(out.loss)
            engine.step()
            step_metrics.add(out)
            n_seen_tokens += int(batch["attention_mask"].sum())
        metrics = step_metrics.reduce()
        steps_done = step + 1
        tokens = torch.tensor([float(n_seen_tokens)], device=device)
        peak = torch.tensor([float(peak_memory_bytes(device))], device=device)
        dist.all_reduce(tokens)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        seconds = time.perf_counter() - t0
        metrics.update(
            step=step + 1, total_steps=total_steps, epoch=step // steps_per_epoch,
            lr=lr,
            tokens_per_s=float(tokens.item()) / seconds, step_seconds=seconds,
            peak_memory_mb=float(peak.item()) / 2**20, beta=beta,
        )  # fmt: skip
        if (step + 1) % cfg.logging.log_every_steps == 0 or step + 1 == total_steps:
            sink.log(metrics)
        stop = _all_ranks_agree((out_dir / STOP_FILE).exists(), device)
        stop = stop or step + 1 == loop_config.get("stop_at_step")
        if stop and probe_base is not None:
            _log_probe(sink, wrapped, probe_examples, probe_base, pad_token_id, device, micro,
                       steps_done)  # fmt: skip
        every = cfg.logging.checkpoint_every_steps
        if stop or (every and (step + 1) % every == 0 and step + 1 < total_steps):
            save_checkpoint(step + 1, metrics, final=False)
        if stop:
            stopped = True
            break
    if not stopped:
        if probe_base is not None and steps_done > start_step:
            _log_probe(sink, wrapped, probe_examples, probe_base, pad_token_id, device, micro,
                       steps_done)  # fmt: skip
        save_checkpoint(total_steps, metrics, final=True)
    sink.close()
    get_accelerator().empty_cache()
    if rank == 0:
        print(f"[uaclm] {'stopped (checkpoint saved)' if stopped else 'finished'}", flush=True)
