"""The cluster launchers, run for real: Debian's Slurm (munge, slurmctld, slurmd) and Ray.

* single node: ``sbatch slurm/train_13b.sh`` with sbatch-CLI sizes (1 node, 0 GPUs) trains the
  tiny config; adapter and logs land where docs/CLUSTER.md says.
* two nodes in network namespaces: the job's Ray cluster has both nodes, one Ray Train worker
  runs on each, gloo talks over eth0, and the result equals the single-node run's.
* ``launchers/submit.sh`` (``ray job submit``) against ``launchers/local_head.sh`` (token auth)
  runs ``uaclm train`` from the uploaded code to SUCCEEDED.
* wall-time signal: USR1 to the batch shell -> checkpoint -> ``scontrol requeue`` -> the
  requeued job resumes from that checkpoint (contiguous steps).

Every daemon, namespace and Ray process started here is stopped by pid in fixture finalizers
(helpers in cluster_fixtures.py). Tests skip, with the reason, only where this machine cannot
run them: not root, Slurm not installable, no network namespaces.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import cluster_fixtures as cf  # tests/integration is on sys.path (pytest rootdir import)
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.integration

REPO = cf.REPO
VENV_BIN = REPO / ".venv" / "bin"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED"}  # fmt: skip
# fp32, no quantization, no dropout: the same global batch gives the same numbers on any layout.
EXACT = ("model.quantization.method=none", "model.dtype=float32", "model.lora.dropout=0.0",
         "objective.name=clm", "optim.max_steps=4", "distributed.num_workers=2",
         "distributed.cpus_per_worker=1")  # fmt: skip
# Small jobs: the scripts' #SBATCH sizes (GPUs, 36 CPUs, 320G, 12 h) overridden on the CLI.
# --signal must shrink with --time (USR1 600 s before a 20-minute limit would come at once).
SMALL = ("--gpus-per-node=0", "--mem=3G", "--time=20", "--signal=B:USR1@30")
JOB_TIMEOUT = 900


# ------------------------------------------------------------------------------- fixtures


def _available(check) -> None:
    """Skip (with the reason) where this machine cannot run Slurm or namespaces; in CI
    (``CI=true``) fail instead, so a green CI always includes the cluster tests."""
    try:
        check()
    except cf.Unavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the cluster tests cannot run: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def state():
    path = cf.short_tmpdir("ul")  # short: munge and Ray socket paths live under it
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture(scope="module")
def munge(state):
    _available(cf.require_root)
    _available(cf.ensure_slurm_installed)
    m = cf.Munge(state).start()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def single(state, munge):
    (state / "s").mkdir()
    cluster = cf.single_node_cluster(state / "s", munge)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def two(state, munge):
    _available(cf.require_netns)
    net = cf.NetnsNetwork().setup()
    try:
        (state / "t").mkdir()
        cluster = cf.two_node_cluster(state / "t", munge, net)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        net.teardown()


def job_env(cluster: cf.SlurmCluster, **extra: str) -> dict[str, str]:
    env = {
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "UACLM_REPO": str(REPO),  # submitted from a temp folder, not the repository root
        # checked for leftovers; short: Ray's socket paths under it must stay < 108 characters
        "UACLM_RAY_TMPDIR": str(cluster.state / "r"),
        "UACLM_RAY_TIMEOUT": "240",
    }  # fmt: skip
    (cluster.state / "r").mkdir(exist_ok=True)
    return {**env, **extra}


def submit(cluster: cf.SlurmCluster, cwd: Path, args, env: dict) -> str:
    cwd.mkdir(parents=True, exist_ok=True)
    return cluster.sbatch(["--export=ALL", *args], cwd=cwd, env=env)


def finish(cluster: cf.SlurmCluster, job: str, log: Path) -> dict[str, str]:
    info = cluster.wait_job(job, TERMINAL, JOB_TIMEOUT)
    text = log.read_text() if log.exists() else "(no job log)"
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (
        f"job {job}: {info.get('JobState')} {info.get('ExitCode')}\n{text[-8000:]}"
    )
    return info


def assert_cleaned_up(cluster: cf.SlurmCluster, job: str) -> None:
    """After a job: no process it started is left (only the Slurm daemons carry the marker),
    and the Ray temp dirs of the job are gone."""
    daemons = {p.pid for p in cluster.slurmds.values()} | {cluster.ctld.pid}

    def leftovers():  # the daemons and their helpers (slurmctld's slurmscriptd) stay
        return [p for p in cf.pids_with_env(cluster.marker)
                if p not in daemons and _ppid(p) not in daemons]  # fmt: skip

    try:
        cf.wait_for("the job's processes to exit", lambda: not leftovers(), 60)
    except TimeoutError:
        described = [f"{p}: {_cmdline(p)}" for p in leftovers()]
        raise AssertionError("processes left behind:\n" + "\n".join(described)) from None
    assert not list((cluster.state / "r").glob(f"uaclm-ray-{job}/*")), "Ray temp dir left"


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


def adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


# ---------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def single_node_run(state, single):
    """`sbatch slurm/train_13b.sh` on one node, config and overrides from the environment."""
    submit_dir = state / "submit-single"
    env = job_env(single, UACLM_CONFIG="configs/tiny_test.yaml", UACLM_OVERRIDES=" ".join(EXACT))
    started = time.time()
    job = submit(single, submit_dir, ["-N1", "--cpus-per-task=2", *SMALL,
                                      str(REPO / "slurm" / "train_13b.sh")], env)  # fmt: skip
    log = submit_dir / f"slurm-uaclm-13b-{job}.out"  # #SBATCH --output=slurm-%x-%j.out
    finish(single, job, log)
    return {"job": job, "log": log, "out": submit_dir / "runs" / "tiny_test",
            "seconds": time.time() - started}  # fmt: skip


def test_single_node_sbatch_trains_and_puts_adapter_and_logs_where_documented(
    state, single, single_node_run
):
    out, log = single_node_run["out"], single_node_run["log"]
    text = log.read_text()
    # config's logging.output_dir (runs/tiny_test), relative to the submit directory
    assert (out / "adapter" / "adapter_model.safetensors").exists(), text[-4000:]
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] is False and summary["steps_done"] == 4
    assert json.loads((out / "run_info.json").read_text())["world_size"] == 2
    assert "Ray cluster ready: 1 node(s), 2 CPUs, 0 GPUs" in text
    assert "--resume" not in text
    assert_cleaned_up(single, single_node_run["job"])
    print(f"single-node job: {single_node_run['seconds']:.0f} s")


def test_two_nodes_with_the_vocab_sharded_head_match_the_single_node_fused_run(
    state, two, single_node_run
):
    submit_dir = state / "submit-two"
    out = state / "two-out"
    # RAY_DEDUP_LOGS=0: Ray folds similar log lines ("[repeated 2x across cluster]"), the
    # per-worker lines of the worker-group listing included
    env = job_env(two, UACLM_IFNAME="eth0", UACLM_OUTPUT_DIR=str(out), RAY_DEDUP_LOGS="0")
    started = time.time()
    job = submit(two, submit_dir, ["-N2", "--ntasks-per-node=1", "--cpus-per-task=1", *SMALL,
                                   str(REPO / "slurm" / "train_13b.sh"),
                                   "configs/tiny_test.yaml", *EXACT,
                                   "objective.implementation=vocab_parallel"], env)  # fmt: skip
    log = submit_dir / f"slurm-uaclm-13b-{job}.out"
    finish(two, job, log)
    text = log.read_text()
    # the Ray cluster had both nodes, on their namespace addresses
    assert "Ray cluster ready: 2 node(s), 2 CPUs, 0 GPUs" in text, text[-6000:]
    assert "node 10.99.0.11: CPU 1" in text and "node 10.99.0.12: CPU 1" in text
    # one Ray Train worker per node (Ray Train's worker-group listing)
    # (which node gets rank 0 is Ray's choice)
    # (Ray's own output goes to the run's logs/driver.log unless --verbose)
    ray_text = text + (out / "logs" / "driver.log").read_text()
    listed = re.findall(r"\(ip=([\d.]+), pid=\d+\) world_rank=(\d)", ray_text)
    workers = {rank: ip for ip, rank in listed}
    assert sorted(workers) == ["0", "1"], workers
    assert sorted(workers.values()) == ["10.99.0.11", "10.99.0.12"], workers
    # gloo over the namespace network
    config = json.loads((out / "run_info.json").read_text())["config"]
    assert config["distributed"]["gloo_socket_ifname"] == "eth0"
    # the paper recipes' path: the LM head's vocabulary sharded across the two hosts; with the
    # same global batch as the single-node (fused, whole head) run: same losses and adapter
    assert config["objective"]["implementation"] == "vocab_parallel"
    ref = single_node_run["out"]
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]
    la, lb = [r["loss"] for r in metrics(out)], [r["loss"] for r in metrics(ref)]
    assert la == pytest.approx(lb, rel=1e-4)
    ta, tb = adapter(out), adapter(ref)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.allclose(ta[key], tb[key], rtol=1e-4, atol=1e-6), key
    assert any(t.abs().sum() > 0 for k, t in ta.items() if "lora_B" in k)
    assert_cleaned_up(two, job)
    print(f"two-node job: {time.time() - started:.0f} s")


def test_ray_job_submit_to_a_local_head_with_token_auth_succeeds(state):
    head_state = state / "hd"
    head_state.mkdir()
    head = cf.LocalHead(head_state).start()
    try:
        started = time.time()
        env = head.env
        # auth is on: a client with the wrong token is refused
        wrong = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"}
        wrong["RAY_AUTH_TOKEN"] = "0" * 64
        refused = cf.run([str(VENV_BIN / "ray"), "job", "list", "--address", head.dashboard],
                         env=wrong, check=False, timeout=120)  # fmt: skip
        assert refused.returncode != 0, refused.stdout
        # ... and `uaclm train` with it joining the head stops before anything starts (exit 2)
        not_run = state / "wrong_token_run"
        proc = cf.run([str(VENV_BIN / "uaclm"), "train", str(REPO / "configs/tiny_test.yaml"),
                       f"distributed.ray_address={head.address}",
                       f"logging.output_dir={not_run}"],
                      env=wrong, check=False, timeout=120)  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert (f"uaclm: error: distributed.ray_address {head.address}: the Ray head refused "
                "this client's auth token") in proc.stderr  # fmt: skip
        assert wrong["RAY_AUTH_TOKEN"] not in proc.stderr + proc.stdout
        assert not not_run.exists()
        out = state / "submitted"
        # fake credentials in the submitter's environment must not travel with the job
        # ... and the submitter's Hugging Face cache must (where gated weights are kept)
        hf_home = state / "hf-home"
        hf_home.mkdir()
        proc = cf.run([str(REPO / "launchers" / "submit.sh"), head.dashboard,
                       "configs/tiny_test.yaml", "optim.max_steps=4",
                       f"logging.output_dir={out}"],
                      env={**env, **cf.FAKE_SECRETS, "HF_HOME": str(hf_home)}, timeout=300,
                      cwd=state)  # fmt: skip
        job_id = re.search(r"submitted: (\S+)", proc.stdout).group(1)
        assert "ray job logs -f" in proc.stdout and "ray job stop" in proc.stdout

        def status():
            s = cf.run([str(VENV_BIN / "python"), "-c", JOB_STATUS, head.dashboard, job_id],
                       env=env, check=False, timeout=120)  # fmt: skip
            found = s.stdout.strip()
            return found if found in {"SUCCEEDED", "FAILED", "STOPPED"} else None

        final = cf.wait_for(f"ray job {job_id}", status, JOB_TIMEOUT, interval=5)
        logs = cf.run([str(VENV_BIN / "ray"), "job", "logs", "--address", head.dashboard,
                       job_id], env=env, check=False, timeout=120).stdout  # fmt: skip
        assert final == "SUCCEEDED", logs[-8000:]
        assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]
        assert (out / "adapter" / "adapter_model.safetensors").exists()
        # the job ran the uploaded code: the package is there, the excluded folders are not
        ray_tmp = head_state / "h" / "ray"
        pkgs = [p for p in ray_tmp.glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*")
                if p.is_dir()]  # fmt: skip
        assert pkgs, "no uploaded working_dir found"
        pkg = pkgs[0]
        assert (pkg / "uaclm_dist" / "data" / "__init__.py").exists()  # "/data" is anchored
        assert (pkg / "configs" / "tiny_test.yaml").exists()
        for excluded in (".git", ".venv", "runs"):
            assert not (pkg / excluded).exists(), excluded
        info = json.loads((out / "run_info.json").read_text())
        assert info["git_commit"] is None  # no .git in the uploaded copy
        job_info = cf.run([str(VENV_BIN / "python"), "-c", JOB_INFO, head.dashboard, job_id],
                          env=env, timeout=120).stdout  # fmt: skip
        assert "working_dir" in job_info  # the recorded runtime env
        assert json.loads(job_info)["runtime_env"]["env_vars"]["HF_HOME"] == str(hf_home)
        token = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        secrets = (*cf.FAKE_SECRETS.values(), token)
        assert not [v[:8] for v in secrets if v in job_info + logs], "a secret reached the job"
        assert cf.files_holding_secrets(out, secrets) == []
        print(f"ray job submit: {time.time() - started:.0f} s")
    finally:
        head_pid = head.pid()
        head.stop()
    assert head.stop_output.returncode == 0, head.stop_output.stderr
    status_after = head.script("status")
    assert status_after.returncode == 3, status_after.stdout
    if head_pid is not None:
        cf.wait_for("the head's processes to exit", lambda: not _group_alive(head_pid), 30)


JOB_INFO = """
import json, sys
from ray.job_submission import JobSubmissionClient
info = JobSubmissionClient(sys.argv[1]).get_job_info(sys.argv[2])
print(json.dumps({"runtime_env": info.runtime_env, "entrypoint": info.entrypoint,
                  "metadata": info.metadata}, default=str))
