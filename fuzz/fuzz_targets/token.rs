//! The bearer token file: any contents are a token or a problem, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = k8s_endpoints::token::parse_token(data);
});
