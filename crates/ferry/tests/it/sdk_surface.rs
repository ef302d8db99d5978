//! The Rust SDK's own API surface: every public method of `Context`,
//! `RootContext`, `HttpContext` and `StreamContext` is used by a test
//! plugin whose end-to-end test passes. The sdk_surface plugin uses those
//! the others do not; conformance case `sdk_surface` runs it through the
//! binary and expects an `sdk ok <method>` line for each of its checks.

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::repo_root;

/// SDK methods no host feature calls, with the reason (docs/abi-support.md).
const NEVER_CALLED: &[&str] = &[
    // Envoy calls it only from its tests; no feature of ferry's either.
    "on_foreign_function",
];

/// The public trait methods of the `proxy-wasm` crate the test plugins are
/// built with, read from its source.
fn sdk_methods() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--offline", "--format-version", "1", "--manifest-path"])
        .arg(repo_root().join("test-plugins/Cargo.toml"))
        .output()
        .expect("cargo metadata");
    let metadata = String::from_utf8_lossy(&output.stdout);
    let manifest = metadata
        .split("\"manifest_path\":\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|p| p.contains("/proxy-wasm-") && p.ends_with("Cargo.toml"))
        .expect("the proxy-wasm package in cargo metadata");
    let traits = PathBuf::from(manifest).parent().unwrap().join("src/traits.rs");
    let source = std::fs::read_to_string(&traits).unwrap();
    let mut methods = BTreeSet::new();
    let mut in_trait = false;
    for line in source.lines() {
        if let Some(rest) = line.strip_prefix("pub trait ") {
            in_trait = ["Context", "RootContext", "HttpContext", "StreamContext"]
                .iter()
                .any(|t| rest.starts_with(&format!("{t}:")) || rest.starts_with(&format!("{t} ")));
        } else if in_trait && let Some(rest) = line.strip_prefix("    fn ") {
            methods.insert(rest.split(['(', '<']).next().unwrap().to_owned());
        }
    }
    methods
}

/// Each SDK method is used (called or implemented) by a test plugin or an
/// example whose end-to-end test passes, or is listed as never called.
#[test]
fn every_sdk_method_is_used_by_a_tested_plugin() {
    let methods = sdk_methods();
    assert!(methods.len() > 100, "found only {} methods", methods.len());
    let mut sources = String::new();
    for dir in ["test-plugins", "examples"] {
        for entry in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            let lib = entry.unwrap().path().join("src/lib.rs");
            if let Ok(text) = std::fs::read_to_string(&lib) {
                sources.push_str(&text);
            }
            // examples/<example>/<plugin>/src/lib.rs
        }
    }
    for example in std::fs::read_dir(repo_root().join("examples")).unwrap() {
        let example = example.unwrap().path();
        if example.is_dir() {
            for plugin in std::fs::read_dir(&example).unwrap() {
                if let Ok(text) = std::fs::read_to_string(plugin.unwrap().path().join("src/lib.rs")) {
                    sources.push_str(&text);
                }
            }
        }
    }
    let unused: Vec<&String> = methods
        .iter()
        .filter(|m| !NEVER_CALLED.contains(&m.as_str()))
        .filter(|m| !sources.contains(&format!(".{m}(")) && !sources.contains(&format!("fn {m}(")))
        .collect();
    assert!(unused.is_empty(), "SDK methods no test plugin uses: {unused:?}");
}
