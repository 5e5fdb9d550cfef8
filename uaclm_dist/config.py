"""One typed schema for a whole run, loaded from YAML plus dotted ``key=value`` overrides.

    config = load_config("configs/demo.yaml", ["optim.lr=2e-4", "model.lora.rank=16"])

Everything a run decides lives in :class:`RunConfig` (pydantic v2, unknown keys forbidden at every
level). :func:`load_config` turns every problem into one :class:`ConfigError` whose message is for
people: it names the dotted key, the expected type, the bad value and where the value came from
(the config file or the command line), suggests the closest valid key for typos, and lists all
problems at once rather than the first.

Checks run in three layers:

1. per field (types, enums, ranges) - pydantic field constraints;
2. across fields (e.g. ``objective.name: ult`` needs ``objective.implementation: reference``) -
   :meth:`RunConfig._cross_field_checks`, which also guards configs built directly in code;
3. against the file system (the DeepSpeed config, data files, local model paths must exist) -
   done by :func:`load_config`, which also rewrites those paths to absolute ones so the resolved
   config (``RunConfig.to_yaml()``) is what the run actually used.

Relative paths are looked up next to the config file, then in the repository root (the parent of
the ``uaclm_dist`` package), then in the current directory.
"""

from __future__ import annotations

import copy
import difflib
import glob
import json
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "ConfigError",
    "RunConfig",
    "ModelConfig",
    "TinyModelConfig",
    "QuantizationConfig",
    "LoraConfig",
    "DataConfig",
    "OODDataConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "DistributedConfig",
    "EvalConfig",
    "LoggingConfig",
    "MODEL_ALIASES",
    "PACKAGED_DATA_FORMATS",
    "REPO_ROOT",
    "load_config",
    "parse_overrides",
    "valid_keys",
    "reference_markdown",
]

#: The repository root: the parent directory of the ``uaclm_dist`` package.
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Model names resolved by ``uaclm_dist.modeling`` rather than by Hugging Face / the file system.
MODEL_ALIASES = ("smollm2-135m", "tiny-llama")

#: Data formats whose rows ship inside an installed package (``data.paths`` optional).
PACKAGED_DATA_FORMATS = ("fanoutqa", "easyvqa")

Dtype = Literal["bfloat16", "float16", "float32"]
DataFormat = Literal[
    "coqa", "triviaqa", "squad", "bioasq", "fanoutqa", "easyvqa", "jsonl", "parquet", "hf"
]
ScoreName = Literal["te", "ppl", "pe", "se", "dse", "length"]
ALL_SCORES: tuple[str, ...] = get_args(ScoreName)


class ConfigError(Exception):
    """A configuration problem, worded for the person who wrote the config.

    ``str(err)`` is the full message; ``err.problems`` lists the individual problems.
    """

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{len(self.problems)} problems in the configuration:\n{lines}"
        super().__init__(message)


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------- model


class TinyModelConfig(_Section):
    """Shape of the randomly initialised ``tiny-llama`` model (tests and smoke runs)."""

    hidden_size: int = Field(64, ge=1, description="Hidden (model) dimension.")
    num_layers: int = Field(2, ge=1, description="Number of decoder layers.")
    num_heads: int = Field(4, ge=1, description="Attention heads; must divide hidden_size.")
    num_kv_heads: int = Field(
        2, ge=1, description="Key/value heads (grouped-query attention); must divide num_heads."
    )
    intermediate_size: int = Field(128, ge=1, description="MLP inner dimension.")
    tokenizer: str = Field(
        "smollm2",
        min_length=1,
        description="Tokenizer paired with the tiny model: 'smollm2' (the packaged SmolLM2 "
        "tokenizer) or a tokenizer path / Hugging Face id.",
    )


class QuantizationConfig(_Section):
    """How the frozen base weights are stored (QLoRA)."""

    method: Literal["none", "nf4"] = Field(
        "nf4", description="'nf4': 4-bit NormalFloat base weights (QLoRA); 'none': keep dtype."
    )
    double_quant: bool = Field(True, description="Also quantize the nf4 quantization constants.")
    compute_dtype: Dtype = Field(
        "bfloat16", description="Dtype the 4-bit weights are dequantized to for matmuls."
    )
    storage_dtype: Dtype = Field(
        "bfloat16",
        description="Dtype the packed 4-bit weights are stored in (bnb_4bit_quant_storage); "
        "matching the other parameters lets ZeRO-3 shard them.",
    )


