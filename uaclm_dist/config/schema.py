"""The typed schema of a run: one pydantic section per concern, :class:`RunConfig` on top, and the
rules that involve more than one field.

Unknown keys are errors at every level. Checks run per field (types, choices, ranges: pydantic
constraints; names of objectives, scores, data formats and model families: their registries, see
:mod:`.choices`) and across fields (:func:`cross_field_issues`, run by
:meth:`RunConfig._cross_field_checks`, so configs built directly in code are guarded too). File
system checks belong to :mod:`.loading`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from uaclm_dist.config.choices import RegisteredName

__all__ = [
    "CROSS_FIELD_ERROR",
    "DATA_FORMAT",
    "DataConfig",
    "DistributedConfig",
    "EvalConfig",
    "LoggingConfig",
    "LoraConfig",
    "MODEL_FAMILY",
    "ModelConfig",
    "OBJECTIVE",
    "OODDataConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "QuantizationConfig",
    "RunConfig",
    "SCORE",
    "TinyModelConfig",
    "cross_field_issues",
]

#: The registries that config names are checked against (imported when a value is checked).
OBJECTIVE = RegisteredName("uaclm_dist.losses.objectives", "OBJECTIVES")
SCORE = RegisteredName("uaclm_dist.evaluate.scores", "SCORES")
DATA_FORMAT = RegisteredName("uaclm_dist.data.formats", "DATA_FORMATS")
MODEL_FAMILY = RegisteredName("uaclm_dist.modeling.families", "FAMILIES")

#: The pydantic error type of a broken cross-field rule (its ctx holds the issues).
CROSS_FIELD_ERROR = "uaclm_cross_field"

Dtype = Literal["bfloat16", "float16", "float32"]
ObjectiveName = Annotated[str, OBJECTIVE]
ScoreName = Annotated[str, SCORE]
DataFormatName = Annotated[str, DATA_FORMAT]
FamilyName = Annotated[str, MODEL_FAMILY]


def _default_scores() -> list[str]:
    """The scores computed when a config names none: ``DEFAULT_SCORES`` of the score registry."""
    return list(SCORE.from_module("DEFAULT_SCORES"))


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
    target_modules: list[str] | str = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
        description="Linear modules that get adapters: a list of module-name suffixes, or one "
        "regular expression matched against the full module name (peft semantics).",
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _list_or_regex(cls, value: Any) -> Any:
        """A non-empty list of names, or a non-empty string that compiles as a regex."""
        if isinstance(value, str):
            if not value:
                raise ValueError("the regular expression is empty")
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        elif isinstance(value, list):
            if not value:
                raise ValueError("the list is empty")
            bad = [item for item in value if not isinstance(item, str) or not item]
            if bad:
                raise ValueError(f"module names must be non-empty strings, not {bad[0]!r}")
        else:
            raise ValueError("must be a list of module names or a regular expression string")
        return value


class VisionModelConfig(_Section):
    """Vision-language models (``model.family: vision_lm``)."""

    train_projector: bool | None = Field(
        None,
        description="Train the vision-to-language projector in full next to the LoRA adapters "
        "(saved with the adapter). null: on for the offline VLMs, whose projector starts "
        "random; off for pretrained LLaVA checkpoints. The vision tower is always frozen.",
    )


class ModelConfig(_Section):
    """The base model, its precision, quantization and adapters."""

    name_or_path: str = Field(
        "smollm2-135m",
        min_length=1,
        description="Base model: an alias ('smollm2-135m' = packaged SmolLM2-135M-Instruct, "
        "'gemma3-270m' = packaged Gemma-3-270M base (requirements-study.txt; paper prompt), "
        "'qwen2.5-coder-0.5b' / 'qwen2.5-coder-1.5b' = packaged Qwen2.5-Coder-Instruct "
        "(requirements-study-qwen.txt; chat prompt), "
        "'tiny-llama' = random tiny Llama shaped by model.tiny; with model.family vision_lm: "
        "'smollm2-mobilenetv2' / 'tiny-llama-mobilenetv2' = offline VLMs with a pretrained "
        "MobileNetV2 tower), a Hugging Face id or a local directory (a llava-hf checkpoint "
        "for vision_lm).",
    )
    family: FamilyName = Field(
        "causal_lm",
        description="Model family from the model registry (uaclm_dist/modeling/families): "
        "'causal_lm' = any Hugging Face causal LM; 'vision_lm' = LLaVA-style vision-language "
        "models (vision tower + projector + causal LM).",
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
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa",
        description="Attention kernel (transformers' attn_implementation): 'sdpa' = PyTorch's "
        "scaled_dot_product_attention (flash / memory-efficient kernels on GPUs); "
        "'flash_attention_2' = the flash-attn package (GPU workers with bf16/fp16 only; refused "
        "when the package is not installed); 'eager' = the plain matmul reference.",
    )
    init_adapter: str | None = Field(
        None,
        description="Start from a trained adapter: a run folder of this project (its adapter/, "
        "and a vision model's trained projector) or an adapter folder. Its LoRA rank, alpha and "
        "targets must equal model.lora's; the optimizer and schedule start fresh; a parent run's "
        "training questions must not be in this run's test split (run_info.json records the "
        "parent; evaluation follows the chain). null: LoRA starts from scratch.",
    )
    trust_remote_code: bool = Field(
        False,
        description="Run Python code shipped with the model folder (its config's auto_map). "
        "Off: such a model is refused without running any of its code.",
    )
    vlm: VisionModelConfig = Field(
        default_factory=VisionModelConfig, description="Vision-language model options."
    )


# ---------------------------------------------------------------------------------------- data


def _one_path_as_list(value: Any) -> Any:
    """Accept ``paths: file.jsonl`` as shorthand for ``paths: [file.jsonl]``."""
    return [value] if isinstance(value, str) else value


class OODDataConfig(_Section):
    """Out-of-distribution prompts for the OOD-detection metrics (BioASQ in the paper)."""

    format: DataFormatName = Field("bioasq", description="Format of the OOD data.")
    paths: list[str] = Field(
        default_factory=list,
        description="Files (or glob patterns) with the OOD data; required unless the format is "
        "packaged or generated (fanoutqa, easyvqa, arithmetic).",
    )
    max_examples: int | None = Field(
        None, ge=1, description="Use at most this many OOD examples (null: all)."
    )

    _paths_as_list = field_validator("paths", mode="before")(_one_path_as_list)


class DataConfig(_Section):
    """The QA / VQA data, its split, prompting and tokenization."""

    format: DataFormatName = Field(
        "fanoutqa",
        description="Row format. fanoutqa and easyvqa ship in packages, arithmetic is "
        "generated; the others read data.paths (jsonl / parquet / hf use data.field_map).",
    )
    paths: list[str] = Field(
        default_factory=list,
        description="Files, directories or glob patterns to read; required unless the format is "
        "packaged or generated (fanoutqa, easyvqa, arithmetic).",
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
    max_train_examples: int | None = Field(
        None,
        ge=1,
        description="Train on the first this many questions of the training split (null: all "
        "of it). The split itself is unchanged, so runs with different training sizes keep the "
        "same test questions (a data-size study evaluates every cell on the same ones).",
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
    context: Literal["none", "retrieved"] = Field(
        "none",
        description="'none': records as read (FanOutQA is closed book); 'retrieved' (fanoutqa "
        "only): each question gets a context of data.context_k answer-bearing statements "
        "('question? answer.'), its own with probability 1 - data.context_miss_rate, the others "
        "from other questions (training questions: training questions only); shuffled, seeded "
        "by data.context_seed (see data/retrieval.py).",
    )
    context_k: int = Field(
        4, ge=1, description="'retrieved': statements per context (the question's own included)."
    )
    context_miss_rate: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="'retrieved': probability that a question's own statement is left out (a "
        "retrieval miss; the record's context_has_answer is then false).",
    )
    context_seed: int = Field(
        0, ge=0, description="'retrieved': seed of the context draws (independent of the split)."
    )
    ood: OODDataConfig | None = Field(
        None, description="Out-of-distribution data for OOD detection (null: no OOD metrics)."
    )

    _paths_as_list = field_validator("paths", mode="before")(_one_path_as_list)


# ----------------------------------------------------------------------------------- objective


class ObjectiveConfig(_Section):
    """The training loss (shared/METHOD.md section 1)."""

    name: ObjectiveName = Field(
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
    chunk_mib: float = Field(
        64.0,
        gt=0,
        description="Frozen LM head (the (Q)LoRA case): MiB of fp32 logits per token chunk of the "
        "single-pass fused loss, but never fewer than 256 tokens per chunk (fewer leaves the "
        "matmuls bound by streaming the head weight); about three such chunks are alive at once.",
    )
    chunk_tokens: int | None = Field(
        None,
        ge=1,
        description="Tokens per chunk of the fused loss (null: from chunk_mib for a frozen head, "
        "1024 for a trainable one).",
    )
    chunk_vocab: int | None = Field(
        None,
        ge=1,
        description="Trainable LM head (two-pass kernel): vocabulary entries per chunk "
        "(null: 4096).",
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
    global_batch_size: int | None = Field(
        None,
        ge=1,
        description="Sequences per optimizer step over all workers: a property of the recipe, "
        "the same on any number of workers. optim.grad_accumulation is then derived "
        "(global_batch_size / (micro_batch_size x distributed.num_workers), which must divide). "
        "null: global batch = micro_batch_size x grad_accumulation x num_workers.",
    )
    grad_accumulation: int = Field(
        2,
        ge=1,
        description="Micro-batches per worker per optimizer step (derived when "
        "optim.global_batch_size is set; leave it out then).",
    )
    grad_clip: float = Field(1.0, ge=0, description="Gradient-norm clip (0: no clipping).")
    max_skipped_in_a_row: int = Field(
        3,
        ge=1,
        description="A step whose loss or gradient norm is not finite is skipped on every rank "
        "(no update, counted in the metrics); abort after this many skipped in a row.",
    )
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
    local_ray_dashboard: bool = Field(
        True,
        description="When uaclm starts Ray itself (no ray_address, no RAY_ADDRESS): also start "
        "Ray's dashboard on 127.0.0.1:8265. It serves the State API, which Ray Train's "
        "placement-group cleaner polls every second: without it that cleaner cannot work and "
        "logs a warning each second into logs/driver.log. False saves ~4 s per start. "
        "Clusters started with `ray start` keep theirs.",
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
    peak_tflops_per_device: float | None = Field(
        None,
        gt=0,
        description="Peak dense TFLOP/s of one worker's device, for MFU (null: the bf16 dense "
        "peak of a known GPU type, or on CPU a GEMM probe at start).",
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
        default_factory=_default_scores,
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
        64,
        ge=0,
        description="Entropy probe: the answer tokens (target span + EOS) of this many held-out "
        "(test-split) examples, measured before the first step and after the last, split by "
        "the starting model's errors; summary.json reports the paper's signature on them "
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
        """The config as YAML text that :func:`load_config` reads back to an equal config.

        With ``optim.global_batch_size`` set, the derived ``optim.grad_accumulation`` is left
        out: the file then loads on another number of workers (a resume with
        ``distributed.num_workers`` changed) instead of contradicting its own batch."""
        data = self.to_dict()
        if self.optim.global_batch_size is not None:
            data["optim"].pop("grad_accumulation", None)
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)

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
        issues = cross_field_issues(self)
        if issues:
            summary = "; ".join(message for _, message in issues)
            raise PydanticCustomError(CROSS_FIELD_ERROR, "{summary}", {
                "summary": summary, "issues": issues,
            })
        accumulation = derived_grad_accumulation(self)
        if accumulation is not None:
            self.optim.grad_accumulation = accumulation
        return self


def derived_grad_accumulation(cfg: RunConfig) -> int | None:
    """``optim.grad_accumulation`` implied by ``optim.global_batch_size`` (None when that is
    unset or does not divide by micro batch x workers)."""
    o, workers = cfg.optim, cfg.distributed.num_workers
    if o.global_batch_size is None or o.global_batch_size % (o.micro_batch_size * workers):
        return None
    return o.global_batch_size // (o.micro_batch_size * workers)


def _global_batch_issues(cfg: RunConfig) -> list[tuple[list[str], str]]:
    o, workers = cfg.optim, cfg.distributed.num_workers
    if o.global_batch_size is None:
        return []
    keys = ["optim.global_batch_size", "optim.micro_batch_size", "distributed.num_workers"]
    per_pass = o.micro_batch_size * workers
    derived = derived_grad_accumulation(cfg)
    if derived is None:
        fits = sorted({n for n in range(1, o.global_batch_size + 1)
                       if o.global_batch_size % (o.micro_batch_size * n) == 0})  # fmt: skip
        return [(keys, f"optim.global_batch_size {o.global_batch_size} does not divide into "
                       f"optim.micro_batch_size {o.micro_batch_size} x distributed.num_workers "
                       f"{workers} = {per_pass} sequences per forward pass; with micro batch "
                       f"{o.micro_batch_size} it fits num_workers in {fits}")]
    if "grad_accumulation" in o.model_fields_set and o.grad_accumulation != derived:
        return [(["optim.grad_accumulation", "optim.global_batch_size"],
                 f"optim.grad_accumulation {o.grad_accumulation} contradicts "
                 f"optim.global_batch_size {o.global_batch_size} (which implies {derived} on "
                 f"{workers} workers x micro batch {o.micro_batch_size}); leave "
                 "optim.grad_accumulation out, it is derived")]
    return []


def cross_field_issues(cfg: RunConfig) -> list[tuple[list[str], str]]:
    """Rules that involve more than one field: (keys involved, message) per broken rule."""
    issues: list[tuple[list[str], str]] = _global_batch_issues(cfg)
    m, o, e = cfg.model, cfg.objective, cfg.eval

    if OBJECTIVE.registry().get(o.name).needs_full_vocab and o.implementation != "reference":
        issues.append((["objective.name", "objective.implementation"],
                       f"objective.name '{o.name}' is only implemented by "
                       f"objective.implementation 'reference' (got '{o.implementation}')"))
    if m.init_adapter and not m.lora.enabled:
        issues.append((["model.init_adapter", "model.lora.enabled"],
                       "model.init_adapter starts the LoRA adapters from a trained one; it needs "
                       "model.lora.enabled: true"))
    if m.quantization.method == "nf4" and not m.lora.enabled:
        issues.append((["model.quantization.method", "model.lora.enabled"],
                       "model.quantization.method 'nf4' needs model.lora.enabled: true (4-bit base "
                       "weights are frozen); use model.quantization.method=none for full "
                       "fine-tuning"))
    if m.attn_implementation == "flash_attention_2":
        if cfg.distributed.gpus_per_worker == 0:
            issues.append((["model.attn_implementation", "distributed.gpus_per_worker"],
                           "model.attn_implementation 'flash_attention_2' runs on GPUs only "
                           "(distributed.gpus_per_worker is 0); use 'sdpa'"))
        if m.dtype == "float32":
            issues.append((["model.attn_implementation", "model.dtype"],
                           "model.attn_implementation 'flash_attention_2' takes bfloat16 or "
                           "float16 (model.dtype is float32); use 'sdpa'"))
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
    formats = DATA_FORMAT.registry()
    packaged = [name for name, fmt in formats.items() if fmt.packaged]
    for prefix, section in (("data", cfg.data), ("data.ood", cfg.data.ood)):
        if section is not None and not section.paths and not formats.get(section.format).packaged:
            issues.append(([f"{prefix}.paths", f"{prefix}.format"],
                           f"{prefix}.paths is empty but {prefix}.format '{section.format}' "
                           f"reads local files; list them in {prefix}.paths (only "
                           f"{' and '.join(packaged) or 'none'} ship in packages)"))
    retrieval = [name for name, fmt in formats.items() if fmt.retrieved_context]
    if cfg.data.context == "retrieved" and cfg.data.format not in retrieval:
        issues.append((["data.context", "data.format"],
                       f"data.context 'retrieved' is only supported by data.format "
                       f"{' / '.join(retrieval) or 'none'} (got data.format '{cfg.data.format}'); "
                       f"use data.context=none"))
    if e.clusterer == "nli" and not e.nli_model_path:
        issues.append((["eval.clusterer", "eval.nli_model_path"],
                       "eval.clusterer 'nli' needs eval.nli_model_path"))
    scores = SCORE.registry()
    needs_samples = [s for s in e.scores if scores.get(s).needs_clusters]
    if needs_samples and e.num_samples < 2:
        issues.append((["eval.scores", "eval.num_samples"],
                       f"eval.scores {needs_samples} cluster several samples; eval.num_samples "
                       f"must be at least 2 (got {e.num_samples})"))
    return issues

