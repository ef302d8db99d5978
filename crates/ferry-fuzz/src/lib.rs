//! The fuzz targets, as plain functions: `fuzz/` runs them under libFuzzer
//! (`cargo +nightly fuzz run <target>`), and `tests/corpus.rs` replays the
//! kept corpus (`fuzz/corpus/<target>/`) and a stretch of seeded random
//! inputs through them on stable, in every test run.
//!
//! Each target panics only when it finds a bug.

mod host_calls;

pub use host_calls::host_calls;

/// The pairs decoder: any input decodes or is refused; what decodes
/// encodes back to bytes that decode to the same pairs.
pub fn pairs(data: &[u8]) {
    let Ok(decoded) = ferry_abi::pairs::decode(data) else { return };
    let encoded = ferry_abi::pairs::encode(decoded.iter().copied());
    let again = ferry_abi::pairs::decode(&encoded).expect("an encoding decodes");
    assert_eq!(decoded, again, "decode(encode(pairs)) changed the pairs");
}

/// The configuration reader: any text parses or is refused with an error
/// that names where (a field path, or `(file)` for YAML syntax).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(error) = ferry_config::from_yaml(text) {
        assert!(!error.path.is_empty(), "an error without a path: {error}");
        assert!(!error.message.is_empty(), "an error without a message at {}", error.path);
    }
}

/// A fuzz target: one input in, a panic out if it finds a bug.
pub type Target = fn(&[u8]);

/// The targets by name, for the replay test.
pub const TARGETS: &[(&str, Target)] = &[("pairs", pairs), ("config", config), ("host_calls", host_calls)];
