"""Ray cluster helpers shared by training, evaluation and the launchers.

* :func:`ray_runtime_env` / :func:`ray_init` / :func:`ray_session`: how a driver (``uaclm train``,
  ``uaclm eval``) joins or starts Ray, with one runtime env for both.
* :func:`required_resources`: the Ray Train workers or generation actors a run asks for, and
  their CPUs and GPUs (``uaclm resources``).
* :func:`wait_for_cluster`: poll a Ray cluster until it has the nodes and resources a run needs
  (``uaclm cluster wait``, used by ``slurm/ray_cluster.sh``).

Ray is imported inside the functions: importing this module stays cheap for the CLI.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from uaclm_dist.config import RunConfig
from uaclm_dist.faults import FAIL_SETUP_ENV, HANG_IN_CHECKPOINT_ENV, KILL_GENERATION_ACTOR_ENV

#: Ray Train's switch of its PreemptionWatcher actor (watches Ray node drains).
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"

#: Ray Train's switch of its ``print`` patch in the workers.
PRINT_PATCH_ENV = "RAY_TRAIN_ENABLE_PRINT_PATCH"

#: Driver environment variables handed on to every Ray worker and actor, when set.
#: The Hugging Face cache variables are among them: the driver found the model in that cache
#: (:mod:`uaclm_dist.modeling.source`), and a worker started by a cluster launched earlier would
#: otherwise look in its own default cache.
HF_CACHE_ENV = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME",
                "TRANSFORMERS_CACHE")
PASSTHROUGH_ENV = ("UACLM_CACHE", "WANDB_DIR", "WANDB_MODE", *HF_CACHE_ENV,
                   PREEMPTION_WATCHER_ENV, PRINT_PATCH_ENV, HANG_IN_CHECKPOINT_ENV,
                   KILL_GENERATION_ACTOR_ENV, FAIL_SETUP_ENV)  # fmt: skip

#: Environment every Ray worker and actor gets: offline hub, no tokenizer thread pools.
FIXED_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

#: Defaults the driver's environment may override (see :data:`PASSTHROUGH_ENV`).
#:
#: The PreemptionWatcher is off: Ray Train creates it with ``max_restarts=-1`` and the workers'
#: actor handles as constructor arguments held in the object store, which makes every training
#: print a core_worker.cc error ("has constructor arguments in the object store and
#: max_restarts > 0", ray-project/ray#53727) although nothing is wrong. It only reacts to Ray
#: node drains (autoscaler / cloud spot reclaims); uaclm's preemption path is Slurm's signal
#: (SIGTERM / SIGUSR1 -> STOP file -> checkpoint), which does not use it. Set
#: RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=1 in the driver's environment to have it back.
#:
#: The print patch is off: it sends a worker's ``print`` to Ray Train's logger and, because Ray
#: replaces a worker's ``sys.stdout``, also to stdout, so every line printed by a training worker
#: (ours, DeepSpeed's) came out twice.
DEFAULT_ENV = {PREEMPTION_WATCHER_ENV: "0", PRINT_PATCH_ENV: "0"}

#: Seconds between two polls of :func:`wait_for_cluster`.
POLL_SECONDS = 2.0


# ---------------------------------------------------------------------------- ray.init


def ray_runtime_env(cfg: RunConfig, *, quiet: bool = False) -> dict[str, Any]:
    """The ``runtime_env`` of training and evaluation drivers (pure: reads cfg and os.environ).

    Offline hub flags, ``TOKENIZERS_PARALLELISM=false``, the :data:`PASSTHROUGH_ENV` variables
    that are set (else the :data:`DEFAULT_ENV` ones), the gloo / NCCL interfaces of
    ``cfg.distributed`` (multi-node gloo picks loopback unless told) and, when ``quiet`` (the
    console's default mode), :data:`uaclm_dist.console.QUIET_ENV`.
    """
    from uaclm_dist.console import QUIET_ENV
    from uaclm_dist.secrets import is_secret_name

    env = {**FIXED_ENV, **DEFAULT_ENV, **(QUIET_ENV if quiet else {})}
    env.update({key: os.environ[key] for key in PASSTHROUGH_ENV if key in os.environ})
    # Workers read credentials from their own environment or files (~/.netrc, token files),
    # never from a runtime env that Ray records and shows in its dashboard.
    leaked = sorted(key for key in env if is_secret_name(key))
    if leaked:
        raise RuntimeError(f"refusing to forward secrets to Ray workers: {', '.join(leaked)}")
    if cfg.distributed.gloo_socket_ifname:
        env["GLOO_SOCKET_IFNAME"] = cfg.distributed.gloo_socket_ifname
    if cfg.distributed.nccl_socket_ifname:
        env["NCCL_SOCKET_IFNAME"] = cfg.distributed.nccl_socket_ifname
    return {"env_vars": env}


def ray_init(cfg: RunConfig, *, log_to_driver: bool = True, quiet: bool = False) -> bool:
    """Join ``cfg.distributed.ray_address`` (None: ``RAY_ADDRESS`` or a new local Ray, with its
    dashboard unless ``distributed.local_ray_dashboard`` is false) unless Ray is already
    initialized in this process; True when this call started it (then the caller shuts it down).
    ``quiet``: the runtime env of the console's default mode."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=cfg.distributed.ray_address, runtime_env=ray_runtime_env(cfg, quiet=quiet),
             log_to_driver=log_to_driver,
             include_dashboard=cfg.distributed.local_ray_dashboard)  # fmt: skip  (a new Ray only)
    return True


