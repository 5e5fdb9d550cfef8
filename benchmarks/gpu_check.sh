#!/usr/bin/env bash
# The GPU check (docs/GPU_CHECK.md): the project's GPU-only paths in one prepared run, one JSON
# line per check in $OUT/gpu_check.jsonl (default .gpu-check-out/) and a table in gpu_check.md.
#
#   make gpu-bundle                        # here: what the GPU host lacks, into .gpu-bundle/
#   bash benchmarks/gpu_check.sh           # there: installs the bundle offline, runs the checks
#   bash benchmarks/gpu_check.sh --cpu     # here: the same checks on the CPU (make test runs it)
#
# With .gpu-bundle/wheels (the GPU check's host) it installs them with --no-index --no-deps into
# a target folder beside the host's own packages (its torch, transformers, ...); without, it runs
# in the project's venv. The bundle's tokenizer cache is used when there is one. Without a CUDA device (and without --cpu) it says why and exits with status 3; a
# failed check exits 1 after every check has run. Everything ends within 5 minutes (timeout).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="${UACLM_GPU_BUNDLE:-$REPO/.gpu-bundle}"
cd "$REPO"
cpu=0
for arg in "$@"; do [[ "$arg" == --cpu ]] && cpu=1; done
PY="${UACLM_VENV:-$REPO/.venv}/bin/python"
[[ -x "$PY" ]] || PY=python3
if ((!cpu)); then
  command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi here: no NVIDIA GPU to check (--cpu runs the checks on the CPU)" >&2; exit 3; }
  if [[ -d "$BUNDLE/wheels" ]]; then  # the GPU check's host: its python3 + the bundle
    PY=python3
    site="$BUNDLE/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$BUNDLE"/wheels/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi  # else a complete environment (make venv with a CUDA torch)
fi
# the tokenizer the tiny test model uses, where the host cannot build it (no gguf, no assets)
[[ -d "$BUNDLE/cache" ]] && export UACLM_CACHE="$BUNDLE/cache"
export UACLM_GPU_BUNDLE="$BUNDLE"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout 300 "$PY" benchmarks/gpu_check.py "$@"
