"""Secrets in the environment: recognised by name, never forwarded to Ray, redacted in files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from uaclm_dist import cluster
from uaclm_dist.config import RunConfig
from uaclm_dist.secrets import is_secret_name, redact, secret_values
from uaclm_dist.train import checkpoint as ckpt
from uaclm_dist.train import run_dir as rd

FAKE = {
    "WANDB_API_KEY": "fake-wandb-key-0123456789",
    "HF_TOKEN": "hf_fakeTOKENabcdefghij",
    "RAY_AUTH_TOKEN": "f" * 64,
    "MY_SERVICE_PASSWORD": "hunter2-but-longer",
}


def test_secret_names():
    for name in (*FAKE, "AWS_SECRET_ACCESS_KEY", "openai_api_key", "DB_SECRET"):
        assert is_secret_name(name), name
    for name in ("PATH", "WANDB_MODE", "UACLM_CACHE", "TOKENIZERS_PARALLELISM", "KEYBOARD"):
        assert not is_secret_name(name), name


def test_redact_replaces_every_secret_and_ignores_short_values():
    env = {**FAKE, "SHORT_TOKEN": "1", "PATH": "/usr/bin"}
    assert "SHORT_TOKEN" not in secret_values(env)
    text = f"key={FAKE['WANDB_API_KEY']} auth {FAKE['RAY_AUTH_TOKEN']} path /usr/bin 1"
    out = redact(text, env)
    assert out == "key=<redacted $WANDB_API_KEY> auth <redacted $RAY_AUTH_TOKEN> path /usr/bin 1"


def test_ray_runtime_env_forwards_no_secret(monkeypatch):
    for name, value in FAKE.items():
        monkeypatch.setenv(name, value)
    runtime_env = cluster.ray_runtime_env(RunConfig())
    text = json.dumps(runtime_env)
    assert not any(value in text for value in FAKE.values())
    assert not any(is_secret_name(n) for n in (*cluster.PASSTHROUGH_ENV, *cluster.FIXED_ENV))


def test_ray_runtime_env_refuses_a_secret_named_passthrough(monkeypatch):
    monkeypatch.setattr(cluster, "PASSTHROUGH_ENV", (*cluster.PASSTHROUGH_ENV, "HF_TOKEN"))
    monkeypatch.setenv("HF_TOKEN", FAKE["HF_TOKEN"])
    with pytest.raises(RuntimeError, match="HF_TOKEN"):
        cluster.ray_runtime_env(RunConfig())


def test_run_info_and_config_never_hold_a_secret_value(monkeypatch, tmp_path):
    """A token pasted into a config value is redacted in both files a run saves about itself."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE["WANDB_API_KEY"])
    cfg = RunConfig.model_validate({"logging": {"wandb_project": FAKE["WANDB_API_KEY"]}})
    rd.write_run_info(tmp_path, cfg, "run123", {})
    for name in ("config.yaml", rd.RUN_INFO):
        text = (tmp_path / name).read_text()
        assert FAKE["WANDB_API_KEY"] not in text and "<redacted $WANDB_API_KEY>" in text, name


def test_rng_state_loads_without_unpickling_code(tmp_path):
    """Checkpoint RNG files load with ``torch.load(weights_only=True)``."""
    path = tmp_path / "rng.pt"
    torch.save(ckpt.rng_state(), path)
    state = torch.load(path, weights_only=True)
    ckpt.set_rng_state(state)
    first = (torch.rand(1).item(), np.random.rand())
    ckpt.set_rng_state(state)
    assert (torch.rand(1).item(), np.random.rand()) == first