class LoraConfig(_Section):
    """Low-rank adapters (the only trained parameters when enabled)."""

    enabled: bool = Field(True, description="Train LoRA adapters instead of the full model.")
    rank: int = Field(32, ge=1, description="Adapter rank r.")
    alpha: float = Field(64, gt=0, description="Adapter scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
        min_length=1,
        description="Names of the linear modules that get adapters.",
    )


class ModelConfig(_Section):
    """The base model, its precision, quantization and adapters."""

    name_or_path: str = Field(
        "smollm2-135m",
        min_length=1,
        description="Base model: an alias ('smollm2-135m' = packaged SmolLM2-135M-Instruct, "
        "'tiny-llama' = random tiny Llama shaped by model.tiny), a Hugging Face id or a local "
        "directory.",
    )
    dtype: Dtype = Field("bfloat16", description="Dtype of the non-quantized parameters.")
    tiny: TinyModelConfig = Field(
        default_factory=TinyModelConfig, description="Shape of 'tiny-llama' (ignored otherwise)."
    )
    quantization: QuantizationConfig = Field(
        default_factory=QuantizationConfig, description="Base-weight quantization."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapters.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass to save memory."
    )


# ---------------------------------------------------------------------------------------- data


def _one_path_as_list(value: Any) -> Any:
    """Accept ``paths: file.jsonl`` as shorthand for ``paths: [file.jsonl]``."""
    return [value] if isinstance(value, str) else value


class OODDataConfig(_Section):
    """Out-of-distribution prompts for the OOD-detection metrics (BioASQ in the paper)."""

    format: DataFormat = Field("bioasq", description="Format of the OOD data.")
    paths: list[str] = Field(
        default_factory=list,
        description="Files (or glob patterns) with the OOD data; required unless the format is "
        "packaged (fanoutqa, easyvqa).",
    )
    max_examples: int | None = Field(
        None, ge=1, description="Use at most this many OOD examples (null: all)."
    )

    _paths_as_list = field_validator("paths", mode="before")(_one_path_as_list)


class DataConfig(_Section):
    """The QA / VQA data, its split, prompting and tokenization."""

    format: DataFormat = Field(
        "fanoutqa",
        description="Row format. fanoutqa and easyvqa ship in packages; the others read "
        "data.paths (jsonl / parquet / hf use data.field_map).",
    )
    paths: list[str] = Field(
        default_factory=list,
        description="Files, directories or glob patterns to read; required unless the format is "
        "packaged (fanoutqa, easyvqa).",
    )
    field_map: dict[str, str] = Field(
        default_factory=dict,
        description="Maps record fields (id, question, context, answers, image) to the column "
        "names of jsonl / parquet / hf rows.",
    )
    train_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Fraction of QA pairs used for fine-tuning; the rest is the test set "
        "(paper: 20% / 80%).",
    )
    split_seed: int = Field(0, ge=0, description="Seed of the random train/test split.")
    max_examples: int | None = Field(
        None, ge=1, description="Use at most this many examples before splitting (null: all)."
    )
    prompt_template: Literal["paper", "chat"] = Field(
        "paper",
        description="'paper': the paper's plain prompt; 'chat': the tokenizer's chat template.",
    )
    loss_on: Literal["all", "answer"] = Field(
        "all",
        description="Tokens in the loss: 'all' (prompt + answer, as in the paper) or 'answer' "
        "(prompt masked).",
    )
    max_length: int = Field(512, ge=16, description="Maximum tokens per training sequence.")
    ood: OODDataConfig | None = Field(
        None, description="Out-of-distribution data for OOD detection (null: no OOD metrics)."
    )

    _paths_as_list = field_validator("paths", mode="before")(_one_path_as_list)


# ----------------------------------------------------------------------------------- objective


