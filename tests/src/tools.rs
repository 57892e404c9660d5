//! The external tools tests drive. A test of tool `t` is marked
//! `#[cfg_attr(missing_t, ignore = "t is not installed")]`: the build
//! script sets `missing_t` when `t` is not on `PATH` and not required, so
//! the runner reports the test as skipped; when it runs, it gets the tool
//! from [`require_tool`].

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::tool_probe;

/// The path of `command`. Panics (fails the test) when it is missing: the
/// test only runs without it when [`tool_probe::REQUIRE_VAR`] asks for
/// every tool, or when it was uninstalled after the tests were built.
pub fn require_tool(command: &str) -> PathBuf {
    tool_probe::find(command).unwrap_or_else(|| {
        if tool_probe::required() {
            panic!(
                "{command} is not installed but {} is set: install it (./scripts/test.sh does) \
                 or unset the variable to skip this test",
                tool_probe::REQUIRE_VAR
            )
        } else {
            panic!(
                "{command} was on PATH when the tests were built and is gone now: \
                 reinstall it, or rebuild the tests (`cargo test` does) to skip this test"
            )
        }
    })
}

/// Runs `promtool check metrics` on `text`, failing the test on any
/// complaint. Callers are marked `cfg_attr(missing_promtool, ignore)`.
pub fn promtool_check(text: &str) {
    let mut child = Command::new(require_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool ends");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
