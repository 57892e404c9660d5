#!/usr/bin/env bash
# Builds the profile-guided release binary: target/pgo/switchyard.
#
#   benches/pgo-build.sh          # ~5 min on 2 cores; then run target/pgo/switchyard
#
# Three steps: an instrumented release build; a training run of it
# (benches/src/pgo_train.rs: HTTP/1.1 keep-alive GETs through plain,
# split and mirrored routes, h2c streams, streamed POST bodies; one and two
# workers; HTTP/1.1 and h2 behind TLS; all on loopback); a release build
# optimised with the profile that run wrote.
# The compiler then lays out and inlines the request path for the branches
# it really takes: ~20-25 % less user CPU per proxied request than
# `cargo build --release` (README, Benchmarks). Behaviour is the same; only
# code layout and inlining change.
#
# Needs llvm-profdata from the same LLVM as rustc (see below for where it
# is looked for). The profile is made afresh every time, so it never lags
# the code.
set -euo pipefail
# SWITCHYARD_FEATURES=fleet builds fleet support in (docs/fleet.md).
features=${SWITCHYARD_FEATURES:-}
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/target/pgo"
cd "$repo"

# llvm-profdata of rustc's own LLVM (the raw profile format follows it):
# LLVM_PROFDATA, else rustup's llvm-tools (added if rustup is there), else
# a distribution's llvm-MAJOR package.
profdata=${LLVM_PROFDATA:-}
llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
if [[ -z $profdata ]]; then
  sysroot=$(rustc --print sysroot)
  host=$(rustc -vV | sed -n 's/^host: //p')
  profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
  if [[ ! -x $profdata ]] && command -v rustup >/dev/null; then
    echo "pgo-build: adding the rustup component llvm-tools (for llvm-profdata)" >&2
    rustup component add llvm-tools >&2 || true
  fi
  [[ -x $profdata ]] || profdata="/usr/lib/llvm-$llvm_major/bin/llvm-profdata"
fi
if [[ ! -x $profdata ]]; then
  echo "pgo-build: no llvm-profdata for rustc's LLVM $llvm_major: run 'rustup component add llvm-tools'," >&2
  echo "  install llvm-$llvm_major (Debian, Ubuntu), or set LLVM_PROFDATA" >&2
  exit 1
fi

rm -rf "$out/profiles" "$out/build-profiles"
mkdir -p "$out/profiles"

echo "pgo-build: 1/3 instrumented build" >&2
cargo build --release --quiet -p switchyard-benches --bin pgo-train
# Build scripts are instrumented too: their profiles go elsewhere.
RUSTFLAGS="-Cprofile-generate=$out/build-profiles" \
  cargo build --release --quiet --target-dir "$out/instrumented" -p switchyard-control --bin switchyard ${features:+--features "$features"}

echo "pgo-build: 2/3 training run" >&2
LLVM_PROFILE_FILE="$out/profiles/switchyard-%p-%m.profraw" \
  target/release/pgo-train "$out/instrumented/release/switchyard"
"$profdata" merge -o "$out/merged.profdata" "$out/profiles"
# Cargo rebuilds a crate when RUSTFLAGS change, not when a file they name
# does: the profile's path carries its digest, so a new profile recompiles
# every dependency with it and an unchanged one reuses the last build.
digest=$(sha256sum "$out/merged.profdata" | cut -c1-16)
rm -f "$out"/switchyard-*.profdata
mv "$out/merged.profdata" "$out/switchyard-$digest.profdata"

echo "pgo-build: 3/3 optimised build" >&2
RUSTFLAGS="-Cprofile-use=$out/switchyard-$digest.profdata" \
  cargo build --release --quiet --target-dir "$out/optimised" -p switchyard-control --bin switchyard ${features:+--features "$features"}
cp "$out/optimised/release/switchyard" "$out/switchyard"
echo "pgo-build: built $out/switchyard" >&2
