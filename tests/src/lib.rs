//! Shared support for the end-to-end tests, compiled once as this crate's
//! library: real hyper backends on 127.0.0.1:0, the real proxy started
//! in-process from TOML text, pooled clients, bounded waits so a bug fails
//! a test instead of hanging it, and the external tools some tests drive.
//!
//! Test files `use switchyard_tests::*;` (the common items are re-exported
//! here) and name the rest by module (`switchyard_tests::admin::…`).

pub mod admin;
pub mod backend;
pub mod body;
pub mod browser;
pub mod child;
pub mod client;
pub mod etcd;
pub mod grafana;
pub mod killable;
pub mod proxy;
pub mod tool_probe;
pub mod tools;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use backend::*;
pub use body::*;
pub use client::*;
pub use proxy::*;
pub use tools::require_tool;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long one request (headers and whole body) may take before the test
/// fails. Generous: a debug build on a busy 2-core machine is slow, but a
/// hang must not last forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails the test with `what` if `future` takes longer than `limit`.
pub async fn bounded<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `check` every 100 ms until it gives a value; fails the test with
/// `what` after `limit`.
pub async fn eventually<T, F>(limit: Duration, what: &str, mut check: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh, empty directory for one test's files; unique per call, as
/// tests of one binary run side by side in one process.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("switchyard-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The workspace root (this crate lives in `tests/`), for the files tests
/// read from the repository (`config/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `target/` of this build, for what a test leaves to look at (the test
/// binary is `target/<profile>/deps/…`).
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_root().join("target"))
}