"""

JOB_STATUS = """
import sys
from ray.job_submission import JobSubmissionClient
print(JobSubmissionClient(sys.argv[1]).get_job_status(sys.argv[2]).value)
"""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_usr1_before_the_time_limit_checkpoints_requeues_and_resumes(state, single):
    submit_dir = state / "submit-requeue"
    out = state / "requeue-out"
    env = job_env(single)
    # enough steps left after step 2 (~0.1 s each) for the signal to travel batch shell ->
    # driver -> STOP file -> workers (~1.5 s measured): with 12 the run could end first
    steps = 60
    started = time.time()
    job = submit(single, submit_dir, ["-N1", "--cpus-per-task=2", *SMALL,
                                      str(REPO / "slurm" / "train_7b.sh"),
                                      "configs/tiny_test.yaml", "objective.name=clm",
                                      f"optim.max_steps={steps}",
                                      f"logging.output_dir={out}"], env)  # fmt: skip
    log = submit_dir / f"slurm-uaclm-7b-{job}.out"

    def stepped() -> bool:
        if single.job(job).get("JobState") in TERMINAL:
            raise AssertionError(f"job ended early:\n{log.read_text()[-6000:]}")
        return (out / "metrics.jsonl").exists() and len(metrics(out)) >= 2

    cf.wait_for("step 2", stepped, JOB_TIMEOUT, interval=0.2)
    # what --signal=B:USR1@T does at T seconds before the limit: USR1 to the batch shell only
    cf.run(["scancel", "--signal=USR1", "--batch", job], env=single.env)
    requeued = cf.wait_for("the requeue", lambda: int(single.job(job).get("Restarts", 0)) >= 1,
                           300, interval=0.5, diagnose=lambda: log.read_text()[-6000:])  # fmt: skip
    assert requeued
    # the checkpoint the stop wrote (the only one before the requeued run ends)
    states = [json.loads(p.read_text())
              for p in (out / "ray" / "train").glob("checkpoint_*/run_state.json")]  # fmt: skip
    assert states, "no checkpoint written on SIGUSR1"
    stopped_at = max(s["next_step"] for s in states)
    assert 2 <= stopped_at < steps
    finish(single, job, log)
    text = log.read_text()
    assert "received SIGUSR1" in text
    assert f"stopped after step {stopped_at}/{steps}" in text
    assert f"scontrol requeue {job}" in text
    assert "(restart 1): resuming" in text and f"--resume {out}" in text
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))  # resumed, not from step 0
    assert not (out / "metrics.superseded.jsonl").exists()
    assert json.loads((out / "summary.json").read_text())["stopped"] is False
    assert_cleaned_up(single, job)
    print(f"signal + requeue + resume: {time.time() - started:.0f} s")


SWEEP_SPEC = """
name: tiny-2x2
base: {base}
axes:
  - zip:
      model.tiny.hidden_size: [64, 128, 64]
      model.tiny.num_layers: [2, 4, 2]
      model.tiny.intermediate_size: [128, 256, 128]
      data.max_length: [64, 64, 16]     # the third point: no question fits in 16 tokens
  - key: objective.name
    values: [clm, ua_clm]
