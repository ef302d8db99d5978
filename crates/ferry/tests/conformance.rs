//! The conformance kit's runner: every case in `conformance/cases/` against
//! the real binary (or another host with Envoy's command line, named by
//! `FERRY_CONFORMANCE_HOST`). See conformance/README.md.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::grpc::grpc_server;
use common::{
    Ferry, close_delimited_server, echo_server, go_plugin, h2_echo_server, h2_request, plugin, repo_root, request,
    request_chunked, request_with_trailers, run_to_end_binary, tcp_echo_server, trailer_echo_server,
};
use serde::Deserialize;

/// One case: a configuration, and steps with what each must show.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    /// ABI functions and callbacks the case exercises (docs/abi-coverage.md).
    covers: Vec<String>,
    /// Where Envoy behaves otherwise, and why: such a case runs against
    /// ferry only.
    #[serde(default)]
    differs_from_envoy: Option<String>,
    /// Names of free ports to allocate, used as `{port:NAME}` in `config`.
    #[serde(default)]
    ports: Vec<String>,
    /// Echo upstreams to start, used as `{port:NAME}` in `config`.
    #[serde(default)]
    echo_servers: Vec<String>,
    /// TCP echo upstreams (every byte sent back), used as `{port:NAME}`.
    #[serde(default)]
    tcp_echo_servers: Vec<String>,
    /// HTTP upstreams answering with the request's body and, as response
    /// trailers, its trailers; used as `{port:NAME}`.
    #[serde(default)]
    trailer_echo_servers: Vec<String>,
    /// gRPC servers with the `test.Echo` service (see tests/common/grpc.rs),
    /// used as `{port:NAME}`.
    #[serde(default)]
    grpc_servers: Vec<String>,
    /// TCP upstreams that accept connections and never answer, used as `{port:NAME}`.
    #[serde(default)]
    silent_servers: Vec<String>,
    /// HTTP/1.1 upstreams answering `echo: ` and the body, ended by closing
    /// the connection (no length, not chunked); used as `{port:NAME}`.
    #[serde(default)]
    close_delimited_servers: Vec<String>,
    /// HTTP/2 (h2c) upstreams answering with the request's body, the last
    /// DATA frame ending the stream; used as `{port:NAME}`.
    #[serde(default)]
    h2_echo_servers: Vec<String>,
    /// Wasm modules written as WAT, by name: `{wat:NAME}` in `config` is
    /// the path of the module compiled to a binary.
    #[serde(default)]
    modules: BTreeMap<String, String>,
    /// Values of `{var:NAME}` in `config` (set by variants).
    #[serde(default)]
    vars: BTreeMap<String, String>,
    /// A generated module calling one host function with each argument
    /// list from `proxy_on_request_headers` (`{probe}` in `config`); the
    /// runner checks that `GET /` on port `main` answers the statuses.
    #[serde(default)]
    probe: Option<Probe>,
    /// Traffic that must keep being answered while the case runs: the
    /// runner sends it every 100 ms from the start to the end of the case.
    #[serde(default)]
    survives: Option<Survives>,
    /// Cases that share this configuration, each a test of its own named
    /// `<file>::<variant>`, each overriding what it sets.
    #[serde(default)]
    variants: Vec<Variant>,
    #[serde(default = "one")]
    concurrency: u32,
    /// Envoy YAML; `{plugin:FILE}` and `{go:FILE}` name built test plugins.
    config: String,
    /// The host must refuse to start, with a log line containing this.
    #[serde(default)]
    fails_to_start: Option<String>,
    #[serde(default)]
    steps: Vec<Step>,
}

fn one() -> u32 {
    1
}

/// A case sharing its file's configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Variant {
    name: String,
    description: String,
    #[serde(default)]
    covers: Vec<String>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    steps: Option<Vec<Step>>,
    #[serde(default)]
    fails_to_start: Option<String>,
    #[serde(default)]
    probe: Option<Probe>,
    #[serde(default)]
    differs_from_envoy: Option<String>,
}

