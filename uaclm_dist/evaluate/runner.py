"""`uaclm eval`: score one or more models (base, CLM adapter, UA-CLM adapter, ...) side by side.

Driver steps (everything that can fail on bad input runs before Ray starts):
  1. methods: ``base`` and/or named adapter folders (a run folder or its ``adapter/``);
  2. the test split from the same data adapters, split and seed as training (+ OOD prompts);
  3. for each method, the Ray Data pipeline -> ``per_example/<method>.parquet``;
  4. metrics per method (``metrics.json``), Table-1 comparison with paired-bootstrap intervals
     (``comparison.md``/``.json``), and the report (``report.md`` + ``plots/``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from uaclm_dist.config import ConfigError, RunConfig


def resolve_adapter(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` -> (name, adapter folder). A run folder means its ``adapter/``."""
    name, _, path = spec.rpartition("=")
    folder = Path(path).expanduser().resolve()
    if (folder / "adapter" / "adapter_config.json").exists():
        folder = folder / "adapter"
    if not (folder / "adapter_config.json").exists():
        raise ConfigError(f"--adapter {spec}: no peft adapter (adapter_config.json) in {folder}")
    if not name:
        name = folder.parent.name if folder.name == "adapter" else folder.name
    return name, folder


def prompt_rows(cfg: RunConfig, tokenizer) -> list[dict]:
    """Test-split (and OOD) prompts, encoded exactly as training encodes them."""
    from uaclm_dist.data import (
        DataError,
        build_prompt,
        encode_prompt,
        fit_context,
        load_records,
        split_records,
    )  # fmt: skip

    try:
        records = load_records(cfg.data)
        ood = load_records(cfg.data.ood) if cfg.data.ood else []
    except DataError as exc:
        raise ConfigError(f"data: {exc}") from exc
    _, test = split_records(records, cfg.data.train_fraction, cfg.data.split_seed)
    if cfg.eval.max_examples:
        test = test[: cfg.eval.max_examples]
        ood = ood[: cfg.eval.max_examples]
    template = cfg.data.prompt_template
    budget = cfg.data.max_length - cfg.eval.max_new_tokens
    rows = []
    for record, is_ood in [(r, False) for r in test] + [(r, True) for r in ood]:
        fitted, _ = fit_context(record, tokenizer, template=template, max_prompt_tokens=budget)
        if fitted is None:
            continue  # counted below
        prompt = build_prompt(fitted, template, tokenizer)
        rows.append({
            "id": f"ood:{record.id}" if is_ood else record.id, "question": record.question,
            "references": list(record.answers), "prompt_ids": encode_prompt(prompt, tokenizer,
                                                                            template),
            "is_ood": is_ood,
        })  # fmt: skip
    if not any(not r["is_ood"] for r in rows):
        raise ConfigError("no test prompt fits data.max_length - eval.max_new_tokens")
    return rows


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Plain arrow columns without pandas extension-dtype metadata (Ray hands back
    ``ArrowDtype`` list columns, whose metadata pandas cannot read back)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(None), path)


def prepare_eval_dir(path: str | Path) -> Path:
    out = Path(path).resolve()
    if (out / "metrics.json").exists():
        raise ConfigError(f"{out} already holds an evaluation; nothing is overwritten (use --out)")
    (out / "per_example").mkdir(parents=True, exist_ok=True)
    return out


def run_evaluation(
    cfg: RunConfig,
    adapters: list[str] | None = None,
    *,
    include_base: bool = False,
    out_dir: str | None = None,
) -> dict:
    """Evaluate ``base`` (if asked) and each adapter spec; returns ``{method: metrics}``.

    With no adapters and no ``include_base`` (``uaclm run``), the run folder's own adapter is
    evaluated next to the base model.
    """
    from uaclm_dist.cluster import ray_session
    from uaclm_dist.evaluate.compare import compare_methods
    from uaclm_dist.evaluate.pipeline import run_pipeline
    from uaclm_dist.evaluate.report import write_report
    from uaclm_dist.evaluate.summary import compute_metrics, to_jsonable
    from uaclm_dist.modeling.families import load_tokenizer_for

    run_folder = Path(cfg.logging.output_dir)
    if not adapters and not include_base:
        adapters, include_base = [f"trained={run_folder}"], True
    methods: list[tuple[str, Path | None]] = [("base", None)] if include_base else []
    methods += [resolve_adapter(a) for a in adapters or []]
    names = [m for m, _ in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"method names must be unique, got {names} (use NAME=PATH)")
    out = prepare_eval_dir(out_dir or run_folder / "eval")
    tokenizer = load_tokenizer_for(cfg.model)
    rows = prompt_rows(cfg, tokenizer)

    scores = list(cfg.eval.scores)
    threshold = cfg.eval.correctness_threshold
    per_method: dict[str, pd.DataFrame] = {}
    metrics: dict[str, dict] = {}
    with ray_session(cfg):
        for name, adapter in methods:
            print(f"[uaclm] evaluating {name} on {len(rows)} prompts", flush=True)
            df = run_pipeline(rows, model_cfg=cfg.model,
                              adapter_dir=str(adapter) if adapter else None,
                              eval_cfg=cfg.eval, seed=cfg.optim.seed)  # fmt: skip
            write_parquet(df, out / "per_example" / f"{name}.parquet")
            per_method[name] = df
            metrics[name] = compute_metrics(df, scores, threshold, cfg.eval.bootstrap_samples,
                                            seed=cfg.optim.seed)  # fmt: skip
    comparison = compare_methods(per_method, scores, baseline=names[0], threshold=threshold,
                                 n_bootstrap=cfg.eval.bootstrap_samples,
                                 seed=cfg.optim.seed)  # fmt: skip
    (out / "comparison.md").write_text(comparison.to_markdown() + "\n")
    (out / "comparison.json").write_text(json.dumps(to_jsonable(comparison.to_dict()), indent=2))
    protocol = {**cfg.eval.model_dump(), "prompt_template": cfg.data.prompt_template,
                "methods": {n: str(a) if a else "base model" for n, a in methods}}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(to_jsonable(metrics), indent=2))
    report = write_report(out, per_method, metrics, comparison, protocol=protocol, scores=scores)
    print(f"\nreport: {report}\n")
    print(comparison.to_markdown())
    return metrics
