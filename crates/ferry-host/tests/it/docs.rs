//! docs/abi-support.md lists every host function with the status the host
//! really has.

#[test]
fn the_abi_support_table_matches_the_linked_functions() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/abi-support.md")).unwrap();
    let status_of = |name: &str| -> Option<&str> {
        doc.lines().find(|l| l.starts_with(&format!("| `{name}` |"))).and_then(|l| l.split('|').nth(2)).map(str::trim)
    };
    for name in ferry_host::implemented() {
        assert_eq!(status_of(name), Some("implemented"), "{name} in docs/abi-support.md");
    }
    for name in ferry_host::unimplemented() {
        assert_eq!(status_of(name), Some("unimplemented"), "{name} in docs/abi-support.md");
    }
    let rows = doc
        .lines()
        .filter(|l| {
            (l.starts_with("| `proxy_") || l.starts_with("| `envoy_"))
                && (l.contains("| implemented |") || l.contains("| unimplemented |"))
        })
        .count();
    assert_eq!(rows, ferry_host::HOST_FUNCTIONS.len(), "no extra rows");
}

#[test]
fn the_abi_support_callbacks_table_names_every_callback_the_host_calls() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/abi-support.md")).unwrap();
    let section = doc.split("## Callbacks").nth(1).expect("a callbacks section");
    let table: String =
        section.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).collect();
    for callback in ferry_host::CALLBACKS {
        assert!(table.contains(&format!("`{}`", callback.name)), "{} is not in the callbacks table", callback.name);
    }
}
