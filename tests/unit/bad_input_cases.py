"""The bad-input cases of ``uaclm`` (issue 13): what a person may get wrong, and the one message
that must answer it with exit status 2, before any Ray or DeepSpeed process starts and without
touching what is on disk. ``tests/unit/test_bad_input.py`` runs every case; the README's "Bad
input" table is generated from them:

    PYTHONPATH=. python tests/unit/bad_input_cases.py      # prints the README table

A case's ``argv`` follows ``uaclm``. ``CONFIG`` stands for ``configs/tiny_test.yaml``; the test
puts ``logging.output_dir={tmp}/run distributed.num_workers=1`` right after it (a case's own
overrides come later and win). ``{tmp}`` is the case's own empty folder, which ``build`` fills.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from uaclm_dist.config import REPO_ROOT
from uaclm_dist.train.manifest import write_manifest

Category = Literal["config", "data", "cli", "cluster"]

#: The base config of every case (``CONFIG`` in ``argv``).
CONFIG = REPO_ROOT / "configs" / "tiny_test.yaml"


def base_overrides(tmp: Path) -> list[str]:
    """What the test adds after ``CONFIG``: a run folder in ``tmp`` and one training worker (so
    that the CPU check of a local Ray node passes on any machine)."""
    return [f"logging.output_dir={tmp}/run", "distributed.num_workers=1"]


@dataclass(frozen=True)
class Case:
    """One way to get the input wrong.

    Attributes:
        id: short name (the pytest id).
        category: config, data, cli or cluster.
        did: what the person did, for the README.
        argv: the command after ``uaclm`` (``CONFIG``, ``{tmp}`` as in the module docstring).
        message: regular expression the single ``uaclm: error:`` message must match.
        names: what that message names (field, file, row, flag), for the README.
        build: writes the case's files into ``{tmp}`` (None: nothing to write).
        env: environment variables set while the case runs (``{tmp}`` expanded).
        exit_code: the exit status (always 2: bad input).
    """

    id: str
    category: Category
    did: str
    argv: tuple[str, ...]
    message: str
    names: str
    build: Callable[[Path], None] | None = None
    env: tuple[tuple[str, str], ...] = ()
    exit_code: int = 2

    def command(self, tmp: Path) -> list[str]:
        """The argv to run in ``tmp`` (the config path and base overrides filled in)."""
        out: list[str] = []
        for arg in self.argv:
            if arg == "CONFIG":
                out += [str(CONFIG), *base_overrides(tmp)]
            else:
                out.append(arg.replace("{tmp}", str(tmp)))
        return out

    def shown(self) -> str:
        """The command as the README shows it (paths relative to the case folder)."""
        env = " ".join(f"{k}={v}" for k, v in self.env)
        text = " ".join(["uaclm", *self.argv]).replace("{tmp}/", "").replace("{tmp}", ".")
        return f"{env} {text}" if env else text


# ------------------------------------------------------------------------------------ builders


def _write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def build(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return build


def _row(i: int, **fields: object) -> str:
    row = {"id": f"q{i}", "question": f"What is {i} plus {i}?", "answers": [str(2 * i)]}
    row.update(fields)
    return json.dumps(row)


def _rows(n: int, bad: dict[int, str] | None = None) -> str:
    """``n`` good JSON lines (line i is question i), with ``bad`` lines replaced."""
    bad = bad or {}
    return "".join(bad.get(i, _row(i)) + "\n" for i in range(1, n + 1))


def _jsonl(rows: str) -> Callable[[Path], None]:
    return _write("rows.jsonl", rows)


def _many_rows_line_5000_malformed(tmp: Path) -> None:
    _jsonl(_rows(10_000, {5000: '{"id": "q5000", "question": "What is 5000 plus 5000?", '
                                '"answers": ["10000"'}))(tmp)


def _non_utf8(tmp: Path) -> None:
    text = _rows(5).encode()
    lines = text.splitlines(keepends=True)
    lines[2] = '{"id": "q3", "question": "Qu\u00e9 es?", "answers": ["x"]}\n'.encode("latin-1")
    (tmp / "rows.jsonl").write_bytes(b"".join(lines))


def _over_long(tmp: Path) -> None:
    words = " ".join(f"word{i}" for i in range(400))
    _jsonl("".join(_row(i, question=f"Given {words}, what is {i} plus {i}?") + "\n"
                   for i in range(1, 11)))(tmp)


def _png() -> bytes:
    """A valid 8 x 8 black PNG."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _with_image(name: str, content: bytes | None = None) -> Callable[[Path], None]:
    """3 rows; row q2 points at the image file ``name`` (relative to the jsonl file) holding
    ``content`` (None: a valid PNG)."""

    def build(tmp: Path) -> None:
        (tmp / name).write_bytes(_png() if content is None else content)
        _jsonl(_rows(3, {2: _row(2, image=name)}))(tmp)

    return build


