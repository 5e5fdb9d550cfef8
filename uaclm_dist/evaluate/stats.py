"""The per-example statistics record that generation produces once and every scorer reads.

Contract for the generator (what the token lists hold)
------------------------------------------------------
- Log-probabilities and entropies come from the **raw, untempered** logits (temperature 1, full
  vocabulary, natural log), also for the samples drawn at temperature 0.3: the sampling temperature
  only chooses the tokens, it does not rescale their scored probabilities.
- One entry per generated token, **including the terminating EOS token** when generation stopped on
  it (and nothing after it: no padding). So an empty answer text is still scored: by the model's
  confidence in stopping at once. A token list is empty only if nothing was generated at all, which
  the scorers reject with a ``ValueError`` naming the example.
- ``cluster_ids[i]`` is the semantic cluster of ``sample_texts[i]`` (0-based, first-seen order),
  filled in by a :mod:`~uaclm_dist.evaluate.clustering` clusterer; ``None`` until then.

Parquet: :meth:`ExampleStats.to_row` gives a flat dict whose list fields stay Python lists (arrow
list columns); :meth:`ExampleStats.from_row` accepts such a dict or a pandas row read back from
parquet, where list columns come back as numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values]


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, float) and np.isnan(value)


@dataclass
class ExampleStats:
    """Everything the uncertainty scores and correctness need for one prompt.

    Attributes:
        id: example id (unique within a test set; the join key across methods).
        question: the question text (the clusterers may prepend it to answers).
        references: reference answers (at least one).
        greedy_text: the scored answer (greedy decoding), decoded, special tokens stripped.
        greedy_token_logprobs: ``[T]`` log p (nats) of each generated token of the greedy answer.
        greedy_token_entropies: ``[T]`` full-vocab entropy (nats) at each of those positions.
        sample_texts: ``[N]`` stochastic answers (N = eval.num_samples, temperature 0.3).
        sample_token_logprobs: ``[N][T_i]`` untempered token log p of each sample.
        cluster_ids: ``[N]`` semantic cluster of each sample, or ``None`` before clustering.
        is_ood: True for out-of-distribution prompts (e.g. BioASQ in a CoQA run).
    """

    id: str
    question: str
    references: list[str]
    greedy_text: str
    greedy_token_logprobs: list[float]
    greedy_token_entropies: list[float]
    sample_texts: list[str]
    sample_token_logprobs: list[list[float]]
    cluster_ids: list[int] | None = None
    is_ood: bool = False

    def __post_init__(self) -> None:
        self.id = str(self.id)
        self.references = [str(r) for r in self.references]
        self.greedy_token_logprobs = _floats(self.greedy_token_logprobs)
        self.greedy_token_entropies = _floats(self.greedy_token_entropies)
        self.sample_texts = [str(t) for t in self.sample_texts]
        self.sample_token_logprobs = [_floats(lp) for lp in self.sample_token_logprobs]
        if _is_missing(self.cluster_ids):
            self.cluster_ids = None
        else:
            self.cluster_ids = [int(c) for c in self.cluster_ids]
        self.is_ood = bool(self.is_ood)
        problems = []
        if len(self.greedy_token_logprobs) != len(self.greedy_token_entropies):
            problems.append(
                f"greedy_token_logprobs has {len(self.greedy_token_logprobs)} entries but "
                f"greedy_token_entropies has {len(self.greedy_token_entropies)}"
            )
        if len(self.sample_texts) != len(self.sample_token_logprobs):
            problems.append(
                f"{len(self.sample_texts)} sample_texts but "
                f"{len(self.sample_token_logprobs)} sample_token_logprobs"
            )
        if self.cluster_ids is not None and len(self.cluster_ids) != len(self.sample_texts):
            problems.append(
                f"{len(self.cluster_ids)} cluster_ids for {len(self.sample_texts)} samples"
            )
        if problems:
            raise ValueError(f"example {self.id!r}: " + "; ".join(problems))

    @property
    def num_samples(self) -> int:
        """N, the number of stochastic samples."""
        return len(self.sample_texts)

    def to_row(self) -> dict[str, Any]:
        """A flat dict for a parquet/arrow row (list fields as Python lists)."""
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ExampleStats:
        """Inverse of :meth:`to_row`; extra keys (e.g. score columns) are ignored.

        Accepts numpy arrays for list fields (what pandas gives for parquet list columns).
        """
        names = {f.name for f in fields(cls)}
        kwargs = {k: row[k] for k in names if k in row}
        for key in ("references", "sample_texts"):
            if key in kwargs:
                kwargs[key] = list(kwargs[key])
        return cls(**kwargs)
