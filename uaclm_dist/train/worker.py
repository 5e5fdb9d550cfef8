"""The Ray Train worker: one DeepSpeed rank fine-tuning a (Q)LoRA model with the objective.

Reads top to bottom as :meth:`TrainingWorker.run` does: set up (model, DeepSpeed, resume,
probe baseline) -> train steps -> checkpoints -> finish. Every rank runs the same code; rank 0
also writes metrics.jsonl, probe.jsonl, W&B and the adapter.
"""

from __future__ import annotations

import math
import os
import random
import resource
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import ray.train
import torch
import torch.distributed as dist

from uaclm_dist.config import RunConfig
from uaclm_dist.console import rank_log, redirect_fds
from uaclm_dist.data.tokenize import collate
from uaclm_dist.faults import checkpoint_write_hook
from uaclm_dist.train import checkpoint as ckpt
from uaclm_dist.train.adapters import save_adapter, trainable_parameters
from uaclm_dist.train.ds_config import load_deepspeed_config
from uaclm_dist.train.ds_ops import skip_cpu_shm_comm_op
from uaclm_dist.train.flops import attention_shape, matmul_parameters, sequence_flops
from uaclm_dist.train.manifest import replace_dir_atomically, write_manifest
from uaclm_dist.train.metrics_sink import MetricsSink
from uaclm_dist.train.nonfinite import (
    NonFiniteError,
    SkippedStepGuard,
    assert_finite_trainable,
    write_aborted,
)
from uaclm_dist.train.objective import CausalLMWithLoss, batch_to, split_batch
from uaclm_dist.train.peak_flops import peak_flops
from uaclm_dist.train.plan import TrainPlan
from uaclm_dist.train.portable_state import (
    gather_portable_state,
    load_portable_state,
    read_portable_state,
    save_portable_state,
)
from uaclm_dist.train.probe import ProbeTokens, measure, summarize
from uaclm_dist.train.run_dir import STOP_FILE
from uaclm_dist.train.schedule import linear_warmup_decay
from uaclm_dist.train.sharding import step_micro_batches
from uaclm_dist.train.step_metrics import StepMetrics
from uaclm_dist.train.step_timing import PHASES, PhaseClock
from uaclm_dist.train.storage import publish_to_storage
from uaclm_dist.train.throughput import write_compute_setup


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated accelerator memory, or this process's peak resident set on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build_training_model(cfg: RunConfig, rank: int, world: int, device: torch.device):
    """(Q)LoRA model of the configured family with its LM head replaced by this rank's shard.

    Returns ``(peft model, head shard, (trainable, total) parameter counts)``. The base model is
    built with ``cfg.optim.seed``, the seed evaluation uses too (:func:`load_model`).
    """
    import logging

    from uaclm_dist.modeling.families import family_of
    from uaclm_dist.modeling.loading import count_parameters, disable_cpu_repacking
    from uaclm_dist.modeling.sharded_head import ShardedLMHead, replace_lm_head

    family = family_of(cfg.model)
    model = family.load(cfg.model, device, seed=cfg.optim.seed).model
    disable_cpu_repacking(model)  # again, for any family loader that does not: see its doc
    sharded = cfg.objective.implementation == "vocab_parallel"
    head = ShardedLMHead.from_model(model, rank if sharded else 0, world if sharded else 1)
    replace_lm_head(model, head)
    if cfg.model.lora.enabled:
        model = family.attach_lora(model, cfg.model)
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise RuntimeError("no trainable parameters: LoRA attached to nothing")
    logging.getLogger(__name__).info("trainable %d / total %d parameters", trainable, total)
    return model, head.to(device), (trainable, total)


