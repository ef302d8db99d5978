//! `cargo xtask bench`: ferry and nginx side by side, on this machine, in
//! one run. The server under test is pinned to core 0, the load generator
//! (wrk, or h2load for HTTP/2) and the upstream to core 1. See
//! docs/benchmarks.md.
//!
//! Environment: `BENCH_SECONDS` (default 10) per measurement,
//! `BENCH_CONNECTIONS` (default 64), `BENCH_MEMORY_REQUESTS` (default
//! 1000000; 0 skips the memory run), `BENCH_ONLY` (comma-separated run ids,
//! e.g. `A,B,N`; default all), `BENCH_REPEAT` (default 3: each measurement
//! is repeated and the run with the median requests/s is reported, since a
//! shared machine is noisy).

mod bridge;
pub(crate) mod upstream;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::plugins::{Plugins, build_plugins};
use crate::{cargo, stop};

const SERVER_CORE: &str = "0";
const CLIENT_CORE: &str = "1";
/// Headers every request carries, like curl's.
const CLIENT_HEADERS: [&str; 2] = ["User-Agent: wrk", "Accept: */*"];
/// Items the sender enqueues per request: 4 pseudo-headers, user-agent,
/// accept, x-forwarded-proto, x-request-id.
const ITEMS_PER_REQUEST: u64 = 8;

/// What wrk measured.
#[derive(Clone, Copy, Debug, Default)]
struct Load {
    requests: u64,
    seconds: f64,
    errors: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
}

impl Load {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// One row of the table.
struct Row {
    id: &'static str,
    what: String,
    load: Load,
    peak_rss_kib: u64,
}

/// The path a run requests: the upstream's 1 MiB body for the `-1MiB` runs.
fn path_of(id: &str) -> &'static str {
    if id.ends_with("-1MiB") { "/1mib" } else { "/" }
}

