"""The ``uaclm`` console script.

    uaclm config show CONFIG [key=value ...]     print the resolved config as YAML
    uaclm config check CONFIG [key=value ...]    validate, print a one-line summary
    uaclm config reference                       markdown table of every config key
    uaclm train | eval | run CONFIG [key=value ...]

Every command that takes a config validates it completely before doing anything else. A bad
config prints ``uaclm: error: <message>`` on stderr and exits with status 2, without a traceback.

Adding a subcommand: write ``handler(args) -> int`` and register it in :data:`COMMANDS` (for a
command that takes ``CONFIG [key=value ...]``, list it in :data:`CONFIG_COMMANDS` as well).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from uaclm_dist.config import ConfigError, RunConfig, load_config, reference_markdown

PROG = "uaclm"

#: Exit statuses.
EXIT_OK = 0
EXIT_CONFIG_ERROR = 2
EXIT_NOT_IMPLEMENTED = 3

Handler = Callable[[argparse.Namespace], int]


def _load(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, args.overrides)


# ------------------------------------------------------------------------------------ config


def _config_show(args: argparse.Namespace) -> int:
    """Print the resolved config (file + overrides + defaults) as YAML."""
    sys.stdout.write(_load(args).to_yaml())
    return EXIT_OK


def _config_check(args: argparse.Namespace) -> int:
    """Validate the config and print a one-line summary."""
    config = _load(args)
    print(f"ok: {args.config} is valid")
    print(config.summary())
    return EXIT_OK


def _config_reference(args: argparse.Namespace) -> int:
    """Print a markdown reference of every config key."""
    sys.stdout.write(reference_markdown())
    return EXIT_OK


CONFIG_SUBCOMMANDS: dict[str, Handler] = {
    "show": _config_show,
    "check": _config_check,
    "reference": _config_reference,
}


def _config(args: argparse.Namespace) -> int:
    """Inspect and validate configs (show, check, reference)."""
    return CONFIG_SUBCOMMANDS[args.config_command](args)


# ------------------------------------------------------------------------- train / eval / run


def _entry_point(module: str, name: str) -> Callable[..., Any] | None:
    """``module.name`` if it exists yet, else None (the command is not implemented)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    return getattr(mod, name, None)


def _not_implemented(command: str, target: str) -> int:
    print(f"{PROG} {command}: not implemented yet (needs {target})", file=sys.stderr)
    return EXIT_NOT_IMPLEMENTED


def _exit_status(result: Any) -> int:
    return result if isinstance(result, int) and not isinstance(result, bool) else EXIT_OK


EXIT_STOPPED = 75  # stopped on request with a checkpoint (EX_TEMPFAIL); resume continues it


def _training_status(summary: Any) -> int:
    if isinstance(summary, dict) and summary.get("stopped"):
        return EXIT_STOPPED
    return _exit_status(summary)


def _train(args: argparse.Namespace) -> int:
    """Fine-tune a model (Ray Train workers, DeepSpeed)."""
    config = _load(args)
    run_training = _entry_point("uaclm_dist.train", "run_training")
    if run_training is None:
        return _not_implemented("train", "uaclm_dist.train.run_training")
    summary = run_training(config, resume_dir=args.resume, stop_after_steps=args.stop_after_steps)
    return _training_status(summary)


def _stop(args: argparse.Namespace) -> int:
    """Ask a running training to checkpoint and stop at its next step (resume with --resume)."""
    from pathlib import Path

    from uaclm_dist.train.worker import STOP_FILE

    run_dir = Path(args.run_dir)
    if not (run_dir / "run_info.json").exists():
        raise ConfigError(f"{run_dir} holds no uaclm run (no run_info.json)")
    (run_dir / STOP_FILE).write_text("uaclm stop\n")
    print(f"stop requested: {run_dir / STOP_FILE}")
    return EXIT_OK


