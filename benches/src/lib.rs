//! Benchmarks live in benches/benches; the harness adapter in compare-adapter.sh.