@contextmanager
def ray_session(cfg: RunConfig, *, log_to_driver: bool = True, quiet: bool = False
                ) -> Iterator[bool]:  # fmt: skip
    """``with ray_session(cfg):`` :func:`ray_init`, and ``ray.shutdown()`` on exit only if this
    session started Ray. Yields whether it did."""
    started = ray_init(cfg, log_to_driver=log_to_driver, quiet=quiet)
    try:
        yield started
    finally:
        if started:
            import ray

            ray.shutdown()


# ---------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class Resources:
    """What a run asks Ray for: ``workers`` tasks holding ``cpus`` / ``gpus`` in total."""

    workers: int
    cpus: float
    gpus: float

    def line(self) -> str:
        """``WORKERS CPUS GPUS`` (numbers without trailing ``.0``), for shell scripts."""
        return f"{self.workers} {self.cpus:g} {self.gpus:g}"


def required_resources(cfg: RunConfig, kind: Literal["train", "eval"]) -> Resources:
    """Ray Train workers (``train``) or generation actors (``eval``) and their CPU / GPU totals."""
    if kind == "train":
        d = cfg.distributed
        return Resources(d.num_workers, d.num_workers * d.cpus_per_worker,
                         d.num_workers * d.gpus_per_worker)  # fmt: skip
    if kind == "eval":
        e = cfg.eval
        return Resources(e.num_generation_actors, e.num_generation_actors * e.cpus_per_actor,
                         e.num_generation_actors * e.gpus_per_actor)  # fmt: skip
    raise ValueError(f"kind must be 'train' or 'eval', got {kind!r}")


# ------------------------------------------------------------------------- cluster wait


class ClusterNotReady(Exception):
    """The cluster did not reach the expected size; the message says what is missing."""


@dataclass(frozen=True)
class ClusterState:
    """Alive nodes of a Ray cluster (``ray.nodes()`` rows) and their CPU / GPU totals."""

    nodes: list[dict]
    cpus: float
    gpus: float

    @classmethod
    def from_nodes(cls, rows: Sequence[dict]) -> ClusterState:
        alive = [n for n in rows if n.get("Alive")]
        return cls(alive, sum(n["Resources"].get("CPU", 0) for n in alive),
                   sum(n["Resources"].get("GPU", 0) for n in alive))  # fmt: skip

    def satisfies(self, nodes: int, need: Resources) -> bool:
        return len(self.nodes) >= nodes and self.cpus >= need.cpus and self.gpus >= need.gpus

    def missing(self, nodes: int, need: Resources) -> str:
        """``1 node, 4 GPUs`` short of ``nodes`` / ``need`` (empty when nothing is)."""
        gaps = [(nodes - len(self.nodes), "node"), (need.cpus - self.cpus, "CPU"),
                (need.gpus - self.gpus, "GPU")]  # fmt: skip
        return ", ".join(f"{gap:g} {what}{'s' if gap != 1 else ''}" for gap, what in gaps
                         if gap > 0)  # fmt: skip

    def report(self) -> str:
        """One line per node (address, CPUs, GPUs), without a final newline."""
        return "\n".join(f"  node {n['NodeManagerAddress']}: CPU {n['Resources'].get('CPU', 0):g}"
                         f", GPU {n['Resources'].get('GPU', 0):g}" for n in self.nodes)  # fmt: skip


