"""`uaclm sweep` for real with the local backend (issue 14): a 2 x 2 study of the random tiny
Llama (two sizes x two objectives, each cell trained by a real `uaclm train`) plus a third zip
point whose override cannot run, then `sweep collect`. (A rerun skipping finished cells runs
for real in the Slurm test; the local backend's skip / retry rules are unit-tested.)

The cells do not evaluate: a cell costs ~85 s of training here and an evaluation ~65 s more
(Ray, model and embedder start-up), and the evaluation command a cell runs is checked against
the real `uaclm eval` parser in tests/unit/test_sweep.py; `make study` evaluates for real.

The Slurm backend runs the same kind of sweep on the real single-node Slurm in
test_launchers.py (it shares that module's cluster).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from uaclm_dist.config import REPO_ROOT

pytestmark = pytest.mark.integration

SPEC = """
name: tiny-sizes
base: {base}
axes:
  - zip:
      model.tiny.hidden_size: [64, 128, 64]
      model.tiny.num_layers: [2, 4, 2]
      model.tiny.intermediate_size: [128, 256, 128]
      data.max_length: [64, 64, 16]     # the third point: no question fits in 16 tokens
  - key: objective.name
    values: [clm, ua_clm]
overrides:  # one worker per cell: half the start-up of the default two
  distributed.num_workers: 1
  optim.grad_accumulation: 2
  optim.max_steps: 6
  logging.log_every_steps: 2
  logging.probe_examples: 4
evaluate: false
output_dir: {out}
"""


def uaclm(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uaclm_dist.cli", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_local_sweep_two_sizes_by_two_objectives_with_a_failing_cell(tmp_path):
    out = tmp_path / "sweep"
    spec = tmp_path / "sizes.yaml"
    spec.write_text(SPEC.format(base=REPO_ROOT / "configs/tiny_test.yaml", out=out))

    first = uaclm("sweep", "run", str(spec))
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert "4/6 done, 2 failed, 0 remaining" in first.stdout, first.stdout[-3000:]

    collected = uaclm("sweep", "collect", str(spec), timeout=300)
    assert collected.returncode == 0, collected.stderr[-3000:]
    frame = pd.read_parquet(out / "sweep.parquet")
    cells = frame.drop_duplicates("cell")
    assert len(cells) == 6
    done = cells[cells["status"] == "done"]
    failed = cells[cells["status"] == "failed"]
    assert len(done) == 4 and set(failed["data.max_length"]) == {16}
    assert all("uaclm train exited with status 2" in r for r in failed["reason"])
    status = json.loads((out / failed.iloc[0]["cell"] / "status.json").read_text())
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
