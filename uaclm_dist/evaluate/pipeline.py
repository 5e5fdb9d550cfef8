"""The Ray Data evaluation pipeline: prompts -> generation actors -> clustering -> scores.

    ray.data.from_items(prompt rows)
      .map_batches(GenerationStage)   actor pool: base model + adapter loaded once per actor;
                                      greedy + K samples with token log p and entropies
      .map_batches(ClusteringStage)   actor: semantic clusters of each prompt's samples
      .map_batches(score_batch)       pure: TE/PPL/PE/SE/DSE/length, ROUGE-L correctness

Every stage is a small function of the previous stage's columns; generation runs once and all
scores are recomputable from the per-example statistics that are written to parquet.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from uaclm_dist.evaluate.stats import ExampleStats


def _rows(batch: pd.DataFrame) -> list[dict[str, Any]]:
    return batch.to_dict("records")


class GenerationStage:
    """Ray Data actor: loads the model once, turns prompt rows into ExampleStats rows."""

    def __init__(self, model_cfg: dict, adapter_dir: str | None, settings: dict, threads: int):
        import torch

        from uaclm_dist.config import ModelConfig
        from uaclm_dist.evaluate.generation import GenerationSettings, load_generation_model
        from uaclm_dist.modeling.loading import load_tokenizer

        torch.set_num_threads(max(1, threads))
        cfg = ModelConfig.model_validate(model_cfg)
        self.tokenizer = load_tokenizer(cfg.name_or_path)
        device = torch.device("cuda", 0) if torch.cuda.is_available() else None
        self.model = load_generation_model(cfg, adapter_dir, device=device)
        self.settings = GenerationSettings(**settings)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from uaclm_dist.evaluate.generation import example_stats

        stats = example_stats(self.model, self.tokenizer, _rows(batch), self.settings)
        return pd.DataFrame([s.to_row() for s in stats])


class ClusteringStage:
    """Ray Data actor: semantic cluster ids of each example's samples."""

    def __init__(self, eval_cfg: dict):
        from uaclm_dist.evaluate.clustering import build_clusterer

        self.clusterer = build_clusterer(eval_cfg)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from uaclm_dist.evaluate.clustering import assign_clusters

        stats = [assign_clusters(ExampleStats.from_row(r), self.clusterer) for r in _rows(batch)]
        return pd.DataFrame([s.to_row() for s in stats])


def score_batch(batch: pd.DataFrame, score_names: list[str], threshold: float) -> pd.DataFrame:
    """Per-example statistics + correctness + uncertainty scores (one row per example)."""
    from uaclm_dist.evaluate.metrics import example_frame

    stats = [ExampleStats.from_row(r) for r in _rows(batch)]
    scored = example_frame(stats, score_names, threshold)
    raw = pd.DataFrame([s.to_row() for s in stats])
    raw = raw[["id", *(c for c in raw.columns if c not in scored.columns)]]
    return scored.merge(raw, on="id", how="left", validate="one_to_one")


def check_each_id_once(expected_ids: list[str], df: pd.DataFrame) -> None:
    """The pipeline's contract: every input id comes out exactly once."""
    counts = df["id"].value_counts()
    duplicated = counts[counts > 1].index.tolist()
    missing = sorted(set(expected_ids) - set(counts.index))
    extra = sorted(set(counts.index) - set(expected_ids))
    if duplicated or missing or extra:
        raise RuntimeError(
            f"evaluation pipeline lost or duplicated examples: missing {missing[:5]}, "
            f"duplicated {duplicated[:5]}, unexpected {extra[:5]}"
        )


def run_pipeline(
    prompt_rows: list[dict], *, model_cfg: dict, adapter_dir: str | None, eval_cfg: dict,
    seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """Evaluate one model (base + optional adapter) on ``prompt_rows`` with Ray Data.

    Args:
        prompt_rows: dicts ``id, question, references, prompt_ids, is_ood``.
        model_cfg, eval_cfg: ``RunConfig.model`` / ``RunConfig.eval`` as dicts.

    Returns:
        one row per example: scores, correctness and the raw statistics (see :mod:`.stats`).
    """
    import ray

    actors = eval_cfg["num_generation_actors"]
    cpus = eval_cfg.get("cpus_per_actor", 1)
    settings = dict(num_samples=eval_cfg["num_samples"], temperature=eval_cfg["temperature"],
                    max_new_tokens=eval_cfg["max_new_tokens"], seed=seed,
                    top_k=eval_cfg.get("top_k", 0),
                    decoder=eval_cfg.get("decoder", "shared_prefill"))  # fmt: skip
    ds = ray.data.from_items(prompt_rows)
    ds = ds.map_batches(
        GenerationStage,
        fn_constructor_kwargs=dict(model_cfg=model_cfg, adapter_dir=adapter_dir,
                                   settings=settings, threads=int(max(1, cpus))),
        batch_size=eval_cfg["batch_size"], batch_format="pandas", concurrency=actors,
        num_cpus=cpus, num_gpus=eval_cfg.get("gpus_per_actor", 0),
    )  # fmt: skip
    needs_clusters = bool({"se", "dse"} & set(eval_cfg["scores"]))
    if needs_clusters:
        # Light next to generation (a MiniLM encoder on short answers): no reserved CPU, so it
        # can run beside the generation actors on a small machine.
        ds = ds.map_batches(
            ClusteringStage, fn_constructor_kwargs=dict(eval_cfg=eval_cfg), batch_size=64,
            batch_format="pandas", concurrency=1, num_cpus=0,
        )  # fmt: skip
    ds = ds.map_batches(
        score_batch,
        fn_kwargs=dict(score_names=list(eval_cfg["scores"]),
                       threshold=eval_cfg["correctness_threshold"]),
        batch_format="pandas", num_cpus=0,
    )  # fmt: skip
    df = ds.to_pandas()
    check_each_id_once([str(r["id"]) for r in prompt_rows], df)
    order = {str(r["id"]): i for i, r in enumerate(prompt_rows)}
    return df.sort_values("id", key=lambda s: s.map(order)).reset_index(drop=True)
