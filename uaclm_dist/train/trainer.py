"""`uaclm train`: validate, prepare data, start Ray Train workers, follow them, summarize.

Everything that can fail on bad input (config, data files, tokenization, the output folder) runs
here, on the driver, before any Ray or DeepSpeed process starts.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from uaclm_dist.config import ConfigError, RunConfig
from uaclm_dist.config.preflight import check_cluster
from uaclm_dist.losses.objectives import build_objective
from uaclm_dist.modeling.source import check_attention_kernel, locate_model
from uaclm_dist.train import run_dir as rd
from uaclm_dist.train.checkpoint import latest_checkpoint, read_run_state
from uaclm_dist.train.nonfinite import raise_if_aborted, set_aside_aborted
from uaclm_dist.train.parent import check_lora_shape, check_parent_split, locate_parent
from uaclm_dist.train.plan import TrainPlan
from uaclm_dist.train.run_dir import STOP_FILE
from uaclm_dist.train.schedule import steps_per_epoch, total_steps
from uaclm_dist.train.setup_failure import raise_if_setup_failed, set_aside_setup_failures
from uaclm_dist.train.sharding import wrapped_examples
from uaclm_dist.train.summary import fmt, print_summary, summarize


def train_loop_on_worker(loop_config: dict) -> None:
    """Ray Train's entry point on every worker: :func:`.worker.train_loop_per_worker`, imported
    there, on the worker: the worker module pulls in transformers' modeling code, peft
    and DeepSpeed (seconds of imports), which the driver never runs.
    """
    from uaclm_dist.train.worker import train_loop_per_worker

    train_loop_per_worker(loop_config)


@dataclass
class PreparedData:
    train: list  # TokenizedExample
    test_ids: list[str]
    train_ids: list[str]
    report: dict
    pad_token_id: int
    probe: list  # TokenizedExample: the first logging.probe_examples test-split examples,
    # answer tokens supervised
    image_spec: object = None  # ImageSpec of a vision-language model (None: text only)


def prepare_training_data(cfg: RunConfig) -> PreparedData:
    """Records -> seeded split -> tokenized training examples (driver side, fails early)."""
    from uaclm_dist.data import DataError, load_records, split_records, tokenize_records
    from uaclm_dist.data.images import check_record_images
    from uaclm_dist.modeling.families import family_of, load_tokenizer_for

    image_spec = family_of(cfg.model).image_spec(cfg.model)
    try:
        records = load_records(cfg.data)
        n_images = check_record_images(records, takes_images=image_spec is not None,
                                       family=cfg.model.family)  # fmt: skip
    except DataError as exc:  # a bad file or row: a message for people, exit 2
        raise ConfigError(f"data: {exc}") from exc
    train, test = split_records(records, cfg.data.train_fraction, cfg.data.split_seed)
    train = train[: cfg.data.max_train_examples]  # the split, hence the test set, is unchanged
    tokenizer = load_tokenizer_for(cfg.model)
    examples, report = tokenize_records(
        train, tokenizer, template=cfg.data.prompt_template, loss_on=cfg.data.loss_on,
        max_length=cfg.data.max_length, image_spec=image_spec,
    )  # fmt: skip
    if not examples and not report.dropped_ids:
        raise ConfigError(f"data: the training split of the {len(records)} records is empty "
                          f"(data.train_fraction {cfg.data.train_fraction:g})")
    if not examples:
        shown = ", ".join(repr(i) for i in report.dropped_ids[:3])
        raise ConfigError(
            f"data: none of the {report.n_in} training records fits data.max_length "
            f"{cfg.data.max_length} tokens even without its context (e.g. id {shown}); raise "
            "data.max_length or shorten the questions and answers"
        )
    # The probe measures answer tokens (target span + EOS) whatever the training loss covers:
    # with loss_on=all most supervised tokens are the fixed prompt every sequence shares.
    probe, _ = tokenize_records(
        test[: cfg.logging.probe_examples], tokenizer, template=cfg.data.prompt_template,
        loss_on="answer", max_length=cfg.data.max_length, image_spec=image_spec,
    )  # fmt: skip
    report_dict = {
        "records": len(records), "train_records": len(train), "test_records": len(test),
        "image_records": n_images,
        "tokenize": report.as_dict() if hasattr(report, "as_dict") else vars(report),
    }  # fmt: skip
    return PreparedData(
        train=examples, test_ids=[r.id for r in test], train_ids=[r.id for r in train],
        report=report_dict, pad_token_id=tokenizer.pad_token_id, probe=probe,
        image_spec=image_spec,
    )  # fmt: skip


def ship_by_value(obj: object) -> None:
    """Let Ray pickle ``obj``'s class by value when its module is not part of this package.

    An extension registered in the driver's own script or test module is not importable on the
    workers; pickled by value, the object the driver resolved is the one the workers run.
    """
    import ray.cloudpickle

    module = sys.modules.get(type(obj).__module__)
    if module is not None and not module.__name__.startswith("uaclm_dist"):
        ray.cloudpickle.register_pickle_by_value(module)


class _Progress(threading.Thread):
    """Driver-side progress bar with ETA, fed by rank 0's metrics.jsonl."""

    def __init__(self, path: Path, start: int, total: int, file: TextIO):
        super().__init__(daemon=True)
        from tqdm import tqdm

        self.path, self.stop_event = path, threading.Event()
        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", file=file,
                        dynamic_ncols=True)  # fmt: skip
        self.offset = path.stat().st_size if path.exists() else 0

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            self.poll()
        self.poll()

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open() as f:
            f.seek(self.offset)
            lines = f.readlines()
            self.offset = f.tell()
        for line in lines:
            if not line.endswith("\n"):
                self.offset -= len(line)  # a half-written row: read it next time
                break
            row = json.loads(line)
            self.bar.update(row["step"] - self.bar.n)
            loss = row.get("loss")  # null: not finite (that step was skipped)
            postfix = {"loss": "non-finite" if loss is None else f"{loss:.4f}",
                       "acc": fmt(row.get("token_accuracy"))}  # fmt: skip
            if row.get("skipped_steps"):
                postfix["skipped"] = row["skipped_steps"]
            self.bar.set_postfix(postfix)

    def close(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
        self.bar.close()


def _install_stop_handlers(out: Path, terminal: TextIO) -> None:
    """SIGTERM / SIGUSR1 (Slurm's pre-timeout signal, scancel) ask the workers to checkpoint
    and stop at the next step boundary (said on ``terminal``, or stderr once it is closed)."""

    def request_stop(signum, _frame):
        (out / STOP_FILE).write_text(f"signal {signum}\n")
        print(f"\n[uaclm] signal {signum}: checkpointing at the next step, then stopping",
              file=sys.stderr if terminal.closed else terminal, flush=True)  # fmt: skip

    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, request_stop)


