//! Release builds of `switchyard` link the request path's functions next to
//! each other (`hot-functions.txt`, an LLD symbol ordering file). The kernel
//! maps code in 64 KiB windows around each page touched, so a request path
//! spread over the whole text keeps megabytes of it resident; packed
//! together it keeps about half a MiB. Regenerate the list after large
//! changes with `benches/hot-functions.sh`; stale names are skipped.
//!
//! Only where LLD is the linker (Rust ≥ 1.90 on x86_64 Linux with the
//! toolchain's own LLD, the default);
//! `SWITCHYARD_NO_TEXT_ORDER=1`, or a linker set by hand, turns it off.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("hot-functions.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=SWITCHYARD_NO_TEXT_ORDER");
    if env::var("PROFILE").as_deref() == Ok("release") && links_with_default_lld() && order.exists()
    {
        println!(
            "cargo:rustc-link-arg-bin=switchyard=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=switchyard=-Wl,--no-warn-symbol-ordering");
    }
}

fn links_with_default_lld() -> bool {
    let var = |name: &str| env::var(name).unwrap_or_default();
    if env::var_os("SWITCHYARD_NO_TEXT_ORDER").is_some()
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || var("CARGO_ENCODED_RUSTFLAGS").contains("link")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return false;
    }
    // "rustc 1.95.0 (…)": LLD has been the default linker here since 1.90,
    // when the toolchain ships it (rustup's do; some distributions' do not).
    let minor = rustc(&["--version"])
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    let sysroot = rustc(&["--print", "sysroot"]);
    let bundled_lld = Path::new(sysroot.trim())
        .join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld")
        .exists();
    minor.is_some_and(|minor| minor >= 90) && bundled_lld
}

/// What the compiler prints for `args`; empty if it cannot be run.
fn rustc(args: &[&str]) -> String {
    Command::new(env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .args(args)
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .unwrap_or_default()
}