/// Whether run `id` is in `BENCH_ONLY` (or that is unset).
fn selected(id: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|o| o.trim() == id))
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    ensure_tools()?;
    build_plugins(root, Plugins::All)?;
    crate::run(cargo().args(["build", "--release", "--bin", "ferry", "--bin", "xtask"]))?;
    let seconds = env_number("BENCH_SECONDS", 10);
    let connections = env_number("BENCH_CONNECTIONS", 64);
    let repeat = env_number("BENCH_REPEAT", 3);
    let work = root.join("target/bench");
    std::fs::create_dir_all(&work)?;
    let wrk = Wrk::new(&work, seconds, connections)?;
    let ferry = root.join("target/release/ferry");

    let upstream_port = free_port()?;
    // The upstream (and the `H` run) is the release build of this tool's minimal hyper server.
    let hyper_server = root.join("target/release/xtask");
    let mut upstream = Command::new("taskset")
        .args(["-c", CLIENT_CORE])
        .arg(&hyper_server)
        .args(["bench-upstream", &upstream_port.to_string()])
        .spawn()
        .context("cannot start the upstream")?;
    wait_ready(upstream_port, "/")?;

    let mut rows = Vec::new();
    let mut accounting = Vec::new();
    let mut bridge_report = None;
    let result = (|| -> anyhow::Result<()> {
        let port = free_port_pair()?;
        let sender = || {
            proxy_config(
                port,
                upstream_port,
                &wasm_filter(root, "shared_queue_sender.wasm", "sender"),
                &receiver_service(root),
            )
        };
        let cases: Vec<(&'static str, String, String, Vec<&str>)> = vec![
            ("A", "ferry, direct_response, no filter".into(), direct_config(port, "", ""), vec![]),
            (
                "B",
                "ferry, shared_queue example, wasm log level warn".into(),
                example_config(root, port),
                vec!["--component-log-level", "wasm:warn"],
            ),
            (
                "B-info",
                "ferry, shared_queue example, wasm log level info, log to a file".into(),
                example_config(root, port),
                vec![],
            ),
            (
                "C",
                "ferry, header-rewriting filter (10 adds, replaces, removes)".into(),
                direct_config(port, &wasm_filter(root, "header_rewrite_plugin.wasm", "rewrite"), ""),
                vec![],
            ),
            ("D0", "ferry, proxy to upstream, no filter".into(), proxy_config(port, upstream_port, "", ""), vec![]),
            (
                "D1",
                "ferry, proxy to upstream, sender filter + receiver service (warn)".into(),
                proxy_config(
                    port,
                    upstream_port,
                    &wasm_filter(root, "shared_queue_sender.wasm", "sender"),
                    &receiver_service(root),
                ),
                vec!["--component-log-level", "wasm:warn"],
            ),
            (
                "D1-1MiB",
                "ferry, a 1 MiB response through the sender filter (+ receiver service)".into(),
                sender(),
                vec!["--component-log-level", "wasm:warn"],
            ),
        ];
        for (id, what, config, args) in cases {
            if !selected(id) {
                continue;
            }
            eprintln!("== {id}: {what}");
            let config_path = work.join(format!("{id}.yaml"));
            std::fs::write(&config_path, config)?;
            let log_path = work.join(format!("{id}.log"));
            let _ = std::fs::remove_file(&log_path);
            let mut server = start_ferry(&ferry, &config_path, &log_path, "1", &args)?;
            let outcome = (|| {
                wait_ready(port, "/")?;
                let load = wrk.measure(port, path_of(id), seconds, repeat)?;
                let peak = peak_rss_kib(server.id())?;
                if id.starts_with('B') {
                    accounting.push(account(id, &log_path, port + 1, load)?);
                }
                anyhow::Ok((load, peak))
            })();
            stop(&mut server);
            let (load, peak) = outcome?;
            rows.push(Row { id, what, load, peak_rss_kib: peak });
        }
        for (id, what, conf) in [
            ("N", "nginx, return 200 (direct response)", nginx_config(&work, port, None)),
            ("N-proxy", "nginx, proxy to upstream", nginx_config(&work, port, Some(upstream_port))),
            ("N-proxy-1MiB", "nginx, a 1 MiB response proxied", nginx_config(&work, port, Some(upstream_port))),
        ] {
            if !selected(id) {
                continue;
            }
            eprintln!("== {id}: {what}");
            let conf_path = work.join(format!("{id}.conf"));
            std::fs::write(&conf_path, conf)?;
            let mut server = Command::new("taskset")
                .args(["-c", SERVER_CORE, "nginx", "-p"])
                .arg(&work)
                .arg("-c")
                .arg(&conf_path)
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start nginx")?;
            let outcome = (|| {
                wait_ready(port, "/")?;
                let load = wrk.measure(port, path_of(id), seconds, repeat)?;
                let peak = peak_rss_with_children_kib(server.id())?;
                anyhow::Ok((load, peak))
            })();
            stop(&mut server);
            let (load, peak) = outcome?;
            rows.push(Row { id, what: what.into(), load, peak_rss_kib: peak });
        }
        if selected("H") {
            // The bench's own upstream, a minimal hyper server, where the
            // servers under test run: what hyper alone does here.
            eprintln!("== H: a minimal hyper server (the bench's upstream)");
            let mut server = Command::new("taskset")
                .args(["-c", SERVER_CORE])
                .arg(&hyper_server)
                .args(["bench-upstream", &port.to_string()])
                .spawn()
                .context("cannot start the hyper server")?;
            let outcome = (|| {
                wait_ready(port, "/")?;
                let load = wrk.measure(port, "/", seconds, repeat)?;
                anyhow::Ok((load, peak_rss_kib(server.id())?))
            })();
            stop(&mut server);
            let (load, peak) = outcome?;
            rows.push(Row {
                id: "H",
                what: "a minimal hyper server, 200 (hyper's own ceiling)".into(),
                load,
                peak_rss_kib: peak,
            });
        }
        protocol_runs(&ferry, &work, &wrk, (seconds, connections, repeat), &mut rows)?;
        if selected("B-bridge") {
            bridge_report = Some(bridge::run(root, &ferry, &work, &wrk, (seconds, repeat), &mut rows)?);
        }
        Ok(())
    })();
    stop(&mut upstream);
    result?;

    let memory = match env_number("BENCH_MEMORY_REQUESTS", 1_000_000) {
        0 => None,
        n => Some(memory_run(root, &ferry, &work, &wrk, n)?),
    };
    let startup = startup_run(root, &ferry, &work)?;

    let mut report = report(&rows, &accounting, memory, startup, seconds, connections);
    if let Some(bridge) = &bridge_report {
        report.push_str(&format!(
            "\nQueue bridge (B-bridge): {} items confirmed by the broker, {} delivered by the receiver{}.\n\n```\n{}```\n",
            bridge.acked,
            bridge.delivered,
            if bridge.acked == bridge.delivered { "" } else { " (FAILED: they differ)" },
            bridge.bench
        ));
    }
    println!("{report}");
    std::fs::write(work.join("report.md"), &report)?;
    eprintln!("report written to target/bench/report.md");
    if bridge_report.as_ref().is_some_and(|b| b.acked != b.delivered) {
        bail!("queue bridge accounting failed: items stored by the broker and delivered differ");
    }
    if accounting.iter().any(|a| !a.ok) {
        bail!("queue accounting failed: enqueued and dequeued items differ");
    }
    Ok(())
}