def _dir(name: str, *files: tuple[str, str]) -> Callable[[Path], None]:
    def build(tmp: Path) -> None:
        (tmp / name).mkdir(parents=True)
        for file, text in files:
            (tmp / name / file).write_text(text)

    return build


def _fake_run(tmp: Path, *, finished: bool = True, checkpoint: bool = True) -> Path:
    """``{tmp}/run`` as training leaves it: run_info.json with the resolved config of
    ``CONFIG`` + base overrides, config.yaml, adapter/, split_ids.json, summary.json, and a
    complete checkpoint at step 8 of 8 (tiny_test's optim.max_steps)."""
    from uaclm_dist.config import load_config

    cfg = load_config(CONFIG, base_overrides(tmp))
    run = tmp / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "run_info.json").write_text(json.dumps({"run_id": "0123456789ab",
                                                   "config": cfg.to_dict()}, indent=2))
    (run / "config.yaml").write_text(cfg.to_yaml())
    (run / "split_ids.json").write_text(json.dumps({"train": [], "test": []}))
    (run / "summary.json").write_text(json.dumps({"stopped": not finished}))
    (run / "metrics.jsonl").write_text('{"step": 8, "loss": 1.5}\n')
    if checkpoint:
        ckpt = run / "ray" / "train" / "checkpoint_000000"
        (ckpt / "rng").mkdir(parents=True)
        (ckpt / "rng" / "rank0.pt").write_bytes(b"not a tensor")
        (ckpt / "run_state.json").write_text(json.dumps({
            "next_step": 8, "total_steps": 8, "run_id": "0123456789ab", "world_size": 1,
            "final": finished,
        }))  # fmt: skip
        write_manifest(ckpt, 0)  # a complete checkpoint as far as its files go
    return run


def _run_without_checkpoint(tmp: Path) -> None:
    _fake_run(tmp, checkpoint=False)


def _evaluation(tmp: Path) -> None:
    out = tmp / "eval"
    (out / "per_example").mkdir(parents=True)
    (out / "per_example" / "base.parquet").write_bytes(b"PAR1")
    (out / "metrics.json").write_text('{"base": {"accuracy": 0.5}}')
    (out / "report.md").write_text("# report\n")


def _evaluation_in_run(tmp: Path) -> None:
    (tmp / "run").mkdir()
    (tmp / "run" / "metrics.json").write_text('{"base": {"accuracy": 0.5}}')


JSONL = ("data.format=jsonl", "data.paths=[{tmp}/rows.jsonl]")
TINY_VLM = ("model.family=vision_lm", "model.name_or_path=tiny-llama-mobilenetv2")

# ---------------------------------------------------------------------------------- the cases

