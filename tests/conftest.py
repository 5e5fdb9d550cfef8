"""Shared test fixtures: offline hub, the converted SmolLM2 folder and tokenizer, a tiny Llama.

Model folders live in ``uaclm_dist.modeling.loading.cache_dir()`` ($UACLM_CACHE or
~/.cache/uaclm). The first run converts the packaged SmolLM2 GGUF (~30-45 s on 2 cores; only the
``smollm2_dir`` / ``smollm2_model`` fixtures need it); later runs reuse it.
"""

from __future__ import annotations

import os

# Nothing may download: set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_dir():
    """HF folder of SmolLM2-135M-Instruct (config, fp32 safetensors, tokenizer)."""
    from uaclm_dist.modeling.loading import ensure_smollm2_hf_dir

    return ensure_smollm2_hf_dir()


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir():
    """Folder holding the SmolLM2 tokenizer (ChatML template, pad = eos = <|im_end|>); built
    from the GGUF metadata without converting the weights."""
    from uaclm_dist.modeling.loading import ensure_smollm2_tokenizer_dir

    return ensure_smollm2_tokenizer_dir()


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_tokenizer_dir):
    """The SmolLM2 tokenizer (shared: do not mutate)."""
    from uaclm_dist.modeling.loading import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_model(smollm2_dir):
    """SmolLM2-135M-Instruct in fp32, eval mode (shared: do not mutate)."""
    from uaclm_dist.modeling.loading import load_causal_lm

    return load_causal_lm("smollm2-135m", dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_llama_dir(smollm2_tokenizer_dir):
    """HF folder of the default seeded tiny Llama (2 layers, hidden 64, SmolLM2 vocab)."""
    from uaclm_dist.modeling.loading import ensure_tiny_llama_dir

    return ensure_tiny_llama_dir()


@pytest.fixture
def tiny_llama(tiny_llama_dir):
    """A fresh fp32 tiny Llama in eval mode (safe to modify: loaded per test, ~0.1 s)."""
    from uaclm_dist.modeling.loading import load_causal_lm

    return load_causal_lm("tiny-llama", dtype=torch.float32).eval()