class ObjectiveConfig(_Section):
    """The training loss (shared/METHOD.md section 1)."""

    name: Literal["clm", "ua_clm", "clm+ua", "ult"] = Field(
        "ua_clm",
        description="'clm': cross-entropy; 'ua_clm': the paper's uncertainty-aware loss alone; "
        "'clm+ua': CE + beta * UA; 'ult': token-level unlikelihood (baseline).",
    )
    ua_pooling: Literal["batch", "sequence"] = Field(
        "batch",
        description="Average the UA terms over all valid tokens of the micro-batch ('batch') or "
        "per sequence, then over sequences ('sequence').",
    )
    ua_eps: float = Field(
        1e-6, gt=0, lt=1, description="Clamp on tanh(H) inside log(tanh H) for stability."
    )
    beta_start: float = Field(
        0.2, ge=0, description="'clm+ua': weight of the UA term before the switch."
    )
    beta_end: float = Field(0.8, ge=0, description="'clm+ua': weight of the UA term after it.")
    beta_switch_fraction: float = Field(
        0.2,
        ge=0,
        le=1,
        description="'clm+ua': fraction of optimizer steps after which beta_end applies.",
    )
    ult_alpha: float = Field(1.0, ge=0, description="'ult': weight of the unlikelihood term.")
    implementation: Literal["fused", "vocab_parallel", "reference"] = Field(
        "fused",
        description="'fused': chunked kernel that never materializes full logits; "
        "'vocab_parallel': LM head sharded over ranks; 'reference': dense, readable.",
    )
    chunk_tokens: int | None = Field(
        None, ge=1, description="Tokens per chunk of the fused loss (null: automatic)."
    )
    chunk_vocab: int | None = Field(
        None, ge=1, description="Vocabulary entries per chunk of the fused loss (null: automatic)."
    )


# -------------------------------------------------------------------------------------- optim


class OptimConfig(_Section):
    """AdamW, the learning-rate schedule and batching."""

    lr: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.001, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        0.03, ge=0, le=1, description="Fraction of steps with linear warm-up (then linear decay)."
    )
    epochs: int = Field(3, ge=1, description="Passes over the training split.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps; overrides epochs."
    )
    micro_batch_size: int = Field(1, ge=1, description="Sequences per worker per forward pass.")
    grad_accumulation: int = Field(2, ge=1, description="Micro-batches per optimizer step.")
    grad_clip: float = Field(1.0, ge=0, description="Gradient-norm clip (0: no clipping).")
    seed: int = Field(0, ge=0, description="Seed for initialization, shuffling and dropout.")


# -------------------------------------------------------------------------------- distributed


class DistributedConfig(_Section):
    """Ray workers and DeepSpeed."""

    num_workers: int = Field(2, ge=1, description="Ray Train workers (one DeepSpeed rank each).")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs Ray reserves per worker.")
    gpus_per_worker: int = Field(0, ge=0, description="GPUs per worker (0: CPU training).")
    deepspeed_config: str = Field(
        "ds_configs/zero2.json",
        min_length=1,
        description="DeepSpeed JSON config; relative paths are looked up next to the config "
        "file, then in the repository root, then in the current directory.",
    )
    zero_stage: Literal[2, 3] = Field(
        2, description="ZeRO stage; must match zero_optimization.stage of deepspeed_config."
    )
    ray_address: str | None = Field(
        None, description="Ray cluster address (null: start or join a local one)."
    )
    gloo_socket_ifname: str | None = Field(
        None, description="Network interface for gloo collectives (GLOO_SOCKET_IFNAME)."
    )
    nccl_socket_ifname: str | None = Field(
        None, description="Network interface for NCCL collectives (NCCL_SOCKET_IFNAME)."
    )
    max_failures: int = Field(
        2, ge=0, description="Worker-group restarts (from the latest checkpoint) before giving up."
    )


# --------------------------------------------------------------------------------------- eval


