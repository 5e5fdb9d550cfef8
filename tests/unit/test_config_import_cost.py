"""Loading a config stays light: the registries it validates names against import no torch,
transformers or Ray (``uaclm config get`` and ``uaclm resources`` run inside Slurm scripts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str) -> str:
    """What ``python -c code`` prints, run from the repository root in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True)  # fmt: skip
    return proc.stdout.strip()


def test_loading_a_config_imports_neither_torch_nor_transformers_nor_ray():
    code = (
        "import sys; from uaclm_dist.config import load_config; "
        "cfg = load_config('configs/tiny_test.yaml', ['objective.name=clm+ua']); "
        "assert cfg.model.family == 'causal_lm'; "
        "print(sorted(m for m in ('torch', 'transformers', 'ray') if m in sys.modules))"
    )
    assert run_python(code) == "[]"


def test_the_training_driver_imports_no_model_code_deepspeed_or_peft():
    """`uaclm train` and `uaclm stop` on the driver: the worker module (transformers' modeling
    code, peft, DeepSpeed: seconds of imports) is imported on the Ray workers only."""
    code = (
        "import sys; import uaclm_dist.train.trainer, uaclm_dist.cli; "
        "print(sorted(m for m in ('uaclm_dist.train.worker', 'transformers.modeling_utils', "
        "'deepspeed', 'peft') if m in sys.modules))"
    )
    assert run_python(code) == "[]"
