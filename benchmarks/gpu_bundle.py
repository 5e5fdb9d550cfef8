"""``make gpu-bundle``: what the GPU check needs that its host lacks, in ``.gpu-bundle/``.

The host (docs/GPU_CHECK.md) has Python 3.12 with its CUDA torch, transformers and the
scientific stack, no network, and takes at most 64 MiB of files per command, the repository
included. This writes, in a git-ignored folder:

- ``wheels/``: cp312 manylinux wheels of what the host lacks and the check imports:
  DeepSpeed (an sdist, built into a wheel here against this venv's torch; its ops stay
  JIT-built), bitsandbytes with only the CUDA library the host's torch uses (``--cuda``, default
  130 for CUDA 13.0) and the CPU one, peft (the tested version), pydantic and its parts, hjson;
- ``cache/``: the SmolLM2 tokenizer folder (``UACLM_CACHE`` layout) the tiny test model uses,
  built here from the packaged GGUF (the host has no gguf and no assets);
- ``commit``: the commit the bundle was made from (``-dirty`` with uncommitted changes).

It fails (exit 1) when the bundle and the repository's files that travel would exceed
``--limit-mib`` (60), printing the sizes. ``--cache-only`` writes ``cache/`` alone (what
``gpu_check.sh --cpu`` needs; ``make test`` does this).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")  # fmt: skip
#: Downloaded as wheels for the host, at this venv's versions (the ones the tests ran with).
DOWNLOADED = ("bitsandbytes", "peft", "pydantic", "pydantic-core", "annotated-types",
              "typing-inspection", "typing-extensions", "hjson")  # fmt: skip
#: Built here from its sdist.
BUILT = ("deepspeed",)


def build_cache(dest: Path) -> Path:
    """The tokenizer folder under ``dest/cache`` (``UACLM_CACHE`` layout)."""
    cache = dest / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "UACLM_CACHE": str(cache)}
    code = ("from uaclm_dist.modeling.loading import ensure_smollm2_tokenizer_dir; "
            "print(ensure_smollm2_tokenizer_dir())")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    for lock in cache.glob("*.lock"):
        lock.unlink()
    return cache


def download_wheels(wheels: Path) -> None:
    pins = [f"{name}=={md.version(name)}" for name in DOWNLOADED]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                    *platforms, "-d", str(wheels), *pins], check=True)  # fmt: skip
    for name in BUILT:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "-w", str(wheels),
                        f"{name}=={md.version(name)}"], check=True)  # fmt: skip


def strip_bitsandbytes(wheels: Path, cuda: str) -> None:
    """Rewrite the bitsandbytes wheel with only ``libbitsandbytes_cuda{cuda}.so`` and the CPU
    library (the others are ~170 MB), its RECORD updated to match."""
    (wheel,) = wheels.glob("bitsandbytes-*.whl")
    keep = {f"libbitsandbytes_cuda{cuda}.so", "libbitsandbytes_cpu.so"}
    stripped = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(stripped, "w",
                                                        zipfile.ZIP_DEFLATED) as out:  # fmt: skip
        names = [n for n in src.namelist()
                 if not (Path(n).name.startswith("libbitsandbytes_") and Path(n).name not in keep)]
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        if not any(Path(n).name == f"libbitsandbytes_cuda{cuda}.so" for n in names):
            raise SystemExit(f"gpu-bundle: bitsandbytes has no CUDA {cuda} library")
        rows = []
        for name in names:
            if name == record_name:
                continue
            data = src.read(name)
            out.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            rows.append(f"{name},sha256={digest.decode()},{len(data)}")
        out.writestr(record_name, "\n".join([*rows, f"{record_name},,"]) + "\n")
    stripped.replace(wheel)


def tree_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def repository_mib() -> float:
    """Tracked and untracked-not-ignored files: what a device call sends besides the bundle."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, check=True,
                            capture_output=True).stdout.split(b"\0")  # fmt: skip
    files = [REPO / name.decode() for name in listed if name]
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip() or "unknown"  # fmt: skip
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return head + ("-dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=REPO / ".gpu-bundle")
    parser.add_argument("--cuda", default="130", help="CUDA version of the host's torch, e.g. 130")
    parser.add_argument("--limit-mib", type=float, default=60.0)
    parser.add_argument("--cache-only", action="store_true")
    args = parser.parse_args(argv)
    dest = args.dest.resolve()
    with tempfile.TemporaryDirectory(prefix=".gpu-bundle-", dir=dest.parent) as tmp:
        staging = Path(tmp)
        build_cache(staging)
        if not args.cache_only:
            wheels = staging / "wheels"
            wheels.mkdir()
            download_wheels(wheels)
            strip_bitsandbytes(wheels, args.cuda)
        (staging / "commit").write_text(commit() + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(staging, dest)
    bundle, repo = tree_mib(dest), repository_mib()
    print(f"gpu-bundle: {dest} {bundle:.1f} MiB + repository {repo:.1f} MiB = "
          f"{bundle + repo:.1f} MiB (limit {args.limit_mib:g} MiB)")
    for path in sorted(dest.rglob("*")):
        if path.is_file() and path.stat().st_size > 2**20:
            print(f"  {path.relative_to(dest)}  {path.stat().st_size / 2**20:.1f} MiB")
    if bundle + repo > args.limit_mib:
        print(f"gpu-bundle: over the limit of {args.limit_mib:g} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
