//! The config file: any bytes are either a checked config or an error, never a panic, and
//! never a long stall (nesting and size are bounded before parsing).
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let env: HashMap<String, String> = HashMap::new();
    let _ = epcheck::config::check(&text, Path::new("/nonexistent/config.yaml"), &env);
});