def all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is True on any rank (one MAX all-reduce)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point: ``loop_config["plan"]`` is the driver's :class:`TrainPlan`.

    With ``loop_config["log_dir"]`` (the console's default mode) all of this rank's output,
    from Python, C++ (DeepSpeed, torch) and child processes (W&B), goes to
    ``log_dir/rank{r}.log`` instead of Ray's forwarding to the driver's console. An error still
    reaches the driver through Ray Train (which then prints the log's tail).
    """
    log_dir = loop_config.get("log_dir")
    if not log_dir:
        TrainingWorker(loop_config["plan"]).run()
        return
    with redirect_fds(rank_log(log_dir, ray.train.get_context().get_world_rank())):
        try:
            TrainingWorker(loop_config["plan"]).run()
        except BaseException:  # the traceback in the rank's log, next to what led to it
            os.write(2, traceback.format_exc().encode(errors="replace"))
            raise


class TrainingWorker:
    """One rank's training run. Construction is the set-up; :meth:`run` trains."""

    def __init__(self, plan: TrainPlan):
        self.plan, self.cfg = plan, plan.config
        self.out_dir = Path(plan.output_dir)
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        seed_everything(self.cfg.optim.seed)  # identical LoRA init on every rank
        self._build_engine()
        self._measure_compute()
        self.start_step, resume_dir = self._resume()
        self.totals = self._running_totals(resume_dir)
        self.sink = MetricsSink(self.cfg, self.out_dir, plan.run_id, self.rank, self.start_step)
        self.probe_base = self._probe_baseline(resume_dir)
        self.skip_guard = SkippedStepGuard(self.cfg.optim.max_skipped_in_a_row)
        if self.rank == 0:
            print(f"[uaclm] rank 0/{self.world}: {self.n_trainable:,} trainable of "
                  f"{self.n_total:,} parameters; steps {self.start_step}..{plan.total_steps}",
                  flush=True)  # fmt: skip

    # ---------------------------------------------------------------------------- set-up

    def _build_engine(self) -> None:
        """Model -> loss module -> AdamW + warm-up/decay schedule -> DeepSpeed engine."""
        import deepspeed

        cfg, plan = self.cfg, self.plan
        self.peft_model, head, (self.n_trainable, self.n_total) = build_training_model(
            cfg, self.rank, self.world, self.device
        )
        self.module = CausalLMWithLoss(
            self.peft_model, head, plan.objective, implementation=cfg.objective.implementation,
            chunk_tokens=cfg.objective.chunk_tokens, chunk_vocab=cfg.objective.chunk_vocab,
            chunk_mib=cfg.objective.chunk_mib,
            image_size=plan.image_spec.size if plan.image_spec is not None else None,
        )  # fmt: skip
        params = [p for _, p in trainable_parameters(self.module)]
        optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: linear_warmup_decay(s, plan.total_steps, cfg.optim.warmup_ratio)
        )
        skip_cpu_shm_comm_op()  # an inference-only op: its build costs minutes, can hang (ds_ops)
        self.engine, _, _, _ = deepspeed.initialize(
            model=self.module, optimizer=optimizer, lr_scheduler=scheduler,
            config=load_deepspeed_config(cfg, self.world), dist_init_required=False,
        )  # fmt: skip

    def _measure_compute(self) -> None:
        """Parameter counts, attention shape and this device's peak FLOP/s (all ranks probe at
        once, after a barrier, so that ranks sharing cores measure their share); rank 0 writes
        them to ``compute.json`` (:mod:`uaclm_dist.train.throughput`)."""
        from deepspeed.accelerator import get_accelerator

        self.clock = PhaseClock(get_accelerator().synchronize)
        self.module.clock = self.clock
        head = self.module.head
        self.matmul_params = matmul_parameters(
            self.peft_model, (head.vocab_size, head.hidden_size),
            head_trainable=head.weight_shard.requires_grad,
        )  # fmt: skip
        self.attention = attention_shape(self.peft_model.config)
        dist.barrier()
        peak = peak_flops(self.device, getattr(torch, self.cfg.model.dtype),
                          self.cfg.distributed.peak_tflops_per_device)  # fmt: skip
        self.peak_flops = peak.flops_per_s
        if self.rank == 0:
            write_compute_setup(self.out_dir, {
                "world_size": self.world, "device": str(self.device),
                "parameters": {
                    "total": self.n_total, "trainable": self.n_trainable,
                    "matmul_frozen": self.matmul_params.frozen,
                    "matmul_trainable": self.matmul_params.trainable,
                },
                "attention": {"layers": self.attention.layers, "heads": self.attention.heads,
                              "head_dim": self.attention.head_dim},
                "peak_flops_per_device": peak.flops_per_s, "peak_flops_source": peak.source,
            })  # fmt: skip

    def _running_totals(self, resume_dir: Path | None) -> dict[str, float]:
        """Tokens, FLOPs and step seconds since the run started (from the checkpoint when
        resuming; a checkpoint older than these totals restarts them at zero)."""
        totals = {"cum_tokens": 0.0, "cum_flops": 0.0, "cum_seconds": 0.0,
                  "cum_worker_seconds": 0.0, "cum_peak_flop": 0.0,
                  **{f"cum_{p}_s": 0.0 for p in PHASES}}  # fmt: skip
        if resume_dir is not None:
            saved = ckpt.read_run_state(resume_dir).get("totals") or {}
            totals.update({k: float(v) for k, v in saved.items() if k in totals})
        return totals

    def _resume(self) -> tuple[int, Path | None]:
        """Restore the newest complete checkpoint of this run (after a worker failure Ray
        restarts the workers; ``--resume`` points the driver at the same folder).

        Returns ``(first step to run, the checkpoint folder or None)``.
        """
        resume_dir = ckpt.latest_checkpoint(self.out_dir / "ray" / "train")
        if resume_dir is None and self.plan.resume_dir:
            resume_dir = Path(self.plan.resume_dir)
        if resume_dir is None:
            return 0, None
        state = ckpt.read_run_state(resume_dir)
        saved_world = int(state["world_size"])
        if saved_world == self.world:
            ckpt.load_rank_files(resume_dir, self.engine, self.rank)
        else:  # DeepSpeed's partitions do not fit: the world-size-independent copy does
            load_portable_state(self.engine, trainable_parameters(self.peft_model),
                                read_portable_state(resume_dir), self.cfg.distributed.zero_stage)
            ckpt.load_rng_if_present(resume_dir, self.rank)
            if self.rank == 0:
                print(f"[uaclm] resuming on {self.world} workers from {resume_dir.name}, "
                      f"written by {saved_world} (portable trainable state)", flush=True)
        return state["next_step"], resume_dir

    def _probe_baseline(self, resume_dir: Path | None) -> ProbeTokens | None:
        """The starting model's probe tokens (kept in the run state, so a resumed run compares
        against the same sets); logged as probe row 0 on a fresh start."""
        if not self.plan.probe_examples:
            return None
        if resume_dir is not None:
            saved = ckpt.read_run_state(resume_dir).get("probe_baseline")
            return ProbeTokens.from_state(saved) if saved else None
        base = self._measure_probe()
        self.sink.log({"step": 0, **summarize(base, base)}, probe=True)
        return base

    def _measure_probe(self) -> ProbeTokens:
        return measure(self.module, self.plan.probe_examples, self.plan.pad_token_id,
                       self.device, self.cfg.optim.micro_batch_size,
                       image_spec=self.plan.image_spec,
                       float_dtype=getattr(torch, self.cfg.model.dtype))  # fmt: skip

    # ------------------------------------------------------------------------------ run

    def run(self) -> None:
        """Train from ``start_step`` to the end, or until a stop is requested."""
        try:
            self._train_to_the_end()
        except NonFiniteError as exc:  # a decision every rank took alike (all-reduced inputs)
            if self.rank == 0:
                write_aborted(self.out_dir, exc)
                print(f"[uaclm] aborted: {exc}", flush=True)
            self.sink.close()

    def _train_to_the_end(self) -> None:
        plan = self.plan
        metrics: dict = {}
        steps_done = self.start_step
        for step in range(self.start_step, plan.total_steps):
            metrics = self.train_step(step)
            steps_done = step + 1
            if steps_done % self.cfg.logging.log_every_steps == 0 or steps_done == plan.total_steps:
                self.sink.log(metrics)
            if self._stop_requested(steps_done):
                self.log_probe(steps_done)
                self.save_checkpoint(steps_done, metrics, final=False)
                return self.finish(stopped=True)
            every = self.cfg.logging.checkpoint_every_steps
            if every and steps_done % every == 0 and steps_done < plan.total_steps:
                self.save_checkpoint(steps_done, metrics, final=False)
        if steps_done > self.start_step:
            self.log_probe(steps_done)
        self.save_checkpoint(plan.total_steps, metrics, final=True)
        self.finish(stopped=False)

    def train_step(self, step: int) -> dict:
        """One optimizer step (``accum`` micro-batches on every rank); its metrics row."""
        cfg, plan = self.cfg, self.plan
        t0 = time.perf_counter()
        clock = self.clock
        step_metrics, n_seen_tokens, step_flops = StepMetrics(), 0, 0.0
        lr = self.engine.get_lr()[0]
        skipped_before = self.engine.skipped_steps
        for indices in step_micro_batches(
            len(plan.examples), step, steps_per_epoch=plan.steps_per_epoch,
            micro=cfg.optim.micro_batch_size, accum=cfg.optim.grad_accumulation,
            world=self.world, rank=self.rank, seed=cfg.optim.seed,
        ):  # fmt: skip
            with clock.phase("data"):
                rows = [plan.examples[i] for i in indices]
                batch = batch_to(collate(rows, plan.pad_token_id, plan.image_spec), self.device,
                                 getattr(torch, cfg.model.dtype))  # fmt: skip
                labels, inputs = split_batch(batch)
                lengths = inputs["attention_mask"].sum(dim=1).tolist()
            out = self.engine(labels=labels, step=step, total_steps=plan.total_steps, **inputs)
            with clock.phase("backward"):
                self.engine.backward(out.loss)
            with clock.phase("optimizer"):
                self.engine.step()
            step_metrics.add(out)
            n_seen_tokens += int(sum(lengths))
            step_flops += sequence_flops(self.matmul_params, self.attention, lengths)
        with clock.phase("comm"):
            metrics = step_metrics.reduce()
            counts = torch.tensor([float(n_seen_tokens), step_flops], dtype=torch.float64,
                                  device=self.device)  # fmt: skip
            dist.all_reduce(counts)
            peaks = [torch.zeros(1, dtype=torch.float64, device=self.device)
                     for _ in range(self.world)]  # fmt: skip
            dist.all_gather(peaks, torch.tensor([float(peak_memory_bytes(self.device))],
                                                dtype=torch.float64, device=self.device))
        seconds = time.perf_counter() - t0
        tokens, flops = counts.tolist()
        phases = clock.take()
        peaks_mb = [round(float(p.item()) / 2**20, 1) for p in peaks]
        self.totals["cum_tokens"] += tokens
        self.totals["cum_flops"] += flops
        self.totals["cum_seconds"] += seconds
        # what the devices could have done meanwhile: a resume on another world size or device
        # changes these per step, so the summary divides by their sums, not today's values
        self.totals["cum_worker_seconds"] += seconds * self.world
        self.totals["cum_peak_flop"] += seconds * self.world * self.peak_flops
        for name, value in phases.items():
            self.totals[f"cum_{name}_s"] += value
        metrics.update(
            step=step + 1, total_steps=plan.total_steps, epoch=step // plan.steps_per_epoch,
            lr=lr, tokens_per_s=tokens / seconds, step_seconds=seconds,
            mfu=flops / (seconds * self.peak_flops * self.world),
            peak_memory_mb=max(peaks_mb), peak_memory_mb_per_worker=peaks_mb,
            beta=plan.objective.weight(step, plan.total_steps),
            **{f"{name}_s": value for name, value in phases.items()}, **self.totals,
        )  # fmt: skip
        # DeepSpeed skipped the update on every rank alike if the gradient norm was not finite.
        skipped = self.engine.skipped_steps > skipped_before
        finite = math.isfinite(metrics["loss"])
        self.skip_guard.update(step + 1, skipped=skipped, loss_finite=finite)
        metrics.update(step_skipped=skipped, skipped_steps=self.skip_guard.total)
        return metrics

    def _stop_requested(self, steps_done: int) -> bool:
        """Collective: a STOP file on any rank, or the invocation's step budget reached."""
        stop = all_ranks_agree((self.out_dir / STOP_FILE).exists(), self.device)
        return stop or steps_done == self.plan.stop_at_step

    def log_probe(self, steps_done: int) -> None:
        """Collective: measure the probe now and (rank 0) log it against the baseline sets."""
        if self.probe_base is None:
            return
        now = self._measure_probe()
        self.sink.log({"step": steps_done, **summarize(self.probe_base, now)}, probe=True)

    # ------------------------------------------------------------------------ checkpoint

    def save_checkpoint(self, next_step: int, metrics: dict, final: bool) -> None:
        """Collective: DeepSpeed state + RNG (every rank), adapter and run state (rank 0), each
        rank's manifest, published file by file into Ray Train's storage
        (:mod:`uaclm_dist.train.manifest`) and reported. The final one also becomes the run's
        ``adapter/``."""
        zero_stage = self.cfg.distributed.zero_stage
        assert_finite_trainable(self.module, self.device)
        with tempfile.TemporaryDirectory(prefix="uaclm-ckpt-") as tmp:
            tmp_path = Path(tmp)
            ckpt.save_rank_files(tmp_path, self.engine, self.rank)
            save_portable_state(tmp_path, gather_portable_state(
                self.engine, trainable_parameters(self.peft_model), self.rank))
            fingerprint = save_adapter(self.peft_model, tmp_path / "adapter", self.rank, zero_stage)
            if self.rank == 0:
                if final:  # the user-facing adapter, outside Ray's storage
                    replace_dir_atomically(tmp_path / "adapter", self.out_dir / "adapter")
                ckpt.write_run_state(tmp_path, {
                    "next_step": next_step, "total_steps": self.plan.total_steps,
                    "run_id": self.plan.run_id, "world_size": self.world, "final": final,
                    "probe_baseline": self.probe_base.to_state() if self.probe_base else None,
                    "totals": dict(self.totals),
                })  # fmt: skip
            write_manifest(tmp_path, self.rank)
            hook = checkpoint_write_hook(self.out_dir, self.rank, next_step)
            ray.train.report({**metrics, **fingerprint, "next_step": next_step, "final": final},
                             checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_upload_fn=lambda c, name: publish_to_storage(
                                 c, name, self.rank, hook))  # fmt: skip

    # ---------------------------------------------------------------------------- finish

    def finish(self, *, stopped: bool) -> None:
        from deepspeed.accelerator import get_accelerator

        self.sink.close()
        get_accelerator().empty_cache()
        if self.rank == 0:
            print(f"[uaclm] {'stopped (checkpoint saved)' if stopped else 'finished'}", flush=True)