class EvalConfig(_Section):
    """Generation, uncertainty scores and metrics (shared/METHOD.md section 3)."""

    num_samples: int = Field(5, ge=1, description="Stochastic answers sampled per prompt.")
    temperature: float = Field(0.3, gt=0, description="Sampling temperature of those answers.")
    max_new_tokens: int = Field(32, ge=1, description="Generation length limit.")
    correctness_threshold: float = Field(
        0.3, ge=0, le=1, description="An answer is correct iff ROUGE-L > this threshold."
    )
    scores: list[ScoreName] = Field(
        default_factory=lambda: list(ALL_SCORES),
        min_length=1,
        description="Uncertainty scores to compute: te (token entropy), ppl (perplexity), pe "
        "(predictive entropy), se (semantic entropy), dse (discrete SE), length.",
    )
    clusterer: Literal["embedding", "nli"] = Field(
        "embedding",
        description="Semantic clustering for se/dse: embedding similarity or NLI entailment.",
    )
    nli_model_path: str | None = Field(
        None, description="NLI model (path or id); required when clusterer is 'nli'."
    )
    similarity_threshold: float = Field(
        0.85, ge=0, le=1, description="Embedding clusterer: cosine similarity to merge answers."
    )
    batch_size: int = Field(8, ge=1, description="Prompts per generation batch.")
    num_generation_actors: int = Field(2, ge=1, description="Ray actors running generation.")
    cpus_per_actor: float = Field(
        1, gt=0, description="CPUs Ray reserves per generation actor (also its torch threads)."
    )
    gpus_per_actor: float = Field(
        0, ge=0, description="GPUs Ray reserves per generation actor (0: generate on CPU)."
    )
    max_examples: int | None = Field(
        None, ge=1, description="Evaluate only the first N test examples (null: all of them)."
    )
    top_k: int = Field(
        0, ge=0, description="Sampling: top-k filter (0: off, pure temperature sampling)."
    )
    decoder: Literal["shared_prefill", "hf_generate"] = Field(
        "shared_prefill",
        description="How answers are generated: `shared_prefill` runs each prompt's prefill once "
        "and decodes the greedy answer and the samples together (evaluate/decoding.py); "
        "`hf_generate` calls HF `generate` twice (greedy, then samples), the reference path.",
    )
    bootstrap_samples: int = Field(
        1000, ge=0, description="Bootstrap resamples for confidence intervals (0: none)."
    )

    @field_validator("scores")
    @classmethod
    def _no_duplicate_scores(cls, scores: list[str]) -> list[str]:
        duplicates = sorted({s for s in scores if scores.count(s) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(map(repr, duplicates))} more than once")
        return scores


# ------------------------------------------------------------------------------------ logging


class LoggingConfig(_Section):
    """Where results go and how often."""

    output_dir: str = Field("runs/default", min_length=1, description="Run output directory.")
    run_name: str | None = Field(None, description="Run name (null: the output_dir name).")
    wandb_mode: Literal["offline", "online", "disabled"] = Field(
        "offline", description="Weights & Biases mode."
    )
    wandb_project: str = Field("uaclm-dist", min_length=1, description="W&B project name.")
    log_every_steps: int = Field(1, ge=1, description="Log metrics every N optimizer steps.")
    checkpoint_every_steps: int = Field(
        0, ge=0, description="Checkpoint every N optimizer steps (0: only at the end)."
    )
    probe_examples: int = Field(
        16,
        ge=0,
        description="Entropy probe: held-out (test-split) examples measured before the first "
        "step and after the last, with token sets fixed by the starting model's errors "
        "(probe.jsonl, summary.json; see train/probe.py). 0: off.",
    )


# ---------------------------------------------------------------------------------------- run


class RunConfig(_Section):
    """Everything one run decides. Build with :func:`load_config`."""

    model: ModelConfig = Field(default_factory=ModelConfig, description=ModelConfig.__doc__)
    data: DataConfig = Field(default_factory=DataConfig, description=DataConfig.__doc__)
    objective: ObjectiveConfig = Field(
        default_factory=ObjectiveConfig, description=ObjectiveConfig.__doc__
    )
    optim: OptimConfig = Field(default_factory=OptimConfig, description=OptimConfig.__doc__)
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description=DistributedConfig.__doc__
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description=EvalConfig.__doc__)
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig, description=LoggingConfig.__doc__
    )

    def to_dict(self) -> dict[str, Any]:
        """The config as plain YAML/JSON-compatible data."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The config as YAML text that :func:`load_config` reads back to an equal config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def summary(self) -> str:
        """One line describing the run, for logs and ``uaclm config check``."""
        m, d, o, opt, dist = self.model, self.data, self.objective, self.optim, self.distributed
        adapters = f"LoRA r={m.lora.rank}" if m.lora.enabled else "full fine-tune"
        steps = f"max_steps {opt.max_steps}" if opt.max_steps else f"{opt.epochs} epochs"
        examples = f"max {d.max_examples}" if d.max_examples else "all"
        return (
            f"model {m.name_or_path} ({m.quantization.method}, {adapters}), "
            f"objective {o.name} ({o.implementation}), "
            f"data {d.format} ({examples} examples, {d.train_fraction:g} train, "
            f"max_length {d.max_length}), "
            f"{dist.num_workers} workers ZeRO-{dist.zero_stage}, {steps}, lr {opt.lr:g}, "
            f"output {self.logging.output_dir}"
        )

    @model_validator(mode="after")
    def _cross_field_checks(self) -> RunConfig:
        issues = _cross_field_issues(self)
        if issues:
            summary = "; ".join(message for _, message in issues)
            raise PydanticCustomError("uaclm_cross_field", "{summary}", {
                "summary": summary, "issues": issues,
            })
        return self


def _cross_field_issues(cfg: RunConfig) -> list[tuple[list[str], str]]:
    """Rules that involve more than one field: (keys involved, message) per broken rule."""
    issues: list[tuple[list[str], str]] = []
    m, o, e = cfg.model, cfg.objective, cfg.eval

    if o.name == "ult" and o.implementation != "reference":
        issues.append((["objective.name", "objective.implementation"],
                       f"objective.name 'ult' is only implemented by objective.implementation "
                       f"'reference' (got '{o.implementation}')"))
    if m.quantization.method == "nf4" and not m.lora.enabled:
        issues.append((["model.quantization.method", "model.lora.enabled"],
                       "model.quantization.method 'nf4' needs model.lora.enabled: true (4-bit base "
                       "weights are frozen); use model.quantization.method=none for full "
                       "fine-tuning"))
    tiny = m.tiny
    if tiny.hidden_size % tiny.num_heads:
        issues.append((["model.tiny.hidden_size", "model.tiny.num_heads"],
                       f"model.tiny.num_heads ({tiny.num_heads}) must divide "
                       f"model.tiny.hidden_size ({tiny.hidden_size})"))
    elif (tiny.hidden_size // tiny.num_heads) % 2:
        issues.append((["model.tiny.hidden_size", "model.tiny.num_heads"],
                       "model.tiny.hidden_size / model.tiny.num_heads (the head size) must be "
                       "even for rotary embeddings"))
    if tiny.num_heads % tiny.num_kv_heads:
        issues.append((["model.tiny.num_heads", "model.tiny.num_kv_heads"],
                       f"model.tiny.num_kv_heads ({tiny.num_kv_heads}) must divide "
                       f"model.tiny.num_heads ({tiny.num_heads})"))
    for prefix, section in (("data", cfg.data), ("data.ood", cfg.data.ood)):
        if section is not None and not section.paths and section.format not in (
            PACKAGED_DATA_FORMATS
        ):
            issues.append(([f"{prefix}.paths", f"{prefix}.format"],
                           f"{prefix}.paths is empty but {prefix}.format '{section.format}' "
                           f"reads local files; list them in {prefix}.paths (only "
                           f"{' and '.join(PACKAGED_DATA_FORMATS)} ship in packages)"))
    if e.clusterer == "nli" and not e.nli_model_path:
        issues.append((["eval.clusterer", "eval.nli_model_path"],
                       "eval.clusterer 'nli' needs eval.nli_model_path"))
    needs_samples = [s for s in e.scores if s in ("se", "dse")]
    if needs_samples and e.num_samples < 2:
        issues.append((["eval.scores", "eval.num_samples"],
                       f"eval.scores {needs_samples} cluster several samples; eval.num_samples "
                       f"must be at least 2 (got {e.num_samples})"))
    return issues


# ------------------------------------------------------------------------ schema introspection


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(args) < len(get_args(annotation)):
            return args[0], True
    return annotation, False


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The section model behind a field annotation, or None for a leaf."""
    inner, _ = _unwrap_optional(annotation)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner
    return None


