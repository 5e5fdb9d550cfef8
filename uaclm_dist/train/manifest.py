"""Atomic, verified checkpoint files: a manifest per rank, publishing by rename, verification.

A checkpoint folder in Ray Train's storage is filled by every rank at once (each rank's DeepSpeed
shard and RNG state; rank 0 also the adapter and ``run_state.json``). A crash, a SIGKILL or a full
disk during that copy must never leave a folder that *looks* usable. So each rank:

1. writes its files into its own local temporary folder and fsyncs them;
2. records them in ``manifest/rank{r}.json``: relative path, size in bytes and sha256 of each;
3. publishes them into the storage folder one file at a time, each copied to
   ``<name>.partial-rank{r}``, fsynced and renamed into place (``os.replace``: a reader sees the
   old file or the whole new one, never a prefix), and its manifest *last*, the same way.

A checkpoint is usable only if rank 0's run state names the world size and every rank's manifest
is present and every file it lists has its size (cheap; what completeness checks use) and, when
resuming, its sha256 (:func:`verify`). A rank killed mid-publish leaves no manifest; a file
truncated or altered afterwards fails its size or hash. Resume takes the newest checkpoint that
verifies and names every newer one it skipped
(:func:`uaclm_dist.train.run_state.latest_checkpoint`).

Only the standard library: the sweep runner checks checkpoints without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

MANIFEST_DIR = "manifest"
PARTIAL_SUFFIX = ".partial-rank"

#: ``(relative path, source file, partial destination) -> None``: called before each file is
#: published (fault injection in the integration tests; see :mod:`uaclm_dist.faults`).
BeforeFileHook = Callable[[str, Path, Path], None]


def manifest_path(directory: Path, rank: int) -> Path:
    return Path(directory) / MANIFEST_DIR / f"rank{rank}.json"


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _files_under(directory: Path) -> list[Path]:
    """Every regular file below ``directory`` except manifests, sorted (relative paths)."""
    return sorted(
        p.relative_to(directory)
        for p in Path(directory).rglob("*")
        if p.is_file() and p.relative_to(directory).parts[0] != MANIFEST_DIR
    )


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync_file(path)
    except OSError:  # some filesystems refuse fsync on a directory; the rename is still atomic
        pass


def write_manifest(local_dir: Path, rank: int) -> dict:
    """fsync every file this rank wrote under ``local_dir`` and record them in its manifest.

    Returns the manifest: ``{"rank": r, "files": [{"path", "bytes", "sha256"}, ...]}``.
    """
    local_dir = Path(local_dir)
    files = []
    for rel in _files_under(local_dir):
        path = local_dir / rel
        _fsync_file(path)
        files.append({"path": rel.as_posix(), "bytes": path.stat().st_size,
                      "sha256": sha256_of(path)})  # fmt: skip
    manifest = {"rank": rank, "files": files}
    target = manifest_path(local_dir, rank)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(manifest, indent=1))
    _fsync_file(target)
    return manifest


def _publish_file(source: Path, target: Path, rank: int, rel: str,
                  before: BeforeFileHook | None) -> None:  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f"{PARTIAL_SUFFIX}{rank}")
    if before is not None:
        before(rel, source, partial)
    shutil.copyfile(source, partial)
    _fsync_file(partial)
    os.replace(partial, target)
    _fsync_dir(target.parent)


def publish(local_dir: Path, dest_dir: Path, rank: int,
            before_file: BeforeFileHook | None = None) -> None:  # fmt: skip
    """Copy this rank's files (and then its manifest, written by :func:`write_manifest`) from
    ``local_dir`` into ``dest_dir``, each by copy + fsync + rename."""
    local_dir, dest_dir = Path(local_dir), Path(dest_dir)
    own_manifest = manifest_path(local_dir, rank)
    if not own_manifest.exists():
        raise FileNotFoundError(f"{own_manifest}: write_manifest before publish")
    dest_dir.mkdir(parents=True, exist_ok=True)
    for rel in _files_under(local_dir):
        _publish_file(local_dir / rel, dest_dir / rel, rank, rel.as_posix(), before_file)
    rel = own_manifest.relative_to(local_dir)
    _publish_file(own_manifest, dest_dir / rel, rank, rel.as_posix(), before_file)


def verify(directory: Path, world_size: int, *, hashes: bool) -> list[str]:
    """Problems that make the checkpoint unusable (empty list: it verifies).

    Every rank ``0..world_size-1`` must have a readable manifest, and every file it lists must
    exist with the recorded size and, with ``hashes``, the recorded sha256.
    """
    directory = Path(directory)
    problems: list[str] = []
    for rank in range(world_size):
        path = manifest_path(directory, rank)
        try:
            files = json.loads(path.read_text())["files"]
        except FileNotFoundError:
            problems.append(
                f"rank {rank} never finished writing (no {MANIFEST_DIR}/rank{rank}.json)"
            )
            continue
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{MANIFEST_DIR}/rank{rank}.json unreadable ({exc})")
            continue
        for entry in files:
            file = directory / entry["path"]
            if not file.is_file():
                problems.append(f"{entry['path']} missing")
            elif file.stat().st_size != entry["bytes"]:
                problems.append(f"{entry['path']} has {file.stat().st_size} bytes, "
                                f"the manifest says {entry['bytes']}")  # fmt: skip
            elif hashes and sha256_of(file) != entry["sha256"]:
                problems.append(f"{entry['path']} sha256 differs from the manifest")
    return problems


def set_aside(path: Path, numbered: Callable[[int], Path]) -> Path:
    """Rename ``path`` to ``numbered(k)`` for the first ``k >= 1`` not taken; returns the new
    path. Nothing is deleted (an earlier record or attempt is kept beside the new one)."""
    k = 1
    while numbered(k).exists():
        k += 1
    path.rename(numbered(k))
    return numbered(k)


def replace_dir_atomically(source: Path, target: Path) -> None:
    """Make ``target`` a copy of the folder ``source``; at every moment ``target`` is either the
    old folder or the whole new one (copy beside it, fsync, then two renames; a crash between
    the renames leaves the old folder as ``.<name>.old``, put back by the next call, never a
    half-copied ``target``)."""
    source, target = Path(source), Path(target)
    staging = target.with_name(f".{target.name}.partial")
    old = target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():  # a crash between the two renames: put it back
        os.replace(old, target)
    for leftover in (staging, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    shutil.copytree(source, staging)
    for path in staging.rglob("*"):
        if path.is_file():
            _fsync_file(path)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    _fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)
