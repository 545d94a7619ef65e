#![no_main]
// See fuzz/bodies.rs.
include!("../bodies.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_storage_conf(data));
