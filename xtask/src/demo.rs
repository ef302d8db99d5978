//! `cargo xtask demo [multi]`: the shared_queue example (or its multi-queue
//! version) end to end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::plugins::{Plugins, build_plugins};
use crate::{cargo, stop};

/// Which example to run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Example {
    /// `examples/shared_queue`: one queue, the sender as an HTTP filter.
    SharedQueue,
    /// `examples/shared_queue_multi`: three queues, the sender as an HTTP
    /// filter on :18000 and as a network filter on :18001.
    Multi,
}

/// Starts ferry on the example, sends one request (the multi example: one
/// more through the TCP listener), prints what happened.
pub(crate) fn run(root: &Path, example: Example) -> anyhow::Result<()> {
    build_plugins(root, Plugins::Examples)?;
    crate::run(cargo().args(["build", "--release", "--bin", "ferry"]))?;
    let config = match example {
        Example::SharedQueue => "examples/shared_queue/envoy.yaml",
        Example::Multi => "examples/shared_queue_multi/envoy.yaml",
    };
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
        let body = http_get("127.0.0.1:18000", "localhost:18000", "/")?;
        print!("{body}");
        // Let the receiver drain the queue before stopping.
        let last_item = match example {
            Example::SharedQueue => "dequeued data: {\"key\": \"x-request-id\"",
            Example::Multi => "dequeued data from http_response_headers",
        };
        wait_for_line(&lines, last_item, Duration::from_secs(5))?;
        if example == Example::Multi {
            // Through the TCP listener's tcp_proxy to the admin endpoint.
            println!("$ curl -s localhost:18001/ready");
            let body = http_get("127.0.0.1:18001", "localhost:18001", "/ready")?;
            println!("{body}");
            wait_for_line(&lines, "dequeued data from tcp_data_hashes", Duration::from_secs(5))?;
        }
        std::thread::sleep(Duration::from_millis(300));
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
fn http_get(address: &str, host: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(address).with_context(|| format!("cannot connect to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xtask-demo\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("unexpected response: {head}");
    }
    Ok(body.to_owned())
}

/// `cargo xtask demo fleet`: the fleet example (`examples/shared_queue_fleet`)
/// as separate processes: `nats-server -js` on 127.0.0.1:4222, the
/// receiver, and two senders (:18010, :18011). One request to each sender;
/// the receiver's lines show both `:authority` values; then everything stops.
pub(crate) fn fleet(root: &Path) -> anyhow::Result<()> {
    crate::ensure_nats_server()?;
    build_plugins(root, Plugins::Examples)?;
    crate::run(cargo().args(["build", "--release", "--bin", "ferry"]))?;
    let store = root.join("target/fleet-demo-jetstream");
    // A fresh store: the demo's items only.
    let _ = std::fs::remove_dir_all(&store);
    println!("$ nats-server -js -a 127.0.0.1 -p 4222 -sd {}", store.display());
    let mut broker = crate::start_nats_server(4222, &store, &[])?;
    let mut processes: Vec<Child> = Vec::new();
    let result = (|| {
        let start =
            |config: &str, concurrency: &str, processes: &mut Vec<Child>| -> anyhow::Result<mpsc::Receiver<String>> {
                println!("$ ferry -c {config} --concurrency {concurrency} --log-format '%v' &");
                let mut child = Command::new(root.join("target/release/ferry"))
                    .args(["-c", config, "--concurrency", concurrency, "--log-format", "%v"])
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("cannot start target/release/ferry")?;
                let lines = forward_lines(&mut child);
                processes.push(child);
                wait_for_line(&lines, "starting workers", Duration::from_secs(30))?;
                Ok(lines)
            };
        let receiver = start("examples/shared_queue_fleet/receiver.yaml", "1", &mut processes)?;
        let _sender_a = start("examples/shared_queue_fleet/sender_a.yaml", "2", &mut processes)?;
        let _sender_b = start("examples/shared_queue_fleet/sender_b.yaml", "2", &mut processes)?;
        for port in [18010, 18011] {
            println!("$ curl -s localhost:{port}/");
            print!("{}", http_get(&format!("127.0.0.1:{port}"), &format!("localhost:{port}"), "/")?);
        }
        // Both senders' items reach the receiver through the broker, in
        // whatever order the two interleave.
        let mut wanted: Vec<String> = [18010, 18011]
            .map(|port| format!("dequeued data: {{\"key\": \":authority\",\"value\": \"localhost:{port}\"}}"))
            .into();
        wanted.extend(std::iter::repeat_n("dequeued data: {\"key\": \"x-request-id\"".to_owned(), 2));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !wanted.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = receiver.recv_timeout(left) else {
                bail!("the receiver did not print {wanted:?} within 10 s");
            };
            if let Some(i) = wanted.iter().position(|w| line.contains(w.as_str())) {
                wanted.remove(i);
            }
        }
        Ok(())
    })();
    for child in processes.iter_mut().rev() {
        stop(child);
    }
    stop(&mut broker);
    std::thread::sleep(Duration::from_millis(300));
    result
}
