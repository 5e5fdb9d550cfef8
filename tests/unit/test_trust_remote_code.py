"""`model.trust_remote_code`: a model folder that ships its own Python code (``auto_map``) is
refused, without running that code, unless the config asks for it; with it, the code runs and
the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from uaclm_dist.config import load_config
from uaclm_dist.modeling.families.causal_lm import causal_lm_kwargs
from uaclm_dist.modeling.loading import load_causal_lm

CONFIGURATION = '''
from pathlib import Path
from transformers import LlamaConfig

MARKER = {marker!r}
Path(MARKER).write_text("the folder's code ran")


class RemoteConfig(LlamaConfig):
    model_type = "remote_llama"
'''

MODELING = '''
from transformers import LlamaForCausalLM

from .configuration_remote import RemoteConfig


class RemoteForCausalLM(LlamaForCausalLM):
    config_class = RemoteConfig
'''


@pytest.fixture
def remote_code_model(tmp_path) -> tuple[Path, Path]:
    """A tiny Llama saved with ``auto_map`` pointing at code in its folder; that code writes a
    marker file when it is imported."""
    folder, marker = tmp_path / "remote_model", tmp_path / "code_ran"
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    (folder / "configuration_remote.py").write_text(CONFIGURATION.format(marker=str(marker)))
    (folder / "modeling_remote.py").write_text(MODELING)
    saved = json.loads((folder / "config.json").read_text())
    saved.update(model_type="remote_llama", architectures=["RemoteForCausalLM"], auto_map={
        "AutoConfig": "configuration_remote.RemoteConfig",
        "AutoModelForCausalLM": "modeling_remote.RemoteForCausalLM",
    })  # fmt: skip
    (folder / "config.json").write_text(json.dumps(saved))
    return folder, marker


def test_remote_code_is_refused_by_default_and_not_run(remote_code_model, monkeypatch):
    folder, marker = remote_code_model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_causal_lm(folder, dtype=torch.float32)
    assert not marker.exists(), "the folder's code ran although trust_remote_code was off"


def test_remote_code_runs_when_the_config_asks(remote_code_model, monkeypatch):
    folder, marker = remote_code_model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_causal_lm(folder, dtype=torch.float32, trust_remote_code=True)
    assert type(model).__name__ == "RemoteForCausalLM" and marker.exists()


def test_the_config_switch_reaches_the_loader():
    assert load_config(None).model.trust_remote_code is False
    for value in (False, True):
        cfg = load_config(None, [f"model.trust_remote_code={str(value).lower()}"])
        assert causal_lm_kwargs(cfg.model, None, seed=0)["trust_remote_code"] is value