def _is_dict(annotation: Any) -> bool:
    return get_origin(_unwrap_optional(annotation)[0]) is dict


def _type_name(annotation: Any, sep: str = " | ") -> str:
    """A short, readable name for a field type (Literal values are listed)."""
    inner, optional = _unwrap_optional(annotation)
    origin = get_origin(inner)
    if origin is Literal:
        name = sep.join(str(v) for v in get_args(inner))
    elif origin is list:
        name = f"list[{_type_name(get_args(inner)[0], sep)}]"
    elif origin is dict:
        key, value = get_args(inner)
        name = f"dict[{_type_name(key, sep)}, {_type_name(value, sep)}]"
    elif _section_class(inner) is not None:
        name = "section"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name}{sep}null" if optional else name


def _constraint_text(metadata: Iterable[Any]) -> str:
    """Field constraints as text, e.g. '>= 0, < 1'."""
    parts = []
    for item in metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                parts.append(f"{symbol} {getattr(item, attr):g}")
        if isinstance(item, annotated_types.MinLen) and item.min_length > 0:
            parts.append(f"length >= {item.min_length}")
    return ", ".join(parts)


def _iter_fields(cls: type[BaseModel] | None = None, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted key, FieldInfo) for every field, depth first, sections before their fields."""
    cls = cls or RunConfig
    for name, info in cls.model_fields.items():
        key = f"{prefix}{name}"
        yield key, info
        section = _section_class(info.annotation)
        if section is not None:
            yield from _iter_fields(section, f"{key}.")


def valid_keys() -> list[str]:
    """Every valid dotted key of the schema (sections included), in schema order."""
    return [key for key, _ in _iter_fields()]


def _field_for_loc(loc: Sequence[Any]) -> tuple[str, str, Any, Any]:
    """Map a pydantic error location to (field key, display key, annotation, FieldInfo).

    The field key is the dotted schema key (used to find where the value came from); the display
    key adds list indices / mapping keys, e.g. ``eval.scores[2]``.
    """
    cls: type[BaseModel] | None = RunConfig
    annotation: Any = None
    info: Any = None
    field_parts: list[str] = []
    display = ""
    for item in loc:
        if cls is not None and isinstance(item, str) and item in cls.model_fields:
            info = cls.model_fields[item]
            annotation = info.annotation
            field_parts.append(item)
            display = f"{display}.{item}" if display else item
            cls = _section_class(annotation)
            continue
        inner = _unwrap_optional(annotation)[0] if annotation is not None else None
        if isinstance(item, int) and get_origin(inner) is list:
            annotation, info = get_args(inner)[0], None
            display += f"[{item}]"
        elif get_origin(inner) is dict:
            annotation, info = get_args(inner)[1], None
            display += f".{item}"
        elif cls is not None:  # an unknown key below a section
            field_parts.append(str(item))
            display = f"{display}.{item}" if display else str(item)
            annotation = info = cls = None
        # anything else is a pydantic-internal tag (union member, validator name): skip it
    return ".".join(field_parts), display, annotation, info


def _suggest(key: str) -> str:
    """'; did you mean ...?' for an unknown key, or the valid keys next to it."""
    matches = difflib.get_close_matches(key, valid_keys(), n=1, cutoff=0.6)
    if matches:
        return f"; did you mean '{matches[0]}'?"
    parent = key.rpartition(".")[0]
    cls: type[BaseModel] | None = RunConfig
    for part in parent.split(".") if parent else []:
        field = cls.model_fields.get(part) if cls else None
        cls = _section_class(field.annotation) if field else None
    if cls is None:
        return ""
    where = f"under '{parent}'" if parent else "at the top level"
    return f"; valid keys {where}: {', '.join(cls.model_fields)}"


# ------------------------------------------------------------------------------------ loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last one."""


