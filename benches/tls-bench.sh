#!/usr/bin/env bash
# HTTPS scenario: switchyard and nginx terminate TLS with the same
# self-signed certificate (made here with openssl) in front of the shared
# harness's backend; wrk loads TLS HTTP/1.1 and h2load loads h2 (ALPN).
# Reports requests/s and proxy CPU µs per request (utime+stime from
# /proc/PID/stat of the proxy and its children, before/after each run), and
# each figure's ratio to nginx.
#
#   benches/tls-bench.sh [--secs 8] [--conns 64] [--h2-conns 16]
#                        [--h2-streams 4] [--proxy-cpu 0] [--load-cpu 1]
#                        [--key ec|rsa] [--port 19400]
#
# Like the shared harness (../shared/bench): one proxy worker pinned with
# taskset to --proxy-cpu, backend and load generator on --load-cpu,
# everything on 127.0.0.1, every run bounded by --secs. Connections are
# kept alive, so this measures TLS record and HTTP cost, not handshakes.
# Needs nginx, wrk, h2load, openssl, taskset (../shared/bench/setup.sh
# installs them); builds target/release/switchyard if it is missing.
set -euo pipefail

SECS=8 CONNS=64 H2_CONNS=16 H2_STREAMS=4 PROXY_CPU=0 LOAD_CPU=1 KEY=ec PORT=19400
while (($#)); do
  case "$1" in
    --secs) SECS=$2 ;;
    --conns) CONNS=$2 ;;
    --h2-conns) H2_CONNS=$2 ;;
    --h2-streams) H2_STREAMS=$2 ;;
    --proxy-cpu) PROXY_CPU=$2 ;;
    --load-cpu) LOAD_CPU=$2 ;;
    --key) KEY=$2 ;;
    --port) PORT=$2 ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "tls-bench: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift 2
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench_dir="${BENCH_DIR:-$repo/../shared/bench}"
[[ -d $bench_dir ]] || bench_dir=/work/shared/bench
backend_bin="$bench_dir/backend/target/release/bench-backend"
switchyard_bin="${SWITCHYARD_BIN:-$repo/target/release/switchyard}"

for tool in nginx wrk h2load openssl taskset; do
  command -v "$tool" >/dev/null || { echo "tls-bench: $tool missing: run $bench_dir/setup.sh" >&2; exit 1; }
done
[[ -x $backend_bin ]] || "$bench_dir/setup.sh" >&2
if [[ ! -x $switchyard_bin ]]; then
  echo "tls-bench: building $switchyard_bin" >&2
  (cd "$repo" && cargo build --release --quiet -p switchyard-control --bin switchyard) >&2
fi

run_dir="$(mktemp -d /tmp/switchyard-tls-bench.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run_dir"
}
trap cleanup EXIT

# One certificate for both proxies: localhost and 127.0.0.1.
case "$KEY" in
  ec) keyopt=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
  rsa) keyopt=(-newkey rsa:2048) ;;
  *) echo "tls-bench: --key ec|rsa" >&2; exit 2 ;;
esac
openssl req -x509 "${keyopt[@]}" -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$run_dir/key.pem" -out "$run_dir/cert.pem" 2>/dev/null

backend_port=$((PORT + 1))
taskset -c "$LOAD_CPU" "$backend_bin" --port "$backend_port" --name stable >/dev/null 2>&1 &
pids+=($!)

clk_tck=$(getconf CLK_TCK)
# utime+stime (clock ticks) of a process and its direct children.
cpu_ticks() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    [[ -r /proc/$pid/stat ]] || continue
    # Fields after the command name (which may contain spaces).
    local rest
    rest=$(sed 's/^.*) //' "/proc/$pid/stat")
    read -r -a f <<<"$rest"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

wait_ready() {
  for _ in $(seq 1 100); do
    curl -fsk -o /dev/null "https://127.0.0.1:$PORT/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "tls-bench: proxy on :$PORT did not answer over HTTPS" >&2
  return 1
}

start_switchyard() {
  cat >"$run_dir/switchyard.toml" <<EOF
[listen]
data = "127.0.0.1:$PORT"
admin = "127.0.0.1:0"
tls = { cert = "$run_dir/cert.pem", key = "$run_dir/key.pem" }

[[routes]]
name = "bench"
  [[routes.versions]]
  name = "stable"
  weight = 100
  endpoints = ["127.0.0.1:$backend_port"]
EOF
  SWITCHYARD_LOG=warn taskset -c "$PROXY_CPU" "$switchyard_bin" run \
    --config "$run_dir/switchyard.toml" --workers 1 --no-watch &
  proxy_pid=$!
}

