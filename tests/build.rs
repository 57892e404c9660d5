//! Marks the tests of a missing external tool as ignored, so `cargo test`
//! and nextest report them as skipped rather than passed: emits the cfg
//! `missing_<tool>` for each tool of `tool_probe::TOOLS` that is not on
//! `PATH`, unless `SWITCHYARD_REQUIRE_TOOLS` asks for every tool (then such
//! a test runs and fails, saying what to install).

#[path = "src/tool_probe.rs"]
mod tool_probe;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/tool_probe.rs");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed={}", tool_probe::REQUIRE_VAR);
    for tool in tool_probe::TOOLS {
        let cfg = format!("missing_{tool}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        match tool_probe::find(tool) {
            // Uninstalling it probes again.
            Some(path) => println!("cargo::rerun-if-changed={}", path.display()),
            None => {
                // Installing it into a PATH directory probes again.
                for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
                    if dir.is_absolute() && dir.is_dir() {
                        println!("cargo::rerun-if-changed={}", dir.display());
                    }
                }
                if tool_probe::required() {
                    println!(
                        "cargo::warning={tool} is not installed and {} is set: its tests will fail",
                        tool_probe::REQUIRE_VAR
                    );
                } else {
                    println!("cargo::rustc-cfg={cfg}");
                }
            }
        }
    }
}