/// Calls of one host function, each with the status it must return.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe {
    function: String,
    calls: Vec<ProbeCall>,
    /// Bytes the module's memory starts with, by address (WAT string
    /// syntax: `\\hh` for a byte), for calls that need valid input.
    #[serde(default)]
    memory: BTreeMap<u32, String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeCall {
    /// What the call tests, for messages.
    what: String,
    /// The arguments (i64 where the function takes one).
    args: Vec<i64>,
    /// The status it must return.
    status: u32,
}

/// A request that must keep being answered.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Survives {
    port: String,
    #[serde(default = "root_path")]
    path: String,
    #[serde(default = "ok")]
    status: u16,
}

fn root_path() -> String {
    "/".into()
}

fn ok() -> u16 {
    200
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    /// Send a request and check the response.
    #[serde(default)]
    request: Option<Request>,
    #[serde(default)]
    status: Option<u16>,
    /// The stream is reset once its response began: the client gets no
    /// response, or a head and a body cut short (which status does not
    /// matter then: `status` is not checked).
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    body: Option<String>,
    /// Response headers that must have these values.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Response trailers that must have these values.
    #[serde(default)]
    trailers: BTreeMap<String, String>,
    /// Response headers (or `trailer:NAME` for trailers) that must be absent.
    #[serde(default)]
    missing: Vec<String>,
    /// Wait (up to 10 s) for a log line containing this.
    #[serde(default)]
    log: Option<String>,
    /// With `log`: wait until this many lines contain it (default 1), e.g.
    /// the second restart.
    #[serde(default)]
    log_times: Option<usize>,
    /// Wait for log lines containing these, logged during this step, in
    /// this order (each after the line that matched the one before).
    #[serde(default)]
    log_order: Vec<String>,
    /// Wait for log lines containing each of these, logged during this step,
    /// in any order.
    #[serde(default)]
    logs: Vec<String>,
    /// No line logged so far may contain any of these.
    #[serde(default)]
    absent: Vec<String>,
    /// The lines logged during this step that contain a marker, exactly:
    /// each one's text after the marker, in order, nothing more.
    #[serde(default)]
    calls: Option<Calls>,
    /// Open a TCP connection, send, read until the proxy closes, compare.
    #[serde(default)]
    tcp: Option<TcpExchange>,
    /// Send SIGTERM and check the rest of the step against the whole log
    /// (the host must exit with success). Only as the last step.
    #[serde(default)]
    stop: bool,
    /// Lines `name: value` the admin endpoint's `/stats` must show
    /// (the admin address must be `{port:admin}`).
    #[serde(default)]
    stats: BTreeMap<String, String>,
    /// Wait this long before the step's traffic (e.g. for a restart's backoff).
    #[serde(default)]
    wait_ms: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Calls {
    marker: String,
    lines: Vec<String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpExchange {
    /// The `{port:NAME}` to connect to.
    port: String,
    /// Chunks written one at a time, 100 ms apart; then the client ends its side.
    send: Vec<String>,
    /// Every byte the client receives before the connection closes.
    expect: String,
    /// Do not end the client's side: read just `expect`'s length, then close.
    #[serde(default)]
    keep_open: bool,
    /// End the client's side after sending (default); without it the
    /// client reads until the proxy closes the connection.
    #[serde(default = "yes")]
    half_close: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
    /// Trailers: the request is sent chunked, with `te: trailers`.
    #[serde(default)]
    trailers: Vec<(String, String)>,
    /// The body as chunks of a chunked request, written 200 ms apart
    /// (instead of `body`).
    #[serde(default)]
    chunks: Vec<String>,
    /// Send over HTTP/2 (h2c with prior knowledge): the body in one DATA
    /// frame that ends the stream, or the trailers end it.
    #[serde(default)]
    http2: bool,
    /// The `{port:NAME}` to send to.
    #[serde(default = "main_port")]
    port: String,
}

fn get() -> String {
    "GET".into()
}

fn main_port() -> String {
    "main".into()
}

fn cases_dir() -> PathBuf {
    repo_root().join("conformance/cases")
}

/// The cases, by file name (`dir/file` in subdirectories), a case with
/// variants as one case per variant (`file::variant`).
fn cases() -> Vec<(String, Case)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(cases_dir()).unwrap().map(|e| e.unwrap().path()) {
        if entry.is_dir() {
            files.extend(std::fs::read_dir(&entry).unwrap().map(|e| e.unwrap().path()));
        } else {
            files.push(entry);
        }
    }
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let relative = path.strip_prefix(cases_dir()).unwrap().with_extension("");
        let name = relative.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let case: Case = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if case.variants.is_empty() {
            cases.push((name, case));
            continue;
        }
        for variant in &case.variants {
            let mut one = Case { variants: Vec::new(), ..case.clone() };
            one.description = variant.description.clone();
            one.covers.extend(variant.covers.iter().cloned());
            one.vars.extend(variant.vars.clone());
            if let Some(steps) = &variant.steps {
                one.steps = steps.clone();
            }
            one.fails_to_start = variant.fails_to_start.clone().or(one.fails_to_start);
            one.probe = variant.probe.clone().or(one.probe);
            one.differs_from_envoy = variant.differs_from_envoy.clone().or(one.differs_from_envoy);
            cases.push((format!("{name}::{}", variant.name), one));
        }
    }
    cases
}