start_nginx() {
  mkdir -p "$run_dir/nginx"
  cat >"$run_dir/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
master_process on;
pid $run_dir/nginx/nginx.pid;
error_log $run_dir/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $run_dir/nginx/body;
  proxy_temp_path $run_dir/nginx/proxy;
  fastcgi_temp_path $run_dir/nginx/fcgi;
  uwsgi_temp_path $run_dir/nginx/uwsgi;
  scgi_temp_path $run_dir/nginx/scgi;
  keepalive_requests 10000000;
  upstream stable { server 127.0.0.1:$backend_port; keepalive 128; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$PORT ssl http2 backlog=4096;
    ssl_certificate $run_dir/cert.pem;
    ssl_certificate_key $run_dir/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://stable;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  taskset -c "$PROXY_CPU" nginx -c "$run_dir/nginx/nginx.conf" -p "$run_dir/nginx" &
  proxy_pid=$!
}

# Runs one load; prints "requests cpu_ticks".
measure() {
  local kind=$1 before after requests out
  # Warm-up: connections, pools, caches.
  if [[ $kind == h1 ]]; then
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "https://127.0.0.1:$PORT/" >/dev/null
  else
    taskset -c "$LOAD_CPU" h2load -c"$H2_CONNS" -m"$H2_STREAMS" -D1 "https://127.0.0.1:$PORT/" >/dev/null
  fi
  before=$(cpu_ticks "$proxy_pid")
  if [[ $kind == h1 ]]; then
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" "https://127.0.0.1:$PORT/")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
  else
    out=$(taskset -c "$LOAD_CPU" h2load -c"$H2_CONNS" -m"$H2_STREAMS" -D"$SECS" "https://127.0.0.1:$PORT/")
    grep -q "Application protocol: h2" <<<"$out" || { echo "tls-bench: h2 was not negotiated" >&2; echo "$out" >&2; exit 1; }
    requests=$(awk '/^requests:/ {print $8}' <<<"$out")
  fi
  after=$(cpu_ticks "$proxy_pid")
  echo "$requests $((after - before))"
}

declare -A RPS CPU
for proxy in nginx switchyard; do
  "start_$proxy"
  pids+=("$proxy_pid")
  wait_ready
  proto=$(curl -sk -o /dev/null -w '%{http_version}' --http2 "https://127.0.0.1:$PORT/")
  [[ $proto == 2 ]] || { echo "tls-bench: $proxy did not negotiate h2 by ALPN" >&2; exit 1; }
  for kind in h1 h2; do
    read -r requests ticks < <(measure "$kind")
    RPS[$proxy.$kind]=$(awk -v r="$requests" -v s="$SECS" 'BEGIN {printf "%.0f", r / s}')
    CPU[$proxy.$kind]=$(awk -v t="$ticks" -v hz="$clk_tck" -v r="$requests" 'BEGIN {printf "%.2f", t * 1e6 / hz / r}')
  done
  kill "$proxy_pid"
  wait "$proxy_pid" 2>/dev/null || true
done

printf '\nTLS (%s key), %ss per run, proxy on cpu %s, load on cpu %s\n' "$KEY" "$SECS" "$PROXY_CPU" "$LOAD_CPU"
printf '%-22s %12s %12s %14s %12s\n' "proxy / load" "req/s" "x nginx" "cpu us/req" "x nginx"
for kind in h1 h2; do
  label="TLS HTTP/1.1 (wrk -c$CONNS)"
  [[ $kind == h2 ]] && label="h2 (h2load -c$H2_CONNS -m$H2_STREAMS)"
  echo "$label"
  for proxy in nginx switchyard; do
    printf '  %-20s %12s %12s %14s %12s\n' "$proxy" "${RPS[$proxy.$kind]}" \
      "$(awk -v a="${RPS[$proxy.$kind]}" -v b="${RPS[nginx.$kind]}" 'BEGIN {printf "%.2f", a / b}')" \
      "${CPU[$proxy.$kind]}" \
      "$(awk -v a="${CPU[$proxy.$kind]}" -v b="${CPU[nginx.$kind]}" 'BEGIN {printf "%.2f", a / b}')"
  done
done
