"""slurm/ray_cluster.sh against the Python it relies on: the exit-status copy, and its helpers
calling the `uaclm` subcommands for real (bash, no Slurm, no Ray cluster)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from uaclm_dist.exit_codes import EXIT_STOPPED

REPO = Path(__file__).resolve().parents[2]
RAY_CLUSTER = REPO / "slurm" / "ray_cluster.sh"
SHELL_SCRIPTS = sorted((REPO / "slurm").glob("*.sh")) + sorted((REPO / "launchers").glob("*.sh"))


def test_shell_exit_stopped_equals_exit_codes():
    found = re.findall(r"^UACLM_EXIT_STOPPED=(\d+)\s*$", RAY_CLUSTER.read_text(), re.MULTILINE)
    assert found == [str(EXIT_STOPPED)]


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_no_literal_stopped_status_in_scripts(script):
    """Status 75 appears in code only as UACLM_EXIT_STOPPED (comments may name the number)."""
    code = [line for line in script.read_text().splitlines()
            if not line.lstrip().startswith("#") and not line.startswith("UACLM_EXIT_STOPPED=")]
    assert not [line for line in code if re.search(r"\b75\b", line)]


def test_slurm_scripts_carry_no_python():
    for script in (REPO / "slurm").glob("*.sh"):
        text = script.read_text()
        assert "<<'PY'" not in text and "python -" not in text, script


def bash(snippet: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``snippet`` after sourcing ray_cluster.sh, with this Python's `uaclm` first on PATH."""
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "UACLM_"))}
    full_env.update(PATH=path, UACLM_REPO=str(REPO), **env)
    script = f"source {RAY_CLUSTER}\n{snippet}"
    return subprocess.run(["bash", "-c", script], cwd=tmp_path, env=full_env, text=True,
                          capture_output=True, timeout=120)  # fmt: skip


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 2}}')
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name_or_path: tiny-llama\n"
                    "distributed:\n  deepspeed_config: ds.json\n")
    return path


def test_output_dir_reads_the_config_through_uaclm(tmp_path, config_file):
    proc = bash(f"uaclm_output_dir {config_file} logging.output_dir=runs/x", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{tmp_path}/runs/x\n"
    proc = bash(f"uaclm_output_dir {config_file}", tmp_path, SLURM_JOB_NAME="uaclm-7b",
                SLURM_JOB_ID="42")  # fmt: skip
    assert proc.stdout == f"{tmp_path}/runs/uaclm-7b-42\n", proc.stderr


def test_output_dir_with_a_bad_override_exits_2(tmp_path, config_file):
    proc = bash(f"uaclm_output_dir {config_file} optim.lr=abc", tmp_path)
    assert proc.returncode == 2
    assert "uaclm: error:" in proc.stderr and "'optim.lr'" in proc.stderr


def test_wait_ready_fails_with_the_reason_when_no_cluster_answers(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = bash("UACLM_RAY_STEP_PIDS=($$); uaclm_ray_wait_ready 2 2 0 1", tmp_path,
                RAY_ADDRESS=f"127.0.0.1:{port}")  # fmt: skip
    assert proc.returncode == 1
    assert f"cannot connect to Ray at 127.0.0.1:{port} within 1s" in proc.stderr
    assert "error: the Ray cluster did not come up" in proc.stderr
