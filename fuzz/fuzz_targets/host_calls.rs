//! `cargo +nightly fuzz run host_calls`: see crates/ferry-fuzz.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::host_calls(data));