def _construct_mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            first = seen.setdefault(key, key_node.start_mark.line)
        except TypeError:  # unhashable key; the constructor below reports it
            continue
        if first != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first defined on line {first + 1})",
                key_node.start_mark,
            )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates
)


def _yaml_error_text(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context and "duplicate" not in problem else problem
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {text}"
    return text


def _read_yaml_file(path: Path, label: str) -> dict[str, Any]:
    """The mapping at the top of a YAML file (an empty file is an empty mapping)."""
    if not path.exists():
        raise ConfigError(f"config file '{label}' not found")
    if not path.is_file():
        raise ConfigError(f"config file '{label}' is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file '{label}': {exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {label}, {_yaml_error_text(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level of {label} must be a mapping of sections (model:, data:, ...), "
            f"got {_kind(data)}"
        )
    return data


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {_show(value)}"


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _override_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be set by an override, or None when it is a valid key."""
    cls: type[BaseModel] | None = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        if cls is None or part not in cls.model_fields:
            return f"unknown key '{key}' on the command line{_suggest(key)}"
        annotation = cls.model_fields[part].annotation
        if _is_dict(annotation) and i + 2 == len(parts):
            return None  # e.g. data.field_map.question
        cls = _section_class(annotation)
    return None


def parse_overrides(overrides: Iterable[str]) -> tuple[list[tuple[str, Any]], list[str]]:
    """Parse ``key=value`` strings into (key, value) pairs and a list of problems.

    Values are YAML: ``2e-4`` is a number, ``[q_proj,v_proj]`` a list, ``null`` None.
    """
    pairs: list[tuple[str, Any]] = []
    problems: list[str] = []
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep:
            problems.append(
                f"override '{text}' on the command line must look like key=value "
                f"(e.g. optim.lr=2e-4)"
            )
            continue
        if not key:
            problems.append(f"override '{text}' on the command line has an empty key")
            continue
        problem = _override_key_problem(key)
        if problem:
            problems.append(problem)
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            problems.append(
                f"cannot parse the value of override '{text}' on the command line as YAML: "
                f"{getattr(exc, 'problem', None) or exc}"
            )
            continue
        pairs.append((key, value))
    return pairs, problems


def _apply_override(data: dict[str, Any], key: str, value: Any) -> str | None:
    """Set dotted ``key`` in nested ``data``; a problem message if the path is not a mapping."""
    node = data
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            return (f"cannot apply override '{key}' from the command line: '{where}' is "
                    f"{_kind(child)} in the config file, not a mapping")
        node = child
    node[parts[-1]] = value
    return None


class _Origins:
    """Where each value came from: the file, the command line or the defaults."""

    def __init__(self, label: str | None, file_data: dict[str, Any], override_keys: list[str]):
        self.label = label
        self.file_data = file_data
        self.override_keys = override_keys

    def _overridden(self, key: str) -> bool:
        return any(
            key == k or key.startswith(k + ".") or k.startswith(key + ".")
            for k in self.override_keys
        )

    def where(self, *keys: str) -> str:
        """'on the command line' / 'in FILE' / 'in the defaults' for the given keys."""
        if any(self._overridden(k) for k in keys):
            return "on the command line"
        return f"in {self.label}" if self.label else "in the defaults"


def _translate_validation_error(exc: ValidationError, origins: _Origins) -> list[str]:
    """One message per pydantic error, naming key, expected type, value and origin."""
    problems = []
    for err in exc.errors(include_url=False):
        if err["type"] == "uaclm_cross_field":
            for keys, message in err["ctx"]["issues"]:
                problems.append(f"{message} ({origins.where(*keys)})")
            continue
        field_key, display, annotation, info = _field_for_loc(err["loc"])
        where = origins.where(field_key)
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key '{display}' {where}{_suggest(field_key)}")
            continue
        expected = _type_name(annotation, sep=", ") if annotation is not None else "a value"
        if get_origin(_unwrap_optional(annotation)[0]) is Literal:
            expected = "one of " + expected
        constraints = _constraint_text(info.metadata) if info is not None else ""
        if constraints:
            expected += f" ({constraints})"
        if expected == "section":
            expected = "a mapping (section)"
        message = f"invalid value for '{display}' {where}: expected {expected}, got " + _show(
            err["input"]
        )
        reason = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        if err["type"] == "literal_error":
            choices = [str(v) for v in get_args(_unwrap_optional(annotation)[0])]
            close = difflib.get_close_matches(str(err["input"]), choices, n=1, cutoff=0.5)
            if close:
                message += f"; did you mean '{close[0]}'?"
        elif err["type"] not in ("model_type", "model_attributes_type"):
            message += f" ({reason})"
        problems.append(message)
    return problems


# ----------------------------------------------------------------------- file-system checks


def _candidate_dirs(config_dir: Path | None) -> list[Path]:
    dirs = [config_dir] if config_dir is not None else []
    dirs += [REPO_ROOT, Path.cwd()]
    unique: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d not in unique:
            unique.append(d)
    return unique


def _resolve(value: str, config_dir: Path | None, pattern_ok: bool = False) -> tuple[str | None,
                                                                                     list[Path]]:
    """Find ``value`` (a path, or a glob pattern when ``pattern_ok``) on disk.

    Returns (absolute path or pattern, None if nothing matches) and the directories searched.
    """
    path = Path(value).expanduser()
    is_pattern = pattern_ok and glob.has_magic(value)
    dirs = [Path("/")] if path.is_absolute() else _candidate_dirs(config_dir)
    for base in dirs:
        candidate = base / path
        if is_pattern:
            if glob.glob(str(candidate), recursive=True):
                return str(candidate), dirs
        elif candidate.exists():
            return str(candidate.resolve()), dirs
    return None, dirs


def _looks_like_local_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or value in (".", "..")


def _check_files(cfg: RunConfig, config_dir: Path | None, origins: _Origins) -> list[str]:
    """Check that referenced files exist; rewrite them as absolute paths. Returns problems."""
    problems: list[str] = []

    def missing(key: str, value: str, dirs: list[Path], what: str, display: str = "") -> None:
        looked = "" if Path(value).is_absolute() else (
            " (looked in: " + ", ".join(str(d) for d in dirs) + ")"
        )
        problems.append(f"'{display or key}' {origins.where(key)}: {what}{looked}")

    dist = cfg.distributed
    found, dirs = _resolve(dist.deepspeed_config, config_dir)
    if found is None:
        missing("distributed.deepspeed_config", dist.deepspeed_config, dirs,
                f"DeepSpeed config file '{dist.deepspeed_config}' not found")
    else:
        dist.deepspeed_config = found
        problems += _check_deepspeed_json(Path(found), cfg, origins)

    for prefix, section in (("data", cfg.data), ("data.ood", cfg.data.ood)):
        if section is None:
            continue
        resolved = []
        for i, value in enumerate(section.paths):
            found, dirs = _resolve(value, config_dir, pattern_ok=True)
            if found is None:
                what = (f"no file matches the pattern '{value}'" if glob.has_magic(value)
                        else f"data path '{value}' not found")
                missing(f"{prefix}.paths", value, dirs, what, f"{prefix}.paths[{i}]")
            resolved.append(found or value)
        section.paths = resolved

    for key, section, attr in (
        ("model.name_or_path", cfg.model, "name_or_path"),
        ("eval.nli_model_path", cfg.eval, "nli_model_path"),
    ):
        value = getattr(section, attr)
        if value and value not in MODEL_ALIASES and _looks_like_local_path(value):
            found, dirs = _resolve(value, config_dir)
            if found is None:
                missing(key, value, dirs, f"model directory '{value}' not found")
            else:
                setattr(section, attr, found)
    return problems


def _check_deepspeed_json(path: Path, cfg: RunConfig, origins: _Origins) -> list[str]:
    key = "distributed.deepspeed_config"
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return [f"cannot read DeepSpeed config '{path}' ({key} {origins.where(key)}): {exc}"]
    except json.JSONDecodeError as exc:
        return [f"DeepSpeed config '{path}' ({key} {origins.where(key)}) is not valid JSON: "
                f"line {exc.lineno}, column {exc.colno}: {exc.msg}"]
    if not isinstance(ds, dict):
        return [f"DeepSpeed config '{path}' ({key} {origins.where(key)}) must be a JSON object"]
    stage = (ds.get("zero_optimization") or {}).get("stage")
    if isinstance(stage, int) and stage != cfg.distributed.zero_stage:
        where = origins.where(key, "distributed.zero_stage")
        return [f"DeepSpeed config '{path}' sets zero_optimization.stage {stage} but "
                f"distributed.zero_stage is {cfg.distributed.zero_stage} ({where}); make them "
                f"agree"]
    return []


# ------------------------------------------------------------------------------------- public


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Load, validate and resolve a run config.

    Args:
        path: YAML file; None starts from the defaults.
        overrides: dotted ``key=value`` strings applied on top of the file, in order; values
            are parsed as YAML (``optim.lr=2e-4``, ``model.lora.target_modules=[q_proj,v_proj]``).

    Returns:
        The validated :class:`RunConfig`, with file paths (DeepSpeed config, data files, local
        model directories) made absolute.

    Raises:
        ConfigError: listing every problem found, each naming the key and where it came from.
    """
    label = str(path) if path is not None else None
    file_data = _read_yaml_file(Path(path), label) if path is not None else {}
    config_dir = Path(path).resolve().parent if path is not None else None

    pairs, problems = parse_overrides(overrides)
    data = copy.deepcopy(file_data)
    for key, value in pairs:
        problem = _apply_override(data, key, value)
        if problem:
            problems.append(problem)
    origins = _Origins(label, file_data, [key for key, _ in pairs])

    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems + _translate_validation_error(exc, origins)) from None
    problems += _check_files(config, config_dir, origins)
    if problems:
        raise ConfigError(problems)
    return config


