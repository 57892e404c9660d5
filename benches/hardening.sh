#!/usr/bin/env bash
# Hardening figures, switchyard and nginx side by side in one run (methods:
# benches/README.md "Hardening"; results: benches/RESULTS.md):
#   conns    10,000 concurrent keep-alive connections held while a new
#            request is timed;
#   soak     --soak-secs (default 600) per proxy at about half of saturation,
#            a weight change every second, a flapping shadow: RSS growth after
#            warm-up, fd count, failed requests;
#   sigterm  the graceful stop at saturation: failed requests, new
#            connections refused, time to exit against the drain limit.
# Every load is bounded in time; the whole default run takes about 25 min.
#
#   benches/hardening.sh [--figures conns,soak,sigterm] [--proxies switchyard,nginx]
#                        [--soak-secs 600] [--flap-secs 5] [--probes 300]
#
# Needs the shared harness (BENCH_DIR, default ../shared/bench: nginx, wrk, the backend; its
# setup.sh installs them) and a release build (cargo build --release).
# Prints a JSON report on stdout, progress on stderr.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench="${BENCH_DIR:-$repo/../shared/bench}"
export BENCH_DIR="$bench"
bin="$repo/target/release/switchyard"

if [[ ! -x $bench/backend/target/release/bench-backend ]] || ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  echo "hardening: the shared harness is not set up: run $bench/setup.sh" >&2
  exit 1
fi
if [[ ! -x $bin ]]; then
  echo "hardening: $bin missing: cargo build --release" >&2
  exit 1
fi
stale=$(find "$repo/proxy/src" "$repo/control/src" "$repo/Cargo.lock" -newer "$bin" -print -quit)
if [[ -n $stale ]]; then
  echo "hardening: $bin is older than $stale: cargo build --release" >&2
  exit 1
fi

# 10,000 client sockets here and as many in each proxy: raise the soft fd
# limit to the hard one (the proxies inherit it).
hard=$(ulimit -Hn)
if [[ $hard != unlimited && $hard -lt 12000 ]]; then
  echo "hardening: the hard fd limit is $hard; 10,000 connections need more (raise it, e.g. in limits.conf)" >&2
  exit 1
fi
ulimit -n "$hard"

exec python3 "$repo/benches/hardening.py" --switchyard-bin "$bin" "$@"
