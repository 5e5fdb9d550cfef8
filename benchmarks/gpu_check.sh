#!/usr/bin/env bash
# The GPU check (issue 14 item 7): fused loss vs dense in bf16, a SmolLM2 QLoRA run with one GPU
# worker over NCCL (tokens/s, MFU, peak memory) and the evaluation pipeline with a GPU actor, in
# under 8 minutes, one table on stdout (see benchmarks/gpu_check.py).
#
#   bash benchmarks/gpu_check.sh            # on a machine with a CUDA device and a CUDA torch
#
# Elsewhere it says why and exits with status 3. Put its table in the README with the date and
# the device whenever a GPU machine is at hand.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${UACLM_VENV:-$REPO/.venv}/bin/python"
[[ -x "$PY" ]] || PY=python
command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi here: no NVIDIA GPU to check" >&2; exit 3; }
cd "$REPO"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "$PY" benchmarks/gpu_check.py
