"""Data: raw QA / VQA files -> :class:`QARecord` -> train/test split -> prompt -> tokens -> batch.

    records = load_records(cfg.data)
    train, test = split_records(records, cfg.data.train_fraction, cfg.data.split_seed)
    examples, report = tokenize_records(train, tokenizer, template=cfg.data.prompt_template,
                                        loss_on=cfg.data.loss_on, max_length=cfg.data.max_length)
    batch = collate(examples[:2], tokenizer.pad_token_id)   # input_ids / attention_mask / labels

Formats (``data.format``) are entries of :data:`DATA_FORMATS` (:mod:`.formats`, one module per
format); :func:`load_records` (:mod:`.load`) reads any of them. ``data.context: retrieved`` gives
closed-book records a simulated retriever's context (:mod:`.retrieval`). :mod:`.run_splits`
checks an evaluation's examples against the splits of trained runs (``split_ids.json``).
"""

from uaclm_dist.data.formats import DATA_FORMATS, DataFormat
from uaclm_dist.data.load import expand_paths, load_records, read_file
from uaclm_dist.data.prompts import INSTRUCTION, build_prompt, target_text, user_message
from uaclm_dist.data.records import DataError, QARecord, answer_text, check_unique_ids
from uaclm_dist.data.retrieval import add_retrieved_context, statement
from uaclm_dist.data.split import split_records
from uaclm_dist.data.tokenize import (
    IGNORE_INDEX,
    TokenizedExample,
    TokenizeReport,
    collate,
    encode_example,
    encode_prompt,
    fit_context,
    tokenize_record,
    tokenize_records,
)

__all__ = [
    "DATA_FORMATS",
    "DataError",
    "DataFormat",
    "IGNORE_INDEX",
    "INSTRUCTION",
    "QARecord",
    "TokenizeReport",
    "TokenizedExample",
    "add_retrieved_context",
    "answer_text",
    "build_prompt",
    "check_unique_ids",
    "collate",
    "encode_example",
    "encode_prompt",
    "expand_paths",
    "fit_context",
    "load_records",
    "read_file",
    "split_records",
    "statement",
    "target_text",
    "tokenize_record",
    "tokenize_records",
    "user_message",
]