/// Fills the placeholders of a case's configuration: `{plugin:FILE}`,
/// `{go:FILE}`, `{port:NAME}`, `{var:NAME}`, `{wat:NAME}` and `{probe}`.
fn render(config: &str, ports: &HashMap<String, u16>, case: &Case) -> Result<String, String> {
    // Variables first: they may name a module or a port.
    let mut config = config.to_owned();
    for (name, value) in &case.vars {
        config = config.replace(&format!("{{var:{name}}}"), value);
    }
    let mut out = String::new();
    let mut rest = config.as_str();
    loop {
        let next = ["{plugin:", "{go:", "{port:", "{var:", "{wat:", "{probe}"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min();
        let Some((start, prefix)) = next else { break };
        let end = start + rest[start..].find('}').expect("unterminated placeholder");
        let argument = &rest[(start + prefix.len()).min(end)..end];
        out.push_str(&rest[..start]);
        out.push_str(&match prefix {
            "{plugin:" => plugin(argument).display().to_string(),
            "{go:" => go_plugin(argument).display().to_string(),
            "{var:" => case.vars.get(argument).cloned().ok_or_else(|| format!("no var {argument}"))?,
            "{wat:" => {
                let wat = case.modules.get(argument).ok_or_else(|| format!("no module {argument}"))?;
                module_file(argument, wat)?
            }
            "{probe}" => {
                let probe = case.probe.as_ref().ok_or("{probe} without a probe")?;
                module_file(&probe.function, &probe_module(probe)?)?
            }
            _ => ports.get(argument).ok_or_else(|| format!("no port {argument}"))?.to_string(),
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Compiles WAT to a Wasm binary in a file of its own; returns its path.
fn module_file(name: &str, wat: &str) -> Result<String, String> {
    let binary = wat::parse_str(wat).map_err(|e| format!("module {name}: {e}"))?;
    let path = std::env::temp_dir().join(format!("ferry-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let file = path.join(format!("{}-{name}.wasm", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    std::fs::write(&file, binary).map_err(|e| e.to_string())?;
    Ok(file.display().to_string())
}

/// A module that calls `probe.function` with each argument list in
/// `proxy_on_request_headers`, then answers the request (200) with the
/// statuses, comma-separated. Its memory is one page (64 KiB) of zeros but for `probe.memory`,
/// so any address from 65536 on is past it.
fn probe_module(probe: &Probe) -> Result<String, String> {
    let function = ferry_host::HOST_FUNCTIONS
        .iter()
        .find(|f| f.name == probe.function)
        .ok_or_else(|| format!("{} is not a host function", probe.function))?;
    let types: Vec<&str> =
        function.params.iter().map(|p| if *p == ferry_host::Param::I64 { "i64" } else { "i32" }).collect();
    let mut calls = String::new();
    for call in &probe.calls {
        if call.args.len() != types.len() {
            return Err(format!("{}: {} takes {} arguments", call.what, probe.function, types.len()));
        }
        let args: String = call.args.iter().zip(&types).map(|(a, t)| format!(" ({t}.const {a})")).collect();
        calls.push_str(&format!("    (call $put (call $probed{args}))\n"));
    }
    let data: String =
        probe.memory.iter().map(|(at, bytes)| format!("  (data (i32.const {at}) \"{bytes}\")\n")).collect();
    Ok(format!(
        r#"(module
  (import "env" "{name}" (func $probed (param {params}) (result i32)))
  (import "env" "proxy_send_local_response" (func $respond (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
{data}  (global $heap (mut i32) (i32.const 32768))
  (global $out (mut i32) (i32.const 16384))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    global.get $heap local.set $p
    global.get $heap local.get $n i32.add global.set $heap
    local.get $p)
  ;; Appends a status in decimal, comma-separated.
  (func $put (param $status i32)
    (if (i32.gt_u (global.get $out) (i32.const 16384))
      (then (i32.store8 (global.get $out) (i32.const 44)) (global.set $out (i32.add (global.get $out) (i32.const 1)))))
    (if (i32.ge_u (local.get $status) (i32.const 10))
      (then
        (i32.store8 (global.get $out) (i32.add (i32.const 48) (i32.div_u (local.get $status) (i32.const 10))))
        (global.set $out (i32.add (global.get $out) (i32.const 1)))))
    (i32.store8 (global.get $out) (i32.add (i32.const 48) (i32.rem_u (local.get $status) (i32.const 10))))
    (global.set $out (i32.add (global.get $out) (i32.const 1))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
{calls}    (drop (call $respond (i32.const 200) (i32.const 0) (i32.const 0)
      (i32.const 16384) (i32.sub (global.get $out) (i32.const 16384)) (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1)))
"#,
        name = probe.function,
        params = types.join(" "),
    ))
}

/// Sockets on free ports, held until the host is about to bind them, so no
/// two names (and no upstream started meanwhile) get the same port.
fn reserve_ports(count: usize) -> Vec<TcpListener> {
    (0..count).map(|_| common::reserve_port()).collect()
}

/// Runs one case; `Err` says which step failed and how.
fn run(case: &Case, host: &Path) -> Result<(), String> {
    let reserved = reserve_ports(case.ports.len());
    let mut ports: HashMap<String, u16> =
        case.ports.iter().zip(&reserved).map(|(n, s)| (n.clone(), s.local_addr().unwrap().port())).collect();
    for name in &case.echo_servers {
        ports.insert(name.clone(), echo_server().port());
    }
    for name in &case.tcp_echo_servers {
        ports.insert(name.clone(), tcp_echo_server().port());
    }
    for name in &case.trailer_echo_servers {
        ports.insert(name.clone(), trailer_echo_server().port());
    }
    for name in &case.grpc_servers {
        ports.insert(name.clone(), grpc_server().port());
    }
    for name in &case.silent_servers {
        ports.insert(name.clone(), silent_server().port());
    }
    for name in &case.close_delimited_servers {
        ports.insert(name.clone(), close_delimited_server().port());
    }
    for name in &case.h2_echo_servers {
        ports.insert(name.clone(), h2_echo_server().port());
    }
    let config = render(&case.config, &ports, case)?;
    drop(reserved);
    if let Some(needle) = &case.fails_to_start {
        let (status, log) = run_to_end_binary(host, &config, &["--concurrency", &case.concurrency.to_string()]);
        if status.success() {
            return Err("the host started; it should have refused the configuration".into());
        }
        if !log.contains(needle.as_str()) {
            return Err(format!("no log line contains {needle:?}; log:\n{log}"));
        }
        return Ok(());
    }
    let mut ferry = Some(Ferry::start_binary(host, &config, &["--concurrency", &case.concurrency.to_string()]));
    let mut prober = case.survives.as_ref().map(|s| Prober::start(s, &ports)).transpose()?;
    if let Some(probe) = &case.probe {
        let port = *ports.get("main").ok_or("a probe needs {port:main}")?;
        let response = request(SocketAddr::from(([127, 0, 0, 1], port)), "GET", "/", &[], b"");
        let want: Vec<String> = probe.calls.iter().map(|c| c.status.to_string()).collect();
        let got = response.text();
        if response.status != 200 || got != want.join(",") {
            let got: Vec<&str> = got.split(',').collect();
            let wrong: Vec<String> = probe
                .calls
                .iter()
                .zip(&want)
                .enumerate()
                .filter(|(i, (_, w))| got.get(*i) != Some(&w.as_str()))
                .map(|(i, (c, w))| format!("{} returned {:?} instead of {w}", c.what, got.get(i)))
                .collect();
            return Err(format!("probe of {}: status {}; {}", probe.function, response.status, wrong.join("; ")));
        }
    }
    // The whole log once a `stop` step stopped the host.
    let mut final_log: Option<Vec<String>> = None;
    for (i, step) in case.steps.iter().enumerate() {
        let fail = |what: String| format!("step {}: {what}", i + 1);
        let lines = |ferry: &Option<Ferry>, final_log: &Option<Vec<String>>| match (ferry, final_log) {
            (Some(ferry), _) => ferry.lines(),
            (None, log) => log.clone().unwrap_or_default(),
        };
        let step_start = lines(&ferry, &final_log).len();
        std::thread::sleep(Duration::from_millis(step.wait_ms));
        if let Some(t) = &step.tcp {
            let port = *ports.get(&t.port).ok_or_else(|| fail(format!("no port {}", t.port)))?;
            let received = tcp_exchange(port, &t.send, t.keep_open.then_some(t.expect.len()), t.half_close)
                .map_err(|e| fail(format!("TCP to {}: {e}", t.port)))?;
            if received != t.expect.as_bytes() {
                return Err(fail(format!(
                    "TCP received {:?} instead of {:?}",
                    String::from_utf8_lossy(&received),
                    t.expect
                )));
            }
        }
        if let Some(r) = &step.request {
            let port = *ports.get(&r.port).ok_or_else(|| fail(format!("no port {}", r.port)))?;
            let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            let trailers: Vec<(&str, &str)> = r.trailers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let response = if r.http2 {
                h2_request(address, &r.method, &r.path, &headers, r.body.as_bytes(), &trailers)
            } else if !r.chunks.is_empty() {
                let chunks: Vec<&[u8]> = r.chunks.iter().map(|c| c.as_bytes()).collect();
                request_chunked(address, &r.method, &r.path, &headers, &chunks, &trailers)
            } else if trailers.is_empty() {
                request(address, &r.method, &r.path, &headers, r.body.as_bytes())
            } else {
                request_with_trailers(address, &r.method, &r.path, &headers, r.body.as_bytes(), &trailers)
            };
            let what = format!("{} {}", r.method, r.path);
            if step.reset == response.complete {
                let got = if response.complete { "a whole response" } else { "a reset" };
                return Err(fail(format!("{what}: {got} (status {})", response.status)));
            }
            if let Some(status) = step.status.filter(|&s| !step.reset && s != response.status) {
                return Err(fail(format!("{what}: status {} instead of {status}", response.status)));
            }
            if let Some(body) = step.body.as_ref().filter(|&b| *b != response.text()) {
                return Err(fail(format!("{what}: body {:?} instead of {body:?}", response.text())));
            }
            for (name, value) in &step.headers {
                if response.header(name) != Some(value.as_str()) {
                    return Err(fail(format!(
                        "{what}: header {name}: {:?} instead of {value:?}",
                        response.header(name)
                    )));
                }
            }
            for (name, value) in &step.trailers {
                let got = response.header(&format!("trailer:{name}"));
                if got != Some(value.as_str()) {
                    return Err(fail(format!("{what}: trailer {name}: {got:?} instead of {value:?}")));
                }
            }
            if let Some(name) = step.missing.iter().find(|name| response.header(name).is_some()) {
                return Err(fail(format!("{what}: {name} should be absent: {:?}", response.header(name))));
            }
        }
        if step.stop {
            if i + 1 != case.steps.len() {
                return Err(fail("`stop` must be the last step".into()));
            }
            if let Some(prober) = prober.take() {
                prober.finish().map_err(fail)?;
            }
            let (status, log) = ferry.take().expect("the host runs until the stop step").stop_with_log();
            if !status.success() {
                return Err(fail(format!("the host exited with {status} after SIGTERM")));
            }
            final_log = Some(log);
        }
        // Log checks look at the lines as they come (up to 10 s each).
        let wait_for = |from: usize, found: &dyn Fn(&[String]) -> Result<(), String>| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match found(&lines(&ferry, &final_log)[from..]) {
                    Ok(()) => return Ok(()),
                    Err(e) if std::time::Instant::now() > deadline => return Err(fail(e)),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        };
        if let Some(needle) = &step.log {
            let times = step.log_times.unwrap_or(1);
            wait_for(0, &|lines: &[String]| {
                let seen = lines.iter().filter(|l| l.contains(needle.as_str())).count();
                if seen >= times { Ok(()) } else { Err(format!("{seen} of {times} log lines contain {needle:?}")) }
            })?;
        }
        if !step.log_order.is_empty() {
            wait_for(step_start, &|lines: &[String]| check_order(lines, &step.log_order))?;
        }
        for needle in &step.logs {
            wait_for(step_start, &contains(needle))?;
        }
        if let Some(calls) = &step.calls {
            wait_for(step_start, &|lines: &[String]| {
                let seen: Vec<&str> =
                    lines.iter().filter_map(|l| l.split_once(calls.marker.as_str()).map(|(_, rest)| rest)).collect();
                if seen == calls.lines {
                    Ok(())
                } else {
                    Err(format!("the calls logged were {seen:#?}, not {:#?}", calls.lines))
                }
            })?;
        }
        for needle in &step.absent {
            if let Some(line) = lines(&ferry, &final_log).iter().find(|l| l.contains(needle.as_str())) {
                return Err(fail(format!("a log line contains {needle:?}: {line}")));
            }
        }
        if let Some(prober) = &prober
            && let Err(e) = prober.check()
        {
            return Err(fail(e));
        }
        if !step.stats.is_empty() {
            let admin = *ports.get("admin").ok_or_else(|| fail("stats need {port:admin}".into()))?;
            let text = request(SocketAddr::from(([127, 0, 0, 1], admin)), "GET", "/stats", &[], b"").text();
            for (name, value) in &step.stats {
                let line = format!("{name}: {value}");
                if !text.lines().any(|l| l == line) {
                    return Err(fail(format!("/stats has no line {line:?}:\n{text}")));
                }
            }
        }
    }
    if let Some(prober) = prober {
        prober.finish()?;
    }
    Ok(())
}

/// Sends a request every 100 ms in a thread of its own while a case runs;
/// each must be answered with the expected status.
struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Result<usize, String>>,
    failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// What to ask once more at the end.
    last: (SocketAddr, String, u16),
}

impl Prober {
    fn start(survives: &Survives, ports: &HashMap<String, u16>) -> Result<Prober, String> {
        let port = *ports.get(&survives.port).ok_or_else(|| format!("no port {}", survives.port))?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let (path, status) = (survives.path.clone(), survives.status);
        let last = (address, path.clone(), status);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (stop_flag, failure) = (stop.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let mut answered = 0;
            while !stop_flag.load(std::sync::atomic::Ordering::Relaxed) {
                let got = std::panic::catch_unwind(|| request(address, "GET", &path, &[], b"").status);
                match got {
                    Ok(got) if got == status => answered += 1,
                    Ok(got) => {
                        let message = format!("GET {path} on the surviving listener answered {got}, not {status}");
                        *failure.lock().unwrap() = Some(message.clone());
                        return Err(message);
                    }
                    Err(_) => {
                        let message = format!("GET {path} on the surviving listener was not answered");
                        *failure.lock().unwrap() = Some(message.clone());
                        return Err(message);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(answered)
        });
        Ok(Prober { stop, thread, failed, last })
    }

    fn check(&self) -> Result<(), String> {
        self.failed.lock().unwrap().clone().map_or(Ok(()), Err)
    }

    /// Stops probing; the listener must answer once more now, and every
    /// probe before must have been answered as expected.
    fn finish(self) -> Result<(), String> {
        let (address, path, status) = &self.last;
        let got = request(*address, "GET", path, &[], b"").status;
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().map_err(|_| "the prober panicked".to_owned())??;
        if got != *status {
            return Err(format!("GET {path} on the surviving listener answered {got} at the end, not {status}"));
        }
        Ok(())
    }
}

/// A TCP upstream that accepts connections and never answers.
fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buffer = [0u8; 1024];
                while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
            });
        }
    });
    address
}

/// Writes each chunk (100 ms apart), ends the client's side if
/// `half_close`, reads until the connection closes; or, with
/// `read_exactly`, reads that many bytes and closes.
fn tcp_exchange(
    port: u16,
    chunks: &[String],
    read_exactly: Option<usize>,
    half_close: bool,
) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        stream.write_all(chunk.as_bytes())?;
    }
    if let Some(len) = read_exactly {
        let mut received = vec![0; len];
        stream.read_exact(&mut received)?;
        return Ok(received);
    }
    if half_close {
        match stream.shutdown(Shutdown::Write) {
            // The proxy may have closed the connection already (a plugin
            // that failed on it): what was received tells.
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {}
            result => result?,
        }
    }
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        // A connection the proxy closed with data unread may end in a reset.
        Ok(_) => Ok(received),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(received),
        Err(e) => Err(e),
    }
}

/// A check that some log line contains `needle`.
fn contains(needle: &str) -> impl Fn(&[String]) -> Result<(), String> + '_ {
    move |lines: &[String]| {
        if lines.iter().any(|l| l.contains(needle)) { Ok(()) } else { Err(format!("no log line contains {needle:?}")) }
    }
}

/// Each needle must be in a log line after the line the previous one matched.
fn check_order(lines: &[String], needles: &[String]) -> Result<(), String> {
    let mut from = 0;
    for needle in needles {
        let found = lines[from..].iter().position(|l| l.contains(needle.as_str()));
        let Some(at) = found else {
            return Err(format!("no log line contains {needle:?} after the previous one; log:\n{}", lines.join("\n")));
        };
        from += at + 1;
    }
    Ok(())
}

/// Each case is a test of its own, named `case::<file name>`, plus the
/// coverage-table check; `cargo test --test conformance -- NAME` runs one.
fn main() {
    let mut args = libtest_mimic::Arguments::from_args();
    // libtest's own variable, which libtest-mimic does not read.
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS").ok().and_then(|n| n.parse().ok());
    }
    let host = std::env::var_os("FERRY_CONFORMANCE_HOST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ferry")));
    let other_host = std::env::var_os("FERRY_CONFORMANCE_HOST").is_some();
    let cases = cases();
    assert!(!cases.is_empty(), "no cases in {}", cases_dir().display());
    let mut trials: Vec<libtest_mimic::Trial> = cases
        .into_iter()
        .map(|(name, case)| {
            let host = host.clone();
            let skip = other_host && case.differs_from_envoy.is_some();
            libtest_mimic::Trial::test(format!("case::{name}"), move || {
                run(&case, &host).map_err(|e| format!("{} {e}", case.description.trim()).into())
            })
            .with_ignored_flag(skip)
        })
        .collect();
    trials.push(libtest_mimic::Trial::test("the_coverage_table_points_at_real_cases_and_tests", || {
        the_coverage_table_points_at_real_cases_and_tests();
        Ok(())
    }));
    trials.push(libtest_mimic::Trial::test("the_bad_input_table_is_what_the_cases_check", || {
        the_bad_input_table_is_what_the_cases_check();
        Ok(())
    }));
    libtest_mimic::run(&args, trials).exit();
}

