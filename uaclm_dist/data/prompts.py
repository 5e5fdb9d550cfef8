"""The paper's prompt (shared/METHOD.md section 2) and the training target appended to it.

``template="paper"`` (default)::

    Answer the following question as briefly as possible.
    Context: {context}
    Question: {question}
    Answer:

(the Context line is omitted when the record has none). The training target is ``" " + answer``:
the prompt ends in ``"Answer:"`` and a model continues it with a space-prefixed word, which
byte-level BPE tokenizers (SmolLM2, Llama-3, GPT-2) encode as one ``" word"`` token - the same
tokens greedy decoding produces after the prompt.

``template="chat"``: the tokenizer's chat template with one user message - the same instruction,
Context and Question lines, without the trailing ``"Answer:"`` cue, whose role the assistant turn
takes - and ``add_generation_prompt=True``. The target is the bare answer (the assistant turn
starts on a fresh line).

The first reference answer is the training target; tokenization appends EOS after it. For an
image record and a vision-language model, ``image_placeholder`` (the model's image tokens, see
:class:`~uaclm_dist.modeling.images.ImageSpec`) opens the user message on its own line, as
LLaVA's ``USER: <image>\n...`` does; the model puts the projected image features there.
"""

from __future__ import annotations

from typing import Any, Literal

from uaclm_dist.data.records import QARecord

__all__ = ["INSTRUCTION", "TEMPLATES", "build_prompt", "target_text", "user_message"]

INSTRUCTION = "Answer the following question as briefly as possible."
TEMPLATES = ("paper", "chat")
Template = Literal["paper", "chat"]


def user_message(record: QARecord, image_placeholder: str | None = None) -> str:
    """Instruction, optional ``Context:`` line and ``Question:`` line, newline-separated; the
    image placeholder first when given and the record has an image."""
    lines = [image_placeholder] if image_placeholder and record.image else []
    lines.append(INSTRUCTION)
    if record.context:
        lines.append(f"Context: {record.context}")
    lines.append(f"Question: {record.question}")
    return "\n".join(lines)


def build_prompt(
    record: QARecord, template: Template = "paper", tokenizer: Any = None,
    image_placeholder: str | None = None,
) -> str:  # fmt: skip
    """The prompt text the model sees before its answer (no answer, no special tokens added
    beyond what the chat template writes). ``tokenizer`` is needed for ``template="chat"``;
    ``image_placeholder`` for image records (see the module docstring)."""
    if template == "paper":
        return user_message(record, image_placeholder) + "\nAnswer:"
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt_template 'chat' needs a tokenizer with a chat template; "
                             "use prompt_template 'paper' for base models")
        messages = [{"role": "user", "content": user_message(record, image_placeholder)}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown prompt template {template!r}; expected one of {TEMPLATES}")


def target_text(record: QARecord, template: Template = "paper") -> str:
    """The training target appended to the prompt: ``" " + answers[0]`` for the paper template,
    ``answers[0]`` for the chat template (EOS is added as a token id by tokenization)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; expected one of {TEMPLATES}")
    answer = record.answers[0].strip()
    return " " + answer if template == "paper" else answer
