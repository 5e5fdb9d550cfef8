"""train/portable_state.py with real DeepSpeed ranks over gloo: the trainable state gathered on
1 rank, loaded into a fresh 2-rank engine (odd parameter sizes, so ZeRO-3's last partition is
padded), continues as the 1-rank run does (weights, Adam moments and step, LR schedule), under
ZeRO-2 and ZeRO-3. The Ray Train run resized
2 -> 1 -> 3 workers is in tests/integration/test_training.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "scripts" / "portable_state_ranks.py"


def ranks(*args) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]


# ZeRO-3's padded partitions need our own writer; ZeRO-2's flat groups are not padded. The
# whole Ray Train resize runs in tests/integration/test_paper_path.py under ZeRO-3 only.
@pytest.mark.parametrize("stage", [2, 3])
def test_state_from_one_rank_continues_on_two_ranks_as_on_one(stage, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    ranks(stage, 1, one)
    ranks(stage, 2, two, one)
    a, b = torch.load(one / "result.pt"), torch.load(two / "result.pt")
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-6)
    assert a["weights"].keys() == b["weights"].keys() and len(a["weights"]) == 3
    for name in a["weights"]:
        assert torch.allclose(a["weights"][name], b["weights"][name], rtol=1e-6, atol=1e-7), name
