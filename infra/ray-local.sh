#!/usr/bin/env bash
# Start or stop a loopback Ray head node, touching no other Ray cluster on the machine.
#
#   infra/ray-local.sh start DIR [GCS_PORT] [DASHBOARD_PORT] [AGENT_PORT]   # prints the job address
#   infra/ray-local.sh stop DIR
#
# DIR is the cluster's --temp-dir (keep it short: Ray's socket paths must stay < 108 bytes).
# `ray stop` would stop every Ray process of the machine; `stop` here ends only this
# cluster's processes: those naming DIR's sessions or its GCS port, and their children.
# Loopback flags are required on these machines: without --node-ip-address and
# --dashboard-host the dashboard agent binds another address and every `ray job submit`
# answers "No available agent to submit job".
set -euo pipefail

command=${1:?usage: $0 start|stop DIR [GCS_PORT] [DASHBOARD_PORT]}
dir=$(realpath -m "${2:?usage: $0 start|stop DIR}")
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}

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

case "$command" in
  start)
    gcs_port=${3:-6390}
    dashboard_port=${4:-8275}
    agent_port=${5:-52395}  # not Ray's default 52365, which another local cluster may hold
    mkdir -p "$dir"
    echo "$gcs_port" >"$dir/gcs-port"
    ray start --head \
      --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 \
      --port="$gcs_port" --dashboard-port="$dashboard_port" \
      --dashboard-agent-listen-port="$agent_port" \
      --temp-dir="$dir" --num-cpus="${RAY_NUM_CPUS:-2}" \
      --disable-usage-stats >"$dir/ray-start.log" 2>&1 || { cat "$dir/ray-start.log" >&2; exit 1; }
    echo "http://127.0.0.1:$dashboard_port"
    ;;
  stop)
    pids=$(cluster_pids)
    [ -n "$pids" ] || exit 0
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 50); do
      alive=$(for pid in $pids; do kill -0 "$pid" 2>/dev/null && echo "$pid"; done || true)
      [ -n "$alive" ] || exit 0
      sleep 0.2
    done
    kill -KILL $alive 2>/dev/null || true
    ;;
  *)
    echo "usage: $0 start|stop DIR [GCS_PORT] [DASHBOARD_PORT]" >&2
    exit 2
    ;;
esac
