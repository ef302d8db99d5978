//! ferry started the way deployments start Envoy: every flag of Envoy's
//! command line that ferry reads, and those it only accepts, on one
//! command line against the real binary.

use crate::common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{direct_route, free_port, get, listener, temp_file};

/// Waits (up to 20 s) until `check` gives something.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ferry process of a test: killed if the test fails before it exits.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_deployment_command_line_with_envoys_flags_starts_serves_and_drains() {
    let port = free_port();
    let config = format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\nstatic_resources:\n  listeners:\n{}",
        listener("main", port, &direct_route("/", "deployed\n"), "")
    );
    let config_path = temp_file("deployment.yaml", &config);
    let log_path = temp_file("deployment.log", "");
    let admin_path = config_path.with_extension("admin");
    let _ = std::fs::remove_file(&admin_path);
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("-c")
        .arg(&config_path)
        .args(["--concurrency", "1", "--mode", "serve"])
        .args(["--service-cluster", "edge", "--service-node", "edge-1", "--service-zone", "eu-1a"])
        .args(["--drain-time-s", "2", "--parent-shutdown-time-s", "3", "--disable-hot-restart", "--base-id", "7"])
        .args(["--log-level", "info", "--component-log-level", "wasm:debug,http:warning"])
        .args(["--log-format", "[%l][%n] %v"])
        .arg("--log-path")
        .arg(&log_path)
        .arg("--admin-address-path")
        .arg(&admin_path)
        // Envoy's flags that change nothing in ferry: accepted, with a warning each.
        .args(["--restart-epoch", "0", "--use-dynamic-base-id", "--file-flush-interval-msec", "1000"])
        .args(["--drain-strategy", "immediate", "--allow-unknown-static-fields", "--local-address-ip-version", "v4"])
        .args(["--cpuset-threads", "--stats-tag", "zone:eu-1a"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    // --admin-address-path: the address, once the admin endpoint listens.
    let admin: SocketAddr = wait_for("the admin address file", || {
        std::fs::read_to_string(&admin_path).ok().and_then(|text| text.trim().parse().ok())
    });
    let main = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for("the listener", || std::net::TcpStream::connect(main).ok());
    assert_eq!(get(main, "/", &[]).text(), "deployed\n");
    // --service-*: the node as the admin endpoint reports it.
    let info: serde_json::Value = serde_json::from_slice(&get(admin, "/server_info", &[]).body).unwrap();
    assert_eq!(info["node"]["id"], "edge-1", "{info}");
    assert_eq!(info["node"]["cluster"], "edge", "{info}");
    assert_eq!(info["node"]["locality"]["zone"], "eu-1a", "{info}");
    // --component-log-level: the levels /logging reports.
    let levels = common::request(admin, "POST", "/logging", &[], b"").text();
    assert!(levels.contains("wasm: debug") && levels.contains("http: warning"), "{levels}");
    // SIGTERM drains (at most --drain-time-s) and exits 0.
    Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    let status = wait_for("the exit", || child.0.try_wait().unwrap());
    assert!(status.success(), "{status}");
    // --log-path and --log-format: the log is in the file, in that format;
    // standard error has none of it.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("[info][main] starting workers") || log.contains("starting workers"), "{log}");
    assert!(log.lines().all(|l| l.starts_with('[')), "every line in the given format:\n{log}");
    for flag in
        ["--restart-epoch", "--use-dynamic-base-id", "--drain-strategy", "--allow-unknown-static-fields", "--stats-tag"]
    {
        assert!(
            log.contains(&format!("[warning][main] {flag} is accepted for Envoy compatibility and has no effect")),
            "a warning for {flag}:\n{log}"
        );
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("starting workers"), "the log went to the file, not stderr: {stderr}");
}

#[test]
fn an_unknown_flag_is_still_refused() {
    let (status, _, stderr) = common::run_to_end(&["-c", "/dev/null", "--no-such-flag"]);
    assert!(!status.success());
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn a_flag_and_its_value_in_one_argument_are_read_as_envoy_reads_them() {
    let config = format!("static_resources:\n  listeners:\n{}", listener("main", 0, &direct_route("/", "ok\n"), ""));
    let path = temp_file("one-argument.yaml", &config);
    // As a Kubernetes Deployment's `args: ["--config-path /etc/envoy.yaml"]` passes them.
    let config_arg = format!("--config-path {}", path.display());
    let (status, stdout, stderr) = common::run_to_end(&[&config_arg, "--mode validate"]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.trim(), format!("configuration '{}' OK", path.display()), "validated, not served");
}

/// `--mode validate` on `config`: its exit status and standard error.
fn validate(name: &str, config: &str) -> (std::process::ExitStatus, String) {
    let path = temp_file(name, config);
    let (status, _, stderr) = common::run_to_end(&["-c", path.to_str().unwrap(), "--mode", "validate"]);
    (status, stderr)
}

#[test]
fn validation_refuses_two_listeners_on_one_address() {
    let port = free_port();
    let routes = direct_route("/", "ok\n");
    let config = format!(
        "static_resources:\n  listeners:\n{}{}",
        listener("one", port, &routes, ""),
        listener("two", port, &routes, "")
    );
    let (status, stderr) = validate("same-address.yaml", &config);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("listener \"two\" has the address 127.0.0.1:{port} of listener \"one\"")),
        "{stderr}"
    );
}

#[test]
fn validation_refuses_a_listener_on_the_admin_address() {
    let port = free_port();
    let config = format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\nstatic_resources:\n  listeners:\n{}",
        listener("main", port, &direct_route("/", "ok\n"), "")
    );
    let (status, stderr) = validate("admin-address.yaml", &config);
    assert!(!status.success());
    assert!(
        stderr.contains("listener \"main\" has the address") && stderr.contains("of the admin endpoint"),
        "{stderr}"
    );
}

#[test]
fn validation_refuses_a_certificate_file_with_no_certificate_in_it() {
    let not_pem = temp_file("not-a-certificate.pem", "this is not PEM\n");
    let key = common::repo_root().join("crates/ferry/tests/testdata/x509v1_localhost.key");
    let tls = format!(
        "    - transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          common_tls_context:\n            tls_certificates:\n            - certificate_chain: {{ filename: {} }}\n              private_key: {{ filename: {} }}\n      filters:\n",
        not_pem.display(),
        key.display()
    );
    let config = format!(
        "static_resources:\n  listeners:\n{}",
        listener("secure", 0, &direct_route("/", "ok\n"), "").replacen("    - filters:\n", &tls, 1)
    );
    let (status, stderr) = validate("bad-certificate.yaml", &config);
    assert!(!status.success());
    // Said once, not once per layer of the error.
    assert_eq!(stderr.matches("certificate_chain: no certificate in it").count(), 1, "{stderr}");
    assert!(stderr.contains("listener \"secure\": TLS: certificate_chain"), "{stderr}");
}