overrides:  # 1 worker, 1 CPU: two array tasks run at once on the 2-CPU node
  distributed.num_workers: 1
  optim.grad_accumulation: 2
  optim.max_steps: 4
  logging.log_every_steps: 2
  logging.probe_examples: 4
evaluate: false
output_dir: {out}
"""


def test_sweep_2x2_on_slurm_then_locally_with_a_failing_cell_and_reruns_that_skip(state, single):
    """`uaclm sweep` for real (issue 14): two tiny-Llama sizes x two objectives, plus a third
    zip point whose override cannot run.

    * ``--backend slurm``: the six cells (1 CPU each) as tasks of one array on the real
      single-node Slurm, watched to the end: four finish, the two bad ones are recorded failed
      with uaclm's reason while the others finish. A rerun of the finished cells submits nothing.
    * ``--backend local`` on the same folder: the four finished cells are skipped, the two failed
      ones are retried (for real, here) and fail again. (Every Slurm task runs the local backend
      on its one cell, ``uaclm sweep run --backend local --only ID``: that is where the local
      backend trains; a separate local 2 x 2 would repeat those trainings for ~5 minutes.)
    * ``collect``: every cell's row in sweep.parquet, parameters growing with size,
      tokens/s > 0, 0 < MFU <= 1, the plots and the markdown tables.
    """
    out = state / "sweep"
    spec = state / "sweep.yaml"
    spec.write_text(SWEEP_SPEC.format(base=REPO / "configs/tiny_test.yaml", out=out))
    env = {**single.env, **job_env(single)}
    started = time.time()

    def sweep(command: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "python"), "-m", "uaclm_dist.cli", "sweep",
                               command, str(spec), *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=JOB_TIMEOUT)  # fmt: skip

    run = sweep("run", "--backend", "slurm", "--slurm-arg=--mem=3G")
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((out / "slurm").glob("*.out")))
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:] + logs
    assert run.stdout.count("[sweep] submitted array") == 1
    assert "4/6 done, 2 failed, 0 running, 0 queued" in run.stdout, run.stdout[-3000:] + logs
    assert len(list((out / "slurm").glob("*_[0-5].out"))) == 6
    statuses = {c.name: json.loads((c / "status.json").read_text())
                for c in out.iterdir() if (c / "status.json").exists()}  # fmt: skip
    assert len(statuses) == 6 and all(s["slurm_task"] for s in statuses.values())
    done_ids = [cell for cell, s in statuses.items() if s["state"] == "done"]
    assert len(done_ids) == 4 and not any("-16-" in cell for cell in done_ids)
    again = sweep("run", "--backend", "slurm", "--only", *done_ids)
    assert again.returncode == 0 and "4 finished earlier, 0 to run" in again.stdout
    assert "submitted array" not in again.stdout

    local = sweep("run")  # --backend local
    assert local.returncode == 1, local.stdout[-3000:] + local.stderr[-3000:]
    assert "4/6 done, 2 failed, 0 remaining" in local.stdout, local.stdout[-3000:]
    assert local.stdout.count("train: logs in") == 2  # only the failed cells ran again

    collected = sweep("collect")
    assert collected.returncode == 0, collected.stderr[-3000:]
    frame = pd.read_parquet(out / "sweep.parquet")
    cells = frame.drop_duplicates("cell")
    assert len(cells) == 6
    done, failed = cells[cells["status"] == "done"], cells[cells["status"] == "failed"]
    assert len(done) == 4 and set(failed["data.max_length"]) == {16}
    assert all("uaclm train exited with status 2" in r for r in failed["reason"])
    status = json.loads((out / failed.iloc[0]["cell"] / "status.json").read_text())
    assert status["attempt"] == 2
    assert any("fits data.max_length 16" in line for line in status["stderr_tail"])
    # every finished cell: its compute numbers, and the bigger model has more parameters
    for _, row in done.iterrows():
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] <= 1, row.to_dict()
        assert row["world_size"] == 1 and row["tokens_seen"] > 0
        assert row["step_s_loss"] > 0 and row["peak_memory_mb_max"] > 0
    sizes = done.groupby("model.tiny.hidden_size")["params_total"].first()
    assert sizes[128] > sizes[64] > 0
    assert set(done["objective.name"]) == {"clm", "ua_clm"}
    assert (done["sig_n_base_incorrect"] > 0).all()  # the entropy probe ran in every cell
    for plot in ("throughput", "memory"):
        assert (out / f"{plot}.png").stat().st_size > 10_000, plot
    md = (out / "sweep.md").read_text()
    assert "## Compute" in md and "## Failed or missing cells" in md
    print(f"slurm + local sweep: {time.time() - started:.0f} s")
