"""train/run_dir.py: a new run folder is created and never reused, a resumed run must have the
saved configuration except for the allowed keys (optim.max_steps / optim.epochs / logging.*,
where the workers run, and the world size at the same global batch),
and what run_info.json records (config, versions, commit, seeds, protocol choices)."""

from __future__ import annotations

import json
import re

import pytest

from uaclm_dist.config import ConfigError, load_config
from uaclm_dist.train import run_dir as rd


def config(out, *overrides):
    return load_config(None, [f"logging.output_dir={out}", *overrides])


@pytest.fixture
def saved_run(tmp_path):
    """A run folder holding a run of the default config with a known run id."""
    cfg = config(tmp_path / "run")
    out, _ = rd.prepare_new_run_dir(cfg)
    rd.write_run_info(out, cfg, "abc123def456", {"world_size": 2})
    return out


def test_prepare_new_run_dir_creates_folder_with_run_id(tmp_path):
    out, run_id = rd.prepare_new_run_dir(config(tmp_path / "a" / "b"))
    assert out == (tmp_path / "a" / "b").resolve() and out.is_dir()
    assert re.fullmatch(r"[0-9a-f]{12}", run_id)
    assert rd.prepare_new_run_dir(config(tmp_path / "a" / "b"))[1] != run_id  # no run there yet


def test_prepare_new_run_dir_refuses_existing_run(saved_run):
    with pytest.raises(ConfigError, match="already holds a run") as err:
        rd.prepare_new_run_dir(config(saved_run))
    assert "--resume" in str(err.value)
    assert json.loads((saved_run / rd.RUN_INFO).read_text())["run_id"] == "abc123def456"


def test_write_run_info_contents(saved_run):
    info = json.loads((saved_run / rd.RUN_INFO).read_text())
    cfg = config(saved_run)
    assert info["config"] == cfg.to_dict()
    assert info["run_id"] == "abc123def456" and info["world_size"] == 2
    assert "git_commit" in info and set(info["packages"]) == set(rd.PINNED_PACKAGES)
    assert info["seeds"] == {"optim": cfg.optim.seed, "split": cfg.data.split_seed}
    assert info["protocol"] == rd.protocol_choices(cfg)
    assert load_config(saved_run / "config.yaml").to_dict() == cfg.to_dict()


def test_package_versions_shape():
    versions = rd.package_versions()
    assert list(versions) == list(rd.PINNED_PACKAGES)
    assert all(v is None or isinstance(v, str) for v in versions.values())
    assert versions["torch"]  # installed in the project environment


def test_protocol_choices_beta_only_for_clm_plus_ua(tmp_path):
    ua = rd.protocol_choices(config(tmp_path, "objective.name=ua_clm"))
    assert ua["objective"] == "ua_clm" and ua["beta"] is None
    mixed = rd.protocol_choices(config(tmp_path, "objective.name=clm+ua", "objective.beta_end=0.5"))
    assert mixed["beta"] == [0.2, 0.5, 0.2]
    assert {"ua_pooling", "loss_on", "split_seed", "loss_implementation"} <= set(mixed)


def test_resume_refuses_folder_without_run(tmp_path):
    with pytest.raises(ConfigError, match="holds no uaclm run"):
        rd.open_resumed_run_dir(config(tmp_path), tmp_path)


@pytest.mark.parametrize("override", ["objective.name=clm", "optim.lr=0.5", "data.split_seed=3"])
def test_resume_refuses_changed_trajectory_keys(saved_run, override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=re.escape(key)):
        rd.open_resumed_run_dir(config(saved_run, override), saved_run)


@pytest.mark.parametrize(
    "overrides",
    [[], ["optim.max_steps=50"], ["optim.epochs=7"], ["logging.wandb_mode=disabled"],
     ["distributed.ray_address=10.0.0.1:6379"], ["distributed.cpus_per_worker=4"],
     ["distributed.gloo_socket_ifname=eth1"], ["distributed.max_failures=5"],
     # the default run: micro 1 x accumulation 2 x 2 workers = 4 examples per step
     ["distributed.num_workers=1", "optim.grad_accumulation=4"],
     ["distributed.num_workers=4", "optim.grad_accumulation=1"]],
)
def test_resume_accepts_allowed_changes(saved_run, overrides):
    out, run_id = rd.open_resumed_run_dir(config(saved_run, *overrides), str(saved_run))
    assert (out, run_id) == (saved_run, "abc123def456")


@pytest.mark.parametrize("overrides", [["distributed.num_workers=4"],
                                       ["distributed.num_workers=1", "optim.grad_accumulation=8"],
                                       ["optim.grad_accumulation=4"]])
def test_resume_refuses_another_global_batch(saved_run, overrides):
    with pytest.raises(ConfigError, match=r"same global batch .* the run has 4, this config 8"):
        rd.open_resumed_run_dir(config(saved_run, *overrides), saved_run)


def test_resume_accepts_other_output_dir(saved_run, tmp_path):
    assert rd.open_resumed_run_dir(config(tmp_path / "x"), saved_run)[1] == "abc123def456"


def test_a_global_batch_recipe_resumes_on_another_world_size_with_the_same_batch(tmp_path):
    """optim.global_batch_size: the accumulation is derived for each world size, so a run
    started on 4 workers resumes on 1 or 2 with the same 8 sequences per step, not on 3."""
    recipe = ["optim.global_batch_size=8", "optim.micro_batch_size=2"]
    first = config(tmp_path / "run", *recipe, "distributed.num_workers=4")
    assert first.optim.grad_accumulation == 1
    out, _ = rd.prepare_new_run_dir(first)
    rd.write_run_info(out, first, "abc123def456", {"world_size": 4})
    for workers, accumulation in ((1, 4), (2, 2)):
        resumed = config(out, *recipe, f"distributed.num_workers={workers}")
        assert resumed.optim.grad_accumulation == accumulation
        assert rd.open_resumed_run_dir(resumed, out)[1] == "abc123def456"
    with pytest.raises(ConfigError, match=r"optim\.global_batch_size 8 does not divide"):
        config(out, *recipe, "distributed.num_workers=3")
    # the run's saved config.yaml resumes on another world size too (the derived accumulation
    # is not written, so it cannot contradict the batch there)
    saved = load_config(out / "config.yaml", ["distributed.num_workers=2"])
    assert (saved.optim.global_batch_size, saved.optim.grad_accumulation) == (8, 2)
    assert rd.open_resumed_run_dir(saved, out)[1] == "abc123def456"