def reference_markdown() -> str:
    """Markdown tables (one per top-level section) of every key: type, default, description."""
    lines: list[str] = []
    defaults = RunConfig.model_construct().model_dump(mode="json")
    for section, info in RunConfig.model_fields.items():
        lines += [f"### `{section}`", "", info.description or "", ""]
        lines += ["| Key | Type | Default | Description |", "|---|---|---|---|"]
        cls = _section_class(info.annotation)
        for key, field in _iter_fields(cls, f"{section}."):
            type_text = _type_name(field.annotation, sep=" \\| ")
            constraints = _constraint_text(field.metadata)
            if constraints:
                type_text += f" ({constraints})"
            default = _default_text(key, defaults, field)
            description = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{key}` | {type_text} | {default} | {description} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _default_text(key: str, defaults: dict[str, Any], field: Any) -> str:
    if _section_class(field.annotation) is not None and not _unwrap_optional(field.annotation)[1]:
        return ""
    value: Any = defaults
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            # a field inside an optional section that defaults to null: use its own default
            value = field.get_default(call_default_factory=True)
            if isinstance(value, BaseModel):
                return ""
            break
        value = value[part]
    return f"`{_yaml_inline(value)}`"


def _yaml_inline(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_inline(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_inline(v)}" for k, v in value.items()) + "}"
    return str(value)
