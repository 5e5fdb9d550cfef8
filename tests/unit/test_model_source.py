"""modeling/source.py: a model is resolved on the driver (alias, folder, or a snapshot in the
local Hugging Face cache) before Ray starts, and the cache variables reach every worker."""

from __future__ import annotations

import pytest

from uaclm_dist.config import ConfigError, load_config
from uaclm_dist.modeling import source


def cached_snapshot(cache, repo_id: str) -> None:
    """The layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/REV/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")


@pytest.fixture
def clean_env(monkeypatch):
    for key in (*source.CACHE_ENV, "TRANSFORMERS_CACHE"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_aliases_and_folders_resolve_without_any_cache(clean_env, tmp_path):
    assert source.locate_model("tiny-llama").kind == "alias"
    assert source.locate_model("tiny-llama-mobilenetv2").kind == "alias"
    assert source.locate_model(str(tmp_path)) == source.ModelSource(str(tmp_path), "folder",
                                                                   str(tmp_path.resolve()))


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME",
                                      "XDG_CACHE_HOME"])
def test_a_hub_id_is_found_in_the_cache_each_variable_names(clean_env, tmp_path, variable):
    """Where huggingface_hub (hence from_pretrained) looks, and nowhere else."""
    clean_env.setenv("HOME", str(tmp_path / "home"))  # the default cache: empty
    root = tmp_path / "somewhere"
    cache = {"HF_HOME": root / "hub", "XDG_CACHE_HOME": root / "huggingface" / "hub"}.get(
        variable, root)
    cached_snapshot(cache, "meta-llama/Llama-2-13b-hf")
    with pytest.raises(ConfigError):  # not in the default cache
        source.locate_model("meta-llama/Llama-2-13b-hf")
    clean_env.setenv(variable, str(root))
    found = source.locate_model("meta-llama/Llama-2-13b-hf")
    assert found.kind == "hub-cache" and found.where.endswith("snapshots/abc123")


def test_an_unknown_name_is_refused_naming_the_key_and_the_cache_looked_in(clean_env, tmp_path):
    clean_env.setenv("HF_HOME", str(tmp_path / "home"))
    # transformers 5 does not read TRANSFORMERS_CACHE: a snapshot there would not load, so it
    # does not count as found
    clean_env.setenv("TRANSFORMERS_CACHE", str(tmp_path / "legacy"))
    cached_snapshot(tmp_path / "legacy", "no-such-model-xyz")
    with pytest.raises(ConfigError) as err:
        source.locate_model("no-such-model-xyz")
    message = str(err.value)
    assert "model.name_or_path 'no-such-model-xyz'" in message
    assert f"{tmp_path / 'home' / 'hub'} (HF_HOME/hub)" in message
    assert "smollm2-135m" in message and "huggingface-cli download" in message


def test_the_vision_aliases_are_the_vision_familys():
    from uaclm_dist.modeling.families.vision_lm import OFFLINE_ALIASES

    assert set(source.VISION_ALIASES) == set(OFFLINE_ALIASES)


def test_the_cache_variables_reach_every_worker_and_every_submitted_job(clean_env, tmp_path):
    from uaclm_dist.cluster import ray_runtime_env
    from uaclm_dist.sweep.ray_backend import job_runtime_env

    clean_env.setenv("HF_HOME", "/shared/hf")
    clean_env.setenv("HF_HUB_CACHE", "/shared/hf/hub")
    env = ray_runtime_env(load_config(None, []))["env_vars"]
    assert env["HF_HOME"] == "/shared/hf" and env["HF_HUB_CACHE"] == "/shared/hf/hub"
    assert "TRANSFORMERS_CACHE" not in env
    job = job_runtime_env()["env_vars"]
    assert job["HF_HOME"] == "/shared/hf" and job["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
def test_the_attention_kernel_reaches_the_loaded_model(kernel):
    import torch

    from uaclm_dist.modeling.families import family_of

    cfg = load_config(None, ["model.name_or_path=tiny-llama", "model.quantization.method=none",
                             f"model.attn_implementation={kernel}"])  # fmt: skip
    model = family_of(cfg.model).load(cfg.model, torch.device("cpu"), seed=0).model
    assert model.config._attn_implementation == kernel
