"""The ``uaclm`` console script.

    uaclm config show CONFIG [key=value ...]     print the resolved config as YAML
    uaclm config check CONFIG [key=value ...]    validate, print a one-line summary
    uaclm config get CONFIG KEY [key=value ...]  print one value of the resolved config
    uaclm config reference                       markdown table of every config key
    uaclm train | eval | run CONFIG [key=value ...] [--verbose]
    uaclm stop RUN_DIR                           checkpoint and stop a running training
    uaclm resources CONFIG train|eval [key=value ...]   "WORKERS CPUS GPUS" the run asks Ray for
    uaclm cluster wait --nodes N [--cpus C] [--gpus G] [--timeout S] [--address ADDR] [--pid PID]
    uaclm sweep plan|run|collect SPEC            study sweeps (uaclm_dist/sweep/)

``train``, ``eval`` and ``run`` show progress bars, the summary and errors; Ray's, DeepSpeed's and
the workers' output goes to ``logs/`` in the run (evaluation) folder, or to the console with
``--verbose`` (:mod:`uaclm_dist.console`).

Every command that takes a config validates it completely before doing anything else. A bad
config prints ``uaclm: error: <message>`` on stderr and exits with status 2, without a traceback.
Exit statuses: :mod:`uaclm_dist.exit_codes`.

Adding a subcommand: write ``handler(args) -> int`` and register it in :data:`COMMANDS` (an
action of ``config`` / ``cluster``: in :data:`CONFIG_SUBCOMMANDS` / :data:`CLUSTER_SUBCOMMANDS`);
for a command that takes ``CONFIG [key=value ...]``, list it in :data:`CONFIG_COMMANDS`, and give
any other arguments an adder in :data:`ARGUMENTS`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from uaclm_dist import cluster
from uaclm_dist.config import ConfigError, RunConfig, load_config, reference_markdown
from uaclm_dist.exit_codes import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_IMPLEMENTED,
    EXIT_OK,
    EXIT_STOPPED,
    CommandFailed,
    CommandStopped,
)
from uaclm_dist.sweep.cli import SWEEP_ARGUMENTS, SWEEP_SUBCOMMANDS

PROG = "uaclm"

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


def config_value(config: RunConfig, key: str) -> Any:
    """The value of dotted ``key`` (``optim.lr``, ``data.field_map.question``) in ``config``;
    :class:`ConfigError` naming the key (and the closest valid one) when there is none."""
    data = value = config.to_dict()
    for i, part in enumerate(parts := key.split(".")):
        parent = ".".join(parts[:i])
        if not isinstance(value, dict):
            raise ConfigError(f"unknown key '{key}': '{parent}' is a value, not a section")
        if part not in value:
            close = difflib.get_close_matches(key, _dotted_keys(data), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown key '{key}' (no '{part}' in {parent or 'the config'})"
                              f"{hint}")  # fmt: skip
        value = value[part]
    return value


def _dotted_keys(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, value in data.items():
        keys.append(prefix + name)
        if isinstance(value, dict):
            keys += _dotted_keys(value, f"{prefix}{name}.")
    return keys


def shell_text(value: Any) -> str:
    """``value`` as one shell-friendly line that parses back as an override value: null -> empty,
    booleans -> true / false, lists and mappings -> JSON, anything else -> str()."""
    if value is None:
        return ""
    if isinstance(value, bool | list | dict):
        return json.dumps(value)
    return str(value)


def _config_get(args: argparse.Namespace) -> int:
    """Print one value of the resolved config (dotted KEY; lists and mappings as JSON)."""
    print(shell_text(config_value(_load(args), args.key)))
    return EXIT_OK


def _config_reference(args: argparse.Namespace) -> int:
    """Print a markdown reference of every config key."""
    sys.stdout.write(reference_markdown())
    return EXIT_OK


CONFIG_SUBCOMMANDS: dict[str, Handler] = {
    "show": _config_show,
    "check": _config_check,
    "get": _config_get,
    "reference": _config_reference,
}


def _config(args: argparse.Namespace) -> int:
    """Inspect and validate configs (show, check, get, reference)."""
    return CONFIG_SUBCOMMANDS[args.action](args)


# ------------------------------------------------------------------------ resources / cluster


def _resources(args: argparse.Namespace) -> int:
    """Print "WORKERS CPUS GPUS" a training (train) or an evaluation (eval) asks Ray for."""
    print(cluster.required_resources(_load(args), args.kind).line())
    return EXIT_OK


def _cluster_wait(args: argparse.Namespace) -> int:
    """Wait until the Ray cluster has the nodes, CPUs and GPUs a run needs."""
    if not args.address:
        raise ConfigError("no Ray address: pass --address HOST:PORT or set RAY_ADDRESS")
    need = cluster.Resources(0, args.cpus, args.gpus)
    try:
        state = cluster.wait_for_cluster(args.address, nodes=args.nodes, need=need,
                                         timeout=args.timeout, pids=args.pid)  # fmt: skip
    except cluster.ClusterNotReady as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    cluster.print_ready(state)
    return EXIT_OK


CLUSTER_SUBCOMMANDS: dict[str, Handler] = {"wait": _cluster_wait}


def _cluster(args: argparse.Namespace) -> int:
    """Ray cluster checks for the launchers (wait)."""
    return CLUSTER_SUBCOMMANDS[args.action](args)


# ------------------------------------------------------------------------- train / eval / run


#: Modules of the ``run_training`` / ``run_evaluation`` entry points (imported on use: Ray is
#: heavy).
TRAIN_MODULE = "uaclm_dist.train.trainer"
EVAL_MODULE = "uaclm_dist.evaluate.runner"


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


def _training_status(summary: Any) -> int:
    if isinstance(summary, dict) and summary.get("stopped"):
        return EXIT_STOPPED
    return _exit_status(summary)


def _train(args: argparse.Namespace) -> int:
    """Fine-tune a model (Ray Train workers, DeepSpeed)."""
    config = _load(args)
    run_training = _entry_point(TRAIN_MODULE, "run_training")
    if run_training is None:
        return _not_implemented("train", f"{TRAIN_MODULE}.run_training")
    summary = run_training(config, resume_dir=args.resume, stop_after_steps=args.stop_after_steps,
                           verbose=args.verbose)  # fmt: skip
    return _training_status(summary)


def _stop(args: argparse.Namespace) -> int:
    """Ask a running training to checkpoint and stop at its next step (resume with --resume)."""
    from pathlib import Path

    from uaclm_dist.train.run_dir import STOP_FILE

    run_dir = Path(args.run_dir)
    if not (run_dir / "run_info.json").exists():
        raise ConfigError(f"{run_dir} holds no uaclm run (no run_info.json)")
    (run_dir / STOP_FILE).write_text("uaclm stop\n")
    print(f"stop requested: {run_dir / STOP_FILE}")
    return EXIT_OK


def _baselines(values: list[str]) -> tuple[str | None, dict[str, str]]:
    """``--baseline`` values -> (the default baseline or None, ``{method: its own baseline}``):
    ``NAME`` sets the default (at most once), ``METHOD=NAME`` pairs one method with its own."""
    plain = [v for v in values if "=" not in v]
    if len(plain) > 1:
        raise ConfigError(f"--baseline: one default baseline, got {plain} (pair a method with "
                          "its own as METHOD=BASELINE)")  # fmt: skip
    pairs: dict[str, str] = {}
    for value in values:
        if "=" in value:
            method, _, reference = value.partition("=")
            if not method or not reference or method in pairs:
                raise ConfigError(f"--baseline {value}: expected METHOD=BASELINE, each method "
                                  "once")  # fmt: skip
            pairs[method] = reference
    return (plain[0] if plain else None), pairs


def _eval(args: argparse.Namespace) -> int:
    """Generate answers, score uncertainty and compute the metrics."""
    config = _load(args)
    run_evaluation = _entry_point(EVAL_MODULE, "run_evaluation")
    if run_evaluation is None:
        return _not_implemented("eval", f"{EVAL_MODULE}.run_evaluation")
    baseline, pairs = _baselines(args.baseline)
    run_evaluation(config, args.adapter, include_base=args.base, out_dir=args.out,
                   allow_train_overlap=args.allow_train_overlap, baseline=baseline,
                   pairs=pairs, verbose=args.verbose)  # fmt: skip
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    """Train, then evaluate the trained model."""
    config = _load(args)
    run_training = _entry_point(TRAIN_MODULE, "run_training")
    run_evaluation = _entry_point(EVAL_MODULE, "run_evaluation")
    if run_training is None or run_evaluation is None:
        return _not_implemented(
            "run", f"{TRAIN_MODULE}.run_training and {EVAL_MODULE}.run_evaluation"
        )
    status = _training_status(run_training(config, verbose=args.verbose))
    if status != EXIT_OK:
        return status
    run_evaluation(config, verbose=args.verbose)
    return EXIT_OK


def _sweep(args: argparse.Namespace) -> int:
    """Plan, run and collect a study sweep (train + eval over a grid of config values)."""
    return SWEEP_SUBCOMMANDS[args.action](args)


#: Subcommand name -> handler. The handler's docstring (first line) is its help text.
COMMANDS: dict[str, Handler] = {
    "config": _config,
    "train": _train,
    "eval": _eval,
    "run": _run,
    "stop": _stop,
    "resources": _resources,
    "cluster": _cluster,
    "sweep": _sweep,
}

#: Commands with actions (``uaclm config show``): command -> action -> handler.
ACTIONS: dict[str, dict[str, Handler]] = {
    "config": CONFIG_SUBCOMMANDS,
    "cluster": CLUSTER_SUBCOMMANDS,
    "sweep": SWEEP_SUBCOMMANDS,
}

#: Commands (and ``command action`` pairs) whose arguments are ``CONFIG [key=value ...]``.
CONFIG_COMMANDS = ("train", "eval", "run", "config show", "config check")


# ------------------------------------------------------------------------------------ parser


def _summary(handler: Handler) -> str:
    return (handler.__doc__ or "").strip().splitlines()[0] if handler.__doc__ else ""


def _add_config_arguments(parser: argparse.ArgumentParser, *between: tuple[str, dict]) -> None:
    """``CONFIG``, then the ``(name, add_argument kwargs)`` positionals of ``between``, then the
    ``key=value`` overrides."""
    parser.add_argument("config", metavar="CONFIG", help="YAML run config")
    for name, kwargs in between:
        parser.add_argument(name, **kwargs)
    parser.add_argument(
        "overrides",
        metavar="key=value",
        nargs="*",
        help="dotted overrides applied on top of CONFIG, values parsed as YAML "
        "(e.g. optim.lr=2e-4 model.lora.target_modules=[q_proj,v_proj])",
    )


def _verbose_argument(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--verbose", action="store_true",
        help="show Ray's, DeepSpeed's and the workers' output on the console (default: in "
        "logs/ of the run or evaluation folder; the console shows progress, summary, errors)",
    )  # fmt: skip


def _train_arguments(sub: argparse.ArgumentParser) -> None:
    _verbose_argument(sub)
    sub.add_argument(
        "--resume", metavar="RUN_DIR", default=None,
        help="continue the run in RUN_DIR from its latest checkpoint (same config)",
    )  # fmt: skip
    sub.add_argument(
        "--stop-after-steps", metavar="N", type=int, default=None,
        help=f"checkpoint and stop (exit {EXIT_STOPPED}) after N optimizer steps of this "
        "invocation",
    )  # fmt: skip


def _eval_arguments(sub: argparse.ArgumentParser) -> None:
    _verbose_argument(sub)
    sub.add_argument(
        "--adapter", metavar="[NAME=]PATH", action="append", default=[],
        help="a LoRA adapter folder or a run folder (its adapter/); repeat to compare "
        "several; NAME labels it in the tables (default: the folder name)",
    )  # fmt: skip
    sub.add_argument("--base", action="store_true", help="also evaluate the base model")
    sub.add_argument("--out", metavar="DIR", default=None,
                     help="evaluation folder (default: logging.output_dir/eval)")  # fmt: skip
    sub.add_argument(
        "--baseline", metavar="NAME|METHOD=NAME", action="append", default=[],
        help="the method every other one is compared with (paired differences, intervals, "
        "Holm); default: the first (base with --base, else the first --adapter). "
        "METHOD=NAME (repeatable) compares METHOD with NAME instead, e.g. a two-stage run "
        "with its control: --baseline clm --baseline clm_then_ua_clm=clm_then_clm",
    )  # fmt: skip
    sub.add_argument(
        "--allow-train-overlap", action="store_true",
        help="score the config's test split even where it holds questions an adapter's run "
        "trained on (its split_ids.json): the numbers are then CONTAMINATED. Default: refuse "
        "(exit 2) on any overlap, and score only the ids every run held out",
    )  # fmt: skip


def _stop_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("run_dir", metavar="RUN_DIR", help="the run's logging.output_dir")


def _config_get_arguments(sub: argparse.ArgumentParser) -> None:
    _add_config_arguments(sub, ("key", {"metavar": "KEY", "help": "dotted key, e.g. optim.lr"}))


def _resources_arguments(sub: argparse.ArgumentParser) -> None:
    kind = {"choices": ("train", "eval"), "metavar": "train|eval",
            "help": "Ray Train workers (train) or generation actors (eval)"}  # fmt: skip
    _add_config_arguments(sub, ("kind", kind))


def _cluster_wait_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--address", metavar="HOST:PORT", default=os.environ.get("RAY_ADDRESS"),
                     help="the head's GCS address (default: $RAY_ADDRESS)")  # fmt: skip
    sub.add_argument("--nodes", metavar="N", type=int, default=1, help="alive nodes to wait for")
    sub.add_argument("--cpus", metavar="C", type=float, default=0.0, help="CPUs in total")
    sub.add_argument("--gpus", metavar="G", type=float, default=0.0, help="GPUs in total")
    sub.add_argument("--timeout", metavar="S", type=float, default=300.0,
                     help="give up after S seconds (default 300)")  # fmt: skip
    sub.add_argument("--pid", metavar="PID", type=int, action="append", default=[],
                     help="a process running Ray nodes (e.g. an srun step); stop waiting once it "
                     "has exited (repeatable)")  # fmt: skip


#: Command (or ``command action``) -> adds its arguments other than CONFIG [key=value ...].
ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "train": _train_arguments,
    "eval": _eval_arguments,
    "run": _verbose_argument,
    "stop": _stop_arguments,
    "resources": _resources_arguments,
    "config get": _config_get_arguments,
    "cluster wait": _cluster_wait_arguments,
    **SWEEP_ARGUMENTS,
}


def _add_command(subparsers: Any, name: str, handler: Handler, path: str) -> Any:
    """One (sub)command parser with its help text and arguments; returns the parser."""
    sub = subparsers.add_parser(name, help=_summary(handler), description=_summary(handler))
    if path in CONFIG_COMMANDS:
        _add_config_arguments(sub)
    if path in ARGUMENTS:
        ARGUMENTS[path](sub)
    return sub


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``uaclm`` with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Distributed uncertainty-aware fine-tuning (UA-CLM) and evaluation of LLMs.",
        epilog="Config keys: `uaclm config reference` (also docs/CONFIG.md).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, handler in COMMANDS.items():
        sub = _add_command(commands, name, handler, name)
        sub.set_defaults(handler=handler)
        if name in ACTIONS:
            actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
            for action, action_handler in ACTIONS[name].items():
                _add_command(actions, action, action_handler, f"{name} {action}")
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
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CommandFailed as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except CommandStopped as exc:
        print(f"{PROG}: stopped: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
