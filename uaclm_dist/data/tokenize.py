"""Records -> token ids and labels for causal-LM fine-tuning, and right-padded batches.

One example is ``prompt tokens + answer tokens + EOS``:

- ``labels`` are NOT shifted: ``labels[t] == input_ids[t]`` where supervised, ``-100`` elsewhere;
  the trainer shifts (``uaclm_dist.losses.reference.shift_for_causal_lm``).
  ``loss_on="all"`` supervises every token (the paper); ``"answer"`` masks the prompt.
- The prompt tokens are exactly what generation feeds the model (:func:`encode_prompt`); the
  answer tokens are the continuation of the tokenized ``prompt + target`` text, so training sees
  the tokens the model would generate.
- Image records (vision-language models, ``image_spec`` given): the prompt opens with the
  model's image placeholder tokens (:func:`~uaclm_dist.data.prompts.build_prompt`); their labels
  are always ``-100`` (nothing to predict there); :func:`collate` adds ``pixel_values`` for the
  rows that have an image. Placeholders are never cut: a row that does not fit is dropped.
- Too long for ``max_length``: the CONTEXT is cut from its start, keeping the part nearest the
  question (for CoQA the latest conversation turns, which the question most often refers to);
  the instruction, question, answer and EOS are never cut. If even the prompt without any
  context does not fit, the example is dropped (and reported).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from uaclm_dist.data.prompts import Template, build_prompt, target_text
from uaclm_dist.data.records import QARecord
from uaclm_dist.losses.constants import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

    from uaclm_dist.modeling.images import ImageSpec

__all__ = [
    "IGNORE_INDEX",
    "TokenizeReport",
    "TokenizedExample",
    "collate",
    "encode_example",
    "encode_prompt",
    "fit_context",
    "image_placeholder",
    "tokenize_record",
    "tokenize_records",
]

logger = logging.getLogger(__name__)

LossOn = Literal["all", "answer"]


@dataclass(frozen=True)
class TokenizedExample:
    """One training sequence of length ``T`` (unpadded).

    Attributes:
        id: the record id.
        input_ids: ``[T]`` prompt tokens, answer tokens, EOS.
        labels: ``[T]`` equal to ``input_ids`` where supervised, ``-100`` elsewhere (unshifted).
        attention_mask: ``[T]`` all ones (padding is added by :func:`collate`).
        prompt_length: number of prompt tokens; the answer starts at this index.
        context_cut: whether the context was shortened to fit ``max_length``.
        image: the record's image file (its placeholder tokens are in ``input_ids``), or None.
    """

    id: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    attention_mask: tuple[int, ...]
    prompt_length: int
    context_cut: bool = False
    image: str | None = None


@dataclass(frozen=True)
class TokenizeReport:
    """What :func:`tokenize_records` did: ``n_in == n_kept + n_dropped``; ``n_context_cut`` of
    the kept examples had their context shortened; ``dropped_ids`` did not fit at all."""

    n_in: int
    n_kept: int
    n_context_cut: int
    n_dropped: int
    dropped_ids: tuple[str, ...]


def encode_prompt(prompt: str, tokenizer: Any, template: Template) -> list[int]:
    """Token ids of a prompt text, as both training and generation must encode it: the paper
    template gets the tokenizer's usual special tokens (e.g. Llama's BOS); a chat-template text
    already contains its special tokens, so none are added."""
    return list(tokenizer(prompt, add_special_tokens=template == "paper")["input_ids"])


def image_placeholder(record: QARecord, image_spec: ImageSpec | None) -> str | None:
    """The placeholder text of ``record``'s image (None for text records).

    Raises:
        ValueError: the record has an image but the model takes none (``image_spec`` None).
    """
    if record.image is None:
        return None
    if image_spec is None:
        raise ValueError(f"record {record.id!r} ({record.source or 'data'}) has an image, but "
                         "the model takes text only; use model.family: vision_lm")  # fmt: skip
    return image_spec.placeholder()


def encode_example(
    record: QARecord, tokenizer: Any, template: Template = "paper",
    image_spec: ImageSpec | None = None,
) -> tuple[list[int], list[int]]:  # fmt: skip
    """``(prompt_ids, answer_ids)`` with ``answer_ids`` ending in EOS.

    The answer tokens are the tail of ``encode(prompt + target)`` when that starts with the
    prompt tokens (the usual case); otherwise (a merge across the boundary) the target is
    encoded on its own.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; training examples end in EOS")
    prompt = build_prompt(record, template, tokenizer, image_placeholder(record, image_spec))
    target = target_text(record, template)
    prompt_ids = encode_prompt(prompt, tokenizer, template)
    joint = encode_prompt(prompt + target, tokenizer, template)
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        answer_ids = joint[len(prompt_ids):]
    else:
        answer_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
    return prompt_ids, [*answer_ids, eos]