def process_alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (an exited child its parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _dead(pids: Sequence[int]) -> list[int]:
    return [p for p in pids if not process_alive(p)]


def _pause(deadline: float) -> None:
    """Sleep :data:`POLL_SECONDS`, or less when the deadline comes sooner."""
    time.sleep(max(0.0, min(POLL_SECONDS, deadline - time.monotonic() + 0.01)))


def _port_open(address: str) -> bool:
    """A TCP connection to ``host:port`` succeeds (True for addresses of another form)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return True
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _connect(address: str, deadline: float, timeout: float, pids: Sequence[int]) -> None:
    """``ray.init(address)``, retried until ``deadline`` (the GCS port may be open while the head
    is still registering)."""
    import ray

    while True:
        if dead := _dead(pids):
            raise ClusterNotReady(f"a Ray node step (pid {dead[0]}) exited before the cluster "
                                  "came up (its output is above)")  # fmt: skip
        why = f"nothing listens on {address}"
        if _port_open(address):
            try:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
                return
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                ray.shutdown()
                why = str(exc)
        if time.monotonic() > deadline:
            raise ClusterNotReady(f"cannot connect to Ray at {address} within {timeout:g}s: {why}")
        _pause(deadline)


def wait_for_cluster(address: str, *, nodes: int, need: Resources, timeout: float,
                     pids: Sequence[int] = ()) -> ClusterState:  # fmt: skip
    """Wait until the Ray cluster at ``address`` has ``nodes`` alive nodes and at least
    ``need.cpus`` / ``need.gpus``; returns what it has.

    Raises :class:`ClusterNotReady`, naming what is missing, after ``timeout`` seconds, when one
    of ``pids`` (the processes running the Ray nodes) has exited, or when all ``nodes`` are in
    and the resources still fall short (a node registers with all of its resources at once).
    """
    import ray

    deadline = time.monotonic() + timeout
    _connect(address, deadline, timeout, pids)
    try:
        while True:
            state = ClusterState.from_nodes(ray.nodes())
            if state.satisfies(nodes, need):
                return state
            dead = _dead(pids)
            short = len(state.nodes) >= nodes
            if dead or short or time.monotonic() > deadline:
                why = ("a Ray node step exited" if dead else "the allocation is too small"
                       if short else f"timeout after {timeout:g}s")  # fmt: skip
                raise ClusterNotReady(
                    f"Ray cluster not ready ({why}): {len(state.nodes)}/{nodes} nodes, "
                    f"{state.cpus:g}/{need.cpus:g} CPUs, {state.gpus:g}/{need.gpus:g} GPUs "
                    f"registered (missing: {state.missing(nodes, need)}); the run needs the "
                    "CPUs/GPUs (num_workers x cpus/gpus_per_worker) - check the #SBATCH sizes "
                    "against the config" + (f"\n{state.report()}" if state.nodes else "")
                )
            _pause(deadline)
    finally:
        ray.shutdown()


def print_ready(state: ClusterState, file: TextIO | None = None) -> None:
    """The ``Ray cluster ready`` line and one line per node (on stderr: the job log shows it)."""
    print(f"[uaclm] Ray cluster ready: {len(state.nodes)} node(s), {state.cpus:g} CPUs, "
          f"{state.gpus:g} GPUs\n{state.report()}", file=file or sys.stderr)  # fmt: skip
