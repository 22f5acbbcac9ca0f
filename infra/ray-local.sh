#!/usr/bin/env bash
# Start or stop a closed Ray head node: every port on 127.0.0.1, token authentication on.
# It touches no other Ray cluster on the machine.
#
#   infra/ray-local.sh start DIR [GCS_PORT] [DASHBOARD_PORT] [AGENT_PORT] [CLIENT_PORT]
#   infra/ray-local.sh stop DIR
#
# `start` prints the job address (http://127.0.0.1:DASHBOARD_PORT) alone on stdout, and on
# stderr what a client needs; DIR/client.env holds the same settings (`. DIR/client.env`).
#
# DIR is the cluster's own --temp-dir (keep it short: Ray's socket paths must stay < 108
# bytes); `start` leaves it mode 700. CLIENT_PORT (Ray client server, 10001) must lie outside
# Ray's worker port range 10002-19999.
#
# Loopback: `--node-ip-address=127.0.0.1` alone is not enough on Linux. `ray start` turns a
# loopback node address into the machine's external one unless
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (Ray's single-machine mode, the default on macOS and
# Windows), and then GCS, raylet, workers, agents and the Ray client server (10001) listen on
# every interface. With the node address really 127.0.0.1 they all bind loopback, and no
# other machine can join. Without --dashboard-host the dashboard agent binds another address
# and every `ray job submit` answers "No available agent to submit job". The dashboard agent
# gets its own port (AGENT_PORT, 52395): Ray's default 52365 may be held by another cluster.
#
# Authentication: RAY_AUTH_MODE=token. The token lives in DIR/auth_token, or in the file the
# caller's RAY_AUTH_TOKEN_PATH names; it is generated (mode 600) if absent, and refused if
# other users can read it. Every cluster process gets RAY_AUTH_TOKEN_PATH, so submitted jobs
# authenticate too. Opting out must be explicit: RAY_AUTH_MODE=disabled (then anyone with a
# shell on this machine can run code as you on the cluster: only for throwaway test clusters).
#
# `ray stop` would stop every Ray process of the machine; `stop` here ends only this
# cluster's processes: those naming DIR's sessions or its GCS port, and their children.
set -euo pipefail

usage="usage: $0 start|stop DIR [GCS_PORT] [DASHBOARD_PORT] [AGENT_PORT] [CLIENT_PORT]"
command=${1:?$usage}
dir=$(realpath -m "${2:?$usage}")

cluster_pids() {
  local port roots pid
  port=$(cat "$dir/gcs-port" 2>/dev/null || echo none)
  roots=$( (pgrep -f -- "$dir/session_"; pgrep -f -- "address=[^ ]*:$port( |$)") 2>/dev/null | sort -u)
  for pid in $roots; do
    echo "$pid"
    descendants "$pid"
  done | sort -u | grep -vx -e "$$" -e "$PPID" || true
}

descendants() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

stop_cluster() {
  local pids alive
  pids=$(cluster_pids)
  [ -n "$pids" ] || return 0
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 50); do
    alive=$(for pid in $pids; do kill -0 "$pid" 2>/dev/null && echo "$pid"; done || true)
    [ -n "$alive" ] || return 0
    sleep 0.2
  done
  kill -KILL $alive 2>/dev/null || true
}

# Listening sockets of this cluster's processes that are not on a loopback address.
exposed_sockets() {
  local pids
  command -v ss >/dev/null || return 0
  pids=$(cluster_pids | paste -sd'|')
  [ -n "$pids" ] || return 0
  ss -ltnpH | grep -E "pid=($pids)," |
    awk '$4 !~ /^(127\.[0-9.]+|\[::ffff:127\.[0-9.]+\]|\[::1\]):[0-9]+$/' || true
}

# A token file only its owner can read; generated like `ray get-auth-token --generate`
# (256 random bits, hex), which would only write the shared ~/.ray/auth_token.
ensure_token_file() {
  local file=$1 mode
  if [ ! -s "$file" ]; then
    (umask 077 && mkdir -p "$(dirname "$file")" &&
      head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file")
  fi
  mode=$(stat -c %a "$file")
  if [ "${mode: -2}" != "00" ]; then
    echo "error: other users can read the token file $file (mode $mode); chmod 600 it" >&2
    exit 1
  fi
}

case "$command" in
  start)
    gcs_port=${3:-6390}
    dashboard_port=${4:-8275}
    agent_port=${5:-52395}
    client_port=${6:-10001}
    auth_mode=${RAY_AUTH_MODE:-token}
    case "$auth_mode" in
      token | disabled) ;;
      *) echo "error: RAY_AUTH_MODE=$auth_mode; use token (the default) or disabled" >&2; exit 2 ;;
    esac
    address="http://127.0.0.1:$dashboard_port"
    export RAY_AUTH_MODE=$auth_mode RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    if [ "$auth_mode" = token ]; then
      token_file=$(realpath -m "${RAY_AUTH_TOKEN_PATH:-$dir/auth_token}")
      ensure_token_file "$token_file"
      export RAY_AUTH_TOKEN_PATH=$token_file
      unset RAY_AUTH_TOKEN # it would take precedence over the file
      client_env="unset RAY_AUTH_TOKEN
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$token_file"
    else
      client_env="export RAY_AUTH_MODE=disabled"
    fi
    mkdir -p "$dir"
    echo "$gcs_port" >"$dir/gcs-port"
    printf '%s\nexport RAY_API_SERVER_ADDRESS=%s\n' "$client_env" "$address" >"$dir/client.env"
    ray start --head \
      --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 \
      --port="$gcs_port" --dashboard-port="$dashboard_port" \
      --dashboard-agent-listen-port="$agent_port" --ray-client-server-port="$client_port" \
      --temp-dir="$dir" --num-cpus="${RAY_NUM_CPUS:-2}" \
      --disable-usage-stats >"$dir/ray-start.log" 2>&1 || { cat "$dir/ray-start.log" >&2; exit 1; }
    # Ray makes its temp dir world-writable (for a shared /tmp/ray). This one holds the
    # cluster's Unix sockets and logs: the user's alone (a shared dir like /tmp is left be).
    [ -k "$dir" ] || [ ! -O "$dir" ] || chmod 700 "$dir"
    exposed=$(exposed_sockets)
    if [ -n "$exposed" ]; then
      printf 'error: the head listens beyond loopback; stopped it:\n%s\n' "$exposed" >&2
      stop_cluster
      exit 1
    fi
    echo "$address"
    if [ "$auth_mode" = token ]; then
      echo "Ray head on 127.0.0.1 only, token authentication on (token: $token_file)." >&2
    else
      echo "WARNING: token authentication DISABLED (RAY_AUTH_MODE=disabled): any local user" \
        "can run code on this cluster. Use only for a throwaway test cluster." >&2
    fi
    {
      echo "A client shell needs (or: . $dir/client.env):"
      sed 's/^/  /' "$dir/client.env"
      echo "  ray job submit --address $address --working-dir . -- python -m jobs.capture ..."
    } >&2
    ;;
  stop)
    stop_cluster
    ;;
  *)
    echo "$usage" >&2
    exit 2
    ;;
esac
