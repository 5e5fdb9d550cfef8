"""The peak FLOP/s one training worker's device can do: the denominator of MFU.

Where it comes from, first that applies:

1. ``distributed.peak_tflops_per_device`` in the config;
2. a GPU whose name is in :data:`GPU_BF16_DENSE_TFLOPS` (the vendor's dense bf16 tensor-core
   peak, no sparsity);
3. a GEMM probe: square matrix multiplies on the worker's device with its thread settings,
   best of a few, timed after a warm-up; on CPU in float32 and in the model's dtype, the
   faster counting (the loss runs its GEMMs in float32 on CPU, see
   :func:`uaclm_dist.losses.token_stats.gemm_dtype`). On CPU this is the honest peak: what
   this worker's share of the cores does on the best-shaped work (a vendor's figure would count
   cores the worker does not own). All workers probe at the same time (the caller holds them at
   a barrier first) so that workers sharing cores measure their share.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch

__all__ = ["GPU_BF16_DENSE_TFLOPS", "PeakFlops", "gemm_probe", "peak_flops"]

#: dense bf16 TFLOP/s per device (vendor data sheets), matched against the device name in order
GPU_BF16_DENSE_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bB200\b", 2250.0),
    (r"\bGH200\b", 989.4),
    (r"\bH200\b", 989.4),
    (r"\bH100\b.*\bPCIe\b", 756.0),
    (r"\bH100\b.*\bNVL\b", 835.5),
    (r"\bH100\b", 989.4),  # SXM
    (r"\bA100\b", 312.0),
    (r"\bL40S\b", 362.05),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
    (r"\bMI300X\b", 1307.4),
)


@dataclass(frozen=True)
class PeakFlops:
    """``flops_per_s`` of one device and where the figure comes from (``source``)."""

    flops_per_s: float
    source: str


def table_tflops(device_name: str) -> float | None:
    """The data-sheet bf16 dense TFLOP/s of a GPU named ``device_name``, None if unknown."""
    for pattern, tflops in GPU_BF16_DENSE_TFLOPS:
        if re.search(pattern, device_name):
            return tflops
    return None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_probe(device: torch.device, dtype: torch.dtype, size: int = 1024, repeats: int = 5,
               warmup: int = 2) -> float:  # fmt: skip
    """Best FLOP/s of ``[size, size] @ [size, size]`` in ``dtype`` on ``device`` (2 n^3 FLOPs
    per multiply), over ``repeats`` timed multiplies after ``warmup`` untimed ones."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    for _ in range(warmup):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        a @ b
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def peak_flops(device: torch.device, dtype: torch.dtype,
               configured_tflops: float | None = None) -> PeakFlops:  # fmt: skip
    """Peak FLOP/s of one worker's device (module docstring for the order)."""
    if configured_tflops is not None:
        return PeakFlops(configured_tflops * 1e12, "config: distributed.peak_tflops_per_device")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        tflops = table_tflops(name)
        if tflops is not None:
            return PeakFlops(tflops * 1e12, f"data sheet: {name}, bf16 dense")
        probe_dtype = dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        flops_per_s = gemm_probe(device, probe_dtype, size=8192)
        torch.cuda.reset_peak_memory_stats(device)  # the probe's tensors are not the run's peak
        return PeakFlops(flops_per_s, f"GEMM probe: {name}, {str(probe_dtype)[6:]} 8192^3 "
                                      f"(not in the data-sheet table)")
    threads = torch.get_num_threads()
    best = max(((gemm_probe(device, d), d) for d in dict.fromkeys((torch.float32, dtype))),
               key=lambda pair: pair[0])
    return PeakFlops(best[0], f"GEMM probe: CPU, {str(best[1]).removeprefix('torch.')} 1024^3 "
                              f"(the faster of float32 and the model dtype), {threads} thread(s)")