/// Proxy-Wasm's statuses by code.
const STATUS_NAMES: [&str; 13] = [
    "Ok",
    "NotFound",
    "BadArgument",
    "SerializationFailure",
    "ParseFailure",
    "BadExpression",
    "InvalidMemoryAccess",
    "Empty",
    "CasMismatch",
    "ResultMismatch",
    "InternalFailure",
    "BrokenConnection",
    "Unimplemented",
];

/// docs/abi-support.md's "Bad input" table has one row per call of case
/// `bad_input`, with the same status, and every host function has a
/// variant there.
fn the_bad_input_table_is_what_the_cases_check() {
    let doc = std::fs::read_to_string(repo_root().join("docs/abi-support.md")).unwrap();
    let section = doc.split("## Bad input").nth(1).expect("a Bad input section");
    let table: Vec<&str> =
        section.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).skip(2).collect();
    let probes: HashMap<String, Probe> = cases()
        .into_iter()
        .filter_map(|(name, case)| Some((name.strip_prefix("bad_input::")?.to_owned(), case.probe?)))
        .collect();
    for function in ferry_host::HOST_FUNCTIONS {
        let probe = probes.get(function.name).unwrap_or_else(|| panic!("no bad_input variant for {}", function.name));
        assert_eq!(probe.function, function.name, "variant {} probes another function", function.name);
    }
    let mut rows = 0;
    for (name, probe) in &probes {
        for call in &probe.calls {
            let status = STATUS_NAMES
                .get(call.status as usize)
                .unwrap_or_else(|| panic!("{name}: status {} is not Proxy-Wasm's", call.status));
            let row = format!("| `{name}` | {} | `{status}` ({}) |", call.what, call.status);
            assert!(table.contains(&row.as_str()), "docs/abi-support.md lacks the row\n{row}");
            rows += 1;
        }
    }
    assert_eq!(table.len(), rows, "the Bad input table has rows no case checks");
}

