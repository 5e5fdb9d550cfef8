"""One evaluated method's results on disk, written whole or not at all, and reused only when the
same evaluation would produce them.

``per_example/<method>.parquet`` is written to a ``.partial`` name and renamed into place, after
``per_example/<method>.json``: the fingerprint of what produced it (model and eval settings,
seed, adapter files, the exact prompts). A parquet in place therefore always is a finished
method. Running an evaluation that was stopped again (same ``--out``) reuses every finished
method whose fingerprint matches and generates the rest; a parquet made with other settings is
refused before Ray starts, naming the file and the first setting that differs, and is never
overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from uaclm_dist.config import ConfigError

PER_EXAMPLE = "per_example"


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def adapter_digest(adapter: Path | None) -> dict[str, str] | None:
    """sha256 of each file of an adapter folder (None for the base model)."""
    if adapter is None:
        return None
    digests = {}
    for path in sorted(p for p in Path(adapter).rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        digests[path.relative_to(adapter).as_posix()] = digest.hexdigest()
    return digests


def method_fingerprint(name: str, adapter: Path | None, *, model: dict, eval_settings: dict,
                       seed: int, prompt_rows: list[dict]) -> dict:  # fmt: skip
    """What determines a method's per-example results (JSON-able; compared key by key)."""
    return {
        "method": name,
        "adapter": str(adapter) if adapter else None,
        "adapter_files_sha256": adapter_digest(adapter),
        "model": model,
        "eval": eval_settings,
        "seed": seed,
        "prompts": len(prompt_rows),
        "prompts_sha256": _sha256_json(prompt_rows),
    }


def paths(out: Path, name: str) -> tuple[Path, Path]:
    folder = Path(out) / PER_EXAMPLE
    return folder / f"{name}.parquet", folder / f"{name}.json"


def _first_difference(saved: dict, wanted: dict, prefix: str = "") -> str | None:
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _first_difference(a, b, f"{prefix}{key}.")
            if inner:
                return inner
        elif a != b:
            return f"{prefix}{key}: {a!r} there, {b!r} now"
    return None


def finished_method(out: Path, fingerprint: dict) -> Path | None:
    """The finished parquet of this method to reuse, None when there is none yet;
    :class:`ConfigError` when the parquet there was made by another evaluation."""
    parquet, sidecar = paths(out, fingerprint["method"])
    if not parquet.exists():
        return None
    try:
        saved = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{parquet} has no readable fingerprint ({sidecar}: {exc}); it is "
                          "not overwritten: use another --out") from exc  # fmt: skip
    difference = _first_difference(saved, fingerprint)
    if difference:
        raise ConfigError(f"{parquet} was made by another evaluation ({difference}); it is "
                          "not overwritten: use another --out, or the settings it was made "
                          "with")  # fmt: skip
    return parquet


def write_method(out: Path, fingerprint: dict, df: pd.DataFrame) -> Path:
    """Fingerprint, then the parquet, each through a ``.partial`` name and a rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet, sidecar = paths(out, fingerprint["method"])
    parquet.parent.mkdir(parents=True, exist_ok=True)
    partial = sidecar.with_name(sidecar.name + ".partial")
    partial.write_text(json.dumps(fingerprint, indent=1, default=str))
    os.replace(partial, sidecar)
    # Plain arrow columns without pandas extension-dtype metadata (Ray hands back ``ArrowDtype``
    # list columns, whose metadata pandas cannot read back).
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
    partial = parquet.with_name(parquet.name + ".partial")
    pq.write_table(table, partial)
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, parquet)
    return parquet
