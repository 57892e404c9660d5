#!/usr/bin/env bash
# Memory per idle keep-alive connection, and memory given back after a burst,
# switchyard beside nginx in the same run.
#
#   benches/memory.sh [--proxies switchyard,nginx] [--counts 1000,10000] [--h2c 10000]
#                     [--settle S] [--bursts K]
#
# Per proxy and per (protocol, N): one bench backend, a fresh proxy with one
# worker (switchyard: SWITCHYARD_BIN, default target/release/switchyard;
# nginx: 1 worker, keepalive_timeout 120s, upstream keepalive), one request
# through it, 2 s, then RSS "before"; benches/idle_clients.py opens N
# connections, one request on each, keeps them idle; after S seconds (default
# 3) RSS "idle"; then all N close at once, and RSS 2 s and 10 s later.
# With --bursts K the same proxy takes K such bursts, and the last column is
# RSS 10 s after the last one: memory kept for reuse stays flat, a leak grows.
# RSS is VmRSS summed over the proxy's processes (nginx: master + worker, as
# the harness counts it). Per connection = (idle - before) / N.
# The open-file limit (ulimit -n) bounds N: both the proxy and the client
# hold one descriptor per connection.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench="${BENCH_DIR:-$repo/../shared/bench}"
backend="$bench/backend/target/release/bench-backend"
BIN="${SWITCHYARD_BIN:-$repo/target/release/switchyard}"
proxies=switchyard,nginx
counts=1000,10000
h2c_counts=10000
settle=3
bursts=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --proxies) proxies=$2; shift 2 ;;
    --counts) counts=$2; shift 2 ;;
    --h2c) h2c_counts=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    --bursts) bursts=$2; shift 2 ;;
    *) echo "memory.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for tool in python3 curl; do
  command -v "$tool" >/dev/null || { echo "memory.sh: $tool missing" >&2; exit 1; }
done
[[ -x $backend ]] || { echo "memory.sh: $backend missing: run ../shared/bench/setup.sh" >&2; exit 1; }
[[ $proxies != *switchyard* || -x $BIN ]] || { echo "memory.sh: $BIN missing: cargo build --release" >&2; exit 1; }
[[ $proxies != *nginx* ]] || command -v nginx >/dev/null || { echo "memory.sh: nginx missing: ../shared/bench/setup.sh" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

run_dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run_dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # port [curl option]
  for _ in $(seq 300); do
    curl -s ${2:+"$2"} -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.1
  done
  echo "memory.sh: nothing answers on :$1" >&2
  exit 1
}
# KiB resident over a process and its children.
rss_kib() {
  local total=0 pid
  for pid in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' /proc/"$pid"/status 2>/dev/null || echo 0)))
  done
  echo "$total"
}

backend_port=$(free_port)
"$backend" --port "$backend_port" --name stable >/dev/null 2>&1 & pids+=($!)
wait_http "$backend_port"

start_switchyard() { # port
  cat >"$run_dir/switchyard.toml" <<EOF
[listen]
data = "127.0.0.1:$1"
admin = "127.0.0.1:0"

[timeouts]
client_idle = "120s"

[limits]
max_connections = 100000

[[routes]]
name = "bench"
path_prefix = "/"

  [[routes.versions]]
  name = "stable"
  weight = 100
  endpoints = ["127.0.0.1:$backend_port"]
EOF
  SWITCHYARD_LOG=warn "$BIN" run --config "$run_dir/switchyard.toml" --workers 1 --no-watch \
    2>>"$run_dir/proxy.log" &
}

start_nginx() { # port proto
  local listen_opts="backlog=4096"
  [[ $2 == h2c ]] && listen_opts+=" http2"
  mkdir -p "$run_dir/tmp"
  cat >"$run_dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $run_dir/nginx.pid;
error_log $run_dir/nginx-error.log warn;
worker_rlimit_nofile $(ulimit -Hn);
events { worker_connections $(ulimit -Hn); }
http {
  access_log off;
  client_body_temp_path $run_dir/tmp/body;
  proxy_temp_path $run_dir/tmp/proxy;
  fastcgi_temp_path $run_dir/tmp/fcgi;
  uwsgi_temp_path $run_dir/tmp/uwsgi;
  scgi_temp_path $run_dir/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  upstream stable { server 127.0.0.1:$backend_port; keepalive 128; }
  server {
    listen 127.0.0.1:$1 $listen_opts;
    location / {
      proxy_pass http://stable;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  nginx -c "$run_dir/nginx.conf" -p "$run_dir" 2>>"$run_dir/proxy.log" &
}

printf '%-10s %-5s %7s %11s %11s %9s %12s %13s %14s\n' \
  proxy proto conns before_kib idle_kib kib_per_conn after_2s_kib after_10s_kib after_last_kib
measure() { # proxy proto n
  local port proxy client
  port=$(free_port)
  "start_$1" "$port" "$2"
  proxy=$!
  pids+=($proxy)
  wait_http "$port" "$([[ $2 == h2c ]] && echo --http2-prior-knowledge)"
  sleep 2
  local before idle after2 after10 last burst
  before=$(rss_kib "$proxy")
  for burst in $(seq "$bursts"); do
    coproc CLIENT { exec python3 "$repo/benches/idle_clients.py" --port "$port" -n "$3" --proto "$2"; }
    client=$CLIENT_PID
    local line=""
    read -r line <&"${CLIENT[0]}" || true
    [[ $line == ready* ]] || { echo "memory.sh: $1 $2 $3: the client failed (see above); proxy log:" >&2; cat "$run_dir/proxy.log" >&2; exit 1; }
    sleep "$settle"
    [[ $burst -gt 1 ]] || idle=$(rss_kib "$proxy")
    echo >&"${CLIENT[1]}"
    read -r line <&"${CLIENT[0]}" || true
    wait "$client" 2>/dev/null || true
    sleep 2
    [[ $burst -gt 1 ]] || after2=$(rss_kib "$proxy")
    sleep 8
    last=$(rss_kib "$proxy")
    [[ $burst -gt 1 ]] || after10=$last
  done
  kill -TERM "$proxy" 2>/dev/null || true
  wait "$proxy" 2>/dev/null || true
  printf '%-10s %-5s %7d %11d %11d %9.2f %12d %13d %14d\n' "$1" "$2" "$3" "$before" "$idle" \
    "$(python3 -c "print(($idle - $before) / $3)")" "$after2" "$after10" "$last"
}

IFS=, read -ra proxy_list <<<"$proxies"
IFS=, read -ra h1_list <<<"$counts"
IFS=, read -ra h2_list <<<"$h2c_counts"
for n in "${h1_list[@]}"; do
  for p in "${proxy_list[@]}"; do measure "$p" h1 "$n"; done
done
for n in "${h2_list[@]}"; do
  [[ -n $n ]] || continue
  for p in "${proxy_list[@]}"; do measure "$p" h2c "$n"; done
done
