//! The `pgo-train` command (benches/pgo-build.sh's training run) fails
//! loudly when the proxy does not serve, so a broken run cannot produce a
//! profile of error paths, and names bad arguments. (Training the real
//! `switchyard` binary: control/tests/pgo_train.rs.)

use std::process::{Command, Output, Stdio};

fn pgo_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgo-train"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pgo-train")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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
