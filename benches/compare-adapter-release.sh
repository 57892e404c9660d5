#!/usr/bin/env bash
# switchyard as `cargo build --release` builds it (no profile-guided
# optimisation), for the side-by-side harness next to the default adapter:
#   ../shared/bench/compare.sh --proxies nginx --scenarios plain \
#     --candidate switchyard=benches/compare-adapter.sh \
#     --candidate sy-release=benches/compare-adapter-release.sh
export SWITCHYARD_BIN="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/switchyard"
exec "$(dirname "${BASH_SOURCE[0]}")/compare-adapter.sh" "$@"
