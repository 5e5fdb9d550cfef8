#!/usr/bin/env bash
# A Ray head on this machine for people without Slurm: dashboard and Jobs API on 127.0.0.1,
# token authentication on. Stop kills only this head (by its recorded pid / process group).
#
#   launchers/local_head.sh start      # prints the address, dashboard URL and how to submit
#   launchers/local_head.sh status
#   launchers/local_head.sh stop
#
# Then: launchers/submit.sh http://127.0.0.1:8265 configs/tiny_test.yaml logging.output_dir=$PWD/runs/x
#
# Settings (environment):
#   UACLM_HEAD_DIR         state folder: pid, log, Ray temp dir (default: /tmp/uaclm-head-$USER;
#                          keep it short, Ray's socket paths live under it)
#   UACLM_RAY_PORT_BASE    use base..base+99 for every Ray port (GCS = base, dashboard = base+1);
#                          default: GCS 6379, dashboard 8265, Ray's defaults for the rest
#   UACLM_HEAD_IP          node IP (default 127.0.0.1; Ray may advertise the machine's address
#                          instead; other machines can join only with the token)
#   UACLM_HEAD_CPUS / UACLM_HEAD_GPUS   resources to offer (default: Ray detects them)
#   UACLM_VENV             Python env with ray and uaclm (default: <repo>/.venv if present)
#   RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH   the token (default: ~/.ray/auth_token, created once)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=slurm/ray_cluster.sh
source "$REPO/slurm/ray_cluster.sh"  # shared helpers (ports, logging); nothing runs on source

STATE="${UACLM_HEAD_DIR:-/tmp/uaclm-head-$(id -un)}"
PID_FILE="$STATE/head.pid"
LOG="$STATE/head.log"
ENV_FILE="$STATE/head.env"

setup_env() {
  local venv="${UACLM_VENV:-$REPO/.venv}"
  if [[ -x "$venv/bin/python" ]]; then
    PATH="$venv/bin:$PATH"
    export PATH
  fi
  command -v ray >/dev/null || uaclm_die "'ray' not found: set UACLM_VENV (pip install 'ray[default]')" 2
  export RAY_AUTH_MODE=token  # never disabled
  if [[ -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" && ! -s "$HOME/.ray/auth_token" ]]; then
    ray get-auth-token --generate >/dev/null
  fi
  if [[ -n "${UACLM_RAY_PORT_BASE:-}" ]]; then
    uaclm_ray_ports
  else
    UACLM_RAY_GCS_PORT=6379
    UACLM_RAY_DASHBOARD_PORT=8265
  fi
  HEAD_IP="${UACLM_HEAD_IP:-127.0.0.1}"
}

head_pid() {
  # The recorded pid, if that process is still our `ray start --block`.
  [[ -s "$PID_FILE" ]] || return 1
  local pid
  pid="$(<"$PID_FILE")"
  kill -0 "$pid" 2>/dev/null || return 1
  grep -qa -- "--temp-dir=$STATE/ray" "/proc/$pid/cmdline" 2>/dev/null || return 1
  printf '%s\n' "$pid"
}

start() {
  setup_env
  if pid="$(head_pid)"; then
    uaclm_log "already running (pid $pid); '$0 stop' first"
    status
    return 0
  fi
  # Ray's unix sockets sit ~68 characters below its temp dir; AF_UNIX paths end at 107.
  if ((${#STATE} + 4 > 39)); then
    uaclm_die "UACLM_HEAD_DIR=$STATE is too long for Ray's socket paths (35 characters at most)" 2
  fi
  mkdir -p "$STATE/ray"
  chmod 700 "$STATE"
  local -a args=(--head --block --disable-usage-stats --temp-dir="$STATE/ray"
                 --node-ip-address="$HEAD_IP" --port="$UACLM_RAY_GCS_PORT"
                 --include-dashboard=true --dashboard-host=127.0.0.1
                 --dashboard-port="$UACLM_RAY_DASHBOARD_PORT")
  if [[ -n "${UACLM_RAY_PORT_BASE:-}" ]]; then
    mapfile -t -O "${#args[@]}" args < <(uaclm_ray_port_args)
    args+=(--ray-client-server-port="$UACLM_RAY_CLIENT_PORT")
  fi
  [[ -z "${UACLM_HEAD_CPUS:-}" ]] || args+=(--num-cpus="$UACLM_HEAD_CPUS")
  [[ -z "${UACLM_HEAD_GPUS:-}" ]] || args+=(--num-gpus="$UACLM_HEAD_GPUS")
  # Skip the 30 s node drain on stop: nothing else (Serve) needs it here.
  export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0
  # setsid: the head gets its own process group (= its pid), so `stop` can reach every process
  # it started, and a closed terminal does not hang it up.
  setsid ray start "${args[@]}" >"$LOG" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$PID_FILE"
  printf 'RAY_ADDRESS=%s:%s\nDASHBOARD=http://127.0.0.1:%s\n' \
    "$HEAD_IP" "$UACLM_RAY_GCS_PORT" "$UACLM_RAY_DASHBOARD_PORT" >"$ENV_FILE"
  # Ready = the dashboard's Jobs API answers (it comes up last); fail with the log otherwise.
  local deadline=$((SECONDS + ${UACLM_RAY_TIMEOUT:-120}))
  until ray job list --address "http://127.0.0.1:$UACLM_RAY_DASHBOARD_PORT" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
      tail -n 30 "$LOG" >&2
      stop
      uaclm_die "the Ray head did not come up (log: $LOG)"
    fi
    sleep 1
  done
  uaclm_log "Ray head up (pid $pid, temp dir $STATE/ray, log $LOG)"
  cat <<EOF
address:    $HEAD_IP:$UACLM_RAY_GCS_PORT     (export RAY_ADDRESS=$HEAD_IP:$UACLM_RAY_GCS_PORT RAY_AUTH_MODE=token)
dashboard:  http://127.0.0.1:$UACLM_RAY_DASHBOARD_PORT
submit:     $REPO/launchers/submit.sh http://127.0.0.1:$UACLM_RAY_DASHBOARD_PORT CONFIG logging.output_dir=/abs/path [k=v ...]
stop:       $0 stop
EOF
}

status() {
  local pid
  if ! pid="$(head_pid)"; then
    echo "not running (state: $STATE)"
    return 3
  fi
  echo "running: pid $pid, temp dir $STATE/ray"
  cat "$ENV_FILE"
  setup_env
  ray status --address "$HEAD_IP:$UACLM_RAY_GCS_PORT" 2>/dev/null || true
}

stop() {
  local pid
  if ! pid="$(head_pid)"; then
    echo "not running (state: $STATE)"
    rm -f "$PID_FILE"
    return 0
  fi
  # SIGTERM to `ray start --block`: it stops the processes it started; then whatever is left
  # in its process group. Never `ray stop`: it kills every Ray on the machine.
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 1; done
  kill -TERM -- "-$pid" 2>/dev/null || true
  sleep 1
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$PID_FILE" "$ENV_FILE"
  rm -rf "$STATE/ray"
  uaclm_log "Ray head stopped (pid $pid)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
