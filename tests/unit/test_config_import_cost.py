"""Loading a config stays light: the registries it validates names against import no torch,
transformers or Ray (``uaclm config get`` and ``uaclm resources`` run inside Slurm scripts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_loading_a_config_imports_neither_torch_nor_transformers_nor_ray():
    code = (
        "import sys; from uaclm_dist.config import load_config; "
        "cfg = load_config('configs/tiny_test.yaml', ['objective.name=clm+ua']); "
        "assert cfg.model.family == 'causal_lm'; "
        "print(sorted(m for m in ('torch', 'transformers', 'ray') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert proc.stdout.strip() == "[]", proc.stdout
