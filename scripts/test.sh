#!/usr/bin/env bash
# Runs switchyard's whole test suite: installs what the tests need when it is
# missing (fresh Debian machine, no prompts), then every unit and end-to-end
# test of the workspace. Usage: ./scripts/test.sh [extra nextest/cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=false
# ensure_pkg COMMAND [PACKAGE]: installs Debian's PACKAGE (default: COMMAND)
# only when COMMAND is not on PATH. Tests needing a tool add one line below
# and the tool to tests/src/tool_probe.rs.
ensure_pkg() {
  local cmd=$1 pkg=${2:-$1} sudo=""
  command -v "$cmd" >/dev/null 2>&1 && return 0
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "test.sh: $cmd is missing: installing Debian package $pkg" >&2
  if ! $apt_updated; then
    $sudo apt-get update -qq
    apt_updated=true
  fi
  # Packages such as prometheus ship a daemon: keep their maintainer
  # scripts from starting it (it would compete with the tests for CPU).
  local policy=/usr/sbin/policy-rc.d created=false
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    created=true
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$pkg" </dev/null
  if $created; then
    $sudo rm -f "$policy"
  fi
}

command -v cargo >/dev/null 2>&1 || {
  echo "test.sh: cargo not found: install the Rust toolchain (rustup)" >&2
  exit 1
}

# What the tests run besides cargo (one line per tool):
ensure_pkg kill procps # control/tests/cli.rs signals `switchyard run` (SIGTERM, SIGHUP)
ensure_pkg promtool prometheus # tests/tests/metrics.rs checks GET /metrics with promtool
ensure_pkg chromium # tests/tests/dashboard.rs loads the dashboard in headless Chromium
ensure_pkg etcd etcd-server # tests/tests/fleet.rs runs a real etcd on loopback
ensure_pkg python3 # tests/tests/gateway_api.rs runs scripts/validate-k8s.sh
ensure_pkg protoc protobuf-compiler # etcd-client's build compiles etcd's protobufs
ensure_pkg make # jemalloc (the binary's allocator) is built from C with make
ensure_pkg cc gcc # … and a C compiler
# …with protobuf's own .proto files (google/protobuf/descriptor.proto), a
# file rather than a command: ensure_pkg's check would not see it.
if [[ ! -f /usr/include/google/protobuf/descriptor.proto ]]; then
  ensure_pkg libprotobuf-dev-is-missing libprotobuf-dev
fi
# Without this, the tests of a tool that is missing are reported as skipped
# (tests/build.rs marks them ignored); with it, they run and fail.
export SWITCHYARD_REQUIRE_TOOLS=1

# Doc examples first (nextest does not run them), so the runner's summary
# below stays the last thing printed.
cargo test --quiet --workspace --doc

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
