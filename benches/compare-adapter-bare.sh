#!/usr/bin/env bash
# Reference candidate for the side-by-side harness: a bare hyper proxy
# (benches/bare-hyper), plain HTTP/1.1 only. Shows, in the same run, how
# much of switchyard's cost per request is hyper's own:
#   ../shared/bench/compare.sh --proxies nginx --scenarios plain \
#     --candidate bare-hyper=benches/compare-adapter-bare.sh \
#     --candidate switchyard=benches/compare-adapter.sh
set -euo pipefail
: "${LISTEN_PORT:?}" "${STABLE_ADDR:?}" "${MODE:?}"
[[ $MODE == plain && ${PROTO:-h1} == h1 ]] || { echo "bare-hyper: plain HTTP/1.1 only" >&2; exit 3; }
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bare-hyper"
bin="$dir/target/release/bare-hyper"
if [[ ! -x $bin ]]; then
  echo "bare-hyper: building $bin" >&2
  cargo build --release --quiet --manifest-path "$dir/Cargo.toml" >&2
fi
exec "$bin" "127.0.0.1:$LISTEN_PORT" "$STABLE_ADDR"
