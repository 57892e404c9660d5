//! Finding the external programs some tests drive (Chromium, etcd,
//! promtool, python3).
//! Shared by the build script, which marks the tests of a missing tool
//! ignored so runners report them as skipped, and by the tests, which fail
//! when a tool they need is missing.

use std::path::PathBuf;

/// Every tool a test drives; a test of tool `t` carries
/// `#[cfg_attr(missing_t, ignore = "…")]`.
pub const TOOLS: &[&str] = &["chromium", "etcd", "promtool", "python3"];

/// Set (to anything but `0`), a missing tool fails its tests instead of
/// skipping them: scripts/test.sh installs the tools and sets it.
pub const REQUIRE_VAR: &str = "SWITCHYARD_REQUIRE_TOOLS";

/// `command`'s path, as the shell would find it on `PATH`.
pub fn find(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| candidate.is_file())
}

pub fn required() -> bool {
    std::env::var_os(REQUIRE_VAR).is_some_and(|value| !value.is_empty() && value != "0")
}
