#!/usr/bin/env bash
# Regenerates control/hot-functions.txt: the functions of the release binary
# that run while it proxies (HTTP/1.1 keep-alive load through one route), in
# the order of the instructions they take, then those that ran only while it
# started. control/build.rs links them in that order (see there for why):
# the request path packed together, start-up code after it. Needs valgrind, wrk and curl; the test
# backend of ../shared/bench (or any HTTP server) answers on BACKEND_PORT.
#
#   benches/hot-functions.sh            # then rebuild: cargo build --release
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
proxy_port=${PROXY_PORT:-19680}
backend_port=${BACKEND_PORT:-19681}
backend=${BACKEND:-$repo/../shared/bench/backend/target/release/bench-backend}
work=$(mktemp -d)
trap 'kill $proxy_pid $backend_pid 2>/dev/null || true; rm -rf "$work"' EXIT
proxy_pid=0 backend_pid=0

cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p switchyard-control --bin switchyard
bin="$repo/target/release/switchyard"

"$backend" --port "$backend_port" --name stable >/dev/null 2>&1 &
backend_pid=$!
cat >"$work/proxy.toml" <<TOML
[listen]
data = "127.0.0.1:$proxy_port"
admin = "127.0.0.1:0"

[[routes]]
name = "hot"
  [[routes.versions]]
  name = "stable"
  weight = 100
  endpoints = ["127.0.0.1:$backend_port"]
TOML
# Start-up (and the first request) go into a dump of their own.
SWITCHYARD_LOG=warn valgrind --tool=callgrind --demangle=no \
  --callgrind-out-file="$work/callgrind.out" "$bin" run --config "$work/proxy.toml" --workers 1 \
  >/dev/null 2>"$work/valgrind.log" &
proxy_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$proxy_port/" && break; sleep 0.3; done
callgrind_control --dump=start-up "$proxy_pid" >/dev/null
wrk -c64 -t1 -d5s "http://127.0.0.1:$proxy_port/" >/dev/null
wrk -c1 -t1 -d2s "http://127.0.0.1:$proxy_port/" >/dev/null
kill -INT "$proxy_pid"
wait "$proxy_pid" || true

python3 - "$work" "$bin" "$repo/control/hot-functions.txt" <<'PY'
import collections, glob, re, sys
work, binary, target = sys.argv[1:]

def functions_by_cost(out):
  objects, functions, cost, owner = {}, {}, collections.Counter(), {}
  current_object = current_function = None
  in_call = False
  for line in open(out):
    line = line.rstrip("\n")
    named = re.match(r"^(c?)(ob|fn)=\((\d+)\)(?: (.*))?$", line)
    if named:
      called, kind, key, name = named.groups()
      table = objects if kind == "ob" else functions
      if name:
        table[key] = name
      if not called:
        if kind == "ob":
          current_object = table.get(key)
        else:
          current_function = table.get(key)
          owner[current_function] = current_object
      continue
    if line.startswith("calls="):
      in_call = True  # the next cost line is the call's inclusive cost
      continue
    cost_line = re.match(r"^[+-]?\d+ (\d+)", line)
    if cost_line and current_function:
      if not in_call:
        cost[current_function] += int(cost_line.group(1))
      in_call = False
  return [f for f, c in cost.most_common() if c and owner.get(f) == binary]

start_up = glob.glob(f"{work}/callgrind.out.*")
serving = functions_by_cost(f"{work}/callgrind.out")
seen = set(serving)
order = serving + [f for dump in start_up for f in functions_by_cost(dump) if f not in seen]
with open(target, "w") as file:
  file.write("\n".join(dict.fromkeys(order)) + "\n")
print(f"{len(serving)} functions serving, {len(order) - len(serving)} more at start-up -> {target}")
PY
