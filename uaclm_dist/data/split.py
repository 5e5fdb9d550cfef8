"""The paper's random train / test split over QA pairs (20% fine-tuning, 80% test).

The split depends only on the set of record ids and the seed, not on the order the records come
in: ids are sorted, shuffled with ``random.Random(seed)`` (stable across Python versions), and the
first ``round(train_fraction * n)`` shuffled ids form the training set. Both halves keep the
input order. CoQA is split over QA pairs like the paper, so turns of one story (which share the
story as context) can land on both sides.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from uaclm_dist.data.records import QARecord, check_unique_ids

__all__ = ["split_records"]


def split_records(
    records: Sequence[QARecord], train_fraction: float, seed: int
) -> tuple[list[QARecord], list[QARecord]]:
    """``(train, test)``: a seeded random ``train_fraction`` of the records and the rest.

    With two or more records each side gets at least one. Ids must be unique.
    """
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    check_unique_ids(records)
    n = len(records)
    n_train = round(train_fraction * n)
    if n >= 2:
        n_train = min(max(n_train, 1), n - 1)
    ids = sorted(r.id for r in records)
    random.Random(seed).shuffle(ids)
    train_ids = set(ids[:n_train])
    train = [r for r in records if r.id in train_ids]
    test = [r for r in records if r.id not in train_ids]
    return train, test
