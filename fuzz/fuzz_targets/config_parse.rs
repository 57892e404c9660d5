//! Feeds arbitrary UTF-8 to the config parser: it must never panic, and a
//! config it accepts must always become a routing table (config validation
//! and table validation agree).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match switchyard_control::Config::parse(text, "fuzz.toml") {
        Ok(config) => {
            let spec = config.table_spec();
            if let Err(error) = switchyard_proxy::RoutingTable::build(spec, 1) {
                panic!("config passed validation but the table rejects it: {error}\n{text}");
            }
            let _ = (config.data_addr(), config.admin_addr());
        }
        Err(errors) => {
            // Rendering the errors walks every position: must not panic either.
            let _ = errors.to_string();
        }
    }
});
