#!/usr/bin/env bash
# UA-CLM / CLM fine-tuning of a 13B model (QLoRA, DeepSpeed ZeRO-3) on Ray Train over Slurm.
#
#   sbatch slurm/train_13b.sh configs/paper/llama2_13b_coqa_uaclm.yaml [key=value ...]
#   UACLM_CONFIG=... UACLM_OVERRIDES="optim.lr=2e-4" sbatch slurm/train_13b.sh
#
# Submit from the repository root (or set UACLM_REPO). Sized for the paper recipe's 8 Ray Train
# workers with 1 GPU and 8 CPUs each: 2 nodes x 4 GPUs, 4 x 8 CPUs + 4 for Ray and the driver.
# Any #SBATCH value can be overridden on the command line (sbatch -N1 --gpus-per-node=8 ...);
# the config's distributed.* must fit the allocation (checked before training starts).
# Near the time limit Slurm sends SIGUSR1 (--signal): the run checkpoints and the job requeues
# itself; the requeued job resumes from the checkpoint. See docs/CLUSTER.md.
#SBATCH --job-name=uaclm-13b
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=36
#SBATCH --mem=320G
#SBATCH --time=12:00:00
#SBATCH --signal=B:USR1@600
#SBATCH --requeue
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
uaclm_train_main "$@"