/// wrk, nginx and taskset, from Debian's packages.
fn ensure_tools() -> anyhow::Result<()> {
    crate::ensure_packages(
        &[
            ("wrk", "wrk"),
            ("nginx", "nginx"),
            ("taskset", "util-linux"),
            ("h2load", "nghttp2-client"),
            ("openssl", "openssl"),
        ],
        "the benchmark needs wrk, nginx, h2load and openssl",
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free port whose successor is free too: the listener and its admin
/// endpoint (configs put the admin on `port + 1`).
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = free_port()?;
        let both = (TcpListener::bind(("0.0.0.0", port)), TcpListener::bind(("0.0.0.0", port.wrapping_add(1))));
        if let (Ok(_), Ok(_)) = both {
            return Ok(port);
        }
    }
    bail!("no two adjacent free ports")
}

/// Waits until `GET path` on the port answers.
fn wait_ready(port: u16, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            let mut response = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut response).is_ok()
                && response.starts_with("HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing answers on port {port}")
}

/// Runs wrk against a port, pinned to the client core.
struct Wrk {
    script: PathBuf,
    connections: u64,
}

impl Wrk {
    fn new(work: &Path, _seconds: u64, connections: u64) -> anyhow::Result<Self> {
        let script = work.join("report.lua");
        std::fs::write(
            &script,
            "done = function(summary, latency, requests)\n\
             local e = summary.errors\n\
             io.write(string.format(\"RESULT %d %d %d %d %d %d\\n\", summary.requests, summary.duration,\n\
               e.connect + e.read + e.write + e.status + e.timeout,\n\
               latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))\n\
             end\n",
        )?;
        Ok(Wrk { script, connections })
    }

    /// `repeat` runs; the one with the median requests/s. Warm-up first.
    fn measure(&self, port: u16, path: &str, seconds: u64, repeat: u64) -> anyhow::Result<Load> {
        self.run(port, path, 2)?;
        let mut loads =
            (0..repeat.max(1)).map(|_| self.run(port, path, seconds)).collect::<anyhow::Result<Vec<_>>>()?;
        loads.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
        Ok(loads[loads.len() / 2])
    }

    fn run(&self, port: u16, path: &str, seconds: u64) -> anyhow::Result<Load> {
        self.run_on(&format!("http://127.0.0.1:{port}{path}"), &[], seconds)
    }

