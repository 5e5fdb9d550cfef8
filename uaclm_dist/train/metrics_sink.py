"""Rank 0's training records: metrics.jsonl per logged step, probe.jsonl, and the W&B run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from uaclm_dist.config import RunConfig
from uaclm_dist.secrets import redact


class MetricsSink:
    """Appends rows on rank 0 (other ranks hold a sink that writes nothing).

    On resume at ``start_step`` the rows of steps done after that checkpoint (an abandoned
    trajectory) are moved aside first, so the files hold one row per step.
    """

    def __init__(self, cfg: RunConfig, out_dir: Path, run_id: str, rank: int, start_step: int):
        self.rank = rank
        self.path = out_dir / "metrics.jsonl"
        self.probe_path = out_dir / "probe.jsonl"
        self.wandb = None
        if rank != 0:
            return
        for path in (self.path, self.probe_path):
            if start_step > 0 and path.exists():
                set_aside_rows_after(path, start_step)
        if cfg.logging.wandb_mode != "disabled":
            import wandb

            self.wandb = wandb.init(
                project=cfg.logging.wandb_project, name=cfg.logging.run_name or out_dir.name,
                id=run_id, resume="allow", mode=cfg.logging.wandb_mode, dir=str(out_dir),
                config=json.loads(redact(json.dumps(cfg.to_dict(), default=str))),
            )  # fmt: skip

    def log(self, row: dict, *, probe: bool = False) -> None:
        """Append a row (``row["step"]``: optimizer steps done) to metrics.jsonl, or to
        probe.jsonl with ``probe`` (W&B keys then get a ``probe/`` prefix). NaN and inf become
        null."""
        if self.rank != 0:
            return
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()
        }
        with (self.probe_path if probe else self.path).open("a") as f:
            f.write(json.dumps(clean) + "\n")
        if self.wandb is not None:
            prefix = "probe/" if probe else ""
            values = {prefix + k: v for k, v in clean.items() if v is not None}
            self.wandb.log(values, step=row["step"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def set_aside_rows_after(path: Path, start_step: int) -> None:
    """On resume at 0-based ``start_step``, move rows of steps done after the checkpoint (row
    ``step`` is the 1-based count, so rows > start_step) to ``<name>.superseded.jsonl``."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keep = [r for r in rows if r["step"] <= start_step]
    dropped = [r for r in rows if r["step"] > start_step]
    if dropped:
        with path.with_name(path.stem + ".superseded.jsonl").open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in dropped)
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))
