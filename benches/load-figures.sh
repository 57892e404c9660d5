#!/usr/bin/env bash
# The load generator's figures beside wrk, oha and hey, on loopback against
# the harness's bench backend (../shared/bench/backend), in one run:
#
# 1. throughput per core at saturation: each generator with one thread and
#    64 connections, pinned to CPU 0, the backend to CPU 1; requests/s over
#    the generator's own CPU (user + system from /usr/bin/time), rounds
#    interleaved, medians;
# 2. latency agreement at a fixed rate below saturation: switchyard load
#    --rate R against oha -q R --latency-correction, p50 and p99.
#
# Usage: benches/load-figures.sh [SECONDS=5] [ROUNDS=3] [RATE=2000]
# Needs: target/release/switchyard (cargo build --release), wrk and the
# backend (../shared/bench/setup.sh), oha (cargo install oha --locked), hey
# (Debian: hey), taskset, GNU time or bash's TIMEFORMAT.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
rate=${3:-2000}
bin=${SWITCHYARD_BIN:-target/release/switchyard}
backend=${BENCH_BACKEND:-../shared/bench/backend/target/release/bench-backend}
# oha takes long to build: without it, its rows say "not run".
have_oha=true
command -v oha >/dev/null 2>&1 || {
  have_oha=false
  echo "load-figures.sh: oha is missing (cargo install oha --locked): its figures are skipped" >&2
}
for tool in "$bin" "$backend" wrk hey taskset python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || [[ -x $tool ]] || {
    echo "load-figures.sh: $tool is missing (see the header of this script)" >&2
    exit 1
  }
done
port=${PORT:-18431}
url="http://127.0.0.1:$port/"
out=$(mktemp -d)
trap 'kill "$backend_pid" 2>/dev/null || true; rm -rf "$out"' EXIT
taskset -c 1 "$backend" --port "$port" --name stable >"$out/backend.log" 2>&1 &
backend_pid=$!
for _ in $(seq 50); do
  curl -fs "$url" >/dev/null 2>&1 && break
  sleep 0.1
done

# timed NAME ROUND COMMAND...: runs COMMAND pinned to CPU 0, its stdout in
# $out/NAME.ROUND.out and "user sys wall" seconds in $out/NAME.ROUND.cpu.
timed() {
  local name=$1 round=$2
  shift 2
  local start end
  start=$(date +%s.%N)
  TIMEFORMAT='%U %S'
  { time taskset -c 0 "$@" >"$out/$name.$round.out" 2>"$out/$name.$round.err"; } 2>"$out/$name.$round.time"
  end=$(date +%s.%N)
  echo "$(cat "$out/$name.$round.time") $(awk "BEGIN { print $end - $start }")" >"$out/$name.$round.cpu"
}

for round in $(seq "$rounds"); do
  # Rotate the order so no tool always runs first.
  order=(switchyard wrk oha hey)
  order=("${order[@]:$((round % 4))}" "${order[@]:0:$((round % 4))}")
  for name in "${order[@]}"; do
    case $name in
      switchyard) timed switchyard "$round" "$bin" load "$url" --threads 1 --connections 64 \
        --duration "${secs}s" --warmup 1s --quiet --json "$out/switchyard.$round.json" ;;
      wrk) timed wrk "$round" wrk -t1 -c64 -d"${secs}s" "$url" ;;
      oha) $have_oha && timed oha "$round" oha -z "${secs}s" -c 64 --no-tui --output-format json "$url" ;;
      hey) timed hey "$round" hey -z "${secs}s" -c 64 -cpus 1 "$url" ;;
    esac
  done
  timed sy-rate "$round" "$bin" load "$url" --threads 1 --connections 64 --rate "$rate" \
    --duration "${secs}s" --warmup 1s --quiet --json "$out/sy-rate.$round.json"
  $have_oha && timed oha-rate "$round" oha -z "${secs}s" -c 64 -q "$rate" --latency-correction --no-tui \
    --output-format json "$url"
done

python3 - "$out" "$rounds" "$rate" <<'EOF'
import json, re, statistics, sys
out, rounds, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def cpu(name, r):
    u, s, wall = map(float, open(f"{out}/{name}.{r}.cpu").read().split())
    return u + s, wall
def rps(name, r):
    text = open(f"{out}/{name}.{r}.out").read()
    if name == "switchyard":
        a = json.load(open(f"{out}/switchyard.{r}.json"))["achieved"]
        return a["rate"], a["seconds"]
    if name == "oha":
        return json.loads(text)["summary"]["requestsPerSec"], None
    return float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1)), None
rows = {}
import os
for name in ["switchyard", "wrk", "oha", "hey"]:
    if not os.path.exists(f"{out}/{name}.1.cpu"):
        print(f"({name}: not run)")
        continue
    per_core, raw = [], []
    for r in range(1, rounds + 1):
        rate_r, _ = rps(name, r)
        cpu_s, wall = cpu(name, r)
        # The tool's CPU over its whole run (startup and warm-up included)
        # against requests/s × its measured seconds: per core-second.
        per_core.append(rate_r / (cpu_s / wall))
        raw.append(rate_r)
    rows[name] = (statistics.median(raw), statistics.median(per_core))
wrk = rows["wrk"][1]
print("| generator | req/s (median) | req/s per core | ÷ wrk per core |")
print("|---|---:|---:|---:|")
for name, (r, pc) in rows.items():
    print(f"| {name} | {r:,.0f} | {pc:,.0f} | {pc / wrk:.2f}× |")
sy = [json.load(open(f"{out}/sy-rate.{r}.json")) for r in range(1, rounds + 1)]
def sy_q(j, q):
    s = next(s for s in j["series"] if s["version"] == "unversioned")
    return s["latency_ms"][q]
have_oha = os.path.exists(f"{out}/oha-rate.1.out")
oha = [json.loads(open(f"{out}/oha-rate.{r}.out").read()) for r in range(1, rounds + 1)] if have_oha else []
def oha_q(j, q):
    return j["latencyPercentiles"][q] * 1000
print()
print(f"At {rate} req/s (open loop; oha --latency-correction), ms, medians of {rounds}:")
print("| figure | switchyard load | oha | difference |")
print("|---|---:|---:|---:|")
for q, oq in [("p50", "p50"), ("p99", "p99")]:
    a = statistics.median(sy_q(j, q) for j in sy)
    if not oha:
        print(f"| {q} | {a:.3f} | not run | |")
        continue
    b = statistics.median(oha_q(j, oq) for j in oha)
    print(f"| {q} | {a:.3f} | {b:.3f} | {100 * (a - b) / b:+.1f} % |")
late = [j["achieved"]["late_fraction"] for j in sy]
print(f"switchyard late sends: {', '.join(f'{100 * l:.1f} %' for l in late)}")
lags = [j["achieved"]["send_lag_us"] or {} for j in sy]
lag_text = ", ".join(f"{l.get('p50')}/{l.get('p99')}" for l in lags)
print(f"switchyard send lag p50/p99 µs: {lag_text}")
EOF
