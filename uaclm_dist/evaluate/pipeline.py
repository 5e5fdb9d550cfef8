"""The Ray Data evaluation pipeline: prompts -> generation actors -> clustering -> scores.

    ray.data.from_items(prompt rows)
      .map_batches(GenerationStage)   actor pool: base model + adapter loaded once per actor;
                                      greedy + K samples with token log p and entropies (image
                                      rows: their pixels in the shared prefill)
      .map_batches(ClusteringStage)   actor: semantic clusters of each prompt's samples (only
                                      when a configured score ``needs_clusters``)
      .iter_batches()                 the per-example statistics, on the driver (a progress
                                      callback hears of each batch as it arrives)
    score_frame(...)                  driver: ROUGE-L correctness and the configured scores

Every stage is a small function of the previous stage's columns; generation runs once and all
scores are recomputable from the per-example statistics that are written to parquet. Scores are
computed on the driver, from the :data:`~.scores.SCORES` registry of the driver's process: a score
registered there (an extension, a test) is all it takes, nothing has to reach the Ray workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from uaclm_dist.evaluate.stats import ExampleStats

if TYPE_CHECKING:
    from uaclm_dist.config import EvalConfig, ModelConfig
    from uaclm_dist.evaluate.generation import GenerationSettings


def _rows(batch: pd.DataFrame) -> list[dict[str, Any]]:
    return batch.to_dict("records")


class GenerationStage:
    """Ray Data actor: loads the model once, turns prompt rows into ExampleStats rows."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        adapter_dir: str | None,
        settings: GenerationSettings,
        threads: int,
    ):
        import torch

        from uaclm_dist.evaluate.generation import load_generation_model
        from uaclm_dist.modeling.families import family_of, load_tokenizer_for

        torch.set_num_threads(max(1, threads))
        self.tokenizer = load_tokenizer_for(model_cfg)
        self.image_spec = family_of(model_cfg).image_spec(model_cfg)
        device = torch.device("cuda", 0) if torch.cuda.is_available() else None
        # settings.seed is the run's optim.seed: also the init seed of a random base (tiny-llama)
        self.model = load_generation_model(model_cfg, adapter_dir, seed=settings.seed,
                                           device=device)  # fmt: skip
        self.settings = settings

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from uaclm_dist.evaluate.generation import example_stats
        from uaclm_dist.faults import kill_generation_actor_once

        kill_generation_actor_once()  # fault injection for the tests; off unless its env is set
        stats = example_stats(self.model, self.tokenizer, _rows(batch), self.settings,
                              self.image_spec)  # fmt: skip
        return pd.DataFrame([s.to_row() for s in stats])


class ClusteringStage:
    """Ray Data actor: semantic cluster ids of each example's samples."""

    def __init__(self, eval_cfg: EvalConfig):
        from uaclm_dist.evaluate.clustering import build_clusterer

        self.clusterer = build_clusterer(eval_cfg)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from uaclm_dist.evaluate.clustering import assign_clusters

        stats = [assign_clusters(ExampleStats.from_row(r), self.clusterer) for r in _rows(batch)]
        return pd.DataFrame([s.to_row() for s in stats])


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


def generation_settings(eval_cfg: EvalConfig, seed: int) -> GenerationSettings:
    """The generation actors' plain, frozen settings from the typed ``eval`` section."""
    from uaclm_dist.evaluate.generation import GenerationSettings

    return GenerationSettings(
        num_samples=eval_cfg.num_samples,
        temperature=eval_cfg.temperature,
        max_new_tokens=eval_cfg.max_new_tokens,
        seed=seed,
        top_k=eval_cfg.top_k,
        decoder=eval_cfg.decoder,
    )


def _collect(ds: Any, on_rows: Callable[[int], Any] | None,
             should_stop: Callable[[], None] | None = None) -> pd.DataFrame:  # fmt: skip
    """The dataset's rows as one frame, reporting each batch's size to ``on_rows`` on arrival;
    ``should_stop`` is called after each batch and may raise to abandon the dataset."""
    frames = []
    for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
        frames.append(batch)
        if on_rows is not None:
            on_rows(len(batch))
        if should_stop is not None:
            should_stop()
    return pd.concat(frames, ignore_index=True) if frames else ds.to_pandas()


def run_pipeline(
    prompt_rows: list[dict], *, model_cfg: ModelConfig, adapter_dir: str | None,
    eval_cfg: EvalConfig, seed: int = 0, on_rows: Callable[[int], Any] | None = None,
    should_stop: Callable[[], None] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Evaluate one model (base + optional adapter) on ``prompt_rows`` with Ray Data.

    Args:
        prompt_rows: dicts ``id, question, references, prompt_ids, is_ood, image`` (``image``:
            a path for a vision-language model's image rows, else None).
        model_cfg, eval_cfg: the ``model`` and ``eval`` sections of the run's config.
        seed: sampling seed (the run's ``optim.seed``).
        on_rows: called with the number of examples of each finished batch (a progress bar's
            ``update``).
        should_stop: called after each batch; raising from it abandons the run (nothing is
            returned, nothing written).

    Returns:
        one row per example, in ``prompt_rows`` order: correctness, the ``eval.scores`` and the
        raw statistics (see :func:`~.frame.score_frame`).
    """
    import ray

    from uaclm_dist.evaluate.frame import score_frame
    from uaclm_dist.evaluate.scores import scores_needing_clusters

    cpus = eval_cfg.cpus_per_actor
    ds = ray.data.from_items(prompt_rows)
    ds = ds.map_batches(
        GenerationStage,
        fn_constructor_kwargs=dict(model_cfg=model_cfg, adapter_dir=adapter_dir,
                                   settings=generation_settings(eval_cfg, seed),
                                   threads=int(max(1, cpus))),
        batch_size=eval_cfg.batch_size, batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=eval_cfg.num_generation_actors), num_cpus=cpus,
        num_gpus=eval_cfg.gpus_per_actor,
    )  # fmt: skip
    if scores_needing_clusters(eval_cfg.scores):
        # Light next to generation (a MiniLM encoder on short answers): no reserved CPU, so it
        # can run beside the generation actors on a small machine. Batches of the generation's
        # size, so rows reach the driver (and its progress bar) as they are generated: with a
        # larger batch Ray Data holds them back until that many have accumulated.
        ds = ds.map_batches(
            ClusteringStage, fn_constructor_kwargs=dict(eval_cfg=eval_cfg),
            batch_size=eval_cfg.batch_size,
            batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0,
        )  # fmt: skip
    stats = _collect(ds, on_rows, should_stop)
    check_each_id_once([str(r["id"]) for r in prompt_rows], stats)
    order = {str(r["id"]): i for i, r in enumerate(prompt_rows)}
    stats = stats.sort_values("id", key=lambda s: s.map(order)).reset_index(drop=True)
    return score_frame(stats, eval_cfg.scores, eval_cfg.correctness_threshold)
