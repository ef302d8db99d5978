//! `cargo +nightly fuzz run config`: see crates/ferry-fuzz.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::config(data));