def run_training(
    cfg: RunConfig, resume_dir: str | None = None, stop_after_steps: int | None = None,
    *, verbose: bool = False,
) -> dict:  # fmt: skip
    """Train with Ray Train + DeepSpeed. Returns the summary; ``summary['stopped']`` is True when
    a stop was requested (the run can be resumed from its checkpoint).

    ``stop_after_steps``: checkpoint and stop after this many steps of this invocation (a run
    sliced into wall-time-limited jobs); the schedule still spans the whole run. ``verbose``:
    Ray's, DeepSpeed's and the workers' output on the console rather than in ``RUN_DIR/logs/``
    (:mod:`uaclm_dist.console`).
    """
    run = prepare_run(cfg, resume_dir, stop_after_steps)
    try:
        result = _fit(run.plan, run.start_step, verbose=verbose)
    except Exception as exc:
        raise_if_setup_failed(run.out, cause=exc)
        raise
    return finish_run(run.out, result.metrics or {})


@dataclass
class PreparedRun:
    """A run ready to start: its plan, folder and first step (:func:`prepare_run`)."""

    plan: TrainPlan
    out: Path
    start_step: int


def prepare_run(
    cfg: RunConfig, resume_dir: str | None = None, stop_after_steps: int | None = None,
    *, ray_cluster: bool = True,
) -> PreparedRun:  # fmt: skip
    """Everything the driver does before workers start: every check of the input (exit 2 on
    bad input, nothing written), the data prepared, the run folder created or reopened, the
    plan made. ``ray_cluster``: also check the Ray cluster the run will use (False: the
    one-process harness, :mod:`uaclm_dist.train.local`)."""
    objective = build_objective(cfg.objective)
    locate_model(cfg.model.name_or_path)  # exit 2 within seconds, before any Ray process
    check_attention_kernel(cfg.model.attn_implementation)
    parent = _check_parent(cfg) if cfg.model.init_adapter and not resume_dir else None
    if ray_cluster:
        ship_by_value(objective)
        check_cluster(cfg, "train")
    if resume_dir:
        out, run_id = rd.open_resumed_run_dir(cfg, resume_dir)
    else:
        rd.check_new_run_dir(cfg)  # before the data is read; created once it is good
    data = prepare_training_data(cfg)
    if parent is not None:
        check_parent_split(parent, data.test_ids)
    if not resume_dir:
        out, run_id = rd.prepare_new_run_dir(cfg)
    world = cfg.distributed.num_workers
    o = cfg.optim
    per_epoch = steps_per_epoch(len(data.train), o.micro_batch_size, o.grad_accumulation, world)
    n_steps = total_steps(len(data.train), micro_batch_size=o.micro_batch_size,
                          grad_accumulation=o.grad_accumulation, world=world, epochs=o.epochs,
                          max_steps=o.max_steps)  # fmt: skip
    resume_checkpoint = None
    if resume_dir:
        resume_checkpoint = latest_checkpoint(out / "ray" / "train")
        if resume_checkpoint is None:
            raise ConfigError(f"--resume {resume_dir}: no complete checkpoint under {out}/ray")
        state = read_run_state(resume_checkpoint)
        if state.get("final") and int(state["next_step"]) >= n_steps:
            raise ConfigError(
                f"--resume {resume_dir}: the run has finished (its final checkpoint "
                f"{resume_checkpoint.name} is at step {state['next_step']} of {n_steps}); nothing "
                "is left to train and nothing there is changed. Raise optim.max_steps or "
                "optim.epochs to train further"
            )
    else:
        global_batch = o.micro_batch_size * o.grad_accumulation * world
        rd.write_run_info(out, cfg, run_id, {
            "world_size": world, "total_steps": n_steps, "steps_per_epoch": per_epoch,
            "wrapped_examples_per_epoch":
                wrapped_examples(len(data.train), per_epoch, global_batch),
            "parent": parent.record() if parent is not None else None,
        })  # fmt: skip
        (out / "data_report.json").write_text(json.dumps(data.report, indent=2))
        (out / "split_ids.json").write_text(
            json.dumps({"train": data.train_ids, "test": data.test_ids})
        )
    (out / STOP_FILE).unlink(missing_ok=True)

    start_step = 0 if resume_checkpoint is None else _next_step(resume_checkpoint)
    plan = TrainPlan(
        config=cfg, objective=objective, examples=data.train, pad_token_id=data.pad_token_id,
        probe_examples=data.probe, image_spec=data.image_spec, total_steps=n_steps,
        steps_per_epoch=per_epoch,
        output_dir=str(out), run_id=run_id,
        resume_dir=str(resume_checkpoint) if resume_checkpoint else None,
        stop_at_step=start_step + stop_after_steps if stop_after_steps else None,
        init_adapter_dir=str(parent.adapter_dir) if parent is not None else None,
    )  # fmt: skip
    set_aside_aborted(out)
    set_aside_setup_failures(out)
    return PreparedRun(plan, out, start_step)


