//! The training run of the profile-guided build (benches/pgo-build.sh)
//! drives the real `switchyard` binary through every route kind, with one
//! and two workers and behind TLS, every reply checked, and stops it
//! cleanly. Here because only this package's tests get the binary from
//! cargo; the `pgo-train` command itself: benches/tests/pgo_train.rs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trains_the_real_binary_and_stops_it_cleanly() {
    let requests = switchyard_benches::pgo_train::train(env!("CARGO_BIN_EXE_switchyard"), 0.02)
        .await
        .unwrap_or_else(|error| panic!("training failed: {error}"));
    // One worker: 32×40 + 16×20 + 16×10 + 4×16×10 + 8×1; two workers:
    // 16×10 + 2×8×4; TLS: 16×6 + 4×8×2. Every reply checked.
    assert_eq!(requests, 2792);
}
