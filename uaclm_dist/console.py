"""What a run prints on the console, and what goes to the log files of its folder.

By default (``uaclm train | eval | run`` without ``--verbose``) a person sees one progress bar per
phase, the run summary and real errors; everything else lands in ``<run folder>/logs/``:

* ``driver.log``: the driver's own file descriptors 1 and 2 while Ray runs (:func:`driver_output`):
  Ray's driver logging, the output Ray forwards from its actors (Train controller, Ray Data
  stages, generation actors), C++ lines of the driver's core worker, and the processes a local
  ``ray.init`` starts, which inherit those descriptors;
* ``rank{r}.log``: all output of training worker ``r`` (:func:`redirect_fds` at the start of its
  loop: model loading, DeepSpeed, torch warnings, W&B, Ray Train's reports).

With ``--verbose`` nothing is redirected: the console shows all of it, as Ray prints it.

Two exceptions reach the console in the default mode too: lines the Ray autoscaler or raylet
send to the driver (resource requests that cannot be met, workers killed for memory:
:func:`cluster_notices`), and a failed training's rank logs (:func:`failure_report`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

#: The log folder inside a run or evaluation folder.
LOG_DIR = "logs"

#: The driver's log inside :data:`LOG_DIR`.
DRIVER_LOG = "driver.log"

#: Environment of Ray workers and actors in the default (quiet) mode: no weight-loading bars
#: (they would fill the log files with carriage-return frames).
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}

#: Sources of forwarded Ray output that reach the console in the default mode too.
NOTICE_SOURCES = ("autoscaler", "raylet")

#: Lines of a rank's log shown when that rank failed (Ray's error, with the traceback, follows).
TAIL_LINES = 12

_DISPATCHER_HANDLER = "uaclm_cluster_notices"


def rank_log(log_dir: str | Path, rank: int) -> Path:
    """``log_dir/rank{rank}.log``: the log of training worker ``rank``."""
    return Path(log_dir) / f"rank{rank}.log"


@contextmanager
def redirect_fds(path: str | Path, fds: Sequence[int] = (1, 2)) -> Iterator[Path]:
    """Point file descriptors ``fds`` (stdout, stderr) at ``path`` (appended) until exit.

    fd-level (``os.dup2``), so output of C++ extensions, child processes and libraries that
    hold their own handle to fd 1 / 2 is caught too, not just ``print``. Python's streams are
    flushed before and after, so nothing written before lands on the wrong side.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _flush_std_streams()
    saved = [os.dup(fd) for fd in fds]
    try:
        with path.open("ab", buffering=0) as log:
            for fd in fds:
                os.dup2(log.fileno(), fd)
            try:
                yield path
            finally:
                _flush_std_streams()
                for fd, copy in zip(fds, saved, strict=True):
                    os.dup2(copy, fd)
    finally:
        for copy in saved:
            os.close(copy)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed or replaced by a test harness
            pass


@contextmanager
def driver_output(log_dir: str | Path, verbose: bool) -> Iterator[TextIO]:
    """``with driver_output(run / "logs", verbose) as terminal:`` around the part of a driver
    that runs Ray. Yields the stream for progress bars and messages meant for the person at the
    console (stderr as it was on entry).

    Quiet (``verbose`` False): fds 1 and 2 go to ``log_dir/driver.log`` meanwhile, and the
    :func:`cluster_notices` of Ray's forwarded output are echoed to the terminal. Verbose: no
    redirection, the terminal is ``sys.stderr``.
    """
    if verbose:
        yield sys.stderr
        return
    _flush_std_streams()
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8",
                         errors="replace")  # fmt: skip
    try:
        with redirect_fds(Path(log_dir) / DRIVER_LOG), _environ(RAY_COLOR_PREFIX="0"), \
                _echo_cluster_notices(terminal):  # fmt: skip
            yield terminal
    finally:
        terminal.close()


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    """This process's environment with ``values`` set (unless already set) until exit
    (``RAY_COLOR_PREFIX=0``: Ray's forwarded lines without terminal colour codes)."""
    added = {key: value for key, value in values.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def cluster_notices(batch: dict[str, Any],
                    autoscaler_events: Callable[[list[str]], Iterable[str]] = list,
                    ) -> list[str]:  # fmt: skip
    """The lines of one batch of Ray's forwarded worker output (``{"pid", "lines", ...}``) that
    the console shows in the default mode, prefixed with their source: a raylet's (a worker
    killed for memory, ...) and the autoscaler's events (a resource request no node can
    satisfy), which ``autoscaler_events`` picks from the autoscaler's lines (its periodic
    status report is not one: Ray's own printer filters the same way)."""
    source = str(batch.get("pid", ""))
    if source not in NOTICE_SOURCES:
        return []
    lines = list(batch.get("lines", ()))
    if source == "autoscaler":
        lines = list(autoscaler_events(lines))
    return [f"({source}) {line}" for line in lines if line.strip()]


@contextmanager
def _echo_cluster_notices(terminal: TextIO) -> Iterator[None]:
    """Echo :func:`cluster_notices` to ``terminal`` while Ray forwards worker output to the
    driver (Ray's dispatcher of forwarded output is internal: without it, nothing is echoed)."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        from ray._private.worker import filter_autoscaler_events
    except ImportError:  # another Ray layout: the notices stay in driver.log
        yield
        return

    def echo(batch: dict[str, Any]) -> None:
        for line in cluster_notices(batch, filter_autoscaler_events):
            print(line, file=terminal, flush=True)

    dispatcher.add_handler(_DISPATCHER_HANDLER, echo)
    try:
        yield
    finally:
        dispatcher.remove_handler(_DISPATCHER_HANDLER)


def tail(path: str | Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a text file (without line ends; [] when it does not exist);
    carriage-return progress frames collapse to their last frame."""
    try:
        text = Path(path).read_bytes().decode(errors="replace")  # keeps the "\r"s
    except OSError:
        return []
    rows = [row.rsplit("\r", 1)[-1] for row in text.split("\n")]
    return [row for row in rows if row.strip()][-lines:]


def failure_report(log_dir: str | Path, ranks: Iterable[int]) -> str:
    """What a failed training prints before Ray's error: for each failed rank (all ranks that
    left a log when ``ranks`` is empty), where its full log is and its last lines."""
    log_dir = Path(log_dir)
    ranks = sorted(set(ranks)) or sorted(_logged_ranks(log_dir))
    parts = [f"[uaclm] training failed; logs in {log_dir}/ ({DRIVER_LOG}: Ray and the driver)"]
    for rank in ranks:
        path = rank_log(log_dir, rank)
        last = tail(path)
        head = f"[uaclm] rank {rank} failed; full log: {path}"
        parts.append(f"{head}, last {len(last)} lines:" if last else f"{head} (empty)")
        parts += [f"  | {line}" for line in last]
    return "\n".join(parts)


def _logged_ranks(log_dir: Path) -> list[int]:
    names = (p.stem.removeprefix("rank") for p in log_dir.glob("rank*.log"))
    return [int(n) for n in names if n.isdigit()]


def failed_ranks(exc: BaseException) -> list[int]:
    """The world ranks a Ray Train error names (``WorkerGroupError.worker_failures``), else []."""
    failures = getattr(exc, "worker_failures", None)
    return sorted(int(r) for r in failures) if isinstance(failures, dict) else []
