#!/usr/bin/env bash
# Ray on a Slurm allocation, shared by slurm/train_7b.sh, slurm/train_13b.sh and slurm/eval.sh.
#
# Sourced by those batch scripts (and launchers/local_head.sh, for the port and log helpers), it
# defines uaclm_* functions; nothing runs at source time:
#   uaclm_train_main / uaclm_eval_main   the bodies of train_*.sh / eval.sh
#   uaclm_setup           repository, Python env, per-job ports, auth token, signal/EXIT traps
#   uaclm_ray_up          Ray head on this (the first) node and one Ray worker node per other
#                         node (srun), then waits until every node and the resources the run
#                         needs are registered (timeout -> clear error, never a blind sleep)
#   uaclm_run_driver      runs `uaclm ...` in the background and waits, forwarding SIGUSR1 /
#                         SIGTERM from Slurm to it (so the trap runs while the driver works)
#   uaclm_ray_down        stops the driver and the Ray steps (idempotent; on EXIT via a trap)
# What needs the config or Ray's API is a `uaclm` subcommand: `uaclm config get`, `uaclm
# resources` (what the run asks Ray for) and `uaclm cluster wait` (the readiness check).
# Executed (by srun, once per node): `ray_cluster.sh node head|worker` starts one Ray node with
# explicit IP, ports and temp dir, blocks, and removes its temp dir when stopped.
#
# Settings (environment; all optional):
#   UACLM_REPO            repository root (default: the sbatch submit directory)
#   UACLM_VENV            Python env with uaclm installed (default: $UACLM_REPO/.venv, if present)
#   UACLM_IFNAME          network interface for Ray node IPs and for gloo / NCCL (e.g. ib0, eth0)
#   UACLM_RAY_PORT_BASE   first of 100 ports this job's Ray uses (default: from SLURM_JOB_ID)
#   UACLM_RAY_TMPDIR      node-local folder for Ray's per-job temp dir (default: $TMPDIR or /tmp)
#   UACLM_RAY_TIMEOUT     seconds to wait for the cluster to register (default: 300)
#   UACLM_RAY_DASHBOARD_HOST  dashboard bind address on the head node (default: 127.0.0.1)
#   UACLM_RAY_KEEP_TMP=1  keep the Ray temp dirs (logs) after the job
#   RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH  cluster token (default: a fresh random one per job)

# ------------------------------------------------------------------------------------ basics

# `uaclm train` stopped with a checkpoint: requeue. A copy of uaclm_dist.exit_codes.EXIT_STOPPED
# (tests/unit/test_cluster_scripts.py checks that they are equal).
UACLM_EXIT_STOPPED=75

