//! `cargo +nightly fuzz run pairs`: see crates/ferry-fuzz.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::pairs(data));
