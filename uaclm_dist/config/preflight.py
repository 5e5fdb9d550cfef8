"""Checks of a run's config against the Ray cluster it will use, made before Ray starts.

:func:`check_cluster` is called by ``uaclm train`` / ``uaclm eval`` on the driver, after the
config is loaded and before anything is written or any Ray process starts:

- the Ray address (``distributed.ray_address``, else ``RAY_ADDRESS``) must have the form Ray
  accepts, and a ``HOST:PORT`` / ``ray://HOST:PORT`` one must accept TCP connections (otherwise
  ``ray.init`` keeps retrying for minutes); a ``HOST:PORT`` head (its GCS) must accept this
  client's auth token, when the head has token auth on (one key listing of its internal KV
  store; the token itself never appears in the message);
- when the run starts its own local Ray node (no address, no ``RAY_ADDRESS``, no cluster started
  with ``ray start`` on this machine), the CPUs and GPUs the run asks for
  (:func:`uaclm_dist.cluster.required_resources`) must fit that node. Ray never oversubscribes
  logical resources: a Ray Train worker group or an actor pool that asks for more than the node
  has waits forever. The node's CPUs and GPUs are counted by Ray's own detection (cgroup limits,
  ``CUDA_VISIBLE_DEVICES``, ``RAY_OVERRIDE_RESOURCES``), without starting it.

A run that joins an existing cluster is not checked for resources here: only that cluster knows
what it has (``uaclm cluster wait`` checks it for the launchers).

Not imported by :mod:`uaclm_dist.config` itself: loading a config stays free of Ray and torch.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Literal

from uaclm_dist.config.errors import ConfigError
from uaclm_dist.config.schema import RunConfig

__all__ = ["check_cluster", "ray_address"]

#: Seconds to wait for the Ray head's port to accept a connection.
CONNECT_TIMEOUT = 3.0

_FORMS = ("HOST:PORT (the head's GCS port, e.g. 10.0.0.1:6379), ray://HOST:PORT, auto or "
          "local")  # fmt: skip


def ray_address(cfg: RunConfig) -> tuple[str | None, str]:
    """The address ``ray.init`` will use and where it comes from (``distributed.ray_address`` or
    ``RAY_ADDRESS``); ``(None, "")`` when neither is set."""
    if cfg.distributed.ray_address:
        return cfg.distributed.ray_address, "distributed.ray_address"
    env = os.environ.get("RAY_ADDRESS")
    if env:
        return env, "RAY_ADDRESS"
    return None, ""


def _host_port(address: str, key: str) -> tuple[str, int] | None:
    """``(host, port)`` of an address to connect to; None for forms this check leaves to Ray
    (``auto``, another client scheme such as ``anyscale://``)."""
    if address == "auto":
        return None
    scheme, sep, rest = address.partition("://")
    if sep:
        if scheme != "ray":
            return None
        address = rest.split("/", 1)[0]
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key} {address!r} is not an address Ray can join; expected {_FORMS}")
    return host, int(port)


def _check_reachable(address: str, key: str) -> None:
    target = _host_port(address, key)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=CONNECT_TIMEOUT):
            return
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
    raise ConfigError(f"{key} {address}: cannot reach a Ray head there ({why}); start the cluster "
                      "(`ray start --head`, slurm/ray_cluster.sh) or fix the address")


def _check_token(address: str, key: str) -> None:
    """:class:`ConfigError` when the GCS at ``address`` (``HOST:PORT``) refuses this client's
    Ray auth token (``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` / ``~/.ray/auth_token``).
    Any other failure is left to Ray."""
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:  # Ray's internals moved: leave the check to Ray
        return
    try:
        GcsClient(address=address).internal_kv_keys(b"", None, timeout=CONNECT_TIMEOUT)
    except AuthenticationError:
        raise ConfigError(
            f"{key} {address}: the Ray head refused this client's auth token (missing or "
            "wrong); set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token "
            "(`ray get-auth-token` on the head prints it)"
        ) from None
    except Exception:  # noqa: BLE001 - not an auth problem: ray.init reports it
        return


def _local_node() -> tuple[float, float] | None:
    """CPUs and GPUs of the local Ray node ``ray.init()`` would start now, by Ray's detection;
    None when Ray would join a running cluster instead or the count is unknown."""
    try:
        import ray
        from ray._private.resource_and_label_spec import ResourceAndLabelSpec
        from ray._private.utils import read_ray_address

        if ray.is_initialized() or read_ray_address():
            return None  # joins the session in this process / the cluster of `ray start`
        spec = ResourceAndLabelSpec().resolve(is_head=True, node_ip_address="127.0.0.1")
        return float(spec.num_cpus), float(spec.num_gpus or 0)
    except Exception:  # noqa: BLE001 - Ray's internals moved: leave the check to Ray
        return None


def _check_local_resources(cfg: RunConfig, kind: Literal["train", "eval"]) -> None:
    from uaclm_dist.cluster import required_resources

    node = _local_node()
    if node is None:
        return
    have_cpus, have_gpus = node
    need = required_resources(cfg, kind)
    if kind == "train":
        count = f"distributed.num_workers {need.workers}"
        per = ("distributed.cpus_per_worker", cfg.distributed.cpus_per_worker,
               "distributed.gpus_per_worker", cfg.distributed.gpus_per_worker)  # fmt: skip
    else:
        count = f"eval.num_generation_actors {need.workers}"
        per = ("eval.cpus_per_actor", cfg.eval.cpus_per_actor,
               "eval.gpus_per_actor", cfg.eval.gpus_per_actor)  # fmt: skip
    local = ("the local Ray node this run starts (no distributed.ray_address or RAY_ADDRESS) "
             "has")  # fmt: skip
    advice = ("; Ray would wait for them forever. Lower them, or join a cluster that has them "
              "with distributed.ray_address")  # fmt: skip
    if need.cpus > have_cpus:
        raise ConfigError(f"{count} x {per[0]} {per[1]:g} = {need.cpus:g} CPUs, but {local} "
                          f"{have_cpus:g}{advice}")  # fmt: skip
    if need.gpus > have_gpus:
        raise ConfigError(f"{count} x {per[2]} {per[3]:g} = {need.gpus:g} GPUs, but {local} "
                          f"{have_gpus:g}{advice}")  # fmt: skip


def check_cluster(cfg: RunConfig, kind: Literal["train", "eval"]) -> None:
    """:class:`ConfigError` when the Ray cluster ``cfg`` names cannot be reached, or when the
    local node the run would start cannot hold the run's ``kind`` workers / actors (see the
    module docstring). Starts nothing."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return  # ray_init joins the session this process already holds
    address, key = ray_address(cfg)
    if address and address != "local":
        _check_reachable(address, key)
        if "://" not in address and _host_port(address, key) is not None:
            _check_token(address, key)
    else:
        _check_local_resources(cfg, kind)
