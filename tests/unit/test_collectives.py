"""train/collectives.py: the one module of the training loop that calls torch.distributed
collectives (besides the loss kernels), the process-group backend Ray Train is given, and the
collectives themselves on a real two-rank group created with the multi-device backend syntax."""

from __future__ import annotations

import ast
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from uaclm_dist.config import RunConfig
from uaclm_dist.train import collectives
from uaclm_dist.train.step_metrics import StepMetrics
from uaclm_dist.train.trainer import torch_config

PACKAGE = Path(__file__).resolve().parents[2] / "uaclm_dist"
COLLECTIVES = {
    "all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast",
    "broadcast_object_list", "barrier", "monitored_barrier", "reduce", "reduce_scatter",
    "reduce_scatter_tensor", "reduce_scatter_single", "all_to_all", "all_to_all_single",
    "gather", "gather_object", "scatter", "scatter_object_list", "send", "recv", "isend",
    "irecv",
}
# The loss kernels act on the device tensors they compute with; collectives.py places the rest.
ALLOWED = {PACKAGE / "train" / "collectives.py", *(PACKAGE / "losses").rglob("*.py")}


def _distributed_aliases(tree: ast.Module) -> set[str]:
    """Names bound to torch.distributed in a module (``import torch.distributed as dist``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname for a in node.names if a.name == "torch.distributed" and a.asname}
        if isinstance(node, ast.ImportFrom) and node.module == "torch" and any(
                a.name == "distributed" for a in node.names):  # fmt: skip
            names |= {a.asname or a.name for a in node.names if a.name == "distributed"}
    return names


def collective_calls(path: Path) -> list[str]:
    """``name:line`` of every torch.distributed collective called in ``path``: through an
    alias (``dist.all_reduce``), the full name (``torch.distributed.barrier``), a name imported
    from it, or ``getattr(dist, "...")``."""
    tree = ast.parse(path.read_text())
    aliases = _distributed_aliases(tree)
    imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == "torch.distributed" for a in n.names if a.name in COLLECTIVES}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in COLLECTIVES:
            owner = ast.unparse(f.value)
            if owner in aliases or owner == "torch.distributed":
                found.append(f"{f.attr}:{node.lineno}")
        elif isinstance(f, ast.Name) and f.id in imported:
            found.append(f"{f.id}:{node.lineno}")
        elif isinstance(f, ast.Name) and f.id == "getattr" and len(node.args) >= 2:
            target, name = node.args[0], node.args[1]
            if (ast.unparse(target) in aliases | {"torch.distributed"}
                    and isinstance(name, ast.Constant) and name.value in COLLECTIVES):
                found.append(f"{name.value}:{node.lineno}")
    return sorted(found, key=lambda s: int(s.rsplit(":", 1)[1]))


def test_only_the_collectives_module_and_the_loss_kernels_call_collectives():
    offenders = {str(p.relative_to(PACKAGE)): calls for p in sorted(PACKAGE.rglob("*.py"))
                 if p not in ALLOWED and (calls := collective_calls(p))}  # fmt: skip
    assert offenders == {}, (
        "call torch.distributed collectives through uaclm_dist/train/collectives.py, which puts "
        f"each tensor on the device its backend serves: {offenders}")


def test_the_scanner_sees_every_way_of_calling_a_collective(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import torch\nimport torch.distributed as dist\nimport torch.distributed as d2\n"
        "from torch.distributed import all_gather as ag\n"
        "dist.all_reduce(x)\nd2.barrier()\ntorch.distributed.broadcast(x, 0)\nag([], x)\n"
        "getattr(dist, 'reduce_scatter_tensor')(a, b)\ndist.get_rank()\n")
    assert collective_calls(source) == [
        "all_reduce:5", "barrier:6", "broadcast:7", "ag:8", "reduce_scatter_tensor:9"]


@pytest.mark.parametrize(("gpus", "backend"), [(0, "gloo"), (1, "cpu:gloo,cuda:nccl")])
def test_the_trainer_gives_ray_a_backend_for_every_device_kind(gpus, backend):
    cfg = RunConfig.model_validate({"distributed": {"gpus_per_worker": gpus}})
    assert torch_config(cfg.distributed).backend == backend
    assert collectives.process_group_backend(use_gpu=gpus > 0) == backend


def test_without_a_process_group_every_collective_is_one_rank():
    assert not collectives.is_distributed()
    assert collectives.sum_over_ranks(torch.tensor([1.0, 2.0])).tolist() == [1.0, 2.0]
    assert collectives.any_rank(True) and not collectives.any_rank(False)
    assert collectives.gather_host_floats(3.5) == [3.5]
    collectives.barrier()


def _rank_main(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # the multi-device syntax the GPU workers get (cuda:nccl left out: no GPU here)
    dist.init_process_group("cpu:gloo", rank=rank, world_size=2)
    try:
        flags = collectives.any_rank(rank == 1), collectives.any_rank(False)
        peaks = collectives.gather_host_floats(10.0 + rank)
        collectives.barrier()
        from uaclm_dist.losses.types import LossOutput

        metrics = StepMetrics("cpu")
        one = torch.tensor(1.0 + rank, dtype=torch.float64)
        metrics.add(LossOutput(loss=one, n_tokens=one * 2, n_correct=one, n_incorrect=one,
                               entropy_correct=one, entropy_incorrect=one * 3,
                               prob_correct=one / 4, prob_incorrect=one / 8,
                               token_accuracy=one / 2, terms={"clm": one}))  # fmt: skip
        reduced = metrics.reduce([100.0 * (rank + 1)])
        row = metrics.metrics(reduced.tolist())
        torch.save({"flags": flags, "peaks": peaks, "row": row, "extra": reduced[-1].item()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_collectives_and_step_metrics_on_a_two_rank_group(tmp_path):
    mp.spawn(_rank_main, args=(_free_port(), str(tmp_path)), nprocs=2)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for res in results:
        assert res["flags"] == (True, False)
        assert res["peaks"] == [10.0, 11.0]
        assert res["extra"] == 300.0
        row = res["row"]
        # rank 0 adds 1, rank 1 adds 2 of everything: loss mean over 2 micro-batches
        assert row["loss"] == pytest.approx(1.5) and row["loss_clm"] == pytest.approx(1.5)
        assert row["n_tokens"] == 6.0 and row["n_correct"] == 3.0
        # entropy_correct: (1 * 1 + 2 * 2) / 3 correct tokens
        assert row["entropy_correct"] == pytest.approx(5 / 3)
        assert row["token_accuracy"] == pytest.approx(0.5)