    /// One run against `url`, with `extra` headers besides the usual ones.
    fn run_on(&self, url: &str, extra: &[&str], seconds: u64) -> anyhow::Result<Load> {
        let mut command = Command::new("taskset");
        command.args(["-c", CLIENT_CORE, "wrk", "-t1", &format!("-c{}", self.connections), &format!("-d{seconds}s")]);
        for header in CLIENT_HEADERS.iter().chain(extra) {
            command.args(["-H", header]);
        }
        let output = command.arg("-s").arg(&self.script).arg(url).output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("RESULT "))
            .with_context(|| format!("wrk printed no result:\n{text}"))?;
        let n: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0)).collect();
        Ok(Load { requests: n[0], seconds: n[1] as f64 / 1e6, errors: n[2], p50_us: n[3], p99_us: n[4], p999_us: n[5] })
    }
}

fn start_ferry(ferry: &Path, config: &Path, log: &Path, concurrency: &str, args: &[&str]) -> anyhow::Result<Child> {
    start_ferry_on(SERVER_CORE, ferry, config, log, concurrency, args)
}

/// [`start_ferry`] on the given CPUs (a `taskset -c` list).
fn start_ferry_on(
    cpus: &str,
    ferry: &Path,
    config: &Path,
    log: &Path,
    concurrency: &str,
    args: &[&str],
) -> anyhow::Result<Child> {
    Command::new("taskset")
        .args(["-c", cpus])
        .arg(ferry)
        .arg("-c")
        .arg(config)
        .args(["--concurrency", concurrency, "--log-format", "%v", "--log-path"])
        .arg(log)
        .args(args)
        .stderr(std::fs::File::create(log.with_extension("stderr"))?)
        .spawn()
        .context("cannot start ferry")
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_field(pid, "VmHWM:")
}

/// Peak RSS of a process and its children (nginx's master plus its worker).
fn peak_rss_with_children_kib(pid: u32) -> anyhow::Result<u64> {
    Ok(peak_rss_kib(pid)? + children(pid).iter().map(|&c| peak_rss_kib(c).unwrap_or(0)).sum::<u64>())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_field(pid, "VmRSS:")
}

fn status_field(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} for {pid}"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Queue accounting of a B run.
struct Accounting {
    id: &'static str,
    requests: u64,
    enqueued: u64,
    dequeued: u64,
    logged: Option<(u64, u64)>,
    ok: bool,
}

/// After the load stops, waits for the receiver to drain the queue, then
/// checks that every item enqueued was dequeued exactly once.
fn account(id: &'static str, log: &Path, admin_port: u16, load: Load) -> anyhow::Result<Accounting> {
    // Requests already read when wrk stopped are still being served: wait
    // until the counters stop moving and agree.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (u64::MAX, u64::MAX);
    let (enqueued, dequeued) = loop {
        std::thread::sleep(Duration::from_millis(300));
        let stats = http_get(admin_port, "/stats")?;
        let value = |name: &str| -> u64 {
            stats.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.trim().parse().ok()).unwrap_or(0)
        };
        let now = (value("ferry.shared_queue.enqueued"), value("ferry.shared_queue.dequeued"));
        if (now == last && now.0 == now.1) || Instant::now() > deadline {
            break now;
        }
        last = now;
    };
    // With the log at info, count the plugins' own lines as well.
    let logged = if id == "B-info" {
        std::thread::sleep(Duration::from_millis(500));
        let text = std::fs::read_to_string(log)?;
        Some((
            text.lines().filter(|l| l.contains("wasm log sender: enqueued data: ")).count() as u64,
            text.lines().filter(|l| l.contains("wasm log receiver: dequeued data: ")).count() as u64,
        ))
    } else {
        None
    };
    // Requests wrk saw complete in the reported run moved ITEMS_PER_REQUEST
    // items each; warm-up and the other runs moved more.
    let ok = enqueued == dequeued
        && enqueued >= load.requests * ITEMS_PER_REQUEST
        && logged.is_none_or(|(e, d)| e == enqueued && d == dequeued);
    Ok(Accounting { id, requests: load.requests, enqueued, dequeued, logged, ok })
}

fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// RSS of the shared_queue example at --concurrency 2 after `n` and `2n` requests.
fn memory_run(root: &Path, ferry: &Path, work: &Path, wrk: &Wrk, n: u64) -> anyhow::Result<(u64, u64, u64)> {
    eprintln!("== memory: shared_queue example, --concurrency 2, {n} then {} requests", 2 * n);
    let port = free_port_pair()?;
    let config = work.join("memory.yaml");
    std::fs::write(&config, example_config(root, port))?;
    let mut server =
        start_ferry(ferry, &config, &work.join("memory.log"), "2", &["--component-log-level", "wasm:warn"])?;
    let result = (|| {
        wait_ready(port, "/")?;
        let mut total = 0;
        let mut at_n = 0;
        while total < 2 * n {
            total += wrk.run(port, "/", 10)?.requests;
            if at_n == 0 && total >= n {
                at_n = rss_kib(server.id())?;
            }
        }
        anyhow::Ok((at_n, rss_kib(server.id())?, total))
    })();
    stop(&mut server);
    result
}

/// Start-up times, in milliseconds, from spawn to the first answered request.
struct Startup {
    /// The shared_queue example, module cache warm (median of 5), on the
    /// server's core.
    warm_ms: f64,
    /// The Go test plugin (a multi-megabyte module from standard Go), no
    /// module cache (median of 3): on every core, as ferry runs, and on
    /// the server's core alone.
    go_cold_ms: f64,
    go_cold_one_core_ms: f64,
    /// Its size.
    go_bytes: u64,
}

fn startup_run(root: &Path, ferry: &Path, work: &Path) -> anyhow::Result<Startup> {
    eprintln!("== start-up: shared_queue example, module cache warm");
    // The first start fills the cache.
    let mut warm = time_to_serve(SERVER_CORE, ferry, work, 6, &[], |port| example_config(root, port))?;
    warm.remove(0);
    eprintln!("== start-up: Go plugin, no module cache");
    let go = root.join("target/go-plugins/go_hello.wasm");
    let go_bytes = std::fs::metadata(&go).with_context(|| format!("{} is missing", go.display()))?.len();
    let filter = wasm_filter_at(&go, "go");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all_cores = format!("0-{}", cores - 1);
    let go =
        |cpus: &str| time_to_serve(cpus, ferry, work, 3, &["--no-wasm-cache"], |port| direct_config(port, &filter, ""));
    Ok(Startup {
        warm_ms: median(warm),
        go_cold_ms: median(go(&all_cores)?),
        go_cold_one_core_ms: median(go(SERVER_CORE)?),
        go_bytes,
    })
}