def _context_tails(tokenizer: Any, context: str):
    """``(n_tokens, tail(keep) -> text of the last `keep` context tokens)``."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
        starts = [start for start, _ in enc["offset_mapping"]]
        return len(starts), lambda keep: context[starts[len(starts) - keep]:].lstrip()
    ids = list(tokenizer(context, add_special_tokens=False)["input_ids"])
    return len(ids), lambda keep: tokenizer.decode(ids[len(ids) - keep:]).lstrip()


def fit_context(
    record: QARecord, tokenizer: Any, *, template: Template = "paper", max_prompt_tokens: int,
    image_spec: ImageSpec | None = None,
) -> tuple[QARecord | None, bool]:  # fmt: skip
    """Shorten ``record.context`` from its start until the prompt fits ``max_prompt_tokens``.

    Returns ``(record, cut)``: the record unchanged (``cut=False``) if its prompt fits; a copy
    keeping the longest context tail that fits (``cut=True``; with no context left the Context
    line is dropped); ``(None, False)`` if even the prompt without context is too long.
    Generation can call this with ``max_length - max_new_tokens`` to prompt the same way.
    """

    placeholder = image_placeholder(record, image_spec)

    def length(rec: QARecord) -> int:
        prompt = build_prompt(rec, template, tokenizer, placeholder)
        return len(encode_prompt(prompt, tokenizer, template))

    n = length(record)
    if n <= max_prompt_tokens:
        return record, False
    bare = dataclasses.replace(record, context=None)
    if not record.context or length(bare) > max_prompt_tokens:
        return None, False
    n_ctx, tail = _context_tails(tokenizer, record.context)
    keep = n_ctx - (n - max_prompt_tokens)
    while keep > 0:
        candidate = dataclasses.replace(record, context=tail(keep) or None)
        n = length(candidate)
        if n <= max_prompt_tokens:
            return candidate, True
        keep -= max(1, n - max_prompt_tokens)
    return bare, True


def tokenize_record(
    record: QARecord,
    tokenizer: Any,
    *,
    template: Template = "paper",
    loss_on: LossOn = "all",
    max_length: int,
    image_spec: ImageSpec | None = None,
) -> TokenizedExample | None:
    """Tokenize one record (see the module docstring); ``None`` if it cannot fit
    ``max_length`` even without context. ``image_spec``: the vision-language model's image
    inputs (required for image records)."""
    if loss_on not in ("all", "answer"):
        raise ValueError(f"loss_on must be 'all' or 'answer', got {loss_on!r}")
    prompt_ids, answer_ids = encode_example(record, tokenizer, template, image_spec)
    cut = False
    if len(prompt_ids) + len(answer_ids) > max_length:
        fitted, cut = fit_context(record, tokenizer, template=template, image_spec=image_spec,
                                  max_prompt_tokens=max_length - len(answer_ids))  # fmt: skip
        if fitted is None:
            return None
        prompt_ids, answer_ids = encode_example(fitted, tokenizer, template, image_spec)
        if len(prompt_ids) + len(answer_ids) > max_length:  # the answer tokens changed
            return None
    input_ids = (*prompt_ids, *answer_ids)
    if loss_on == "all":
        labels = input_ids
    else:
        labels = (IGNORE_INDEX,) * len(prompt_ids) + tuple(answer_ids)
    if record.image is not None:  # image placeholders are inputs, never targets
        image_id = tokenizer.convert_tokens_to_ids(image_spec.image_token)
        labels = tuple(IGNORE_INDEX if t == image_id else y
                       for t, y in zip(input_ids, labels, strict=True))  # fmt: skip
    return TokenizedExample(id=record.id, input_ids=input_ids, labels=labels,
                            attention_mask=(1,) * len(input_ids),
                            prompt_length=len(prompt_ids), context_cut=cut,
                            image=record.image)  # fmt: skip


def tokenize_records(
    records: Iterable[QARecord],
    tokenizer: Any,
    *,
    template: Template = "paper",
    loss_on: LossOn = "all",
    max_length: int,
    image_spec: ImageSpec | None = None,
) -> tuple[list[TokenizedExample], TokenizeReport]:
    """Tokenize many records (order kept); dropped ones are listed in the report."""
    examples: list[TokenizedExample] = []
    dropped: list[str] = []
    n_in = 0
    for record in records:
        n_in += 1
        example = tokenize_record(record, tokenizer, template=template, loss_on=loss_on,
                                  max_length=max_length, image_spec=image_spec)
        if example is None:
            dropped.append(record.id)
        else:
            examples.append(example)
    report = TokenizeReport(n_in=n_in, n_kept=len(examples),
                            n_context_cut=sum(e.context_cut for e in examples),
                            n_dropped=len(dropped), dropped_ids=tuple(dropped))
    logger.info("tokenized %d records: kept %d (%d with context cut), dropped %d "
                "(longer than max_length=%d without context)", report.n_in, report.n_kept,
                report.n_context_cut, report.n_dropped, max_length)
    return examples, report


def collate(
    examples: Sequence[TokenizedExample], pad_token_id: int, image_spec: ImageSpec | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example.

    Returns int64 tensors ``input_ids`` ``[B, T]`` (``pad_token_id`` at pads),
    ``attention_mask`` ``[B, T]`` (0 at pads) and ``labels`` ``[B, T]`` (``-100`` at pads,
    unshifted). Pads are found by position, never by id (SmolLM2's pad id is its EOS id).
    When rows have images: ``pixel_values`` float32 ``[n_images, 3, size, size]``, one per
    image row in row order (text-only rows of a mixed batch have none).
    """
    import torch  # imported here so that loading records does not pay for torch

    if not examples:
        raise ValueError("collate needs at least one example")
    if pad_token_id is None:
        raise ValueError("pad_token_id is None; set tokenizer.pad_token (e.g. to the EOS token)")
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        attention_mask[row, :n] = torch.tensor(example.attention_mask, dtype=torch.long)
        labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    images = [e.image for e in examples if e.image is not None]
    if images:
        if image_spec is None:
            raise ValueError("the batch has image rows but no image_spec to preprocess them")
        from uaclm_dist.modeling.images import pixel_values

        batch["pixel_values"] = pixel_values(images, image_spec)
    return batch
