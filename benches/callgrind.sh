#!/usr/bin/env bash
# Counts the proxy's user-space instructions per request, exactly: the
# deciding figure for a change on the request path (a harness run spreads
# ±15 %; this does not move between runs of the same binary by more than
# ~0.3 %).
#
#   benches/callgrind.sh [BIN] [MODE...]     # default: target/pgo/switchyard, plain split
#   FLEET=1 benches/callgrind.sh target/release/switchyard plain   # the proxy as a fleet replica
#
# Per MODE (plain, split, mirror: the harness adapter's config for it): two
# bench backends (../shared/bench/backend), the proxy with one worker under
# `valgrind --tool=callgrind`; a 3 s warm-up at 64 connections; then the
# counts zeroed, a 20 s wrk run at 64 connections, and a dump. Instructions
# in the dump / requests the backends received in that
# window = instructions per request (start-up, warm-up and connection set-up
# of the warm-up excluded; the ≤ 64 requests cut at the window's edges are
# < 0.5 % of the count).
#
# FLEET=1: the same, with the proxy a fleet replica (`[cluster]`) on a
# throwaway etcd on loopback (benches/etcd_local.py); BIN must be built with
# --features fleet. The replica's own etcd work (watch, heartbeats) runs in
# the same process and is counted.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench="${BENCH_DIR:-$repo/../shared/bench}"
BIN="$(realpath "${1:-$repo/target/pgo/switchyard}")"
shift || true
MODES=("${@:-plain split}")
# shellcheck disable=SC2206
MODES=(${MODES[*]})
backend="$bench/backend/target/release/bench-backend"
FLEET="${FLEET:-}"
tools=(valgrind callgrind_control wrk curl)
[[ -n $FLEET ]] && tools+=(etcd python3)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool missing (../shared/bench/setup.sh, apt install valgrind)" >&2; exit 1; }
done
[[ -x $backend ]] || { echo "callgrind.sh: $backend missing: run ../shared/bench/setup.sh" >&2; exit 1; }
[[ -x $BIN ]] || { echo "callgrind.sh: $BIN missing: build it (benches/pgo-build.sh)" >&2; exit 1; }

run_dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run_dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 300); do
    curl -s -o /dev/null "http://127.0.0.1:$1/__count" && return 0
    sleep 0.1
  done
  echo "callgrind.sh: nothing listens on :$1" >&2
  exit 1
}
count() { curl -s "http://127.0.0.1:$1/__count"; }

stable_port=$(free_port); canary_port=$(free_port); shadow_port=$(free_port)
"$backend" --port "$stable_port" --name stable & pids+=($!)
"$backend" --port "$canary_port" --name canary & pids+=($!)
"$backend" --port "$shadow_port" --name shadow & pids+=($!)
wait_port "$stable_port"; wait_port "$canary_port"; wait_port "$shadow_port"

etcd_url=""
if [[ -n $FLEET ]]; then
  etcd_port=$(free_port); etcd_peer=$(free_port)
  etcd_url="http://127.0.0.1:$etcd_port"
  python3 "$repo/benches/etcd_local.py" "$run_dir/etcd" "$etcd_port" "$etcd_peer" 2>"$run_dir/etcd.log" & pids+=($!)
  for _ in $(seq 200); do
    curl -s "$etcd_url/health" | grep -q true && break
    sleep 0.1
  done
  curl -s "$etcd_url/health" | grep -q true || { echo "callgrind.sh: etcd did not start:" >&2; cat "$run_dir/etcd.log" >&2; exit 1; }
fi
# How many replicas are listed under a fleet prefix.
members() {
  PYTHONPATH="$repo/benches" python3 -c 'import sys, etcd_local; print(len(etcd_local.keys(sys.argv[1], sys.argv[2] + "/members/")))' "$etcd_url" "$1"
}

# The adapter writes the config and execs SWITCHYARD_BIN: make that the
# proxy under callgrind.
wrapper="$run_dir/under-callgrind"
cat >"$wrapper" <<EOF
#!/usr/bin/env bash
exec valgrind --tool=callgrind --callgrind-out-file="\$RUN_DIR/callgrind.out" "$BIN" "\$@"
EOF
chmod +x "$wrapper"

printf '%-11s %12s %14s %10s\n' mode requests instructions per_req
for mode in "${MODES[@]}"; do
  port=$(free_port)
  prefix="/switchyard/callgrind-$mode"
  RUN_DIR="$run_dir" LISTEN_PORT=$port MODE=$mode STABLE_ADDR=127.0.0.1:$stable_port \
    CANARY_ADDR=127.0.0.1:$canary_port SHADOW_ADDR=127.0.0.1:$shadow_port \
    SWITCHYARD_CLUSTER_ETCD="$etcd_url" SWITCHYARD_CLUSTER_PREFIX="$prefix" \
    SWITCHYARD_BIN="$wrapper" "$repo/benches/compare-adapter.sh" 2>"$run_dir/proxy.log" &
  proxy=$!
  pids+=($proxy)
  for _ in $(seq 600); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
  done
  wrk -t1 -c64 -d3s "http://127.0.0.1:$port/" >/dev/null
  for p in $stable_port $canary_port; do curl -s -o /dev/null "http://127.0.0.1:$p/__reset"; done
  callgrind_control -z "$proxy" >/dev/null 2>&1
  wrk -t1 -c64 -d20s "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -d "$proxy" >/dev/null 2>&1
  if [[ -n $FLEET && $(members "$prefix") -lt 1 ]]; then
    echo "callgrind.sh: the proxy never joined the fleet in $mode:" >&2; cat "$run_dir/proxy.log" >&2; exit 1
  fi
  requests=$(($(count "$stable_port") + $(count "$canary_port")))
  [[ $requests -gt 0 ]] || { echo "callgrind.sh: no requests reached the backends in $mode:" >&2; cat "$run_dir/proxy.log" >&2; exit 1; }
  kill -INT "$proxy" 2>/dev/null || true
  wait "$proxy" 2>/dev/null || true
  # The dump's `summary:` line: instructions since the zeroing.
  instructions=$(awk '/^summary:/ {print $2; exit}' "$run_dir"/callgrind.out.1)
  [[ -n ${KEEP_OUT:-} ]] && cp "$run_dir"/callgrind.out* "$KEEP_OUT/callgrind.$mode.out"
  rm -f "$run_dir"/callgrind.out*
  label=$mode
  [[ -n $FLEET ]] && label="$mode+fleet"
  printf '%-11s %12d %14d %10d\n' "$label" "$requests" "$instructions" $((instructions / requests))
done