/// Starts ferry `times` times (2 workers, on `cpus`) with the config
/// `config(port)` makes; for each, the milliseconds until `GET /` answers
/// `example body`.
fn time_to_serve(
    cpus: &str,
    ferry: &Path,
    work: &Path,
    times: usize,
    args: &[&str],
    config: impl Fn(u16) -> String,
) -> anyhow::Result<Vec<f64>> {
    let mut elapsed_ms = Vec::new();
    for _ in 0..times {
        let port = free_port_pair()?;
        let path = work.join("startup.yaml");
        std::fs::write(&path, config(port))?;
        let started = Instant::now();
        let mut server = start_ferry_on(cpus, ferry, &path, &work.join("startup.log"), "2", args)?;
        let deadline = started + Duration::from_secs(60);
        let mut ready = None;
        while Instant::now() < deadline {
            if http_get(port, "/").is_ok_and(|b| b == "example body\n") {
                ready = Some(started.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        stop(&mut server);
        let elapsed = ready.context("ferry did not answer; see target/bench/startup.stderr")?;
        elapsed_ms.push(elapsed.as_secs_f64() * 1000.0);
    }
    Ok(elapsed_ms)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn listener(port: u16, filters: &str, action: &str) -> String {
    format!(
        r#"
  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                {action}
          http_filters:{filters}
          - name: envoy.filters.http.router
"#
    )
}

fn admin(port: u16) -> String {
    format!("admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}\n", port + 1)
}

fn direct_config(port: u16, filters: &str, services: &str) -> String {
    let action = r#"direct_response: { status: 200, body: { inline_string: "example body\n" } }"#;
    format!("{services}static_resources:{}{}", listener(port, filters, action), admin(port))
}

fn proxy_config(port: u16, upstream: u16, filters: &str, services: &str) -> String {
    format!(
        "{services}static_resources:{}  clusters:\n  - name: upstream\n    connect_timeout: 1s\n    type: STATIC\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}\n{}",
        listener(port, filters, "route: { cluster: upstream }"),
        admin(port)
    )
}

fn wasm_filter(root: &Path, file: &str, vm_id: &str) -> String {
    wasm_filter_at(&root.join("target/wasm32-wasip1/release").join(file), vm_id)
}

/// An `envoy.filters.http.wasm` item running the module at `path`.
fn wasm_filter_at(path: &Path, vm_id: &str) -> String {
    format!(
        r#"
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                vm_config:
                  vm_id: {vm_id}
                  code: {{ local: {{ filename: "{}" }} }}"#,
        path.display()
    )
}

fn receiver_service(root: &Path) -> String {
    let path = root.join("target/wasm32-wasip1/release/shared_queue_receiver.wasm");
    format!(
        "bootstrap_extensions:\n- name: envoy.bootstrap.wasm\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.wasm.v3.WasmService\n    singleton: true\n    config:\n      vm_config:\n        vm_id: receiver\n        code: {{ local: {{ filename: \"{}\" }} }}\n",
        path.display()
    )
}

/// The example's own envoy.yaml, on the bench's ports.
fn example_config(root: &Path, port: u16) -> String {
    std::fs::read_to_string(root.join("examples/shared_queue/envoy.yaml"))
        .unwrap_or_default()
        .replace("port_value: 18000", &format!("port_value: {port}"))
        .replace("port_value: 8001", &format!("port_value: {}", port + 1))
}

fn nginx_config(work: &Path, port: u16, upstream: Option<u16>) -> String {
    let location = match upstream {
        None => "return 200 \"example body\\n\";".to_owned(),
        Some(_) => "proxy_pass http://upstream; proxy_http_version 1.1; proxy_set_header Connection \"\";".to_owned(),
    };
    let upstream_block =
        upstream.map_or(String::new(), |u| format!("upstream upstream {{ server 127.0.0.1:{u}; keepalive 64; }}"));
    format!(
        "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {pid};\nerror_log stderr error;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  default_type text/plain;\n  keepalive_requests 1000000;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  {upstream_block}\n\
         server {{ listen 127.0.0.1:{port}; location / {{ {location} }} }}\n}}\n",
        pid = work.join("nginx.pid").display(),
        tmp = work.display(),
    )
}

fn report(
    rows: &[Row],
    accounting: &[Accounting],
    memory: Option<(u64, u64, u64)>,
    startup: Startup,
    seconds: u64,
    connections: u64,
) -> String {
    let mut out = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    out.push_str(&format!(
        "Machine: {cpu}, {} cores. Server pinned to core {SERVER_CORE}, wrk (1 thread, {connections} connections, {seconds} s, median of the runs) and the upstream to core {CLIENT_CORE}.\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    out.push_str("| run | what | requests/s | p50 | p99 | p99.9 | errors | peak RSS |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in rows {
        let l = r.load;
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {:.1} MiB |\n",
            r.id,
            r.what,
            l.rps(),
            micros(l.p50_us),
            micros(l.p99_us),
            micros(l.p999_us),
            l.errors,
            r.peak_rss_kib as f64 / 1024.0
        ));
    }
    let get = |id: &str| rows.iter().find(|r| r.id == id).map(|r| r.load);
    out.push_str("\n| ratio | requests/s | p99 |\n| --- | ---: | ---: |\n");
    for (name, a, b) in [
        ("B / A", "B", "A"),
        ("B-info / A", "B-info", "A"),
        ("B-bridge / B", "B-bridge", "B"),
        ("C / A", "C", "A"),
        ("D0 / N-proxy", "D0", "N-proxy"),
        ("D1 / N-proxy", "D1", "N-proxy"),
        ("D1 / D0", "D1", "D0"),
        ("D1-1MiB / N-proxy-1MiB", "D1-1MiB", "N-proxy-1MiB"),
        ("A / N", "A", "N"),
        ("H / N", "H", "N"),
        ("A-h2 / N-h2", "A-h2", "N-h2"),
        ("A-TLS / N-TLS", "A-TLS", "N-TLS"),
        ("A-TLS-new / N-TLS-new", "A-TLS-new", "N-TLS-new"),
    ] {
        if let (Some(x), Some(y)) = (get(a), get(b)) {
            out.push_str(&format!(
                "| {name} | {:.2} | {:.2} |\n",
                x.rps() / y.rps(),
                x.p99_us as f64 / y.p99_us.max(1) as f64
            ));
        }
    }
    out.push_str("\nQueue accounting (after the load stops and the receiver drains):\n\n| run | requests (wrk) | enqueued | dequeued | log lines enqueued / dequeued | verdict |\n| --- | ---: | ---: | ---: | ---: | --- |\n");
    for a in accounting {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            a.id,
            a.requests,
            a.enqueued,
            a.dequeued,
            a.logged.map_or("-".into(), |(e, d)| format!("{e} / {d}")),
            if a.ok { "ok: each item dequeued once" } else { "FAILED" }
        ));
    }
    if let Some((at_n, at_2n, total)) = memory {
        out.push_str(&format!(
            "\nMemory, shared_queue example at --concurrency 2: RSS {:.1} MiB after the first half, {:.1} MiB after {total} requests ({:+.1} MiB).\n",
            at_n as f64 / 1024.0,
            at_2n as f64 / 1024.0,
            (at_2n as f64 - at_n as f64) / 1024.0
        ));
    }
    out.push_str(&format!(
        "\nStart-up to the first answered request: shared_queue example, module cache warm (median of 5) {:.1} ms; \
         Go plugin ({:.1} MB), no module cache (median of 3) {:.0} ms on every core, {:.0} ms on one.\n",
        startup.warm_ms,
        startup.go_bytes as f64 / 1e6,
        startup.go_cold_ms,
        startup.go_cold_one_core_ms
    ));
    out
}

fn micros(us: u64) -> String {
    match us {
        // h2load reports no percentiles.
        0 => "-".into(),
        10_000.. => format!("{:.1} ms", us as f64 / 1000.0),
        _ => format!("{us} µs"),
    }
}

/// How a protocol run's load is made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    /// wrk over TLS, connections kept alive.
    Tls,
    /// wrk over TLS, `connection: close`: a new connection and TLS
    /// handshake for every request.
    TlsNewConnections,
    /// h2load over h2c (HTTP/2 with prior knowledge), 10 streams per connection.
    H2c,
}

/// The HTTP/2 and TLS runs: ferry and nginx configured the same way (same
/// certificate, same core, a direct 200 answer).
fn protocol_runs(
    ferry: &Path,
    work: &Path,
    wrk: &Wrk,
    (seconds, connections, repeat): (u64, u64, u64),
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let (cert, key) = (work.join("bench-cert.pem"), work.join("bench-key.pem"));
    if !cert.exists() {
        crate::run(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-days",
                    "3650",
                ])
                .args(["-subj", "/CN=localhost", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null()),
        )?;
    }
    let port = free_port_pair()?;
    let tls_socket = format!(
        "    - transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          common_tls_context:\n            tls_certificates:\n            - certificate_chain: {{ filename: {:?} }}\n              private_key: {{ filename: {:?} }}\n      filters:",
        cert.display(),
        key.display()
    );
    let tls_config = direct_config(port, "", "").replacen("    - filters:", &tls_socket, 1);
    let runs: [(&'static str, &str, Client); 6] = [
        ("A-h2", "ferry, direct_response, HTTP/2 (h2c)", Client::H2c),
        ("N-h2", "nginx, return 200, HTTP/2 (h2c)", Client::H2c),
        ("A-TLS", "ferry, direct_response, HTTPS kept alive", Client::Tls),
        ("N-TLS", "nginx, return 200, HTTPS kept alive", Client::Tls),
        ("A-TLS-new", "ferry, direct_response, HTTPS, a new TLS connection per request", Client::TlsNewConnections),
        ("N-TLS-new", "nginx, return 200, HTTPS, a new TLS connection per request", Client::TlsNewConnections),
    ];
    for (id, what, client) in runs {
        if !selected(id) {
            continue;
        }
        eprintln!("== {id}: {what}");
        let nginx = id.starts_with('N');
        let mut server = if nginx {
            let conf_path = work.join(format!("{id}.conf"));
            let listen = match client {
                Client::H2c => format!("listen 127.0.0.1:{port} http2;"),
                _ => format!(
                    "listen 127.0.0.1:{port} ssl; ssl_protocols TLSv1.2 TLSv1.3; ssl_certificate {}; ssl_certificate_key {};",
                    cert.display(),
                    key.display()
                ),
            };
            std::fs::write(
                &conf_path,
                nginx_config(work, port, None).replace(&format!("listen 127.0.0.1:{port};"), &listen),
            )?;
            Command::new("taskset")
                .args(["-c", SERVER_CORE, "nginx", "-p"])
                .arg(work)
                .arg("-c")
                .arg(&conf_path)
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start nginx")?
        } else {
            let config_path = work.join(format!("{id}.yaml"));
            let config = if client == Client::H2c { direct_config(port, "", "") } else { tls_config.clone() };
            std::fs::write(&config_path, config)?;
            start_ferry(ferry, &config_path, &work.join(format!("{id}.log")), "1", &[])?
        };
        let outcome = (|| {
            wait_listening(port)?;
            let measure = |seconds| match client {
                Client::H2c => h2load(port, connections, seconds),
                Client::Tls => wrk.run_on(&format!("https://127.0.0.1:{port}/"), &[], seconds),
                Client::TlsNewConnections => {
                    wrk.run_on(&format!("https://127.0.0.1:{port}/"), &["Connection: close"], seconds)
                }
            };
            measure(2)?;
            let mut loads = (0..repeat.max(1)).map(|_| measure(seconds)).collect::<anyhow::Result<Vec<_>>>()?;
            loads.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
            let load = loads[loads.len() / 2];
            let peak = peak_rss_with_children_kib(server.id())?;
            anyhow::Ok((load, peak))
        })();
        stop(&mut server);
        let (load, peak) = outcome?;
        rows.push(Row { id, what: what.into(), load, peak_rss_kib: peak });
    }
    Ok(())
}

/// Waits until the port accepts connections (for servers a plain HTTP/1.1
/// request cannot ask: TLS, HTTP/2 only).
fn wait_listening(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(200));
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on port {port}")
}

