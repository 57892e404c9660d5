#!/usr/bin/env bash
# The same build as compare-adapter.sh with per-request measurement off
# ([metrics] enabled = false): run both in one harness invocation to see what
# measurement costs, e.g.
#   ../shared/bench/compare.sh --proxies nginx --scenarios plain \
#     --candidate switchyard=benches/compare-adapter.sh \
#     --candidate sy-nometrics=benches/compare-adapter-nometrics.sh
export SWITCHYARD_METRICS=off
exec "$(dirname "${BASH_SOURCE[0]}")/compare-adapter.sh" "$@"
