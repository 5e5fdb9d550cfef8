"""The Ray Train worker: one DeepSpeed rank fine-tuning a (Q)LoRA model with the objective.

Reads top to bottom as :meth:`TrainingWorker.run` does: set up (model, DeepSpeed, resume,
probe baseline) -> train steps -> checkpoints -> finish. Every rank runs the same code; rank 0
also writes metrics.jsonl, probe.jsonl, W&B and the adapter.
"""

from __future__ import annotations

import os
import random
import resource
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uaclm_dist.config import RunConfig
from uaclm_dist.console import rank_log, redirect_fds
from uaclm_dist.data.tokenize import collate
from uaclm_dist.faults import checkpoint_write_hook, fail_setup_on_rank
from uaclm_dist.train import checkpoint as ckpt
from uaclm_dist.train import collectives
from uaclm_dist.train.adapters import save_adapter, trainable_parameters
from uaclm_dist.train.context import WorkerContext
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
from uaclm_dist.train.parent import load_parent_weights
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
from uaclm_dist.train.setup_failure import raise_if_failed_earlier, record_setup_failure
from uaclm_dist.train.sharding import step_micro_batches
from uaclm_dist.train.step_metrics import StepMetrics
from uaclm_dist.train.step_timing import PHASES, PhaseClock, StepWindow
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


def engine_device(assigned: torch.device, deepspeed_device) -> torch.device:
    """The device batches go to: DeepSpeed's, checked against the one the context assigned
    (Ray Train's; a mismatch would put the batch on one GPU and the weights on another)."""
    ds = torch.device(deepspeed_device) if deepspeed_device is not None else assigned
    same_index = ds.index is None or assigned.index is None or ds.index == assigned.index
    if ds.type != assigned.type or not same_index:
        raise RuntimeError(f"DeepSpeed's device {ds} is not the assigned {assigned}: set "
                           "LOCAL_RANK / CUDA_VISIBLE_DEVICES consistently")
    return ds


def zero3_construction(ds_config: dict):
    """An ``HfDeepSpeedConfig`` for a ZeRO-3 config (None otherwise): while it lives,
    ``from_pretrained`` builds unquantized models under ``deepspeed.zero.Init`` and PEFT reads
    partitioned shapes. The caller keeps it alive until the model is built and wrapped."""
    if ds_config.get("zero_optimization", {}).get("stage") != 3:
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(ds_config)


def partitioned_fraction(model: torch.nn.Module) -> float:
    """Share of the frozen base parameters (by count) already partitioned by ZeRO-3 when the
    model was built (``ds_id`` set before ``deepspeed.initialize``; the LoRA weights PEFT adds
    afterwards are partitioned by the engine); recorded in ``compute.json``."""
    total = partitioned = 0
    for p in model.parameters():
        if p.requires_grad:
            continue
        n = getattr(p, "ds_numel", None) or p.numel()
        total += n
        partitioned += n if hasattr(p, "ds_id") else 0
    return partitioned / total if total else 0.0


@dataclass
class StepRecord:
    """One optimizer step as the loop keeps it until a row is written: ``reduced`` is the
    all-reduced sums (and tokens, FLOPs) still on the device."""

    step: int
    lr: float
    reduced: torch.Tensor
    step_metrics: StepMetrics
    skipped: bool