/// One h2load run over h2c: `connections` connections, 10 streams each.
/// h2load reports no latency percentiles; the row shows none.
fn h2load(port: u16, connections: u64, seconds: u64) -> anyhow::Result<Load> {
    let output = Command::new("taskset")
        .args(["-c", CLIENT_CORE, "h2load", "-t1", &format!("-c{connections}"), "-m10", &format!("-D{seconds}")])
        .args(["-H", "user-agent: h2load", "-H", "accept: */*"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "finished in 10.00s, 1234.56 req/s, ..." and "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
    let finished = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .with_context(|| format!("h2load printed no result:\n{text}"))?;
    let elapsed: f64 = finished
        .trim_start_matches("finished in ")
        .split(',')
        .next()
        .and_then(|t| t.trim().trim_end_matches('s').parse().ok())
        .with_context(|| format!("cannot read {finished:?}"))?;
    let counts = text.lines().find(|l| l.starts_with("requests:")).context("h2load printed no request counts")?;
    let number = |label: &str| -> u64 {
        counts
            .split(',')
            .find(|part| part.trim().ends_with(label))
            .and_then(|part| part.split_whitespace().find_map(|w| w.parse().ok()))
            .unwrap_or(0)
    };
    Ok(Load {
        requests: number("succeeded"),
        seconds: elapsed,
        errors: number("failed") + number("errored") + number("timeout"),
        ..Load::default()
    })
}
