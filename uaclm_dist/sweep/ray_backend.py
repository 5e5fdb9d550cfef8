"""``uaclm sweep run SPEC --backend ray --address http://HEAD:8265``: each cell a Ray job.

Each unfinished cell is submitted through the Ray Jobs API with this repository's code as the
job's ``working_dir`` (the excludes of ``launchers/submit.sh``: no .git, .venv, runs, data,
checkpoints, W&B folders) and runs the local backend for that one cell inside the job::

    python -m uaclm_dist.cli sweep run SPEC --backend local --only <cell id>

so its status.json, resume and failure record are those of a local run, and the training and
evaluation it starts join the cluster through the job (``RAY_ADDRESS``). At most
``--max-parallel`` jobs (default 1) are queued or running at once; the next is submitted as one
ends, so cells do not compete for the cluster's CPUs / GPUs.

Each cell's job is recorded in its status.json (``ray_job``, state ``queued``) before it is
submitted. This process is the queue: stopped (Ctrl-C), it leaves the jobs already on the
cluster running and says which; ``sweep run`` again watches those (a cell whose recorded job is
still pending or running is never submitted twice) and submits the rest.

The job runs in a temporary copy of the repository, so the results must go to storage the
driver and every node see at the same path: the spec's ``output_dir`` must be absolute (exit 2
otherwise), and a spec outside the repository must be on that storage too (a spec inside it
travels with the code). The job's environment gets only the offline-hub flags and token-auth
mode; credentials in this shell are never forwarded (the cluster keeps its own token).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import yaml

from uaclm_dist.config import REPO_ROOT, ConfigError
from uaclm_dist.sweep.layout import cell_paths
from uaclm_dist.sweep.remote import RemoteCell, mark_queued, recorded_in_flight, watch_cells
from uaclm_dist.sweep.spec import SweepSpec
from uaclm_dist.sweep.status import write_status
from uaclm_dist.sweep.validate import CellCheck

__all__ = ["JOB_EXCLUDES", "check_ray_spec", "job_runtime_env", "run_on_ray"]

#: anchored at the repository root (a bare "data" would also drop the uaclm_dist/data package)
JOB_EXCLUDES = ["/.git", "/.venv", "/data", "/checkpoints", "/runs", "/wandb", "/outputs",
                "__pycache__", "/.pytest_cache", "/.ruff_cache", "/.bench", "/*.egg-info",
                "/slurm-*.out"]  # fmt: skip
ACTIVE_STATES = ("PENDING", "RUNNING")


def check_ray_spec(spec: SweepSpec) -> str:
    """The spec path as the job sees it; :class:`ConfigError` for an ``output_dir`` that is not
    absolute in the spec file."""
    raw = (yaml.safe_load(spec.path.read_text()) or {}).get("output_dir")
    if not isinstance(raw, str) or not Path(raw).expanduser().is_absolute():
        raise ConfigError(
            f"--backend ray: output_dir in {spec.path} must be an absolute folder on storage "
            f"the cluster's nodes share (each job runs in an uploaded copy of the repository); "
            f"got {raw!r}")  # fmt: skip
    path = spec.path.resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def job_runtime_env() -> dict[str, Any]:
    """The jobs' runtime env: the repository, offline hub, token auth, and the submitter's
    Hugging Face cache variables (the job's driver and its workers look where the submitter
    keeps the models)."""
    from uaclm_dist.cluster import HF_CACHE_ENV

    return {
        "working_dir": str(REPO_ROOT),
        "excludes": list(JOB_EXCLUDES),
        "env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "RAY_AUTH_MODE": "token",
                     # `uaclm train` calls ray.init(runtime_env=...) with some of the same keys
                     "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1",
                     **{k: os.environ[k] for k in HF_CACHE_ENV if os.environ.get(k)}},
    }  # fmt: skip


class _JobQueue:
    """Submits cells at most ``max_parallel`` at a time and answers which are active."""

    def __init__(self, client, spec: SweepSpec, spec_arg: str, cells: list[RemoteCell],
                 max_parallel: int, job_python: str, out: TextIO):  # fmt: skip
        self.client, self.spec, self.spec_arg = client, spec, spec_arg
        self.waiting = list(cells)
        self.max_parallel, self.job_python, self.out = max_parallel, job_python, out
        self.submitted: set[str] = set()
        self.last_status: dict[str, str] = {}

    def _in_flight(self) -> set[str]:
        """Submitted jobs not known to have ended (a job not polled yet counts as pending)."""
        return {h for h in self.submitted
                if self.last_status.get(h, "PENDING") in ACTIVE_STATES}  # fmt: skip

    def watch_earlier(self, earlier: list[tuple[RemoteCell, str]]) -> None:
        """Jobs of an earlier run, with their state (pending or running): watched, not
        submitted again."""
        for cell, state in earlier:
            self.submitted.add(cell.handle)
            self.last_status[cell.handle] = state
            print(f"[sweep] {cell.check.cell.id}: still on the cluster as Ray job "
                  f"{cell.handle}, not submitted again", file=self.out, flush=True)  # fmt: skip

    def _submit_next(self) -> None:
        in_flight = self._in_flight()
        while self.waiting and len(in_flight) < self.max_parallel:
            cell = self.waiting.pop(0)
            entrypoint = (f"{self.job_python} -m uaclm_dist.cli sweep run {self.spec_arg} "
                          f"--backend local --only {cell.check.cell.id}")  # fmt: skip
            # recorded first: the job's own run keeps the name, a rerun finds the job
            before = mark_queued(cell, "ray_job")
            try:
                self.client.submit_job(entrypoint=entrypoint, submission_id=cell.handle,
                                       runtime_env=job_runtime_env(),
                                       metadata={"uaclm_sweep": self.spec.name,
                                                 "cell": cell.check.cell.id})  # fmt: skip
            except BaseException:
                write_status(cell.paths, before)  # never submitted: as it was
                raise
            self.submitted.add(cell.handle)
            in_flight.add(cell.handle)
            print(f"[sweep] submitted {cell.handle} ({cell.check.cell.label})", file=self.out,
                  flush=True)  # fmt: skip

    def active(self, cells: list[RemoteCell]) -> set[str]:
        for handle in list(self.submitted):
            if self.last_status.get(handle) not in (None, *ACTIVE_STATES):
                continue
            status = self.client.get_job_status(handle)
            self.last_status[handle] = getattr(status, "value", str(status))
        self._submit_next()
        return self._in_flight() | {c.handle for c in self.waiting}

    def why_gone(self, cell: RemoteCell) -> str:
        status = self.last_status.get(cell.handle)
        return (f"Ray job status {status}; its logs: ray job logs {cell.handle}" if status
                else "never submitted")  # fmt: skip


def run_on_ray(spec: SweepSpec, checks: list[CellCheck], *, address: str, max_parallel: int,
               out: TextIO, job_python: str = "python",
               client_factory: Callable[[str], Any] | None = None,
               poll_s: float = 5.0):  # fmt: skip
    """Submit the cells as Ray jobs, ``max_parallel`` at a time, until all have settled; the
    final progress. (This process is the queue, so it waits: there is no ``--no-wait``.)"""
    spec_arg = check_ray_spec(spec)
    if client_factory is None:
        from ray.job_submission import JobSubmissionClient

        client_factory = JobSubmissionClient
    client = client_factory(address)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cells = [RemoteCell(c, cell_paths(spec, c.cell),
                        f"uaclm-sweep-{c.cell.id}-{stamp}-{uuid.uuid4().hex[:4]}")
             for c in checks]  # fmt: skip
    earlier = _still_on_cluster(spec, checks, client)
    skip = {cell.check.cell.id for cell, _ in earlier}
    queue = _JobQueue(client, spec, spec_arg, [c for c in cells if c.check.cell.id not in skip],
                      max_parallel, job_python, out)  # fmt: skip
    queue.watch_earlier(earlier)
    try:
        return watch_cells(spec, [cell for cell, _ in earlier] + queue.waiting,
                           active=queue.active, why_gone=queue.why_gone, out=out,
                           poll_s=poll_s)  # fmt: skip
    except KeyboardInterrupt:
        left = sorted(queue._in_flight())
        if left:
            print(f"[sweep] interrupted: {len(left)} Ray job(s) keep running on the cluster "
                  f"({', '.join(left)}); `uaclm sweep run` again watches them and submits the "
                  "rest; `ray job stop ID` stops one", file=out, flush=True)  # fmt: skip
        raise


def _job_state(client, handle: str) -> str | None:
    """The job's status (``PENDING``, ``RUNNING``, ``SUCCEEDED``, ...); None if the cluster does
    not know it (another cluster, or its job table was lost)."""
    try:
        status = client.get_job_status(handle)
    except Exception:  # noqa: BLE001 - the client raises RuntimeError or HTTP errors alike
        return None
    return getattr(status, "value", str(status))


def _still_on_cluster(spec: SweepSpec, checks: list[CellCheck],
                      client) -> list[tuple[RemoteCell, str]]:  # fmt: skip
    """Cells whose job from an earlier ``sweep run --backend ray`` (status.json ``ray_job``) is
    still pending or running on the cluster, with that state."""
    earlier = []
    for check, paths, handle in recorded_in_flight(spec, checks, "ray_job"):
        state = _job_state(client, handle)
        if state in ACTIVE_STATES:
            earlier.append((RemoteCell(check, paths, handle), state))
    return earlier
