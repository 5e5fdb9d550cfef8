"""uaclm_dist.cluster: one runtime env, ray_init / ray_session, resources, the readiness wait.

Nothing here starts Ray: ray_init is checked against a stand-in ``ray`` module, and the wait
against a closed port on 127.0.0.1.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import types

import pytest

from uaclm_dist import cluster
from uaclm_dist.cluster import ClusterNotReady, ClusterState, Resources
from uaclm_dist.config import RunConfig


def config(**distributed) -> RunConfig:
    return RunConfig.model_validate({"distributed": distributed})


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound once by the OS, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- runtime env


@pytest.fixture
def clean_env(monkeypatch):
    for key in cluster.PASSTHROUGH_ENV:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_runtime_env_defaults(clean_env):
    assert cluster.ray_runtime_env(config()) == {"env_vars": {
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    }}  # fmt: skip


def test_runtime_env_quiet_mode_hides_weight_loading_bars(clean_env):
    from uaclm_dist.console import QUIET_ENV

    quiet = cluster.ray_runtime_env(config(), quiet=True)["env_vars"]
    assert quiet == {**cluster.ray_runtime_env(config())["env_vars"], **QUIET_ENV}
    assert quiet["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


def test_runtime_env_ray_train_switches_follow_the_driver_when_set(clean_env):
    clean_env.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")
    env_vars = cluster.ray_runtime_env(config())["env_vars"]
    assert env_vars["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1"
    assert env_vars["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"


def test_runtime_env_passes_cache_and_wandb_through_and_sets_interfaces(clean_env):
    clean_env.setenv("UACLM_CACHE", "/shared/cache")
    clean_env.setenv("WANDB_MODE", "offline")
    clean_env.setenv("WANDB_DIR", "/shared/wandb")
    clean_env.setenv("UNRELATED", "x")
    env = cluster.ray_runtime_env(config(gloo_socket_ifname="eth0", nccl_socket_ifname="ib0"))
    env_vars = env["env_vars"]
    assert env_vars["UACLM_CACHE"] == "/shared/cache"
    assert env_vars["WANDB_MODE"] == "offline" and env_vars["WANDB_DIR"] == "/shared/wandb"
    assert env_vars["GLOO_SOCKET_IFNAME"] == "eth0" and env_vars["NCCL_SOCKET_IFNAME"] == "ib0"
    assert env_vars["HF_HUB_OFFLINE"] == "1" and "UNRELATED" not in env_vars
    assert set(env) == {"env_vars"}


def test_runtime_env_is_a_fresh_dict(clean_env):
    cluster.ray_runtime_env(config())["env_vars"]["HF_HUB_OFFLINE"] = "0"
    assert cluster.ray_runtime_env(config())["env_vars"]["HF_HUB_OFFLINE"] == "1"


# --------------------------------------------------------------------- ray_init / session


@pytest.fixture
def fake_ray(monkeypatch):
    """A stand-in ``ray`` module that records init / shutdown calls."""
    ray = types.SimpleNamespace(calls=[], initialized=False)
    ray.is_initialized = lambda: ray.initialized

    def init(**kwargs):
        ray.calls.append(("init", kwargs))
        ray.initialized = True

    def shutdown():
        ray.calls.append(("shutdown", {}))
        ray.initialized = False

    ray.init, ray.shutdown = init, shutdown
    monkeypatch.setitem(sys.modules, "ray", ray)
    return ray


def test_ray_init_starts_ray_with_the_address_and_the_runtime_env(fake_ray, clean_env):
    cfg = config(ray_address="10.0.0.1:6379", gloo_socket_ifname="eth0")
    assert cluster.ray_init(cfg, log_to_driver=False) is True
    [(name, kwargs)] = fake_ray.calls
    assert name == "init" and kwargs == {"address": "10.0.0.1:6379",
                                         "runtime_env": cluster.ray_runtime_env(cfg),
                                         "log_to_driver": False,
                                         "include_dashboard": True}  # fmt: skip
    assert cluster.ray_init(cfg) is False  # already initialized: nothing to start
    assert len(fake_ray.calls) == 1


def test_a_local_ray_starts_its_dashboard_unless_told_not_to(fake_ray, clean_env):
    with cluster.ray_session(config(local_ray_dashboard=False)):
        pass
    with cluster.ray_session(config()):
        pass
    starts = [kwargs["include_dashboard"] for name, kwargs in fake_ray.calls if name == "init"]
    assert starts == [False, True]


def test_ray_session_quiet_passes_the_quiet_runtime_env(fake_ray, clean_env):
    with cluster.ray_session(config(), quiet=True):
        pass
    [(_, kwargs), _] = fake_ray.calls
    assert kwargs["runtime_env"] == cluster.ray_runtime_env(config(), quiet=True)


def test_ray_session_shuts_down_only_what_it_started(fake_ray, clean_env):
    with cluster.ray_session(config()) as started:
        assert started
    assert [name for name, _ in fake_ray.calls] == ["init", "shutdown"]
    fake_ray.calls.clear()
    fake_ray.initialized = True  # someone else's Ray
    with pytest.raises(RuntimeError), cluster.ray_session(config()) as started:
        assert not started
        raise RuntimeError("boom")
    assert fake_ray.calls == [] and fake_ray.initialized


# ----------------------------------------------------------------------------- resources


def test_required_resources_train_and_eval():
    cfg = RunConfig.model_validate({
        "distributed": {"num_workers": 4, "cpus_per_worker": 8, "gpus_per_worker": 1},
        "eval": {"num_generation_actors": 3, "cpus_per_actor": 2, "gpus_per_actor": 0.5},
    })  # fmt: skip
    assert cluster.required_resources(cfg, "train") == Resources(4, 32, 4)
    assert cluster.required_resources(cfg, "eval") == Resources(3, 6, 1.5)
    assert Resources(3, 6, 1.5).line() == "3 6 1.5"
    with pytest.raises(ValueError, match="'probe'"):
        cluster.required_resources(cfg, "probe")


# -------------------------------------------------------------------------- cluster state


def node(ip: str, cpu: float, gpu: float = 0, alive: bool = True) -> dict:
    resources = {"CPU": cpu, **({"GPU": gpu} if gpu else {})}
    return {"NodeManagerAddress": ip, "Alive": alive, "Resources": resources}


def test_cluster_state_counts_alive_nodes_only():
    state = ClusterState.from_nodes([node("10.0.0.1", 4, 2), node("10.0.0.2", 4, alive=False),
                                     node("10.0.0.3", 2)])  # fmt: skip
    assert len(state.nodes) == 2 and state.cpus == 6 and state.gpus == 2
    assert state.satisfies(2, Resources(0, 6, 2))
    assert not state.satisfies(3, Resources(0, 6, 2))
    assert not state.satisfies(2, Resources(0, 6, 4))
    assert state.missing(3, Resources(0, 8, 4)) == "1 node, 2 CPUs, 2 GPUs"
    assert state.missing(2, Resources(0, 6, 2)) == ""
    assert state.report() == "  node 10.0.0.1: CPU 4, GPU 2\n  node 10.0.0.3: CPU 2, GPU 0"


def test_print_ready(capsys):
    cluster.print_ready(ClusterState.from_nodes([node("10.99.0.11", 1), node("10.99.0.12", 1)]))
    assert capsys.readouterr().err == (
        "[uaclm] Ray cluster ready: 2 node(s), 2 CPUs, 0 GPUs\n"
        "  node 10.99.0.11: CPU 1, GPU 0\n  node 10.99.0.12: CPU 1, GPU 0\n"
    )


def test_process_alive():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    assert cluster.process_alive(proc.pid) or proc.poll() is not None
    proc.wait()
    assert not cluster.process_alive(proc.pid)
    import os

    assert cluster.process_alive(os.getpid())


# ------------------------------------------------------------------------------ the wait


def test_wait_times_out_quickly_against_no_cluster():
    address = f"127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(ClusterNotReady) as info:
        cluster.wait_for_cluster(address, nodes=2, need=Resources(0, 2, 0), timeout=1)
    assert time.monotonic() - started < 10
    assert f"cannot connect to Ray at {address} within 1s" in str(info.value)
    assert f"nothing listens on {address}" in str(info.value)


def test_wait_stops_when_a_node_process_has_exited():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(ClusterNotReady, match=f"Ray node step \\(pid {proc.pid}\\) exited"):
        cluster.wait_for_cluster(f"127.0.0.1:{closed_port()}", nodes=1, need=Resources(0, 1, 0),
                                 timeout=60, pids=[proc.pid])  # fmt: skip


def test_wait_names_what_is_missing(monkeypatch):
    """Connected, all nodes in, too few GPUs: fails at once, naming the shortfall per node."""
    ray = types.SimpleNamespace(
        init=lambda **kw: None, shutdown=lambda: None,
        nodes=lambda: [node("10.0.0.1", 4), node("10.0.0.2", 4)],
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setattr(cluster, "_port_open", lambda address: True)
    with pytest.raises(ClusterNotReady) as info:
        cluster.wait_for_cluster("10.0.0.1:6379", nodes=2, need=Resources(0, 8, 2), timeout=60)
    text = str(info.value)
    assert "the allocation is too small" in text and "2/2 nodes" in text
    assert "0/2 GPUs" in text and "missing: 2 GPUs" in text
    assert "  node 10.0.0.2: CPU 4, GPU 0" in text


def test_wait_returns_the_state_once_ready(monkeypatch):
    polls = iter([[node("10.0.0.1", 2)], [node("10.0.0.1", 2), node("10.0.0.2", 2)]])
    ray = types.SimpleNamespace(init=lambda **kw: None, shutdown=lambda: None,
                                nodes=lambda: next(polls))  # fmt: skip
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setattr(cluster, "_port_open", lambda address: True)
    monkeypatch.setattr(cluster, "POLL_SECONDS", 0.01)
    state = cluster.wait_for_cluster("10.0.0.1:6379", nodes=2, need=Resources(0, 4, 0),
                                     timeout=60)  # fmt: skip
    assert len(state.nodes) == 2 and state.cpus == 4