def _check_parent(cfg: RunConfig):
    """The parent adapter of ``model.init_adapter`` with its LoRA checked against the config
    (:mod:`uaclm_dist.train.parent`; exit 2 on a problem)."""
    from uaclm_dist.modeling.families import family_of

    parent = locate_parent(cfg.model.init_adapter)
    lora = cfg.model.lora
    check_lora_shape(parent, lora.rank, lora.alpha, family_of(cfg.model).lora_targets(cfg.model))
    return parent


def finish_run(out: Path, metrics: dict) -> dict:
    """After the workers ended: the guard's abort as an error, else the summary (written to
    ``summary.json`` and printed). ``metrics``: the last checkpoint's reported row."""
    raise_if_aborted(out)
    summary = summarize(out, metrics, stopped=not metrics.get("final", False))
    print_summary(summary)
    return summary


def _fit(plan: TrainPlan, start_step: int, *, verbose: bool = False):
    """Run the workers with Ray Train (joining or starting Ray) and follow them; Ray's Result.

    Unless ``verbose``, Ray's and the workers' output goes to ``RUN_DIR/logs/`` and the console
    shows the progress bar; a failure prints the failed ranks' log tails before Ray's error.
    """
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from uaclm_dist.cluster import ray_session
    from uaclm_dist.console import LOG_DIR, driver_output, failed_ranks, failure_report

    ds, out = plan.config.distributed, Path(plan.output_dir)
    log_dir = out / LOG_DIR
    resources = {"CPU": ds.cpus_per_worker}
    if ds.gpus_per_worker:
        resources["GPU"] = ds.gpus_per_worker
    with driver_output(log_dir, verbose) as terminal, \
            ray_session(plan.config, quiet=not verbose):  # fmt: skip
        trainer = TorchTrainer(
            train_loop_on_worker,
            train_loop_config={"plan": plan, "log_dir": None if verbose else str(log_dir)},
            torch_config=torch_config(ds, TorchConfig),
            scaling_config=ScalingConfig(
                num_workers=ds.num_workers, use_gpu=ds.gpus_per_worker > 0,
                resources_per_worker=resources,
            ),
            run_config=RayRunConfig(
                name="train", storage_path=str(out / "ray"),
                failure_config=FailureConfig(max_failures=ds.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
            ),
        )  # fmt: skip
        _install_stop_handlers(out, terminal)
        progress = _Progress(out / "metrics.jsonl", start_step, plan.total_steps, terminal)
        progress.start()
        try:
            return trainer.fit()
        except Exception as exc:
            progress.close()
            if not verbose:
                print(failure_report(log_dir, failed_ranks(exc)), file=terminal, flush=True)
            raise
        finally:
            progress.close()


def torch_config(ds, config_class=None):
    """Ray Train's ``TorchConfig`` for the workers' process group: a backend for every device
    kind they use (:func:`~uaclm_dist.train.collectives.process_group_backend`). Ray's own
    default with GPUs is NCCL alone, which rejects the CPU tensors of host decisions."""
    if config_class is None:
        from ray.train.torch import TorchConfig as config_class
    from uaclm_dist.train.collectives import process_group_backend

    return config_class(backend=process_group_backend(use_gpu=ds.gpus_per_worker > 0))


def _next_step(checkpoint_dir: Path) -> int:
    from uaclm_dist.train.checkpoint import read_run_state

    return int(read_run_state(checkpoint_dir)["next_step"])
