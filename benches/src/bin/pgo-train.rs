//! `pgo-train BIN [--scale F]`: see `switchyard_benches::pgo_train`.

fn main() -> std::process::ExitCode {
    switchyard_benches::pgo_train::run(std::env::args().skip(1))
}
