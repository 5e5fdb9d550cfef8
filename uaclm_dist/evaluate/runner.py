"""`uaclm eval`: score one or more models (base, CLM adapter, UA-CLM adapter, ...) side by side.

Driver steps (everything that can fail on bad input runs before Ray starts):
  1. methods: ``base`` and/or named adapter folders (a run folder or its ``adapter/``);
  2. the examples: the evaluation config's test split (same data adapters, split and seed as
     training), checked against each run's ``split_ids.json`` - refused when it holds a run's
     training questions (unless ``allow_train_overlap``), else restricted to the ids every run
     held out (:mod:`uaclm_dist.data.run_splits`) - then ``eval.max_examples``; + OOD prompts;
  3. for each method, the Ray Data pipeline -> ``per_example/<method>.parquet`` (with
     ``context_has_answer`` under ``data.context: retrieved``);
  4. metrics per method (``metrics.json``), Table-1 comparison with paired-bootstrap intervals
     (``comparison.md``/``.json``), the scored ids (``examples.json``) and the report
     (``report.md`` + ``plots/``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from uaclm_dist.config import ConfigError, RunConfig
from uaclm_dist.config.preflight import check_cluster
from uaclm_dist.evaluate.method_files import finished_method, method_fingerprint, write_method
from uaclm_dist.evaluate.stopping import EvaluationStopped, StopSignals

#: Written when a signal stopped the evaluation (what was kept, what is left); removed once the
#: same evaluation completes.
STOPPED_FILE = "stopped.json"

#: The prompt-row keys the pipeline reads (other keys stay on the driver); ``image`` is None
#: for text rows.
PIPELINE_KEYS = ("id", "question", "references", "prompt_ids", "is_ood")


def pipeline_rows(rows: list[dict]) -> list[dict]:
    """What the pipeline (and a method's fingerprint) sees of each prompt row."""
    return [{**{k: r[k] for k in PIPELINE_KEYS}, "image": r.get("image")} for r in rows]


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


@dataclass
class EvalExamples:
    """What one evaluation scores: in-domain records, OOD records and how they were chosen."""

    test: list = field(default_factory=list)  # QARecord
    ood: list = field(default_factory=list)  # QARecord
    selection: dict[str, Any] = field(default_factory=dict)


def select_eval_examples(
    cfg: RunConfig,
    methods: Sequence[tuple[str, Path | None]] = (),
    *,
    allow_train_overlap: bool = False,
) -> EvalExamples:
    """The evaluation config's test split checked against the adapters' runs (see the module
    docstring), cut to ``eval.max_examples``, and the OOD records; :class:`ConfigError` on bad
    data or a run's training questions among the examples."""
    from uaclm_dist.data import DataError, load_records, split_records
    from uaclm_dist.data.images import check_record_images
    from uaclm_dist.data.run_splits import find_run_split, select_examples
    from uaclm_dist.modeling.families import family_of
    from uaclm_dist.train.parent import ancestry

    takes_images = family_of(cfg.model).image_spec(cfg.model) is not None
    try:
        records = load_records(cfg.data)
        ood = load_records(cfg.data.ood) if cfg.data.ood else []
        check_record_images([*records, *ood], takes_images=takes_images, family=cfg.model.family)
        _, candidates = split_records(records, cfg.data.train_fraction, cfg.data.split_seed)
        runs = {name: find_run_split(name, folder) for name, folder in methods if folder}
        checked = [run for run in runs.values() if run is not None]
        chains = {name: ancestry(run.folder) for name, run in runs.items() if run is not None}
        checked += _ancestor_splits(chains)
        test, selection = select_examples(candidates, checked,
                                          allow_train_overlap=allow_train_overlap)  # fmt: skip
    except DataError as exc:
        raise ConfigError(f"data: {exc}") from exc
    unchecked = [name for name, run in runs.items() if run is None]
    if unchecked:
        print(f"[uaclm] warning: no split_ids.json for {', '.join(unchecked)}: cannot check "
              "that the evaluation examples were held out from their training", flush=True)
    if cfg.eval.max_examples:
        test, ood = test[: cfg.eval.max_examples], ood[: cfg.eval.max_examples]
    selection.update(runs_unchecked=unchecked, eval_max_examples=cfg.eval.max_examples,
                     scored=len(test))  # fmt: skip
    _name_the_chains(selection, chains)
    return EvalExamples(test, ood, selection)


def _ancestor_splits(chains: dict[str, list[dict]]) -> list:
    """The splits of every evaluated run's ancestors (their training questions are held out of
    the evaluation too). A recorded split that cannot be read any more is marked ``missing`` in
    its chain (the method is then listed as parent split unknown)."""
    from uaclm_dist.data.run_splits import find_run_split

    splits = []
    for name, chain in chains.items():
        for depth, parent in enumerate(chain, 1):
            if parent.get("split") != "recorded":
                continue
            folder = parent.get("run_dir")
            found = find_run_split(f"{name} (ancestor {depth})", folder) if folder else None
            if found is None:
                chain[depth - 1] = {**parent, "split": "missing"}
            else:
                splits.append(found)
    return splits


def _name_the_chains(selection: dict, chains: dict[str, list[dict]]) -> None:
    """``selection['chains']``: each two-stage method's ancestors (objective and folder), and
    ``selection['parent_split_unknown']``: methods with an ancestor whose split is unknown (an
    adapter from elsewhere) or missing (its run folder is gone): their test questions may have
    been trained on."""
    def link(parent: dict) -> str:
        folder = parent.get("run_dir") or parent.get("adapter")
        return f"{parent.get('objective') or 'an adapter'} ({folder})"

    named = {name: " <- ".join(map(link, chain)) for name, chain in chains.items() if chain}
    unknown = sorted(name for name, chain in chains.items()
                     if any(p.get("split") != "recorded" for p in chain))  # fmt: skip
    selection.update(chains=named, parent_split_unknown=unknown)
    for name, text in named.items():
        print(f"[uaclm] {name} starts from {text}", flush=True)
    if unknown:
        print(f"[uaclm] warning: {', '.join(unknown)} start(s) from an adapter whose training "
              "split is unknown or no longer readable (parent split unknown): their test "
              "questions may have been trained on", flush=True)  # fmt: skip


def _has_answer(record: Any, fitted: Any) -> bool | None:
    """``context_has_answer`` of the prompt actually shown: False when fitting the context to
    the token budget cut the record's own statement."""
    from uaclm_dist.data import statement

    if record.context_has_answer and fitted.context != record.context:
        return statement(record) in (fitted.context or "")
    return record.context_has_answer


def prompt_rows(cfg: RunConfig, tokenizer, examples: EvalExamples | None = None) -> list[dict]:
    """Test (and OOD) prompts, encoded exactly as training encodes them; ``examples`` default to
    the evaluation config's own test split. Rows carry ``context_has_answer`` when known."""
    from uaclm_dist.data import build_prompt, encode_prompt, fit_context
    from uaclm_dist.data.tokenize import image_placeholder
    from uaclm_dist.modeling.families import family_of

    examples = examples or select_eval_examples(cfg)
    image_spec = family_of(cfg.model).image_spec(cfg.model)
    template = cfg.data.prompt_template
    budget = cfg.data.max_length - cfg.eval.max_new_tokens
    rows = []
    for record, is_ood in [(r, False) for r in examples.test] + [(r, True) for r in examples.ood]:
        fitted, _ = fit_context(record, tokenizer, template=template, max_prompt_tokens=budget,
                                image_spec=image_spec)  # fmt: skip
        if fitted is None:
            continue  # counted below
        prompt = build_prompt(fitted, template, tokenizer, image_placeholder(fitted, image_spec))
        rows.append({
            "id": f"ood:{record.id}" if is_ood else record.id, "question": record.question,
            "references": list(record.answers), "prompt_ids": encode_prompt(prompt, tokenizer,
                                                                            template),
            "is_ood": is_ood, "image": record.image,
        })  # fmt: skip
        if not is_ood and record.context_has_answer is not None:
            rows[-1]["context_has_answer"] = _has_answer(record, fitted)
    if not any(not r["is_ood"] for r in rows):
        raise ConfigError("no test prompt fits data.max_length - eval.max_new_tokens")
    return rows


def with_context_flags(df: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """``df`` with a ``context_has_answer`` column (None for OOD rows) when the rows carry it."""
    flags = {r["id"]: r["context_has_answer"] for r in rows if "context_has_answer" in r}
    if flags:
        df = df.assign(context_has_answer=[flags.get(i) for i in df["id"]])
    return df


def check_eval_dir(path: str | Path) -> Path:
    """The evaluation folder (absolute) if it may be used; :class:`ConfigError` when it holds
    an evaluation or a training run already. Creates nothing."""
    out = Path(path).resolve()
    if (out / "metrics.json").exists():
        raise ConfigError(f"{out} already holds an evaluation; nothing is overwritten (use --out)")
    if (out / "run_info.json").exists():
        raise ConfigError(f"--out {out} holds a training run (run_info.json); nothing there is "
                          "overwritten (use --out with another folder, e.g. its eval/)")
    return out


def prepare_eval_dir(path: str | Path) -> Path:
    out = check_eval_dir(path)
    (out / "per_example").mkdir(parents=True, exist_ok=True)
    return out


def run_evaluation(
    cfg: RunConfig,
    adapters: list[str] | None = None,
    *,
    include_base: bool = False,
    out_dir: str | None = None,
    allow_train_overlap: bool = False,
    baseline: str | None = None,
    pairs: dict[str, str] | None = None,
    verbose: bool = False,
) -> dict:
    """Evaluate ``base`` (if asked) and each adapter spec; returns ``{method: metrics}``.

    With no adapters and no ``include_base`` (``uaclm run``), the run folder's own adapter is
    evaluated next to the base model. ``allow_train_overlap``: score the evaluation config's test
    split even where it holds an adapter run's training questions (contaminated numbers).
    ``baseline``: the method the comparison table takes differences against (default: the first);
    ``pairs``: methods compared with a baseline of their own (``{method: baseline}``, e.g. a
    two-stage run against its control).
    ``verbose``: Ray's and the actors' output on the console rather than in ``OUT/logs/``.
    """
    from uaclm_dist.modeling.families import load_tokenizer_for
    from uaclm_dist.modeling.source import check_attention_kernel, locate_model

    run_folder = Path(cfg.logging.output_dir)
    if not adapters and not include_base:
        adapters, include_base = [f"trained={run_folder}"], True
    methods: list[tuple[str, Path | None]] = [("base", None)] if include_base else []
    methods += [resolve_adapter(a) for a in adapters or []]
    names = [m for m, _ in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"method names must be unique, got {names} (use NAME=PATH)")
    for name in [baseline, *(pairs or {}), *(pairs or {}).values()]:
        if name is not None and name not in names:
            raise ConfigError(f"--baseline: {name} is not one of the evaluated methods {names}")
    locate_model(cfg.model.name_or_path)  # exit 2 within seconds, before any Ray process
    check_attention_kernel(cfg.model.attn_implementation)
    if cfg.eval.clusterer == "nli":
        locate_model(cfg.eval.nli_model_path, key="eval.nli_model_path")
    check_cluster(cfg, "eval")
    check_eval_dir(out_dir or run_folder / "eval")
    examples = select_eval_examples(cfg, methods, allow_train_overlap=allow_train_overlap)
    rows = prompt_rows(cfg, load_tokenizer_for(cfg.model), examples)
    out = check_eval_dir(out_dir or run_folder / "eval")
    fingerprints = _fingerprints(cfg, methods, rows)
    for fingerprint in fingerprints.values():  # a stopped evaluation's finished methods
        finished_method(out, fingerprint)  # refused here, before Ray, if made otherwise
    out = prepare_eval_dir(out)
    in_domain = [r["id"] for r in rows if not r["is_ood"]]
    examples.selection["prompts_fitting"] = len(in_domain)
    (out / "examples.json").write_text(json.dumps({**examples.selection, "ids": in_domain},
                                                  indent=2))  # fmt: skip
    print(f"[uaclm] in-domain examples: {len(in_domain)} ({examples.selection['rule']}); ids in "
          f"{out / 'examples.json'}", flush=True)  # fmt: skip
    protocol = {**cfg.eval.model_dump(), "prompt_template": cfg.data.prompt_template,
                "examples": examples.selection,
                "methods": {n: str(a) if a else "base model" for n, a in methods}}  # fmt: skip
    per_method = _generate(cfg, fingerprints, methods, rows, out, verbose=verbose)
    metrics = _score_methods(cfg, per_method, out, protocol, baseline=baseline or names[0],
                             pairs=pairs or {})  # fmt: skip
    (out / STOPPED_FILE).unlink(missing_ok=True)  # an earlier stop of this evaluation is over
    return metrics


def _fingerprints(cfg: RunConfig, methods: list[tuple[str, Path | None]],
                  rows: list[dict]) -> dict[str, dict]:  # fmt: skip
    """``{method: fingerprint}`` of what each method's per-example results depend on."""
    rows_seen = pipeline_rows(rows)
    model, settings = cfg.model.model_dump(mode="json"), cfg.eval.model_dump(mode="json")
    return {name: method_fingerprint(name, adapter, model=model, eval_settings=settings,
                                     seed=cfg.optim.seed, prompt_rows=rows_seen)
            for name, adapter in methods}  # fmt: skip


def _generate(cfg: RunConfig, fingerprints: dict[str, dict],
              methods: list[tuple[str, Path | None]], rows: list[dict], out: Path, *,
              verbose: bool = False) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Run the pipeline per method inside one Ray session, one progress bar per method over the
    prompts; writes and returns the per-example frames ``{method: frame}``. A method finished by
    an earlier, stopped run of the same evaluation is read back instead.

    A stop signal (:class:`~uaclm_dist.evaluate.stopping.StopSignals`) abandons the method being
    generated when its next batch of results arrives, writes ``out/stopped.json`` and raises
    :class:`~uaclm_dist.evaluate.stopping.EvaluationStopped` (exit 75).

    Unless ``verbose``, the driver's output meanwhile (Ray's logging and progress blocks, the
    actors' output it forwards, the core worker's error line about Ray Data's restartable
    actors - their constructor arguments live in the object store, harmless here: see
    ray-project/ray#53727) goes to ``out/logs/driver.log`` (:mod:`uaclm_dist.console`).
    """
    from tqdm import tqdm

    from uaclm_dist.cluster import ray_session
    from uaclm_dist.console import LOG_DIR, driver_output
    from uaclm_dist.evaluate.pipeline import run_pipeline

    per_method: dict[str, pd.DataFrame] = {}
    for name, _ in methods:
        parquet = finished_method(out, fingerprints[name])
        if parquet is not None:
            print(f"[uaclm] eval {name}: reusing {parquet} (finished before a stop)", flush=True)
            per_method[name] = pd.read_parquet(parquet)
    todo = [(name, adapter) for name, adapter in methods if name not in per_method]
    if not todo:
        return {name: per_method[name] for name, _ in methods}
    rows_seen = pipeline_rows(rows)
    with driver_output(out / LOG_DIR, verbose) as terminal, \
            ray_session(cfg, quiet=not verbose), StopSignals() as stop:  # fmt: skip
        for name, adapter in todo:
            try:
                stop.raise_if_requested()
                with tqdm(total=len(rows), desc=f"eval {name}", unit="prompt", file=terminal,
                          dynamic_ncols=True) as bar:  # fmt: skip
                    df = run_pipeline(rows_seen, model_cfg=cfg.model,
                                      adapter_dir=str(adapter) if adapter else None,
                                      eval_cfg=cfg.eval, seed=cfg.optim.seed,
                                      on_rows=bar.update,
                                      should_stop=stop.raise_if_requested)  # fmt: skip
                df = with_context_flags(df, rows)
                write_method(out, fingerprints[name], df)
            except EvaluationStopped as exc:
                remaining = [n for n, _ in todo if n not in per_method]
                _write_stopped(out, f"{exc}; abandoned method {name!r}", finished=list(per_method),
                               remaining=remaining)  # fmt: skip
                raise EvaluationStopped(
                    f"{exc}; abandoned method {name!r}; finished methods kept in "
                    f"{out / 'per_example'} ({', '.join(per_method) or 'none'}); run the same "
                    "command again to generate the rest") from None  # fmt: skip
            per_method[name] = df
    return {name: per_method[name] for name, _ in methods}


def _write_stopped(out: Path, reason: str, *, finished: list[str],
                   remaining: list[str]) -> None:  # fmt: skip
    (out / STOPPED_FILE).write_text(json.dumps({
        "reason": reason, "finished_methods": finished, "remaining_methods": remaining,
        "resume": "run the same uaclm eval command again (same --out): finished methods are "
                  "reused when their settings match",
    }, indent=2))  # fmt: skip


def _score_methods(cfg: RunConfig, per_method: dict[str, pd.DataFrame], out: Path,
                   protocol: dict, *, baseline: str, pairs: dict[str, str]) -> dict:  # fmt: skip
    """Metrics per method, the comparison with ``baseline`` (``pairs``: methods with their own)
    and the report (driver only, after
    Ray: their warnings reach the console); returns ``{method: metrics}``."""
    from uaclm_dist.evaluate.compare import compare_methods
    from uaclm_dist.evaluate.report import write_report
    from uaclm_dist.evaluate.summary import compute_metrics, to_jsonable

    scores = list(cfg.eval.scores)
    threshold = cfg.eval.correctness_threshold
    metrics = {name: compute_metrics(df, scores, threshold, cfg.eval.bootstrap_samples,
                                     seed=cfg.optim.seed)
               for name, df in per_method.items()}  # fmt: skip
    comparison = compare_methods(per_method, scores, baseline=baseline, pairs=pairs,
                                 threshold=threshold, n_bootstrap=cfg.eval.bootstrap_samples,
                                 seed=cfg.optim.seed)  # fmt: skip
    (out / "comparison.md").write_text(comparison.to_markdown() + "\n")
    (out / "comparison.json").write_text(json.dumps(to_jsonable(comparison.to_dict()), indent=2))
    report = write_report(out, per_method, metrics, comparison, protocol=protocol, scores=scores)
    # Last and by rename: metrics.json in place marks a complete evaluation (check_eval_dir).
    partial = out / "metrics.json.partial"
    partial.write_text(json.dumps(to_jsonable(metrics), indent=2))
    os.replace(partial, out / "metrics.json")
    print(f"\nreport: {report}\n")
    print(comparison.to_markdown())
    return metrics
