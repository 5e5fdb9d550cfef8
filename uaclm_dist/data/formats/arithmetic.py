"""Arithmetic questions (generated): an out-of-domain prompt set that needs no files.

No real question set outside the demos' domains (Wikipedia facts, shape images) can be installed
offline with enough distinct questions: easy-VQA's 48k questions use 107 distinct texts. These
questions are short, closed book and about numbers, clearly unlike a FanOutQA question with its
retrieved context; being templated, they are also easy to tell apart by surface features, so the
report's length-only baseline is the number an uncertainty score must beat on them.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from uaclm_dist.data.formats.registry import DATA_FORMATS, DataFormat
from uaclm_dist.data.records import DataError, QARecord

__all__ = ["ARITHMETIC_SEED", "ARITHMETIC_SIZE", "read_arithmetic"]

#: How many questions the format holds (``data.ood.max_examples`` keeps a prefix).
ARITHMETIC_SIZE = 500
#: The seed of the draws: fixed, so every run and every machine sees the same questions.
ARITHMETIC_SEED = 0

def _sum(r: random.Random) -> tuple[str, int]:
    a, b = r.randint(10, 999), r.randint(10, 999)
    return f"What is {a} plus {b}?", a + b


def _difference(r: random.Random) -> tuple[str, int]:
    a, b = sorted((r.randint(10, 999), r.randint(10, 999)), reverse=True)
    return f"What is {a} minus {b}?", a - b


def _product(r: random.Random) -> tuple[str, int]:
    a, b = r.randint(2, 99), r.randint(2, 12)
    return f"What is {a} times {b}?", a * b


def _minutes(r: random.Random) -> tuple[str, int]:
    hours = r.randint(2, 99)
    return f"How many minutes are there in {hours} hours?", 60 * hours


def _days(r: random.Random) -> tuple[str, int]:
    weeks = r.randint(2, 99)
    return f"How many days are there in {weeks} weeks?", 7 * weeks


def _half(r: random.Random) -> tuple[str, int]:
    k = r.randint(6, 999)
    return f"What is half of {2 * k}?", k


# Each template draws its numbers from the generator and returns (question, answer).
_TEMPLATES: tuple[Callable[[random.Random], tuple[str, int]], ...] = (
    _sum, _difference, _product, _minutes, _days, _half,
)


def read_arithmetic(path: str | Path | None = None, stats: Counter | None = None) -> list[QARecord]:
    """:data:`ARITHMETIC_SIZE` distinct arithmetic questions, the same on every call.

    Records: id ``"arith-<i>"``, a question such as ``"What is 417 plus 286?"``, one answer (the
    number as decimal digits), no context, no image. Templates take turns (sums, differences,
    products, hours to minutes, weeks to days, halves), so any prefix mixes them.

    Args:
        path: must be None: the questions are generated, there is no file to read.
    """
    if path is not None:
        raise DataError(f"format 'arithmetic' is generated and reads no files; got {path} "
                        "(leave data.ood.paths empty)")
    rng = random.Random(ARITHMETIC_SEED)
    seen: set[str] = set()
    records: list[QARecord] = []
    while len(records) < ARITHMETIC_SIZE:
        question, answer = _TEMPLATES[len(records) % len(_TEMPLATES)](rng)
        if question in seen:
            continue
        seen.add(question)
        records.append(QARecord(id=f"arith-{len(records)}", question=question,
                                answers=(str(answer),), source="arithmetic:generated"))
    return records


DATA_FORMATS.register(DataFormat("arithmetic", read_arithmetic, suffixes=None, packaged=True))
