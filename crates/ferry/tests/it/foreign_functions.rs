//! Envoy's foreign functions as plugins call them, against the real
//! binary (`set_envoy_filter_state` is in tcp.rs, with the TCP proxy it
//! steers).

use crate::common;

use std::time::Duration;

use common::Ferry;

/// Envoy's `VerifySignatureArguments`, as a plugin encodes it.
#[derive(Clone, PartialEq, prost::Message)]
struct VerifySignatureArguments {
    #[prost(string, tag = "1")]
    hash_function: String,
    #[prost(bytes = "vec", tag = "3")]
    signature: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    text: Vec<u8>,
    #[prost(string, tag = "5")]
    public_key_pem: String,
}

/// A WAT data string holding `bytes`.
fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

#[test]
fn verify_signature_accepts_an_openssl_signature_and_refuses_a_changed_text() {
    use prost::Message as _;
    let testdata = common::repo_root().join("crates/ferry-host/testdata");
    let public_key_pem = std::fs::read_to_string(testdata.join("rsa_pub.pem")).unwrap();
    let signature = std::fs::read(testdata.join("rsa_sha256_signature.bin")).unwrap();
    let args = |text: &[u8]| {
        let args = VerifySignatureArguments {
            hash_function: "sha256".into(),
            signature: signature.clone(),
            text: text.to_vec(),
            public_key_pem: public_key_pem.clone(),
        };
        args.encode_to_vec()
    };
    let (good, bad) = (args(b"hello from openssl"), args(b"hello from elsewhere"));
    // At start, the plugin verifies both and logs "signature valid" or
    // "signature refused" for each: the result message starts 08 01 when
    // `result` is true.
    let wat = format!(
        r#"(module
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 100) "verify_signature")
  (data (i32.const 140) "signature valid")
  (data (i32.const 160) "signature refused")
  (data (i32.const 1024) "{}")
  (data (i32.const 4096) "{}")
  (func (export "proxy_abi_version_0_2_1"))
  {}
  (func $check (param $args i32) (param $len i32)
    (drop (call $foreign (i32.const 100) (i32.const 16) (local.get $args) (local.get $len) (i32.const 200) (i32.const 204)))
    (if (i32.eq (i32.load16_u (i32.load (i32.const 200))) (i32.const 0x0108))
      (then (drop (call $log (i32.const 2) (i32.const 140) (i32.const 15))))
      (else (drop (call $log (i32.const 2) (i32.const 160) (i32.const 17))))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $check (i32.const 1024) (i32.const {}))
    (call $check (i32.const 4096) (i32.const {}))
    i32.const 1))"#,
        wat_bytes(&good),
        wat_bytes(&bad),
        common::wat_bump_allocator(65536),
        good.len(),
        bad.len(),
    );
    let code = format!("{{ local: {{ inline_string: {wat:?} }} }}");
    let filter = common::wasm_filter("verifier", "verifier", &code);
    let config = format!(
        "static_resources:\n  listeners:\n{}",
        common::listener("main", 0, &common::direct_route("/", "ok\n"), &filter)
    );
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    ferry.wait_for_count("signature ", 2, Duration::from_secs(10));
    let verdicts: Vec<String> = ferry
        .lines()
        .into_iter()
        .filter(|l| l.contains("signature "))
        .map(|l| l.rsplit(": ").next().unwrap().to_owned())
        .collect();
    assert_eq!(verdicts[..2], ["signature valid".to_owned(), "signature refused".to_owned()]);
}
