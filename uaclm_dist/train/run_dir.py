"""The run folder: what a run decided and produced, and protection of what is already there.

Layout of ``logging.output_dir``::

    config.yaml          resolved run config (re-loadable with `uaclm ... config.yaml`)
    run_info.json        versions, git commit, host, seeds, protocol choices, run id
    data_report.json     examples per split, tokenization report (cut / dropped rows)
    split_ids.json       ids of the train and test split (evaluation uses the test ids)
    metrics.jsonl        one row per logged optimizer step (rank 0)
    adapter/             final LoRA adapter (peft format)
    summary.json         the end-of-run summary
    ray/train/checkpoint_*/   Ray Train checkpoints (DeepSpeed state + adapter + run state)
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from uaclm_dist.config import REPO_ROOT, ConfigError, RunConfig
from uaclm_dist.secrets import redact

PINNED_PACKAGES = (
    "torch", "deepspeed", "ray", "transformers", "peft", "bitsandbytes", "datasets", "wandb",
    "rouge-score", "sentence-transformers", "uaclm-dist",
)  # fmt: skip
RUN_INFO = "run_info.json"
#: written by the driver on SIGTERM / SIGUSR1, or by `uaclm stop RUN_DIR`; every rank checks for
#: it after each step, and all checkpoint and stop together
STOP_FILE = "STOP"
#: What an evaluation folder (``uaclm eval --out``) holds once it has results.
EVAL_METRICS = "metrics.json"


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PINNED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def protocol_choices(cfg: RunConfig) -> dict:
    """The METHOD.md choices this run pinned (each also a config switch)."""
    o, d = cfg.objective, cfg.data
    return {
        "objective": o.name, "ua_pooling": o.ua_pooling, "ua_eps": o.ua_eps,
        "beta": [o.beta_start, o.beta_end, o.beta_switch_fraction] if o.name == "clm+ua" else None,
        "loss_on": d.loss_on, "prompt_template": d.prompt_template,
        "train_fraction": d.train_fraction, "split_seed": d.split_seed,
        "entropy": "natural log, full vocabulary, fp32, temperature 1",
        "argmax_ties": "lowest index", "loss_implementation": o.implementation,
    }  # fmt: skip


def check_new_run_dir(cfg: RunConfig) -> Path:
    """``output_dir`` (absolute) if a new run may use it; :class:`ConfigError` when it already
    holds a run or an evaluation (``uaclm eval --out``). Creates nothing."""
    out = Path(cfg.logging.output_dir).resolve()
    if (out / RUN_INFO).exists():
        raise ConfigError(
            f"logging.output_dir '{out}' already holds a run; nothing there is overwritten. "
            f"Resume it with `uaclm train CONFIG --resume {out}` or choose another "
            "logging.output_dir=..."
        )
    if (out / EVAL_METRICS).exists():
        raise ConfigError(f"logging.output_dir '{out}' holds an evaluation ({EVAL_METRICS}); "
                          "nothing there is overwritten. Choose another logging.output_dir=...")
    return out


def prepare_new_run_dir(cfg: RunConfig) -> tuple[Path, str]:
    """Create ``output_dir`` for a new run; refuse one that already holds a run."""
    out = check_new_run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    return out, uuid.uuid4().hex[:12]


#: Settings a resumed run may change freely: how long it runs, how it logs, where and on what
#: resources its workers run.
RESUMABLE_CHANGES = (
    "optim.max_steps", "optim.epochs", "logging.", "distributed.ray_address",
    "distributed.local_ray_dashboard",
    "distributed.cpus_per_worker", "distributed.gpus_per_worker",
    "distributed.gloo_socket_ifname", "distributed.nccl_socket_ifname",
    "distributed.max_failures",
)  # fmt: skip
#: May change together when the global batch (micro x accumulation x workers) stays the same:
#: then every step sees the same examples and the schedule is unchanged (train/sharding.py).
WORLD_SIZE_KEYS = ("distributed.num_workers", "optim.grad_accumulation")


def _global_batch(flat: dict) -> int | None:
    try:
        return (int(flat["optim.micro_batch_size"]) * int(flat["optim.grad_accumulation"])
                * int(flat["distributed.num_workers"]))  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None


def open_resumed_run_dir(cfg: RunConfig, run_dir: str | Path) -> tuple[Path, str]:
    """Check that ``run_dir`` holds a run of the same configuration; return it and its run id."""
    out = Path(run_dir).resolve()
    info_path = out / RUN_INFO
    if not info_path.exists():
        raise ConfigError(f"--resume {run_dir}: no {RUN_INFO} there, so it holds no uaclm run")
    try:
        info = json.loads(info_path.read_text())
        saved, run_id = _flatten(info["config"]), str(info["run_id"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"--resume {run_dir}: {info_path} is not a readable run record "
                          f"({type(exc).__name__}: {exc})") from None
    current = _flatten(cfg.to_dict())
    changed = [
        k for k in sorted(set(saved) | set(current))
        if saved.get(k) != current.get(k) and not k.startswith(RESUMABLE_CHANGES)
    ]  # fmt: skip
    if any(k in WORLD_SIZE_KEYS for k in changed):
        before, now = _global_batch(saved), _global_batch(current)
        if before != now:
            raise ConfigError(
                f"--resume {run_dir}: distributed.num_workers / optim.grad_accumulation may "
                "change on resume only with the same global batch (micro_batch_size x "
                f"grad_accumulation x num_workers): the run has {before}, this config "
                f"{now}. E.g. 2 workers x 3 accumulation = 1 x 6 = 3 x 2"
            )
        changed = [k for k in changed if k not in WORLD_SIZE_KEYS]
    if changed:
        raise ConfigError(
            f"--resume {run_dir}: the config differs from the run's saved config in "
            f"{', '.join(changed)}; a resumed run must continue the same trajectory "
            f"(use the saved {out / 'config.yaml'})"
        )
    return out, run_id


def write_run_info(out: Path, cfg: RunConfig, run_id: str, extra: dict) -> None:
    (out / "config.yaml").write_text(redact(cfg.to_yaml()))
    info = {
        "run_id": run_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "seeds": {"optim": cfg.optim.seed, "split": cfg.data.split_seed},
        "protocol": protocol_choices(cfg),
        "config": cfg.to_dict(),
        **extra,
    }
    (out / RUN_INFO).write_text(redact(json.dumps(info, indent=2, default=str)))


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
