#!/usr/bin/env bash
# Uncertainty evaluation (`uaclm eval`: sampled answers, TE/PPL/PE/SE/DSE scores, metrics) on a
# Ray cluster brought up on the Slurm allocation.
#
#   sbatch slurm/eval.sh configs/paper/llama2_13b_coqa_uaclm.yaml --base \
#     --adapter uaclm=runs/llama2_13b_coqa_uaclm [key=value ...] [--out DIR]
#
# Submit from the repository root (or set UACLM_REPO). Sized for eval.num_generation_actors=8
# with 1 GPU and 4 CPUs each (the 13B recipes): 2 nodes x 4 GPUs. For the 7B recipes (2 actors):
# sbatch -N1 --gpus-per-node=2 --cpus-per-task=12 --mem=96G slurm/eval.sh ...
# Evaluation keeps no checkpoint: a job that hits its time limit is not requeued.
#SBATCH --job-name=uaclm-eval
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=20
#SBATCH --mem=256G
#SBATCH --time=04:00:00
#SBATCH --no-requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

# Slurm runs a copy of this script from its spool directory: find the repository through the
# submit directory, not through $0.
UACLM_REPO="${UACLM_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}"
if [[ ! -f "$UACLM_REPO/slurm/ray_cluster.sh" ]]; then
  echo "error: $UACLM_REPO/slurm/ray_cluster.sh not found: submit from the repository root or set UACLM_REPO" >&2
  exit 2
fi
# shellcheck source=slurm/ray_cluster.sh
source "$UACLM_REPO/slurm/ray_cluster.sh"
uaclm_eval_main "$@"
