"""The GPU check runs here too: ``gpu_check.sh --cpu`` runs every check of the GPU run on the
CPU (gloo, small shapes) with the imports the GPU host lacks refused, from a bundle's cache; the
bundle's bitsandbytes wheel keeps one CUDA library and a RECORD that matches; an oversized
bundle is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

EVERY_CHECK = {"environment", "nf4_lora", "loss_ua_clm_V500", "loss_ua_clm_V1000",
               "loss_clm_V500", "loss_clm_V1000", "collectives", "train_zero2_ua_clm",
               "train_zero3_clm+ua", "decoder", "slice_7b"}  # fmt: skip


@pytest.fixture(scope="module")
def cache_bundle(tmp_path_factory) -> Path:
    bundle = tmp_path_factory.mktemp("bundle") / "gpu-bundle"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_bundle.py"), "--dest",
                    str(bundle), "--cache-only"], check=True, capture_output=True)  # fmt: skip
    return bundle


def test_the_gpu_check_runs_every_check_on_the_cpu(cache_bundle, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "UACLM_GPU_BUNDLE": str(cache_bundle)}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu", "--out",
                           str(out)], capture_output=True, text=True, env=env, timeout=600,
                          check=False)  # fmt: skip
    rows = [json.loads(x) for x in (out / "gpu_check.jsonl").read_text().splitlines() if x]
    failed = {r["name"]: r.get("error") or r for r in rows if not r["passed"]}
    assert proc.returncode == 0 and not failed, (failed, proc.stdout[-3000:],
                                                 proc.stderr[-3000:])  # fmt: skip
    assert {r["name"] for r in rows} == EVERY_CHECK
    by_name = {r["name"]: r for r in rows}
    assert by_name["collectives"]["backend"] == "gloo"  # cpu:gloo,cuda:nccl on a GPU
    assert by_name["train_zero3_clm+ua"]["steps_logged"] == [1, 2, 3, 4]
    assert f"{len(EVERY_CHECK)} of {len(EVERY_CHECK)} passed" in (out / "gpu_check.md").read_text()


def test_without_a_gpu_the_gpu_run_says_why_and_exits_3(cache_bundle, tmp_path):
    env = {**os.environ, "UACLM_GPU_BUNDLE": str(cache_bundle), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--out",
                           str(tmp_path)], capture_output=True, text=True, env=env,
                          check=False)  # fmt: skip
    assert proc.returncode == 3 and "no NVIDIA GPU" in proc.stderr


def test_bitsandbytes_keeps_one_cuda_library_with_a_matching_record(tmp_path):
    import gpu_bundle

    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    libs = ["cpu", "cuda118", "cuda128", "cuda130", "rocm64"]
    with zipfile.ZipFile(wheel, "w") as z:
        for lib in libs:
            z.writestr(f"bitsandbytes/libbitsandbytes_{lib}.so", lib * 100)
        z.writestr("bitsandbytes/__init__.py", "x = 1\n")
        z.writestr("bitsandbytes-0.50.2.dist-info/RECORD", "stale\n")
    gpu_bundle.strip_bitsandbytes(tmp_path, "130")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode().splitlines()
    assert {n for n in names if ".so" in n} == {"bitsandbytes/libbitsandbytes_cpu.so",
                                                "bitsandbytes/libbitsandbytes_cuda130.so"}
    assert {r.split(",")[0] for r in record} == names
    with pytest.raises(SystemExit, match="no CUDA 999 library"):
        gpu_bundle.strip_bitsandbytes(tmp_path, "999")


def test_a_bundle_over_the_limit_is_refused_with_the_sizes(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_bundle.py"), "--dest",
                           str(tmp_path / "b"), "--cache-only", "--limit-mib", "1"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "MiB + repository" in proc.stdout and "over the limit of 1 MiB" in proc.stderr