def build_training_model(cfg: RunConfig, rank: int, world: int, device: torch.device,
                         init_adapter_dir: str | None = None):  # fmt: skip
    """(Q)LoRA model of the configured family with its LM head replaced by this rank's shard;
    its LoRA (and a trained projector) start from ``init_adapter_dir`` when given.

    Returns ``(peft model, head shard, (trainable, total) parameter counts)``. The base model is
    built with ``cfg.optim.seed``, the seed evaluation uses too (:func:`load_model`).

    Under ZeRO-3 the model is built the way transformers and PEFT document for DeepSpeed
    ZeRO-3 (a live ``HfDeepSpeedConfig``, :func:`zero3_construction`; no ``device_map``): an
    unquantized model is partitioned while it loads (``deepspeed.zero.Init``), so no rank ever
    holds all of it; a 4-bit model loads quantized on the current device (transformers skips
    ``zero.Init`` for quantized weights) with its storage dtype equal to the model dtype, which
    ZeRO-3 then shards.
    """
    import logging

    from uaclm_dist.modeling.families import family_of
    from uaclm_dist.modeling.loading import count_parameters, disable_cpu_repacking
    from uaclm_dist.modeling.sharded_head import ShardedLMHead, replace_lm_head

    family = family_of(cfg.model)
    zero3 = cfg.distributed.zero_stage == 3
    if device.type == "cuda":
        torch.cuda.set_device(device)  # where a load without device_map puts 4-bit weights
    model = family.load(cfg.model, None if zero3 else device, seed=cfg.optim.seed).model
    disable_cpu_repacking(model)  # again, for any family loader that does not: see its doc
    sharded = cfg.objective.implementation == "vocab_parallel"
    head = ShardedLMHead.from_model(model, rank if sharded else 0, world if sharded else 1)
    replace_lm_head(model, head)
    if cfg.model.lora.enabled:
        model = family.attach_lora(model, cfg.model)
        if init_adapter_dir:
            load_parent_weights(model, init_adapter_dir)
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise RuntimeError("no trainable parameters: LoRA attached to nothing")
    logging.getLogger(__name__).info("trainable %d / total %d parameters", trainable, total)
    return model, head.to(device), (trainable, total)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point: ``loop_config["plan"]`` is the driver's :class:`TrainPlan`.

    With ``loop_config["log_dir"]`` (the console's default mode) all of this rank's output,
    from Python, C++ (DeepSpeed, torch) and child processes (W&B), goes to
    ``log_dir/rank{r}.log`` instead of Ray's forwarding to the driver's console. An error still
    reaches the driver through Ray Train (which then prints the log's tail).
    """
    from uaclm_dist.train.context import RayTrainContext

    context = RayTrainContext()
    log_dir = loop_config.get("log_dir")
    if not log_dir:
        run_rank(loop_config["plan"], context)
        return
    with redirect_fds(rank_log(log_dir, context.rank)):
        try:
            run_rank(loop_config["plan"], context)
        except BaseException:  # the traceback in the rank's log, next to what led to it
            os.write(2, traceback.format_exc().encode(errors="replace"))
            raise


def run_rank(plan: TrainPlan, context: WorkerContext) -> None:
    """Set up and train this rank (under Ray Train or :class:`~.context.LocalContext`). A
    failure before its first optimizer step is recorded so that the restarts Ray Train makes
    fail at once (:mod:`.setup_failure`)."""
    out_dir = Path(plan.output_dir)
    raise_if_failed_earlier(out_dir)
    worker = None
    try:
        fail_setup_on_rank(out_dir, context.rank)
        worker = TrainingWorker(plan, context)
        worker.run()
    except Exception as exc:
        if worker is None or not worker.first_step_done:
            record_setup_failure(out_dir, context.rank, exc)
        raise


class TrainingWorker:
    """One rank's training run. Construction is the set-up; :meth:`run` trains."""

    def __init__(self, plan: TrainPlan, context: WorkerContext):
        self.plan, self.cfg, self.context = plan, plan.config, context
        self.first_step_done = False  # a failure before it is not retried (run_rank)
        self.out_dir = Path(plan.output_dir)
        self.rank, self.world, self.device = context.rank, context.world_size, context.device
        seed_everything(self.cfg.optim.seed)  # identical LoRA init on every rank
        self._build_engine()
        self.device = engine_device(self.device, self.engine.device)
        self._measure_compute()
        self.start_step, resume_dir = self._resume()
        self.totals = self._running_totals(resume_dir)
        self.sink = MetricsSink(self.cfg, self.out_dir, plan.run_id, self.rank, self.start_step)
        self.probe_base = self._probe_baseline(resume_dir)
        self.skip_guard = SkippedStepGuard(self.cfg.optim.max_skipped_in_a_row)
        # device-side state between two metrics rows (read by read_metrics)
        self.window = StepWindow()
        self.window_totals = torch.zeros(2, dtype=torch.float64, device=self.device)
        self.first_applied_nonfinite = torch.zeros((), dtype=torch.int64, device=self.device)
        if self.rank == 0:
            print(f"[uaclm] rank 0/{self.world}: {self.n_trainable:,} trainable of "
                  f"{self.n_total:,} parameters; steps {self.start_step}..{plan.total_steps}",
                  flush=True)  # fmt: skip

    # ---------------------------------------------------------------------------- set-up

    def _build_engine(self) -> None:
        """Model -> loss module -> AdamW + warm-up/decay schedule -> DeepSpeed engine."""
        import deepspeed

        cfg, plan = self.cfg, self.plan
        ds_config = load_deepspeed_config(cfg, self.world)
        skip_cpu_shm_comm_op()  # an inference-only op: its build costs minutes, can hang (ds_ops)
        # DeepSpeed's comm adopts Ray's process group now: zero.Init (ZeRO-3 construction)
        # reads the world size from it before deepspeed.initialize would set it up
        deepspeed.init_distributed(dist_init_required=False)
        # kept for the worker's life: transformers and PEFT hold only a weak reference to it
        self.hf_ds_config = zero3_construction(ds_config)
        self.peft_model, head, (self.n_trainable, self.n_total) = build_training_model(
            cfg, self.rank, self.world, self.device, plan.init_adapter_dir
        )
        self.partitioned_at_load = partitioned_fraction(self.peft_model)
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
        self.engine, _, _, _ = deepspeed.initialize(
            model=self.module, optimizer=optimizer, lr_scheduler=scheduler,
            config=ds_config, dist_init_required=False,
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
        collectives.barrier()
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
                "zero_stage": self.cfg.distributed.zero_stage,
                "partitioned_at_load": self.partitioned_at_load,
            })  # fmt: skip

    def _running_totals(self, resume_dir: Path | None) -> dict[str, float]:
        """Tokens, FLOPs and step seconds since the run started (from the checkpoint when
        resuming; a checkpoint older than these totals restarts them at zero)."""
        totals = {"cum_tokens": 0.0, "cum_flops": 0.0, "cum_seconds": 0.0,
                  "cum_worker_seconds": 0.0, "cum_peak_flop": 0.0, "cum_timed_steps": 0.0,
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
        plan, log_every = self.plan, self.cfg.logging.log_every_steps
        metrics: dict = {}
        steps_done = self.start_step
        for step in range(self.start_step, plan.total_steps):
            steps_done = step + 1
            logged = steps_done % log_every == 0 or steps_done == plan.total_steps
            record = self.train_step(step, timed=logged)
            self.first_step_done = True
            stop = self._stop_requested(steps_done)
            every = self.cfg.logging.checkpoint_every_steps
            checkpoint = every and steps_done % every == 0 and steps_done < plan.total_steps
            if logged or stop or checkpoint:  # the host reads the device's numbers only here
                metrics = self.read_metrics(record)
            if logged:
                self.sink.log(metrics)
            if stop:
                self.log_probe(steps_done)
                self.save_checkpoint(steps_done, metrics, final=False)
                return self.finish(stopped=True)
            if checkpoint:
                self.save_checkpoint(steps_done, metrics, final=False)
        if steps_done > self.start_step:
            self.log_probe(steps_done)
        self.save_checkpoint(plan.total_steps, metrics, final=True)
        self.finish(stopped=False)

    def train_step(self, step: int, *, timed: bool) -> StepRecord:
        """One optimizer step (``accum`` micro-batches on every rank), without a host sync of
        ours: its sums stay on the device (reduced there) until :meth:`read_metrics`.

        ``timed``: time the phases (:mod:`.step_timing`), which synchronizes the device at
        every phase boundary; the loop times its logging steps only.
        """
        cfg, plan = self.cfg, self.plan
        t0 = time.perf_counter()
        clock = self.clock
        clock.enabled = timed
        step_metrics, n_seen_tokens, step_flops = StepMetrics(self.device), 0, 0.0
        lr = self.engine.get_lr()[0]
        skipped_before = self.engine.skipped_steps
        for indices in step_micro_batches(
            len(plan.examples), step, steps_per_epoch=plan.steps_per_epoch,
            micro=cfg.optim.micro_batch_size, accum=cfg.optim.grad_accumulation,
            world=self.world, rank=self.rank, seed=cfg.optim.seed,
        ):  # fmt: skip
            with clock.phase("data"):
                rows = [plan.examples[i] for i in indices]
                host_batch = collate(rows, plan.pad_token_id, plan.image_spec)
                lengths = host_batch["attention_mask"].sum(dim=1).tolist()  # on the host
                labels, inputs = split_batch(
                    batch_to(host_batch, self.device, getattr(torch, cfg.model.dtype)))
            out = self.engine(labels=labels, step=step, total_steps=plan.total_steps, **inputs)
            with clock.phase("backward"):
                self.engine.backward(out.loss)
            with clock.phase("optimizer"):
                self.engine.step()
            step_metrics.add(out)
            n_seen_tokens += int(sum(lengths))
            step_flops += sequence_flops(self.matmul_params, self.attention, lengths)
        with clock.phase("comm"):
            reduced = step_metrics.reduce([n_seen_tokens, step_flops])
        # DeepSpeed skipped the update on every rank alike if the gradient norm was not finite.
        skipped = self.engine.skipped_steps > skipped_before
        self.skip_guard.update(step + 1, skipped=skipped, loss_finite=True)
        if not skipped:  # a non-finite loss that was applied: checked when the host reads
            bad = ~torch.isfinite(reduced[step_metrics.loss_index()])
            self.first_applied_nonfinite = torch.where(
                (self.first_applied_nonfinite == 0) & bad, step + 1, self.first_applied_nonfinite)
        self.window_totals += reduced[-2:]
        self.window.add(seconds=time.perf_counter() - t0, phases=clock.take() if timed else None)
        return StepRecord(step=step, lr=lr, reduced=reduced, step_metrics=step_metrics,
                          skipped=skipped)

    def read_metrics(self, record: StepRecord) -> dict:
        """The metrics row of ``record``'s step (the one host sync of the steps since the last
        row): its reduced sums, the window's tokens, FLOPs and seconds since the last row, the
        running totals, every rank's peak memory. Raises :class:`NonFiniteError` if a
        non-finite loss was applied in the window (before anything is saved)."""
        t0 = time.perf_counter()
        values = record.reduced.tolist()
        tokens, flops = self.window_totals.tolist()
        bad_step = int(self.first_applied_nonfinite.item())
        if bad_step:
            self.skip_guard.update(bad_step, skipped=False, loss_finite=False)  # raises
        self.window_totals.zero_()
        window = self.window.take(extra_seconds=time.perf_counter() - t0)
        peaks_mb = [round(p / 2**20, 1)
                    for p in collectives.gather_host_floats(peak_memory_bytes(self.device))]
        seconds = window.seconds
        self.totals["cum_tokens"] += tokens
        self.totals["cum_flops"] += flops
        self.totals["cum_seconds"] += seconds
        # what the devices could have done meanwhile: a resume on another world size or device
        # changes these per step, so the summary divides by their sums, not today's values
        self.totals["cum_worker_seconds"] += seconds * self.world
        self.totals["cum_peak_flop"] += seconds * self.world * self.peak_flops
        if window.phases is not None:
            self.totals["cum_timed_steps"] += window.timed_steps
            for name, value in window.phases.items():
                self.totals[f"cum_{name}_s"] += value
        metrics = record.step_metrics.metrics(values)
        plan = self.plan
        metrics.update(
            step=record.step + 1, total_steps=plan.total_steps,
            epoch=record.step // plan.steps_per_epoch, lr=record.lr,
            tokens_per_s=tokens / seconds if seconds > 0 else None,
            step_seconds=seconds / window.steps,
            mfu=flops / (seconds * self.peak_flops * self.world) if seconds > 0 else None,
            peak_memory_mb=max(peaks_mb), peak_memory_mb_per_worker=peaks_mb,
            beta=plan.objective.weight(record.step, plan.total_steps),
            **({f"{name}_s": value / window.timed_steps for name, value in window.phases.items()}
               if window.phases is not None else {}),
            **self.totals,
        )  # fmt: skip
        metrics.update(step_skipped=record.skipped, skipped_steps=self.skip_guard.total)
        return metrics

    def _stop_requested(self, steps_done: int) -> bool:
        """Collective: a STOP file on any rank, or the invocation's step budget reached."""
        stop = collectives.any_rank((self.out_dir / STOP_FILE).exists())
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
        assert_finite_trainable(self.module)
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
            self.context.report({**metrics, **fingerprint, "next_step": next_step,
                                 "final": final}, tmp_path, hook)  # fmt: skip

    # ---------------------------------------------------------------------------- finish

    def finish(self, *, stopped: bool) -> None:
        from deepspeed.accelerator import get_accelerator

        self.sink.close()
        get_accelerator().empty_cache()
        if self.rank == 0:
            print(f"[uaclm] {'stopped (checkpoint saved)' if stopped else 'finished'}", flush=True)
