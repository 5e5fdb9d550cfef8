#!/usr/bin/env bash
# Submit `uaclm train` to a running Ray cluster through the Ray Jobs API (`ray job submit`).
#
#   launchers/submit.sh ADDRESS CONFIG [key=value ...]
#   launchers/submit.sh http://127.0.0.1:8265 configs/tiny_test.yaml logging.output_dir=/shared/runs/tiny
#
# ADDRESS is the head's dashboard (http://HEAD:8265; "HEAD:8265" works too). The repository's
# code (not .git, .venv, data, checkpoints, runs, wandb, outputs) is uploaded as the job's
# working_dir, and the job runs `python -m uaclm_dist.cli train ...` inside that copy, so it
# imports the uploaded uaclm_dist with the cluster's Python environment (which must have the
# project's dependencies installed). The run folder must be an absolute path on storage that
# every node sees: pass logging.output_dir=/abs/path or set UACLM_OUTPUT_DIR; a relative one
# would land in the job's temporary working_dir copy and be lost.
#
# Settings (environment):
#   RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH   the cluster's token (default: ~/.ray/auth_token)
#   UACLM_OUTPUT_DIR     absolute run folder (adds logging.output_dir=...)
#   UACLM_JOB_PYTHON     interpreter on the cluster (default: python)
#   UACLM_JOB_ID         submission id (default: uaclm-train-<date>-<random>)
#   UACLM_SUBMIT_WAIT=1  follow the logs until the job ends (exit status = the job's success)
#   UACLM_VENV           local env providing the `ray` CLI (default: <repo>/.venv if present)
set -euo pipefail

usage() {
  echo "usage: $0 ADDRESS CONFIG [key=value ...]   (ADDRESS: http://HEAD:8265)" >&2
  exit 2
}
(($# >= 2)) || usage
address="$1"
config="$2"
shift 2
[[ "$address" == http://* || "$address" == https://* ]] || address="http://$address"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${UACLM_VENV:-$REPO/.venv}"
if [[ -x "$venv/bin/python" ]]; then
  PATH="$venv/bin:$PATH"
fi
command -v ray >/dev/null || { echo "error: 'ray' not found (set UACLM_VENV)" >&2; exit 2; }
export RAY_AUTH_MODE=token  # the cluster runs with token auth; never disabled

# The config travels inside the uploaded repository: pass it relative to the repository root.
if [[ "$config" == /* ]]; then
  case "$config" in
    "$REPO"/*) config="${config#"$REPO"/}" ;;
    *) echo "error: CONFIG must be inside the repository ($REPO) to be uploaded with it" >&2; exit 2 ;;
  esac
fi
[[ -f "$REPO/$config" ]] || { echo "error: $REPO/$config not found" >&2; exit 2; }

overrides=("$@")
[[ -z "${UACLM_OUTPUT_DIR:-}" ]] || overrides+=("logging.output_dir=$UACLM_OUTPUT_DIR")
out=""
for kv in "${overrides[@]}"; do
  [[ "$kv" == logging.output_dir=* ]] && out="${kv#logging.output_dir=}"
done
if [[ "$out" != /* ]]; then
  echo "error: pass an absolute run folder on shared storage: logging.output_dir=/abs/path" \
    "(or UACLM_OUTPUT_DIR); got '${out:-the config default}'" >&2
  exit 2
fi

job_id="${UACLM_JOB_ID:-uaclm-train-$(date +%Y%m%d-%H%M%S)-$(od -An -tx1 -N3 /dev/urandom | tr -d ' \n')}"
# Excludes are anchored at the repository root ("/data", not "data": that would also drop the
# uaclm_dist/data package). The job's env: offline hub, token auth for the driver it starts.
# RAY_OVERRIDE_JOB_RUNTIME_ENV=1: `uaclm train` calls ray.init(runtime_env=...) with some of the
# same env var keys; without it Ray refuses to merge the two ("Failed to merge the Job's
# runtime env"). Merging is per env var, and the job's working_dir is kept.
# The submitter's Hugging Face cache variables travel with the job (the models are where the
# submitter keeps them, e.g. gated Llama-2 weights under a shared HF_HOME).
runtime_env="$(python - <<'PY'
import json
import os

print(json.dumps({
    "excludes": ["/.git", "/.venv", "/data", "/checkpoints", "/runs", "/wandb", "/outputs",
                 "__pycache__", "/.pytest_cache", "/.ruff_cache", "/.bench", "/*.egg-info",
                 "/slurm-*.out"],
    "env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_AUTH_MODE": "token",
                 "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1",
                 **{k: os.environ[k] for k in ("HF_HOME", "HF_HUB_CACHE",
                                               "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME",
                                               "TRANSFORMERS_CACHE") if os.environ.get(k)}},
}))
PY
)"

wait_flag=(--no-wait)
[[ "${UACLM_SUBMIT_WAIT:-0}" != 1 ]] || wait_flag=()
ray job submit --address "$address" --submission-id "$job_id" --working-dir "$REPO" \
  --runtime-env-json "$runtime_env" "${wait_flag[@]}" -- \
  "${UACLM_JOB_PYTHON:-python}" -m uaclm_dist.cli train "$config" "${overrides[@]}"

cat <<EOF

submitted: $job_id  (run folder: $out)
follow:    RAY_AUTH_MODE=token ray job logs -f --address $address $job_id
status:    RAY_AUTH_MODE=token ray job status --address $address $job_id
stop:      RAY_AUTH_MODE=token ray job stop --address $address $job_id
           (a checkpoint first: uaclm stop $out  -> resume with --resume $out)
EOF
