#!/usr/bin/env bash
# switchyard's adapter for the shared side-by-side benchmark
# (../shared/bench/compare.sh --candidate switchyard=benches/compare-adapter.sh).
# Contract (../shared/bench/proxies/candidate-template.sh):
#   in : LISTEN_PORT STABLE_ADDR CANARY_ADDR SHADOW_ADDR MODE RUN_DIR
#        [SPLIT_CANARY_PCT=10] [PROTO=h1|h2c] [SWITCHYARD_BIN]
#        [SWITCHYARD_CLUSTER_ETCD=http://HOST:PORT [SWITCHYARD_CLUSTER_PREFIX]]:
#        a fleet replica on that etcd (a binary built with --features fleet)
#   out: writes RUN_DIR/switchyard.toml and execs `switchyard run` in the
#        foreground with one worker thread; exit 3 for an unsupported mode.
# The binary is the profile-guided release build, target/pgo/switchyard:
# build it first with benches/pgo-build.sh (~5 min; too long to do here,
# the harness gives a proxy 15 s to listen). SWITCHYARD_BIN picks another
# (compare-adapter-release.sh: the plain `cargo build --release` one).
set -euo pipefail
: "${LISTEN_PORT:?}" "${STABLE_ADDR:?}" "${CANARY_ADDR:?}" "${SHADOW_ADDR:?}" "${MODE:?}" "${RUN_DIR:?}"
PCT="${SPLIT_CANARY_PCT:-10}"
PROTO="${PROTO:-h1}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${SWITCHYARD_BIN:-$repo/target/pgo/switchyard}"

case "$PROTO" in
  h1 | h2c) ;; # the data listener serves both on one port
  *) echo "switchyard adapter: PROTO=$PROTO unsupported" >&2; exit 3 ;;
esac

stable_only=$'  [[routes.versions]]\n  name = "stable"\n  weight = 100\n  endpoints = ["'"$STABLE_ADDR"'"]'
shadows=""
case "$MODE" in
  plain) versions=$stable_only ;;
  split)
    [[ $PCT =~ ^[0-9]+$ && $PCT -le 100 ]] || { echo "switchyard adapter: SPLIT_CANARY_PCT=$PCT is not 0-100" >&2; exit 1; }
    versions=$'  [[routes.versions]]\n  name = "stable"\n  weight = '"$((100 - PCT))"$'\n  endpoints = ["'"$STABLE_ADDR"$'"]\n\n'
    versions+=$'  [[routes.versions]]\n  name = "canary"\n  weight = '"$PCT"$'\n  endpoints = ["'"$CANARY_ADDR"'"]'
    ;;
  mirror)
    # Every request also copied to the shadow (fire-and-forget, defaults
    # otherwise: GET/HEAD/OPTIONS, 1024 in flight, 2 s timeout).
    versions=$stable_only
    shadows=$'\n\n  [[routes.shadows]]\n  name = "shadow"\n  endpoints = ["'"$SHADOW_ADDR"$'"]\n  percent = 100'
    ;;
  *) echo "switchyard adapter: unsupported MODE=$MODE" >&2; exit 3 ;;
esac

if [[ ! -x $BIN ]]; then
  echo "switchyard adapter: $BIN missing: build it first (benches/pgo-build.sh, or cargo build --release for target/release)" >&2
  exit 1
fi
# A binary older than the sources would measure code that is gone.
stale=$(find "$repo/proxy/src" "$repo/control/src" "$repo/Cargo.lock" -newer "$BIN" -print -quit)
if [[ -n $stale ]]; then
  echo "switchyard adapter: $BIN is older than $stale: rebuild it first" >&2
  exit 1
fi

cluster=""
if [[ -n ${SWITCHYARD_CLUSTER_ETCD:-} ]]; then
  cluster=$'[cluster]\netcd = ["'"$SWITCHYARD_CLUSTER_ETCD"$'"]\nprefix = "'"${SWITCHYARD_CLUSTER_PREFIX:-/switchyard/bench}"$'"\n\n'
fi

cat >"$RUN_DIR/switchyard.toml" <<EOF
# Written by benches/compare-adapter.sh (MODE=$MODE PROTO=$PROTO).
[listen]
data = "127.0.0.1:$LISTEN_PORT"
admin = "127.0.0.1:0"

$cluster[[routes]]
name = "bench"
path_prefix = "/"

$versions$shadows
EOF

export SWITCHYARD_LOG=warn
exec "$BIN" run --config "$RUN_DIR/switchyard.toml" --workers 1
