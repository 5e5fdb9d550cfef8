"""Image records on the way to a vision-language model (issue 12 item 3): the placeholder tokens
in the prompt, their labels -100, ``pixel_values`` for mixed batches, rows that do not fit,
image checks before training, and the blank image a text-only micro-batch runs at zero weight."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from uaclm_dist.config import load_config
from uaclm_dist.data import IGNORE_INDEX, DataError, QARecord, collate, tokenize_records
from uaclm_dist.data.formats.easyvqa import read_easyvqa
from uaclm_dist.data.images import check_record_images
from uaclm_dist.modeling.families import FAMILIES, load_model
from uaclm_dist.modeling.families.vision_lm import PROJECTOR

VLM = ("model.family=vision_lm", "model.name_or_path=tiny-llama-mobilenetv2",
       "model.quantization.method=none", "model.dtype=float32")  # fmt: skip


@pytest.fixture(scope="module")
def vlm_inputs():
    cfg = load_config("configs/tiny_test.yaml", list(VLM))
    family = FAMILIES.get("vision_lm")
    return cfg, family.load_tokenizer(cfg.model), family.image_spec(cfg.model)


@pytest.fixture(scope="module")
def records():
    """4 easy-VQA records (images) and 2 text records."""
    vqa = read_easyvqa()[:4]
    text = [QARecord(id=f"t{i}", question=f"What is {i} plus {i}?", answers=(str(2 * i),))
            for i in range(2)]  # fmt: skip
    return vqa, text


@pytest.mark.parametrize("template", ["paper", "chat"])
def test_image_placeholders_open_the_prompt_and_are_never_targets(vlm_inputs, records, template):
    _, tokenizer, spec = vlm_inputs
    vqa, text = records
    image_id = tokenizer.convert_tokens_to_ids(spec.image_token)
    examples, report = tokenize_records([*vqa, *text], tokenizer, template=template,
                                        loss_on="all", max_length=128, image_spec=spec)  # fmt: skip
    assert report.n_kept == 6
    for example in examples[:4]:
        ids = list(example.input_ids)
        positions = [i for i, t in enumerate(ids) if t == image_id]
        assert len(positions) == spec.tokens_per_image == 16
        assert positions == list(range(positions[0], positions[0] + 16))  # one contiguous run
        assert positions[-1] < example.prompt_length  # in the prompt, before the answer
        assert all(example.labels[i] == IGNORE_INDEX for i in positions)
        others = [i for i in range(len(ids)) if i not in positions]
        assert all(example.labels[i] == ids[i] for i in others)  # loss_on=all: the rest
        assert example.image is not None and example.image.endswith(".png")
    prompt = tokenizer.decode(examples[0].input_ids[: examples[0].prompt_length])
    if template == "chat":  # inside the user turn, on its own line (LLaVA's "USER: <image>\n")
        assert "<|im_start|>user\n" + spec.placeholder() + "\n" in prompt
    else:
        assert prompt.startswith(spec.placeholder() + "\n")
    for example in examples[4:]:
        assert image_id not in example.input_ids and example.image is None


def test_a_mixed_batch_carries_one_image_per_image_row(vlm_inputs, records):
    _, tokenizer, spec = vlm_inputs
    vqa, text = records
    rows = [text[0], vqa[0], text[1], vqa[1]]
    examples, _ = tokenize_records(rows, tokenizer, max_length=128, image_spec=spec)
    batch = collate(examples, tokenizer.pad_token_id, spec)
    assert batch["pixel_values"].shape == (2, 3, 128, 128)
    image_id = tokenizer.convert_tokens_to_ids(spec.image_token)
    assert (batch["input_ids"] == image_id).sum(dim=1).tolist() == [0, 16, 0, 16]
    assert "pixel_values" not in collate([examples[0], examples[2]], tokenizer.pad_token_id, spec)
    with pytest.raises(ValueError, match="no image_spec"):
        collate(examples, tokenizer.pad_token_id)


def test_a_row_that_does_not_fit_is_dropped_never_cut_inside_its_image(vlm_inputs, records):
    _, tokenizer, spec = vlm_inputs
    vqa, _ = records
    long = dataclasses.replace(vqa[0], context="filler words " * 40)
    examples, report = tokenize_records([long], tokenizer, max_length=60, image_spec=spec)
    assert report.n_kept == 1 and report.n_context_cut == 1  # the context gave way
    assert sum(t == tokenizer.convert_tokens_to_ids(spec.image_token)
               for t in examples[0].input_ids) == 16  # fmt: skip
    _, report = tokenize_records([vqa[0]], tokenizer, max_length=20, image_spec=spec)
    assert report.n_dropped == 1  # 16 image tokens + the question do not fit 20


def test_an_image_record_without_an_image_model_is_refused(vlm_inputs, records):
    _, tokenizer, _ = vlm_inputs
    vqa, _ = records
    with pytest.raises(ValueError, match="has an image, but the model takes text only"):
        tokenize_records(vqa[:1], tokenizer, max_length=128)


def test_images_are_checked_before_training(records, tmp_path):
    vqa, text = records
    assert check_record_images([*vqa, *text], takes_images=True, family="vision_lm") == 4
    assert check_record_images(text, takes_images=False, family="causal_lm") == 0
    with pytest.raises(DataError, match=r"record 'easyvqa-test-0' has an image .* "
                                        r"model.family 'causal_lm' takes text only"):
        check_record_images(vqa, takes_images=False, family="causal_lm")
    truncated = tmp_path / "cut.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:-20])
    bad = dataclasses.replace(vqa[0], image=str(truncated))
    with pytest.raises(DataError, match=r"record 'easyvqa-test-0': image '\S*cut\.png' cannot"):
        check_record_images([bad], takes_images=True, family="vision_lm")


def test_a_text_only_micro_batch_runs_a_blank_image_at_zero_weight(vlm_inputs, records):
    """Every rank must run the tower and projector in every micro-batch (ZeRO-3 gathers their
    parameters collectively); the blank image changes neither the loss nor any gradient."""
    from uaclm_dist.losses.objectives import build_objective
    from uaclm_dist.modeling.sharded_head import ShardedLMHead, replace_lm_head
    from uaclm_dist.train.objective import CausalLMWithLoss, split_batch

    _, tokenizer, spec = vlm_inputs
    cfg = load_config("configs/tiny_test.yaml", [*VLM, "model.lora.dropout=0.0",
                                                 "objective.name=clm"])  # fmt: skip
    family = FAMILIES.get("vision_lm")
    model = load_model(cfg.model, seed=0).model
    head = ShardedLMHead.from_model(model, 0, 1)
    replace_lm_head(model, head)
    model = family.attach_lora(model, cfg.model)
    examples, _ = tokenize_records(records[1], tokenizer, max_length=64, image_spec=spec)
    labels, inputs = split_batch(collate(examples, tokenizer.pad_token_id, spec))
    assert "pixel_values" not in inputs
    results = []
    for image_size in (None, spec.size):
        module = CausalLMWithLoss(model, head, build_objective(cfg.objective),
                                  image_size=image_size)  # fmt: skip
        model.zero_grad(set_to_none=True)
        out = module(labels=labels, step=0, total_steps=1, **inputs)
        out.loss.backward()
        grads = {n: None if p.grad is None else p.grad.clone()
                 for n, p in model.named_parameters() if p.requires_grad}  # fmt: skip
        results.append((out.loss.detach(), grads))
    (loss_plain, grads_plain), (loss_blank, grads_blank) = results
    assert torch.equal(loss_plain, loss_blank)
    assert any(g is not None and g.abs().sum() > 0 for g in grads_plain.values())
    projector = [n for n in grads_blank if PROJECTOR in n]
    assert projector and all(grads_plain[n] is None for n in projector)  # untouched without it
    assert all(torch.count_nonzero(grads_blank[n]) == 0 for n in projector)  # reached, at zero
    for name, grad in grads_plain.items():
        if grad is not None:
            assert torch.equal(grad, grads_blank[name]), name


def test_hidden_states_with_the_tower_first_equal_the_models_own_forward(vlm_inputs, records):
    """The order-fixed path (tower, projector, embeddings, language model) computes what the
    model's own forward computes, with images and (blank image at zero weight) without."""
    from uaclm_dist.modeling.hidden import final_hidden_states, final_hidden_states_with_images

    cfg, tokenizer, spec = vlm_inputs
    model = load_model(cfg.model, seed=0).model.eval()
    vqa, text = records
    for rows in ([vqa[0], text[0], vqa[1]], list(text)):
        examples, _ = tokenize_records(rows, tokenizer, max_length=128, image_spec=spec)
        batch = collate(examples, tokenizer.pad_token_id, spec)
        batch.pop("labels")
        with torch.no_grad():
            want = final_hidden_states(model, **batch)
            got = final_hidden_states_with_images(model, image_size=spec.size, **batch)
        assert torch.equal(got, want)
    wrong = dict(batch, pixel_values=torch.zeros(1, 3, spec.size, spec.size))
    with pytest.raises(ValueError, match="0 image tokens in the batch but 16 image feature"):
        final_hidden_states_with_images(model, image_size=spec.size, **wrong)