uaclm_log() {
  printf '[uaclm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

uaclm_die() {
  # uaclm_die MESSAGE [STATUS]: in the batch shell this exits, and the EXIT trap tears down.
  uaclm_log "error: $1"
  exit "${2:-1}"
}

uaclm_setup() {
  UACLM_REPO="${UACLM_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}"
  UACLM_VENV="${UACLM_VENV:-$UACLM_REPO/.venv}"
  if [[ -x "$UACLM_VENV/bin/python" ]]; then
    PATH="$UACLM_VENV/bin:$PATH"
  fi
  export UACLM_REPO UACLM_VENV PATH
  local cmd
  for cmd in python ray uaclm; do
    command -v "$cmd" >/dev/null || uaclm_die "'$cmd' not found: set UACLM_VENV to the env with uaclm installed" 2
  done
  uaclm_ray_ports
  uaclm_ray_token
  trap uaclm_ray_down EXIT
  trap 'uaclm_on_signal USR1' USR1
  trap 'uaclm_on_signal TERM' TERM
  # The gloo / NCCL interface reaches the Ray Train workers as config overrides (the trainer puts
  # them into the workers' runtime_env); the same interface gives the Ray node IPs.
  UACLM_NET_OVERRIDES=()
  if [[ -n "${UACLM_IFNAME:-}" ]]; then
    UACLM_NET_OVERRIDES=("distributed.gloo_socket_ifname=$UACLM_IFNAME"
                         "distributed.nccl_socket_ifname=$UACLM_IFNAME")
  fi
}

# ------------------------------------------------------------------------ ports, IP, token

uaclm_ray_ports() {
  # 100 ports per job, below Linux's ephemeral range (32768+) and above Ray's default worker
  # ports (10002-19999): two jobs sharing a node clash only if their ids are equal modulo 127.
  local job="${SLURM_JOB_ID:-0}"
  UACLM_RAY_PORT_BASE="${UACLM_RAY_PORT_BASE:-$((20000 + (job % 127) * 100))}"
  local b="$UACLM_RAY_PORT_BASE"
  if ((b < 1024 || b > 65435)); then
    uaclm_die "UACLM_RAY_PORT_BASE=$b: need 1024..65435 (the job uses base..base+99)" 2
  fi
  export UACLM_RAY_PORT_BASE
  export UACLM_RAY_GCS_PORT=$((b)) UACLM_RAY_DASHBOARD_PORT=$((b + 1))
  export UACLM_RAY_CLIENT_PORT=$((b + 2)) UACLM_RAY_NODE_MANAGER_PORT=$((b + 3))
  export UACLM_RAY_OBJECT_MANAGER_PORT=$((b + 4)) UACLM_RAY_AGENT_GRPC_PORT=$((b + 5))
  export UACLM_RAY_AGENT_LISTEN_PORT=$((b + 6)) UACLM_RAY_RUNTIME_ENV_PORT=$((b + 7))
  export UACLM_RAY_METRICS_PORT=$((b + 8))
  export UACLM_RAY_MIN_WORKER_PORT=$((b + 10)) UACLM_RAY_MAX_WORKER_PORT=$((b + 99))
}

uaclm_ray_port_args() {
  # The ports every Ray node of this job uses (head-only ones come from uaclm_ray_node).
  printf '%s\n' \
    "--node-manager-port=$UACLM_RAY_NODE_MANAGER_PORT" \
    "--object-manager-port=$UACLM_RAY_OBJECT_MANAGER_PORT" \
    "--dashboard-agent-grpc-port=$UACLM_RAY_AGENT_GRPC_PORT" \
    "--dashboard-agent-listen-port=$UACLM_RAY_AGENT_LISTEN_PORT" \
    "--runtime-env-agent-port=$UACLM_RAY_RUNTIME_ENV_PORT" \
    "--metrics-export-port=$UACLM_RAY_METRICS_PORT" \
    "--min-worker-port=$UACLM_RAY_MIN_WORKER_PORT" \
    "--max-worker-port=$UACLM_RAY_MAX_WORKER_PORT"
}

uaclm_node_ip() {
  # This node's IPv4 address: on UACLM_IFNAME if set, else the first global address.
  local ip=""
  if [[ -n "${UACLM_IFNAME:-}" ]]; then
    ip="$(ip -4 -o addr show dev "$UACLM_IFNAME" 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')"
    [[ -n "$ip" ]] || uaclm_die "UACLM_IFNAME=$UACLM_IFNAME: no IPv4 address on $(hostname) (see 'ip -4 addr')" 2
  else
    ip="$(ip -4 -o addr show scope global 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')"
    [[ -n "$ip" ]] || ip="$(hostname -I 2>/dev/null | awk '{print $1}')"
    [[ -n "$ip" ]] || uaclm_die "no IPv4 address found on $(hostname); set UACLM_IFNAME" 2
  fi
  printf '%s\n' "$ip"
}

uaclm_ray_token() {
  # Ray 2.60 token auth, never disabled: head, worker nodes and drivers share one token. srun
  # hands the environment to the node steps, so an exported RAY_AUTH_TOKEN reaches every node
  # without a file on shared storage. A fresh token per job unless the user provides one.
  export RAY_AUTH_MODE=token
  if [[ -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
    RAY_AUTH_TOKEN="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    export RAY_AUTH_TOKEN
  fi
}

# ------------------------------------------------------------------------------- run config

uaclm_resolve_config() {
  # uaclm_resolve_config PATH: the config file as given, or relative to the repository.
  local path="$1"
  if [[ -f "$path" ]]; then
    printf '%s\n' "$(cd "$(dirname "$path")" && pwd)/$(basename "$path")"
  elif [[ -f "$UACLM_REPO/$path" ]]; then
    printf '%s\n' "$UACLM_REPO/$path"
  else
    uaclm_die "config '$path' not found (relative paths: from $PWD or $UACLM_REPO)" 2
  fi
}

uaclm_output_dir() {
  # uaclm_output_dir CONFIG [k=v ...]: absolute run folder, stable across requeues of this job.
  # UACLM_OUTPUT_DIR, else the config's logging.output_dir (file or override), else (config
  # left at the default) runs/<job name>-<job id>. Relative paths are from the submit dir.
  local out="${UACLM_OUTPUT_DIR:-}"
  if [[ -z "$out" ]]; then
    out="$(uaclm config get "$1" logging.output_dir "${@:2}")" || uaclm_die "invalid config or overrides" 2
    if [[ "$out" == "runs/default" ]]; then
      out="runs/${SLURM_JOB_NAME:-uaclm}-${SLURM_JOB_ID:-local}"
    fi
  fi
  [[ "$out" == /* ]] || out="$PWD/$out"
  printf '%s\n' "$out"
}

uaclm_has_checkpoint() {
  # uaclm_has_checkpoint RUN_DIR: a Ray Train checkpoint with a run state is there.
  compgen -G "$1/ray/train/checkpoint_*/run_state.json" >/dev/null
}

# ------------------------------------------------------------------------------- bring-up

UACLM_RAY_STEP_PIDS=()
UACLM_DRIVER_PID=""
UACLM_DOWN_DONE=0

uaclm_ray_up() {
  # uaclm_ray_up CPUS GPUS: start Ray on every node of the allocation; wait until all nodes
  # and at least CPUS / GPUS (what the run will ask for) are registered.
  local need_cpus="$1" need_gpus="$2"
  [[ -n "${SLURM_JOB_ID:-}" ]] || uaclm_die "not inside a Slurm job (submit with sbatch)" 2
  local -a nodes workers=()
  mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
  # The batch script runs on the allocation's first node: the head (and the driver) live here.
  local head="${SLURMD_NODENAME:-${nodes[0]}}" n
  for n in "${nodes[@]}"; do
    [[ "$n" == "$head" ]] || workers+=("$n")
  done
  UACLM_HEAD_IP="$(uaclm_node_ip)"
  # Drivers (uaclm train / eval, the readiness check) join this cluster, never a local one.
  export RAY_ADDRESS="$UACLM_HEAD_IP:$UACLM_RAY_GCS_PORT"
  # Node-local and per job: two jobs on one node never share Ray's state (default /tmp/ray).
  # Ray puts unix sockets ~68 characters deep into it (session_<date>_<pid>/sockets/...) and
  # AF_UNIX paths end at 107: a longer temp dir fails as "Module MetricsHead failed to start".
  UACLM_RAY_JOB_TMP="${UACLM_RAY_TMPDIR:-${TMPDIR:-/tmp}}/uaclm-ray-$SLURM_JOB_ID"
  if ((${#UACLM_RAY_JOB_TMP} + ${#SLURM_JOB_NUM_NODES} + 2 > 39)); then
    [[ -z "${UACLM_RAY_TMPDIR:-}" ]] ||
      uaclm_die "UACLM_RAY_TMPDIR=$UACLM_RAY_TMPDIR is too long for Ray's socket paths (keep <uaclm-ray-JOBID/nN> under 40 characters)" 2
    uaclm_log "TMPDIR=$TMPDIR is too long for Ray's socket paths: using /tmp for Ray"
    UACLM_RAY_JOB_TMP="/tmp/uaclm-ray-$SLURM_JOB_ID"
  fi
  export UACLM_RAY_JOB_TMP
  export UACLM_HEAD_IP
  local cpt="${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}"
  local script="$UACLM_REPO/slurm/ray_cluster.sh"
  uaclm_log "job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}): Ray head $head $RAY_ADDRESS" \
    "(dashboard ${UACLM_RAY_DASHBOARD_HOST:-127.0.0.1}:$UACLM_RAY_DASHBOARD_PORT on $head)," \
    "${#workers[@]} worker node(s): ${workers[*]:-none}; $cpt CPUs per node"
  # --overlap: the Ray steps must not block each other or later steps; --cpus-per-task is
  # explicit because srun 22.05+ does not inherit it from the job.
  srun --overlap --nodes=1 --ntasks=1 --nodelist="$head" --cpus-per-task="$cpt" \
    --job-name=uaclm-ray-head bash "$script" node head &
  UACLM_RAY_STEP_PIDS+=("$!")
  uaclm_wait_port "$UACLM_HEAD_IP" "$UACLM_RAY_GCS_PORT" "${UACLM_RAY_TIMEOUT:-300}" "${UACLM_RAY_STEP_PIDS[0]}"
  if ((${#workers[@]} > 0)); then
    local list
    list="$(IFS=,; printf '%s' "${workers[*]}")"
    srun --overlap --nodes="${#workers[@]}" --ntasks="${#workers[@]}" --ntasks-per-node=1 \
      --nodelist="$list" --cpus-per-task="$cpt" --job-name=uaclm-ray-workers \
      bash "$script" node worker &
    UACLM_RAY_STEP_PIDS+=("$!")
  fi
  uaclm_ray_wait_ready "${#nodes[@]}" "$need_cpus" "$need_gpus" "${UACLM_RAY_TIMEOUT:-300}"
}

uaclm_wait_port() {
  # uaclm_wait_port HOST PORT TIMEOUT PID: until HOST:PORT accepts connections; fail early if
  # PID (the srun of the head) has exited.
  local host="$1" port="$2" timeout="$3" pid="$4" start=$SECONDS
  until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || uaclm_die "the Ray head exited before listening on $host:$port (see its output above)"
    ((SECONDS - start < timeout)) || uaclm_die "the Ray head did not listen on $host:$port within ${timeout}s"
    sleep 1
  done
}

uaclm_ray_wait_ready() {
  # uaclm_ray_wait_ready NODES CPUS GPUS TIMEOUT: poll the cluster (alive nodes, CPU and GPU
  # totals) until it matches the allocation and the run's needs, or fail with what is there;
  # stops early when a Ray node step has exited.
  local -a pids=()
  local pid
  for pid in "${UACLM_RAY_STEP_PIDS[@]}"; do pids+=(--pid "$pid"); done
  uaclm cluster wait --address "$RAY_ADDRESS" --nodes "$1" --cpus "$2" --gpus "$3" \
    --timeout "$4" "${pids[@]}" || uaclm_die "the Ray cluster did not come up (details above)"
}

# ------------------------------------------------------------------------------ the driver

UACLM_PENDING_SIGNAL=""

uaclm_on_signal() {
  # Trap for USR1 (Slurm's --signal=B:USR1@T before the time limit, or scancel --signal) and
  # TERM (scancel, preemption, time limit): remembered here and delivered to the driver by
  # uaclm_run_driver's wait loop; it checkpoints at its next step and exits with status
  # UACLM_EXIT_STOPPED. A TERM before the driver runs ends the job (the EXIT trap tears Ray
  # down); a USR1 then waits for it.
  if [[ "$1" == TERM && -z "$UACLM_DRIVER_PID" ]]; then
    uaclm_die "SIGTERM before the driver started" 143
  fi
  UACLM_PENDING_SIGNAL="$1"
  uaclm_log "received SIG$1: asking the driver to checkpoint and stop"
}

uaclm_catches() {
  # uaclm_catches PID SIGNUM: PID has installed a handler for SIGNUM (SigCgt mask in /proc).
  local mask
  mask="$(awk '/^SigCgt:/ {print $2}' "/proc/$1/status" 2>/dev/null)" || return 1
  [[ -n "$mask" ]] && (((16#$mask >> ($2 - 1)) & 1))
}

uaclm_run_driver() {
  # uaclm_run_driver CMD...: run CMD in the background and wait for it; sets UACLM_DRIVER_RC.
  # A foreground command would hold off the shell's traps until it ends; `wait` returns at
  # once when a trapped signal arrives. USR1 is only sent once the driver has its handler:
  # Python's default action for SIGUSR1 is to die, before `uaclm train` installs its handler.
  "$@" &
  UACLM_DRIVER_PID=$!
  local pid="$UACLM_DRIVER_PID" num
  while kill -0 "$pid" 2>/dev/null; do
    if [[ -n "$UACLM_PENDING_SIGNAL" ]]; then
      num="$(kill -l "$UACLM_PENDING_SIGNAL")"
      if uaclm_catches "$pid" "$num" || [[ "$UACLM_PENDING_SIGNAL" == TERM ]]; then
        kill -s "$UACLM_PENDING_SIGNAL" "$pid" 2>/dev/null || true
        UACLM_PENDING_SIGNAL=""
      else
        sleep 1  # the driver is still starting; deliver once its handler is in place
        continue
      fi
    fi
    wait "$pid" || true  # returns early (status > 128) when a trapped signal arrives
  done
  UACLM_DRIVER_RC=0
  wait "$pid" || UACLM_DRIVER_RC=$?  # bash keeps the exit status of a reaped child
  UACLM_DRIVER_PID=""
}

# ------------------------------------------------------------------------------- teardown

uaclm_ray_down() {
  # Stop the driver (if still running) and the Ray node steps; safe to call more than once.
  ((UACLM_DOWN_DONE)) && return 0
  UACLM_DOWN_DONE=1
  local pid deadline
  if [[ -n "$UACLM_DRIVER_PID" ]] && kill -0 "$UACLM_DRIVER_PID" 2>/dev/null; then
    uaclm_log "stopping the driver (pid $UACLM_DRIVER_PID)"
    kill -TERM "$UACLM_DRIVER_PID" 2>/dev/null || true
    deadline=$((SECONDS + 60))
    while kill -0 "$UACLM_DRIVER_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 1; done
    kill -KILL "$UACLM_DRIVER_PID" 2>/dev/null || true
  fi
  ((${#UACLM_RAY_STEP_PIDS[@]} > 0)) || return 0
  uaclm_log "stopping Ray (srun pids ${UACLM_RAY_STEP_PIDS[*]})"
  # SIGTERM to the node scripts (`scancel --signal` only signals the steps' tasks): `ray start
  # --block` stops its Ray processes and the node script removes its temp dir. A SIGTERM to
  # srun would instead kill the steps at once. Never `ray stop`: it kills every Ray on the
  # node, other jobs' included.
  local step
  for step in $(uaclm_ray_steps); do scancel --signal=TERM "$step" 2>/dev/null || true; done
  deadline=$((SECONDS + ${UACLM_RAY_STOP_TIMEOUT:-60}))
  for pid in "${UACLM_RAY_STEP_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 1; done
  done
  local left=()
  for pid in "${UACLM_RAY_STEP_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then left+=("$pid"); fi
  done
  if ((${#left[@]} > 0)); then
    uaclm_log "Ray steps still running after ${UACLM_RAY_STOP_TIMEOUT:-60}s: cancelling them"
    for step in $(uaclm_ray_steps); do scancel "$step" 2>/dev/null || true; done
    for pid in "${left[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  fi
  for pid in "${UACLM_RAY_STEP_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  UACLM_RAY_STEP_PIDS=()
}

# ------------------------------------------------------------------------ batch entries

uaclm_split_env_overrides() {
  # UACLM_OVERRIDES="k=v k2=v2" -> UACLM_ENV_OVERRIDES array (whitespace-separated; pass a
  # value with spaces as a script argument instead).
  UACLM_ENV_OVERRIDES=()
  if [[ -n "${UACLM_OVERRIDES:-}" ]]; then
    read -r -a UACLM_ENV_OVERRIDES <<<"$UACLM_OVERRIDES"
  fi
}

uaclm_train_main() {
  # Body of slurm/train_*.sh: uaclm_train_main [CONFIG] [key=value ...]
  uaclm_setup
  local config="${1:-${UACLM_CONFIG:-}}"
  if (($# > 0)); then shift; fi
  [[ -n "$config" ]] || uaclm_die "usage: sbatch slurm/train_13b.sh CONFIG [key=value ...] (or UACLM_CONFIG=CONFIG)" 2
  config="$(uaclm_resolve_config "$config")"
  uaclm_split_env_overrides
  # Later overrides win: UACLM_OVERRIDES, then the script arguments, then the interface.
  local -a overrides=("${UACLM_ENV_OVERRIDES[@]}" "$@" "${UACLM_NET_OVERRIDES[@]}")
  local out need workers cpus gpus
  out="$(uaclm_output_dir "$config" "${overrides[@]}")"
  need="$(uaclm resources "$config" train "${overrides[@]}")" || uaclm_die "invalid config or overrides" 2
  read -r workers cpus gpus <<<"$need"
  local -a cmd=(uaclm train "$config" "${overrides[@]}" "logging.output_dir=$out")
  if uaclm_has_checkpoint "$out"; then
    if grep -qs '"stopped": false' "$out/summary.json"; then
      uaclm_log "$out already holds a finished run (summary.json): nothing to do"
      exit 0
    fi
    # A requeued job (SLURM_RESTART_COUNT > 0) or a resubmission: continue from the newest
    # checkpoint instead of starting over (uaclm refuses a second fresh run in that folder).
    uaclm_log "checkpoint found in $out (restart ${SLURM_RESTART_COUNT:-0}): resuming"
    cmd+=(--resume "$out")
  elif ((${SLURM_RESTART_COUNT:-0} > 0)) && [[ -f "$out/run_info.json" ]]; then
    uaclm_die "requeued, but $out holds no complete checkpoint to resume from" 2
  fi
  local -a extra=()
  [[ -z "${UACLM_TRAIN_ARGS:-}" ]] || read -r -a extra <<<"$UACLM_TRAIN_ARGS"
  cmd+=("${extra[@]}")
  uaclm_log "$workers Ray Train worker(s): $cpus CPUs, $gpus GPUs"
  uaclm_ray_up "$cpus" "$gpus"
  uaclm_log "output dir: $out"
  uaclm_log "running: ${cmd[*]}"
  uaclm_run_driver "${cmd[@]}"
  local rc="$UACLM_DRIVER_RC"
  uaclm_ray_down
  if ((rc == UACLM_EXIT_STOPPED)); then
    # Stopped with a checkpoint (SIGUSR1 before the time limit, SIGTERM, `uaclm stop`): put
    # the job back in the queue; the requeued run (same job id and output dir) resumes.
    if [[ "${UACLM_REQUEUE:-1}" == 1 ]]; then
      uaclm_log "stopped with a checkpoint: scontrol requeue $SLURM_JOB_ID (resumes from $out)"
      scontrol requeue "$SLURM_JOB_ID" ||
        uaclm_die "scontrol requeue failed; submit the same command again to resume from $out" "$UACLM_EXIT_STOPPED"
    else
      uaclm_log "stopped with a checkpoint; UACLM_REQUEUE=0, so not requeued"
    fi
  fi
  uaclm_log "uaclm train exited with status $rc"
  exit "$rc"
}

uaclm_eval_main() {
  # Body of slurm/eval.sh: uaclm_eval_main [CONFIG] [key=value ...] [--base] [--adapter ...]
  uaclm_setup
  local config="${1:-${UACLM_CONFIG:-}}"
  if (($# > 0)); then shift; fi
  [[ -n "$config" ]] || uaclm_die "usage: sbatch slurm/eval.sh CONFIG [key=value ...] [--base] [--adapter [NAME=]PATH ...] [--out DIR]" 2
  config="$(uaclm_resolve_config "$config")"
  uaclm_split_env_overrides
  local -a args=("${UACLM_ENV_OVERRIDES[@]}" "$@") overrides=()
  [[ -z "${UACLM_OUTPUT_DIR:-}" ]] || args+=("logging.output_dir=$UACLM_OUTPUT_DIR")
  # key=value arguments (not the values of --adapter / --out) size the readiness check.
  local i=0
  while ((i < ${#args[@]})); do
    case "${args[i]}" in
      --adapter | --out) i=$((i + 1)) ;;
      -*) ;;
      *=*) overrides+=("${args[i]}") ;;
    esac
    i=$((i + 1))
  done
  local need workers cpus gpus
  need="$(uaclm resources "$config" eval "${overrides[@]}")" || uaclm_die "invalid config or overrides" 2
  read -r workers cpus gpus <<<"$need"
  uaclm_log "$workers generation actor(s): $cpus CPUs, $gpus GPUs"
  uaclm_ray_up "$cpus" "$gpus"
  local -a cmd=(uaclm eval "$config" "${args[@]}")
  uaclm_log "running: ${cmd[*]}"
  uaclm_run_driver "${cmd[@]}"
  local rc="$UACLM_DRIVER_RC"
  uaclm_ray_down
  uaclm_log "uaclm eval exited with status $rc"
  exit "$rc"
}

uaclm_ray_steps() {
  # Step ids (JOB.STEP) of this job's Ray node steps (srun --job-name=uaclm-ray-*).
  squeue -h -s -j "$SLURM_JOB_ID" -o '%i %j' 2>/dev/null | awk '$2 ~ /^uaclm-ray-/ {print $1}'
}

# --------------------------------------------------------------------- one Ray node (srun)

uaclm_ray_node() {
  # uaclm_ray_node head|worker: runs inside the srun step on each node.
  local role="$1" ip tmp cpus
  ip="$(uaclm_node_ip)"
  # Short names: Ray's socket paths under the temp dir must stay below ~107 characters.
  tmp="$UACLM_RAY_JOB_TMP/n${SLURM_NODEID:-0}"
  mkdir -p "$tmp"
  cpus="${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-$(nproc)}}"
  local -a args
  mapfile -t args < <(uaclm_ray_port_args)
  args+=(--block --disable-usage-stats --node-ip-address="$ip" --temp-dir="$tmp" --num-cpus="$cpus")
  # GPUs: what Slurm gave this step (also 0 on CPU-only allocations); Ray autodetects otherwise.
  if [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then
    args+=(--num-gpus="$SLURM_GPUS_ON_NODE")
  elif [[ -n "${SLURM_GPUS_PER_NODE:-}" ]]; then
    args+=(--num-gpus="${SLURM_GPUS_PER_NODE##*:}")  # "4" or "a100:4"
  elif [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    args+=(--num-gpus="$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)")
  fi
  # Keep the object store inside the job's memory (Ray's default: 30% of the machine's).
  if [[ -n "${SLURM_MEM_PER_NODE:-}" ]] && ((SLURM_MEM_PER_NODE > 0)); then
    args+=(--object-store-memory=$((SLURM_MEM_PER_NODE * 1024 * 1024 / 5)))
  fi
  if [[ "$role" == head ]]; then
    args+=(--head --port="$UACLM_RAY_GCS_PORT" --include-dashboard=true
           --dashboard-host="${UACLM_RAY_DASHBOARD_HOST:-127.0.0.1}"
           --dashboard-port="$UACLM_RAY_DASHBOARD_PORT"
           --ray-client-server-port="$UACLM_RAY_CLIENT_PORT")
  else
    args+=(--address="$RAY_ADDRESS")
  fi
  uaclm_log "$(hostname)/${SLURMD_NODENAME:-?}: ray start ($role) on $ip, $cpus CPUs, temp dir $tmp"
  # Teardown signals every process of the step at once, GCS included: `ray start --block`
  # would then wait 30 s trying to drain the node through the GCS that is already gone.
  export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0
  ray start "${args[@]}" &
  local pid=$! stopping=0
  trap 'stopping=1; kill -TERM "$pid" 2>/dev/null || true' TERM INT
  local rc=0
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done
  wait "$pid" || rc=$?
  if ((stopping)); then
    rc=0  # stopped by the teardown: ray start exits 1 after its SIGTERM cleanup
  fi
  if ((rc != 0)); then
    uaclm_log "$(hostname)/${SLURMD_NODENAME:-?}: ray start failed ($rc); logs kept in $tmp/session_latest/logs"
  elif [[ "${UACLM_RAY_KEEP_TMP:-0}" != 1 ]]; then
    rm -rf "$tmp"
    rmdir "$UACLM_RAY_JOB_TMP" 2>/dev/null || true
  fi
  return "$rc"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  case "${1:-}" in
    node) uaclm_ray_node "${2:?usage: ray_cluster.sh node head|worker}" ;;
    *) echo "usage: source it from a batch script, or (srun) $0 node head|worker" >&2; exit 2 ;;
  esac
fi
