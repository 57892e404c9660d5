//! The training run of the profile-guided build (benches/pgo-build.sh):
//! `pgo-train` drives the real binary through every route kind, with one
//! and two workers and behind TLS, and fails
//! loudly when the proxy does not serve, so a broken run cannot produce a
//! profile of error paths.

mod support;

use std::process::{Command, Output, Stdio};

use support::*;

fn pgo_train(args: &[&str]) -> Output {
    Command::new(workspace_bin("switchyard-benches", "pgo-train"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pgo-train")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn trains_the_real_binary_and_stops_it_cleanly() {
    let bin = switchyard_bin();
    let out = pgo_train(&[bin.to_str().expect("utf-8 path"), "--scale", "0.02"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    // One worker: 32×40 + 16×20 + 16×10 + 4×16×10 + 8×1; two workers:
    // 16×10 + 2×8×4; TLS: 16×6 + 4×8×2. Every reply checked.
    assert!(
        stdout.contains("pgo-train: 2792 requests in"),
        "stdout: {stdout}"
    );
}

#[test]
fn a_proxy_that_does_not_serve_fails_the_run() {
    let out = pgo_train(&["false"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the proxy exited at start-up"),
        "stderr: {stderr}"
    );
}

#[test]
fn bad_arguments_are_named() {
    let out = pgo_train(&["switchyard", "--scale", "-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--scale wants a positive number, got \"-1\""));
    let out = pgo_train(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("usage: pgo-train"));
}