CASES: list[Case] = [
    # --- config: types, ranges, unknown keys, ZeRO stage, resources, micro batch
    Case("wrong-type-override", "config", "a value of the wrong type on the command line",
         ("train", "CONFIG", "optim.lr=abc"),
         r"'optim\.lr' on the command line: expected float.*'abc'", "key, where it was set, "
         "expected type, value"),
    Case("wrong-type-in-file", "config", "a value of the wrong type in the config file",
         ("train", "{tmp}/my.yaml"), r"'optim\.max_steps' in \S*my\.yaml: expected int",
         "key, file, expected type",
         build=_write("my.yaml", "optim:\n  max_steps: eight\n")),
    Case("out-of-range", "config", "a fraction outside (0, 1)",
         ("train", "CONFIG", "data.train_fraction=1.5"),
         r"'data\.train_fraction' on the command line: .*got 1\.5 \(must be less than 1\)",
         "key, range, value"),
    Case("negative-lr", "config", "a negative learning rate",
         ("train", "CONFIG", "optim.lr=-0.001"),
         r"'optim\.lr' on the command line: .*greater than 0", "key, range, value"),
    Case("micro-batch-0", "config", "micro batch size 0",
         ("train", "CONFIG", "optim.micro_batch_size=0"),
         r"'optim\.micro_batch_size' on the command line: .*greater than or equal to 1",
         "key, range"),
    Case("zero-workers", "config", "no training workers",
         ("train", "CONFIG", "distributed.num_workers=0"),
         r"'distributed\.num_workers' on the command line: .*greater than or equal to 1",
         "key, range"),
    Case("global-batch-indivisible", "config",
         "a global batch that does not split over the workers",
         ("train", "CONFIG", "distributed.num_workers=1", "optim.micro_batch_size=2",
          "optim.global_batch_size=3"),
         r"optim\.global_batch_size 3 does not divide into optim\.micro_batch_size 2 x "
         r"distributed\.num_workers 1 = 2", "the three keys, the worker counts that fit"),
    Case("global-batch-and-accumulation", "config",
         "a gradient accumulation that contradicts the global batch",
         ("train", "CONFIG", "optim.global_batch_size=4", "optim.grad_accumulation=3"),
         r"optim\.grad_accumulation 3 contradicts optim\.global_batch_size 4 \(which implies "
         r"2 on 1 workers", "both keys, the derived value"),
    Case("model-not-found", "config",
         "a model name that is neither packaged, a folder, nor in the local Hugging Face cache",
         ("train", "CONFIG", "model.name_or_path=no-such-model-xyz"),
         r"model\.name_or_path 'no-such-model-xyz' is not a packaged model .*not a local folder;"
         r" not in the Hugging Face cache: \S*hf/hub \(HF_HOME/hub\)",
         "key, value, the packaged names, the cache looked in",
         env=(("HF_HOME", "{tmp}/hf"), ("HF_HUB_CACHE", ""), ("HUGGINGFACE_HUB_CACHE", ""))),
    Case("flash-attention-on-cpu", "config", "FlashAttention-2 for workers without GPUs",
         ("train", "CONFIG", "model.attn_implementation=flash_attention_2"),
         r"model\.attn_implementation 'flash_attention_2' runs on GPUs only "
         r"\(distributed\.gpus_per_worker is 0\)", "both keys, the alternative"),
    Case("flash-attention-not-installed", "cluster",
         "FlashAttention-2 without the flash-attn package",
         ("train", "CONFIG", "model.attn_implementation=flash_attention_2",
          "distributed.gpus_per_worker=1", "distributed.ray_address=10.0.0.1:6379"),
         r"model\.attn_implementation 'flash_attention_2' needs the flash-attn package, which "
         r"is not installed", "key, the package, the alternative"),
    Case("init-adapter-not-an-adapter", "config", "a parent adapter folder that holds none",
         ("train", "CONFIG", "model.init_adapter={tmp}"),
         r"model\.init_adapter '\S+': neither a run folder with adapter/ nor an adapter folder",
         "key, folder, what it must hold"),
    Case("unknown-key-typo", "config", "a misspelt key on the command line",
         ("train", "CONFIG", "optim.max_step=4"),
         r"unknown key 'optim\.max_step' on the command line; did you mean 'optim\.max_steps'",
         "key, the closest valid key"),
    Case("unknown-section", "config", "an unknown section in the config file",
         ("train", "{tmp}/my.yaml"), r"unknown key 'trainer' in \S*my\.yaml",
         "key, file, the valid keys",
         build=_write("my.yaml", "trainer:\n  lr: 0.001\n")),
    Case("zero-stage-1", "config", "ZeRO stage 1", ("train", "CONFIG", "distributed.zero_stage=1"),
         r"'distributed\.zero_stage' on the command line: .*2, 3.*1", "key, allowed stages"),
    Case("zero-stage-4", "config", "ZeRO stage 4", ("train", "CONFIG", "distributed.zero_stage=4"),
         r"'distributed\.zero_stage' on the command line: .*2, 3.*4", "key, allowed stages"),
    Case("zero-stage-mismatch", "config", "ZeRO stage 3 with a ZeRO-2 DeepSpeed config",
         ("train", "CONFIG", "distributed.zero_stage=3"),
         r"zero2\.json' sets zero_optimization\.stage 2 but distributed\.zero_stage is 3",
         "both keys, the DeepSpeed file"),
    Case("deepspeed-config-missing", "config", "a DeepSpeed config that does not exist",
         ("train", "CONFIG", "distributed.deepspeed_config=ds_configs/zero9.json"),
         r"'distributed\.deepspeed_config' on the command line: DeepSpeed config file "
         r"'ds_configs/zero9\.json' not found", "key, file, the folders searched"),
    Case("deepspeed-config-not-json", "config", "a DeepSpeed config that is not JSON",
         ("train", "CONFIG", "distributed.deepspeed_config={tmp}/ds.json"),
         r"DeepSpeed config '\S*ds\.json' \(distributed\.deepspeed_config on the command "
         r"line\) is not valid JSON: line 2, column 1", "file, key, line",
         build=_write("ds.json", '{"zero_optimization": {"stage": 2}\n')),
    Case("config-file-missing", "config", "a config file that does not exist",
         ("train", "{tmp}/nope.yaml"), r"config file '\S*nope\.yaml' not found", "file"),
    Case("yaml-syntax", "config", "a YAML syntax error", ("train", "{tmp}/my.yaml"),
         r"invalid YAML in \S*my\.yaml, line 4, column 1", "file, line, column",
         build=_write("my.yaml", "optim:\n  lr: 0.001\n  max_steps: [8\n")),
    Case("yaml-duplicate-key", "config", "the same key twice in the config file",
         ("train", "{tmp}/my.yaml"),
         r"invalid YAML in \S*my\.yaml, line 3.*duplicate key 'lr' \(first defined on line 2\)",
         "file, both lines",
         build=_write("my.yaml", "optim:\n  lr: 0.001\n  lr: 0.002\n")),
    Case("unknown-objective", "config", "a misspelt objective name",
         ("train", "CONFIG", "objective.name=ua-clm"),
         r"'objective\.name' on the command line: .*did you mean 'ua_clm'", "key, the known "
         "names, the closest one"),
    Case("objective-implementation", "config", "an objective its implementation cannot compute",
         ("train", "CONFIG", "objective.name=ult"),
         r"objective\.name 'ult' is only implemented by objective\.implementation 'reference'",
         "both keys"),
    Case("bad-choice", "config", "a value outside a key's choices",
         ("train", "CONFIG", "data.loss_on=prompt"),
         r"'data\.loss_on' on the command line: .*all, answer.*'prompt'", "key, the choices"),
    Case("override-without-equals", "config", "an override without `=`",
         ("train", "CONFIG", "optim.lr"), r"override 'optim\.lr' on the command line must look "
         r"like key=value", "the override"),
    Case("more-worker-cpus-than-cpus", "config",
         "more worker CPUs than the local Ray node has",
         ("train", "CONFIG", "distributed.cpus_per_worker=4096"),
         r"distributed\.num_workers 1 x distributed\.cpus_per_worker 4096 = 4096 CPUs, but the "
         r"local Ray node .* has \d+", "both keys, what the node has"),
    Case("more-gpus-than-visible", "config", "more worker GPUs than the machine shows Ray",
         ("train", "CONFIG", "distributed.gpus_per_worker=64"),
         r"distributed\.num_workers 1 x distributed\.gpus_per_worker 64 = 64 GPUs, but the "
         r"local Ray node .* has \d+", "both keys, what the node has"),
    Case("more-actor-cpus-than-cpus", "config",
         "more generation-actor CPUs than the local Ray node has",
         ("eval", "CONFIG", "--base", "eval.cpus_per_actor=4096"),
         r"eval\.num_generation_actors 1 x eval\.cpus_per_actor 4096 = 4096 CPUs, but the local "
         r"Ray node", "both keys, what the node has"),
    # --- data (data.format=jsonl)
    Case("data-file-missing", "data", "a data file that does not exist",
         ("train", "CONFIG", *JSONL),
         r"'data\.paths\[0\]' on the command line: data path '\S*rows\.jsonl' not found",
         "key, file"),
    Case("data-glob-empty", "data", "a data pattern that matches no file",
         ("train", "CONFIG", "data.format=jsonl", "data.paths=[{tmp}/part-*.jsonl]"),
         r"'data\.paths\[0\]' on the command line: no file matches the pattern '\S*part-\*\.jsonl'",
         "key, pattern"),
    Case("data-file-empty", "data", "an empty data file", ("train", "CONFIG", *JSONL),
         r"data: \S*rows\.jsonl: no jsonl records \(the file is empty\)", "file",
         build=_jsonl("")),
    Case("data-not-utf8", "data", "a data file that is not UTF-8 (Latin-1 on line 3)",
         ("train", "CONFIG", *JSONL),
         r"data: \S*rows\.jsonl: line 3: not UTF-8 text \(byte 0xe9", "file, line, byte",
         build=_non_utf8),
    Case("data-malformed-json", "data", "malformed JSON on line 5000 of 10000",
         ("train", "CONFIG", *JSONL), r"data: \S*rows\.jsonl: line 5000: invalid JSON",
         "file, line, column", build=_many_rows_line_5000_malformed),
    Case("data-not-an-object", "data", "a JSON line that is a list, not an object",
         ("train", "CONFIG", *JSONL),
         r"data: \S*rows\.jsonl: line 2: expected a JSON object, got list", "file, line",
         build=_jsonl(_rows(3, {2: '["q2", "What?", "x"]'}))),
    Case("data-duplicate-ids", "data", "two rows with the same id",
         ("train", "CONFIG", *JSONL),
         r"data: \S*rows\.jsonl: line 7: duplicate id 'q3' \(first used at line 3\)",
         "file, both lines, the id", build=_jsonl(_rows(8, {7: _row(3)}))),
    Case("data-empty-answers", "data", "a row with an empty answer list",
         ("train", "CONFIG", *JSONL),
         r"data: \S*rows\.jsonl: line 4: answers \(column 'answers'\) holds no non-empty answer",
         "file, line, column", build=_jsonl(_rows(5, {4: _row(4, answers=["", " "])}))),
    Case("data-missing-question", "data", "a row without a question",
         ("train", "CONFIG", *JSONL),
         r"data: \S*rows\.jsonl: line 2: field 'question' \(column 'question'\) is missing",
         "file, line, field", build=_jsonl(_rows(3, {2: '{"id": "q2", "answers": ["4"]}'}))),
    Case("data-over-long", "data", "rows that do not fit `data.max_length`, however cut",
         ("train", "CONFIG", *JSONL),
         r"data: none of the \d+ training records fits data\.max_length 64 tokens .*id 'q\d+'",
         "key, the rows' ids", build=_over_long),
    Case("data-missing-image", "data", "a row whose image file is missing",
         ("train", "CONFIG", *JSONL),
         r"data: \S*rows\.jsonl: record 'q2': image '\S*images/q2\.png' not found",
         "file, row id, image",
         build=_jsonl(_rows(3, {2: _row(2, image="images/q2.png")}))),
    Case("data-image-with-text-model", "data",
         "image rows with a text-only model (they would be trained without their images)",
         ("train", "CONFIG", *JSONL),
         r"data: jsonl:rows\.jsonl: record 'q2' has an image \('\S*q2\.png'\), but "
         r"model\.family 'causal_lm' takes text only; use model\.family: vision_lm",
         "file, row id, image, key", build=_with_image("q2.png")),
    Case("data-unreadable-image", "data", "an image file that is not an image",
         ("train", "CONFIG", *JSONL, *TINY_VLM),
         r"data: jsonl:rows\.jsonl: record 'q2': image '\S*q2\.png' cannot be read as an image",
         "file, row id, image", build=_with_image("q2.png", b"<html>not an image</html>")),
    Case("data-field-map-unknown", "data",
         "a `data.field_map` entry for a field records do not have",
         ("train", "CONFIG", *JSONL, "data.field_map.answer=gold"),
         r"data: data\.field_map: unknown record field\(s\) answer; valid: id, question, "
         r"answers", "key, the valid fields", build=_jsonl(_rows(3))),
    # --- command line
    Case("unknown-flag", "cli", "an unknown flag", ("train", "CONFIG", "--frobnicate"),
         r"unrecognized arguments: --frobnicate", "the flag"),
    Case("unknown-command", "cli", "a misspelt command", ("trian", "CONFIG"),
         r"argument COMMAND: invalid choice: 'trian'", "the command, the valid ones"),
    Case("bad-flag-value", "cli", "a flag value of the wrong type",
         ("train", "CONFIG", "--stop-after-steps", "soon"),
         r"argument --stop-after-steps: invalid int value: 'soon'", "the flag, the value"),
    Case("adapter-without-adapter", "cli", "`--adapter` pointing at a folder without an adapter",
         ("eval", "CONFIG", "--adapter", "clm={tmp}/clm_run"),
         r"--adapter clm=\S*clm_run: no peft adapter \(adapter_config\.json\) in \S*clm_run",
         "the flag, the folder", build=_dir("clm_run", ("README", "not an adapter\n"))),
    Case("adapter-names-clash", "cli", "two evaluated models with the same name",
         ("eval", "CONFIG", "--base", "--adapter", "base={tmp}/run"),
         r"method names must be unique, got \['base', 'base'\]", "the names",
         build=_fake_run),
    Case("resume-finished", "cli", "`--resume` of a run that has finished",
         ("train", "CONFIG", "--resume", "{tmp}/run"),
         r"--resume \S*run: the run has finished \(its final checkpoint checkpoint_000000 is at "
         r"step 8 of 8\)", "the flag, the checkpoint, the steps", build=_fake_run),
    Case("resume-no-run", "cli", "`--resume` of a folder that holds no run",
         ("train", "CONFIG", "--resume", "{tmp}/elsewhere"),
         r"--resume \S*elsewhere: no run_info\.json there", "the flag, the folder",
         build=_dir("elsewhere")),
    Case("resume-changed-config", "cli", "`--resume` with a config that changes the run",
         ("train", "CONFIG", "--resume", "{tmp}/run", "optim.lr=0.5"),
         r"--resume \S*run: the config differs from the run's saved config in optim\.lr",
         "the flag, the changed keys", build=_fake_run),
    Case("resume-no-checkpoint", "cli", "`--resume` of a run without a complete checkpoint",
         ("train", "CONFIG", "--resume", "{tmp}/run"),
         r"--resume \S*run: no complete checkpoint under \S*run/ray", "the flag, the folder",
         build=_run_without_checkpoint),
    Case("output-holds-run", "cli", "training into a folder that holds another run",
         ("train", "CONFIG", "logging.output_dir={tmp}/run"),
         r"logging\.output_dir '\S*run' already holds a run; nothing there "
         r"is overwritten", "key, folder, how to resume", build=_fake_run),
    Case("output-holds-eval", "cli", "training into a folder that holds an evaluation",
         ("train", "CONFIG", "logging.output_dir={tmp}/run"),
         r"logging\.output_dir '\S*run' holds an evaluation "
         r"\(metrics\.json\)", "key, folder", build=_evaluation_in_run),
    Case("eval-out-holds-eval", "cli", "evaluating into a folder that holds an evaluation",
         ("eval", "CONFIG", "--base", "--out", "{tmp}/eval"),
         r"\S*eval already holds an evaluation; nothing is overwritten", "the folder",
         build=_evaluation),
    Case("eval-out-holds-run", "cli", "evaluating into a training run's folder",
         ("eval", "CONFIG", "--base", "--out", "{tmp}/run"),
         r"--out \S*run holds a training run \(run_info\.json\)", "the flag, the folder",
         build=_fake_run),
    Case("stop-no-run", "cli", "`uaclm stop` of a folder that holds no run",
         ("stop", "{tmp}/elsewhere"), r"\S*elsewhere holds no uaclm run \(no run_info\.json\)",
         "the folder", build=_dir("elsewhere")),
    # --- cluster
    Case("ray-address-unreachable", "cluster", "a Ray address where no head listens",
         ("train", "CONFIG", "distributed.ray_address=127.0.0.1:1"),
         r"distributed\.ray_address 127\.0\.0\.1:1: cannot reach a Ray head there",
         "key, address"),
    Case("ray-address-env-unreachable", "cluster", "`RAY_ADDRESS` where no head listens",
         ("eval", "CONFIG", "--base"), r"RAY_ADDRESS 127\.0\.0\.1:1: cannot reach a Ray head",
         "the variable, address", env=(("RAY_ADDRESS", "127.0.0.1:1"),)),
    Case("ray-address-malformed", "cluster", "a Ray address without a port",
         ("train", "CONFIG", "distributed.ray_address=head-node"),
         r"distributed\.ray_address 'head-node' is not an address Ray can join; expected "
         r"HOST:PORT", "key, address, the accepted forms"),
]


# -------------------------------------------------------------------------------- README table


def markdown_table(cases: list[Case] = CASES) -> str:
    """The README's table of the cases (ends with a newline)."""
    lines = ["| # | kind | what the user did | command | the message names |",
             "|---|---|---|---|---|"]  # fmt: skip
    for number, case in enumerate(cases, start=1):
        command = case.shown().replace("|", "\\|")
        lines.append(f"| {number} | {case.category} | {case.did} | `{command}` | {case.names} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