/// docs/abi-coverage.md names, for each ABI function and callback, the
/// cases and host tests that cover it; every name must exist and every
/// case must list the function in its `covers`.
fn the_coverage_table_points_at_real_cases_and_tests() {
    let doc = std::fs::read_to_string(repo_root().join("docs/abi-coverage.md")).unwrap();
    let cases: HashMap<String, Case> = cases().into_iter().collect();
    let host_tests = std::fs::read_to_string(repo_root().join("crates/ferry-host/tests/it/abi.rs")).unwrap();
    let mut rows = 0;
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let function = cells[1].trim_matches('`');
        rows += 1;
        for reference in cells[3].split(',').map(str::trim).filter(|r| !r.is_empty() && *r != "-") {
            if let Some(case) = reference.strip_prefix("case ") {
                let case = case.trim_matches('`');
                let found = cases.get(case).unwrap_or_else(|| panic!("{function}: no case {case}"));
                assert!(
                    found.covers.iter().any(|c| c == function),
                    "{function}: case {case} does not list it in covers"
                );
            } else if let Some(test) = reference.strip_prefix("test ") {
                let test = test.trim_matches('`');
                assert!(host_tests.contains(&format!("fn {test}(")), "{function}: no host test {test}");
            } else {
                panic!("{function}: reference {reference:?} is neither `case NAME` nor `test NAME`");
            }
        }
    }
    assert!(rows > 0, "no rows in docs/abi-coverage.md");
    // Every implemented host function has a row with at least one reference.
    for name in ferry_host::implemented() {
        let row =
            doc.lines().find(|l| l.starts_with(&format!("| `{name}` |"))).unwrap_or_else(|| panic!("{name}: no row"));
        let refs = row.split('|').nth(3).unwrap_or("").trim();
        assert!(!refs.is_empty() && refs != "-", "{name}: no case or test covers it");
    }
}