def _eval(args: argparse.Namespace) -> int:
    """Generate answers, score uncertainty and compute the metrics."""
    config = _load(args)
    run_evaluation = _entry_point("uaclm_dist.evaluate", "run_evaluation")
    if run_evaluation is None:
        return _not_implemented("eval", "uaclm_dist.evaluate.run_evaluation")
    run_evaluation(config, args.adapter, include_base=args.base, out_dir=args.out)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    """Train, then evaluate the trained model."""
    config = _load(args)
    run_training = _entry_point("uaclm_dist.train", "run_training")
    run_evaluation = _entry_point("uaclm_dist.evaluate", "run_evaluation")
    if run_training is None or run_evaluation is None:
        return _not_implemented(
            "run", "uaclm_dist.train.run_training and uaclm_dist.evaluate.run_evaluation"
        )
    status = _training_status(run_training(config))
    if status != EXIT_OK:
        return status
    run_evaluation(config)
    return EXIT_OK


#: Subcommand name -> handler. The handler's docstring (first line) is its help text.
COMMANDS: dict[str, Handler] = {
    "config": _config,
    "train": _train,
    "eval": _eval,
    "run": _run,
    "stop": _stop,
}

#: Commands whose arguments are ``CONFIG [key=value ...]``.
CONFIG_COMMANDS = ("train", "eval", "run")


# ------------------------------------------------------------------------------------ parser


def _summary(handler: Handler) -> str:
    return (handler.__doc__ or "").strip().splitlines()[0] if handler.__doc__ else ""


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="YAML run config")
    parser.add_argument(
        "overrides",
        metavar="key=value",
        nargs="*",
        help="dotted overrides applied on top of CONFIG, values parsed as YAML "
        "(e.g. optim.lr=2e-4 model.lora.target_modules=[q_proj,v_proj])",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``uaclm`` with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Distributed uncertainty-aware fine-tuning (UA-CLM) and evaluation of LLMs.",
        epilog="Config keys: `uaclm config reference` (also docs/CONFIG.md).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, handler in COMMANDS.items():
        sub = commands.add_parser(name, help=_summary(handler), description=_summary(handler))
        sub.set_defaults(handler=handler)
        if name in CONFIG_COMMANDS:
            _add_config_arguments(sub)
        if name == "train":
            sub.add_argument(
                "--resume", metavar="RUN_DIR", default=None,
                help="continue the run in RUN_DIR from its latest checkpoint (same config)",
            )  # fmt: skip
            sub.add_argument(
                "--stop-after-steps", metavar="N", type=int, default=None,
                help="checkpoint and stop (exit 75) after N optimizer steps of this invocation",
            )  # fmt: skip
        if name == "eval":
            sub.add_argument(
                "--adapter", metavar="[NAME=]PATH", action="append", default=[],
                help="a LoRA adapter folder or a run folder (its adapter/); repeat to compare "
                "several; NAME labels it in the tables (default: the folder name)",
            )  # fmt: skip
            sub.add_argument("--base", action="store_true", help="also evaluate the base model")
            sub.add_argument("--out", metavar="DIR", default=None,
                             help="evaluation folder (default: logging.output_dir/eval)")
        if name == "stop":
            sub.add_argument("run_dir", metavar="RUN_DIR", help="the run's logging.output_dir")
        if name == "config":
            actions = sub.add_subparsers(dest="config_command", metavar="ACTION", required=True)
            for action, action_handler in CONFIG_SUBCOMMANDS.items():
                help_text = _summary(action_handler)
                action_parser = actions.add_parser(action, help=help_text, description=help_text)
                if action != "reference":
                    _add_config_arguments(action_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``uaclm`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        # key=value overrides may also follow options (`train CONFIG --resume DIR k=v`).
        if extra and hasattr(args, "overrides") and all(
            "=" in x and not x.startswith("-") for x in extra
        ):
            args.overrides = [*args.overrides, *extra]
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG_ERROR
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
