"""Open book with retrieval misses (``data.context: retrieved``): a simulated retriever's context.

Each question gets a context of ``k`` answer-bearing statements, as a retrieval-augmented
system would show it: its own statement with probability ``1 - miss_rate`` and statements of
other questions of the dataset for the rest, in a shuffled order. When retrieval "missed", the
answer is not in the context and a model can only guess: the errors uncertainty must flag.

A question's statement is the question followed by its first reference answer
(``"What is the batting hand of Pat Burrell? Right."``): the packaged FanOutQA has no evidence
text (its ``evidence`` fields name a Wikipedia page, no passage), so no declarative sentence can
be built faithfully. Rules, all seeded and reproducible:

- Each question's draws use its own ``random.Random`` seeded with ``(seed, id)``: whether its
  statement is included does not depend on the other records, their order or the split.
- Other questions are candidates in id order (never file order), and a candidate is skipped when
  its statement contains one of the question's reference answers as a whole word (case-
  insensitive), so a missed context never holds the answer verbatim. When too few candidates are
  left, the context is shorter than ``k`` (counted in :class:`ContextReport`).
- With ``train_ids``, a training question's context draws only from other training questions,
  so no test question's statement (its answer) is ever in a training sequence; a test question
  draws from all questions.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from uaclm_dist.data.records import DataError, QARecord

__all__ = ["ContextReport", "RetrievedContext", "add_retrieved_context", "draw_contexts",
           "mentions_answer", "statement"]  # fmt: skip

#: Candidates looked at per context before falling back to a scan of the whole pool.
_CANDIDATES_PER_STATEMENT = 8


def statement(record: QARecord) -> str:
    """The answer-bearing statement of ``record``: its question, then ``answers[0]`` (with a
    final period unless the answer ends in punctuation)."""
    question = record.question.strip()
    if question[-1] not in "?.!":
        question += "?"
    answer = record.answers[0].strip()
    return f"{question} {answer}" + ("" if answer[-1] in ".!?" else ".")


def mentions_answer(text: str, record: QARecord) -> bool:
    """Whether ``text`` contains one of ``record``'s reference answers as a whole word
    (case-insensitive; "Right" matches "right." but not "Bright")."""
    return any(
        re.search(rf"(?<!\w){re.escape(answer.strip())}(?!\w)", text, flags=re.IGNORECASE)
        for answer in record.answers
    )


@dataclass(frozen=True)
class RetrievedContext:
    """One question's retrieved context: the ids whose statements form it, in context order,
    and whether the question's own statement is among them."""

    ids: tuple[str, ...]
    has_answer: bool


@dataclass(frozen=True)
class ContextReport:
    """Counts over the records given a context."""

    n_records: int
    n_with_answer: int
    n_short: int  # contexts with fewer than k statements (too few eligible other questions)


def _eligible(record: QARecord, pool: Sequence[QARecord], order: Sequence[int], n: int) -> list:
    """The first ``n`` records of ``pool[order]`` other than ``record`` whose statement does not
    mention ``record``'s answers."""
    chosen: list[QARecord] = []
    for i in order:
        if len(chosen) == n:
            break
        other = pool[i]
        if other.id != record.id and not mentions_answer(statement(other), record):
            chosen.append(other)
    return chosen


def _others(
    record: QARecord, pool: Sequence[QARecord], n: int, rng: random.Random
) -> list[QARecord]:
    """Up to ``n`` eligible records of ``pool`` (see :func:`_eligible`) drawn at random: among a
    few random candidates first, then among the rest of the pool if those were not enough."""
    candidates = rng.sample(range(len(pool)), min(len(pool), n * _CANDIDATES_PER_STATEMENT))
    chosen = _eligible(record, pool, candidates, n)
    if len(chosen) < n and len(candidates) < len(pool):
        seen = set(candidates)
        rest = [i for i in range(len(pool)) if i not in seen]
        rng.shuffle(rest)
        chosen += _eligible(record, pool, rest, n - len(chosen))
    return chosen


def draw_contexts(
    records: Sequence[QARecord],
    *,
    k: int,
    miss_rate: float,
    seed: int,
    train_ids: Collection[str] | None = None,
) -> dict[str, RetrievedContext]:
    """``{id: RetrievedContext}`` for every record (see the module docstring for the rules).

    Args:
        k: statements per context (>= 1).
        miss_rate: probability that a question's own statement is left out, in [0, 1).
        seed: the draws' seed (``data.context_seed``).
        train_ids: ids of the training split (None: every question draws from all of them).
    """
    if k < 1 or not 0 <= miss_rate < 1:
        raise ValueError(f"need k >= 1 and 0 <= miss_rate < 1, got k={k}, miss_rate={miss_rate}")
    everyone = sorted(records, key=lambda r: r.id)
    train = set(train_ids or ())
    train_pool = [r for r in everyone if r.id in train]
    contexts: dict[str, RetrievedContext] = {}
    for record in records:
        rng = random.Random(f"{seed}/{record.id}")
        has_answer = rng.random() >= miss_rate
        pool = train_pool if record.id in train else everyone
        picked = _others(record, pool, k - has_answer, rng)
        ids = [r.id for r in picked] + ([record.id] if has_answer else [])
        rng.shuffle(ids)
        contexts[record.id] = RetrievedContext(tuple(ids), has_answer)
    return contexts


def add_retrieved_context(
    records: Sequence[QARecord],
    *,
    k: int,
    miss_rate: float,
    seed: int,
    train_ids: Collection[str] | None = None,
) -> tuple[list[QARecord], ContextReport]:
    """The records (same order) with ``context`` = their statements joined by spaces and
    ``context_has_answer`` set, and the counts. Records must have no context of their own."""
    with_context = [r.id for r in records if r.context]
    if with_context:
        raise DataError(f"data.context 'retrieved' needs closed-book records; {len(with_context)}"
                        f" already have a context (e.g. id {with_context[0]!r})")
    contexts = draw_contexts(records, k=k, miss_rate=miss_rate, seed=seed, train_ids=train_ids)
    texts = {r.id: statement(r) for r in records}
    out = [
        dataclasses.replace(r, context=" ".join(texts[i] for i in contexts[r.id].ids) or None,
                            context_has_answer=contexts[r.id].has_answer)
        for r in records
    ]  # fmt: skip
    report = ContextReport(
        n_records=len(out),
        n_with_answer=sum(c.has_answer for c in contexts.values()),
        n_short=sum(len(c.ids) < k for c in contexts.values()),
    )
    return out, report
