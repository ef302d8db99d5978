//! Test support: start the real `ferry` binary on free ports, talk HTTP to
//! it, and read its log.

#![allow(dead_code)]

pub mod grpc;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The log pattern tests use: thread id, level, logger, message.
pub const LOG_FORMAT: &str = "[%t][%l][%n] %v";

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A plugin built by `cargo xtask build-plugins`.
pub fn plugin(file: &str) -> PathBuf {
    let dir = std::env::var_os("FERRY_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/wasm32-wasip1/release"));
    let path = dir.join(file);
    assert!(path.exists(), "{} is missing: run `cargo xtask build-plugins` first", path.display());
    path
}

/// A Go test plugin (`go_hello.wasm`, `go_abi.wasm`).
pub fn go_plugin(file: &str) -> PathBuf {
    let path = repo_root().join("target/go-plugins").join(file);
    assert!(path.exists(), "{} is missing: run `cargo xtask build-plugins` (needs Go) first", path.display());
    path
}

/// Writes `text` to a fresh temporary file and returns its path.
pub fn temp_file(name: &str, text: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("ferry-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{name}", COUNTER.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, text).unwrap();
    path
}

/// The example's configuration with its ports set to 0 (any free port) and
/// its module paths made absolute.
pub fn example_config() -> String {
    std::fs::read_to_string(repo_root().join("examples/shared_queue/envoy.yaml"))
        .unwrap()
        .replace("port_value: 18000", "port_value: 0")
        .replace("port_value: 8001", "port_value: 0")
        .replace(
            "./target/wasm32-wasip1/release/shared_queue_receiver.wasm",
            plugin("shared_queue_receiver.wasm").to_str().unwrap(),
        )
        .replace(
            "./target/wasm32-wasip1/release/shared_queue_sender.wasm",
            plugin("shared_queue_sender.wasm").to_str().unwrap(),
        )
}

#[derive(Default)]
struct Log {
    lines: Vec<String>,
    closed: bool,
}

/// A running ferry process and its log (standard error).
pub struct Ferry {
    child: Child,
    log: Arc<(Mutex<Log>, Condvar)>,
    /// Listener name → bound address.
    pub listeners: HashMap<String, SocketAddr>,
    /// The admin address, if configured.
    pub admin: Option<SocketAddr>,
}

/// Runs ferry with `args` to completion, returning its status and log.
pub fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry")).args(args).output().unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `binary` (ferry or another host) on `config` until it exits (at
/// most 60 s), returning its status and log; for configurations it must refuse.
pub fn run_to_end_binary(binary: &Path, config: &str, extra_args: &[&str]) -> (ExitStatus, String) {
    let mut child = spawn_host(binary, config, extra_args);
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

/// Starts `binary` with Envoy's command line on `config`, log on a pipe.
fn spawn_host(binary: &Path, config: &str, extra_args: &[&str]) -> Child {
    let path = temp_file("envoy.yaml", config);
    Command::new(binary)
        .arg("-c")
        .arg(&path)
        .args(["--log-format", LOG_FORMAT])
        .args(extra_args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the host")
}

impl Ferry {
    /// Starts ferry on `config` and waits until its workers accept traffic.
    pub fn start(config: &str, extra_args: &[&str]) -> Ferry {
        Ferry::start_binary(Path::new(env!("CARGO_BIN_EXE_ferry")), config, extra_args)
    }

    /// Starts `binary` (ferry, or another host with Envoy's command line)
    /// on `config`, and waits for Envoy's "starting workers" log line.
    pub fn start_binary(binary: &Path, config: &str, extra_args: &[&str]) -> Ferry {
        let mut ferry = Ferry::spawn(binary, config, extra_args);
        ferry.wait_for("starting workers", Duration::from_secs(60));
        for line in ferry.lines() {
            if let Some(rest) = line.split("listener '").nth(1) {
                let (name, address) = rest.split_once("' listening on ").unwrap();
                ferry.listeners.insert(name.to_owned(), address.parse().unwrap());
            }
            if let Some(address) = line.split("admin address: ").nth(1) {
                ferry.admin = Some(address.parse().unwrap());
            }
        }
        ferry
    }

    /// Starts `binary` on `config` without waiting for anything.
    pub fn spawn(binary: &Path, config: &str, extra_args: &[&str]) -> Ferry {
        let mut child = spawn_host(binary, config, extra_args);
        let log = Arc::new((Mutex::new(Log::default()), Condvar::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.0.lock().unwrap().lines.push(line);
                sink.1.notify_all();
            }
            sink.0.lock().unwrap().closed = true;
            sink.1.notify_all();
        });
        Ferry { child, log, listeners: HashMap::new(), admin: None }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of listener `name`, on loopback.
    pub fn address(&self, name: &str) -> SocketAddr {
        let bound = self.listeners[name];
        SocketAddr::from(([127, 0, 0, 1], bound.port()))
    }

    /// Every log line so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.0.lock().unwrap().lines.clone()
    }

    /// Waits until a log line contains `needle`; panics with the log if not.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_until(timeout, |lines| lines.iter().find(|l| l.contains(needle)).cloned()).unwrap_or_else(|| {
            panic!("no log line contains {needle:?} within {timeout:?}; log:\n{}", self.lines().join("\n"))
        })
    }

    /// Waits until a log line contains `needle`; `None` if none does in time.
    pub fn wait_until_contains(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_until(timeout, |lines| lines.iter().find(|l| l.contains(needle)).cloned())
    }

    /// Waits until `count` log lines contain `needle`.
    pub fn wait_for_count(&self, needle: &str, count: usize, timeout: Duration) {
        self.wait_until(timeout, |lines| (lines.iter().filter(|l| l.contains(needle)).count() >= count).then_some(()))
            .unwrap_or_else(|| {
                panic!(
                    "fewer than {count} log lines contain {needle:?} within {timeout:?}; log:\n{}",
                    self.lines().join("\n")
                )
            })
    }

    fn wait_until<T>(&self, timeout: Duration, mut found: impl FnMut(&[String]) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.log;
        let mut log = lock.lock().unwrap();
        loop {
            if let Some(t) = found(&log.lines) {
                return Some(t);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || log.closed {
                return None;
            }
            log = cond.wait_timeout(log, left).unwrap().0;
        }
    }

    /// Sends SIGTERM, waits for the exit status and returns it with the
    /// whole log (shutdown lines included).
    pub fn stop_with_log(self) -> (ExitStatus, Vec<String>) {
        let log = self.log.clone();
        let status = self.stop();
        let (lock, cond) = &*log;
        let mut state = lock.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !state.closed && Instant::now() < deadline {
            state = cond.wait_timeout(state, Duration::from_millis(100)).unwrap().0;
        }
        (status, state.lines.clone())
    }

    /// The exit status, if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ferry did not exit within 10 s of SIGTERM");
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body came whole (false: the stream was cut after the head).
    pub complete: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One GET on a fresh connection, headers as given (Host first if present).
pub fn get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(address, "GET", path, headers, b"")
}

/// One HTTP/1.1 request on a fresh connection, with a `content-length` body
/// when `body` is not empty.
pub fn request(address: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: localhost:{}\r\n", address.port()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    read_response(&mut stream)
}

/// A server on a thread of its own: a current-thread runtime accepting on
/// a free port and running `connection` for each accepted stream as a
/// task of its own. Returns the address.
pub fn serve_on_thread<F, Fut>(connection: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                tokio::spawn(connection(stream));
            }
        });
    });
    address
}

/// A hyper HTTP/1 upstream on a thread of its own, answering each request
/// with `handler`; returns its address.
pub fn hyper_upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>> + Send + 'static,
{
    hyper_server(handler, false)
}

/// An HTTP/1.1 upstream that answers each request with 200, a chunked
/// body whose first piece is `first`, and then nothing, ever (a stalled
/// stream). Returns its address.
pub fn hyper_streaming_upstream(first: Vec<u8>) -> SocketAddr {
    /// A body that yields one piece, then never ends.
    struct Stalls(Option<bytes::Bytes>);
    impl hyper::body::Body for Stalls {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
            match self.0.take() {
                Some(piece) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(piece)))),
                None => std::task::Poll::Pending,
            }
        }
    }
    serve_on_thread(move |stream| {
        let first = bytes::Bytes::from(first.clone());
        async move {
            let service = hyper::service::service_fn(move |_request| {
                let body = Stalls(Some(first.clone()));
                async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        }
    })
}

/// An HTTP/2 (h2c, prior knowledge) upstream that answers each request
/// with its body (`END_STREAM` on the DATA frame). Returns its address.
pub fn h2_echo_server() -> SocketAddr {
    hyper_server(
        |request: http::Request<hyper::body::Incoming>| async move {
            use http_body_util::BodyExt as _;
            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            http::Response::new(http_body_util::Full::new(body))
        },
        true,
    )
}

/// A hyper server on a thread of its own, HTTP/1 or h2c, answering each
/// request with `handler`.
fn hyper_server<F, Fut>(handler: F, http2: bool) -> SocketAddr
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>> + Send + 'static,
{
    serve_on_thread(move |stream| {
        let handler = handler.clone();
        async move {
            let service = hyper::service::service_fn(move |request| {
                let response = handler(request);
                async move { Ok::<_, std::convert::Infallible>(response.await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if http2 {
                let executor = hyper_util::rt::TokioExecutor::new();
                let _ = hyper::server::conn::http2::Builder::new(executor).serve_connection(io, service).await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            }
        }
    })
}

/// [`hyper_upstream`] over HTTP/2 (h2c, prior knowledge).
pub fn hyper_h2_upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>> + Send + 'static,
{
    hyper_server(handler, true)
}

/// An upstream for tests: answers each request with 200 and `echo: ` plus
/// the request body, then closes the connection. Returns its address.
pub fn echo_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                let mut chunked = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end().to_ascii_lowercase();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(value) = line.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    chunked |= line == "transfer-encoding: chunked";
                }
                let body = if chunked {
                    read_chunked(&mut reader).0
                } else {
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    body
                };
                let reply = [b"echo: ".as_slice(), &body].concat();
                let mut stream = stream;
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", reply.len());
                // One write, so the body arrives in one piece.
                let _ = stream.write_all(&[head.as_bytes(), &reply].concat());
            });
        }
    });
    address
}

/// An upstream that answers each request with `echo: ` and its body,
/// framed by closing the connection (no length, not chunked), as an
/// HTTP/1.1 server may. Returns its address.
pub fn close_delimited_server() -> SocketAddr {
    serve_blocking(|stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let head = read_head(&mut reader);
        let body = read_sized_body(&mut reader, &head);
        let mut stream = stream;
        // One write: the body reaches ferry as one piece, as the
        // conformance case's exact call sequence expects.
        let reply = [&b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\necho: "[..], &body].concat();
        let _ = stream.write_all(&reply);
    })
}

/// A server of plain threads: `connection` runs on a thread of its own for
/// each accepted stream. Returns the address.
fn serve_blocking(connection: fn(TcpStream)) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || connection(stream));
        }
    });
    address
}

/// The body a request head announces with `content-length` (none: empty).
fn read_sized_body(reader: &mut impl Read, head: &[String]) -> Vec<u8> {
    let length =
        head.iter().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    body
}

/// One HTTP/2 request (h2c with prior knowledge, through hyper's client) on
/// a fresh connection: the body in one DATA frame that ends the stream, or
/// with `trailers` the stream ends on a trailers frame; no body, on the
/// HEADERS frame. The response's trailers come back as `trailer:NAME` headers.
pub fn h2_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    trailers: &[(&str, &str)],
) -> Response {
    use http_body_util::BodyExt as _;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let mut frames = std::collections::VecDeque::new();
        if !body.is_empty() {
            frames.push_back(hyper::body::Frame::data(bytes::Bytes::copy_from_slice(body)));
        }
        if !trailers.is_empty() {
            let mut map = http::HeaderMap::new();
            for (name, value) in trailers {
                map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            }
            frames.push_back(hyper::body::Frame::trailers(map));
        }
        let mut request =
            http::Request::builder().method(method).uri(format!("http://localhost:{}{path}", address.port()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Frames(frames)).unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let mut headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let collected = response.into_body().collect().await.unwrap();
        if let Some(trailers) = collected.trailers() {
            for (name, value) in trailers {
                headers.push((format!("trailer:{name}"), value.to_str().unwrap_or_default().to_owned()));
            }
        }
        Response { status, headers, body: collected.to_bytes().to_vec(), complete: true }
    })
}

/// A body that yields the given frames; it reports its end as soon as the
/// last is taken, so hyper ends the stream on that frame.
pub struct Frames(pub std::collections::VecDeque<hyper::body::Frame<bytes::Bytes>>);

impl hyper::body::Body for Frames {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// One item of `clusters:` with a single endpoint.
pub fn cluster(name: &str, address: SocketAddr) -> String {
    format!(
        "  - name: {name}\n    connect_timeout: 1s\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
        address.ip(),
        address.port()
    )
}

/// Reads a response framed by `content-length` or chunked.
fn read_response(stream: &mut TcpStream) -> Response {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) {
        let (body, _, complete) = try_read_chunked(&mut reader);
        return Response { status, headers, body, complete };
    }
    let length: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; length];
    let complete = reader.read_exact(&mut body).is_ok();
    Response { status, headers, body, complete }
}

/// A whole configuration with one listener, `main` on a free port, whose
/// filter chain ends in an HTTP connection manager (`stat_prefix: main`)
/// with a virtual host `all` for every domain. Each part is YAML at its
/// place's indentation: `top` before `static_resources` (column 0),
/// `chain` in the filter chain (column 6, e.g. a `transport_socket`),
/// `manager` in the connection manager (column 10), `route_config` in
/// the route configuration (column 12), the route items `routes`
/// (column 14), the HTTP filter items `filters` before the router
/// (column 10) and the cluster items `clusters` (column 2).
#[derive(Default)]
pub struct ManagerConfig<'a> {
    pub top: &'a str,
    pub chain: &'a str,
    pub manager: &'a str,
    pub route_config: &'a str,
    pub routes: &'a str,
    pub filters: &'a str,
    pub clusters: &'a str,
}

impl ManagerConfig<'_> {
    pub fn yaml(&self) -> String {
        let ManagerConfig { top, chain, manager, route_config, routes, filters, clusters } = self;
        format!(
            r#"{top}static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
{manager}          route_config:
{route_config}            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}
          http_filters:
{filters}          - name: envoy.filters.http.router
{chain}  clusters:
{clusters}"#
        )
    }
}

/// The body callbacks the body_rewrite test plugin logged, in order:
/// `request body N end_of_stream=B` / `response body ...`.
pub fn body_calls(ferry: &Ferry) -> Vec<String> {
    ferry
        .lines()
        .iter()
        .filter(|l| l.contains(" end_of_stream="))
        .filter_map(|l| l.find("request body ").or_else(|| l.find("response body ")).map(|at| l[at..].to_owned()))
        .collect()
}

/// An admin endpoint on a free port, for [`ManagerConfig::top`].
pub const ADMIN: &str = "admin:\n  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }\n";

/// One item of `listeners:` (indented for `static_resources.listeners`): a
/// listener on 127.0.0.1:`port` whose connection manager has the route
/// items `routes` (each starting `              - match:`), then the HTTP
/// filter items `filters` (each starting `          - name:`), then the router.
pub fn listener(name: &str, port: u16, routes: &str, filters: &str) -> String {
    format!(
        r#"  - name: {name}
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
{routes}
          http_filters:
{filters}
          - name: envoy.filters.http.router
"#
    )
}

/// A route item answering paths under `prefix` with 200 and `body`.
pub fn direct_route(prefix: &str, body: &str) -> String {
    format!(
        "              - match: {{ prefix: {prefix:?} }}\n                direct_response: {{ status: 200, body: {{ inline_string: {body:?} }} }}\n"
    )
}

/// An HTTP filter item running a Wasm plugin; `code` is the flow mapping
/// of `vm_config.code`, e.g. `{ local: { filename: "x.wasm" } }`.
pub fn wasm_filter(name: &str, vm_id: &str, code: &str) -> String {
    format!(
        r#"          - name: {name}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                vm_config:
                  vm_id: {vm_id}
                  code: {code}
"#
    )
}

/// [`wasm_filter`] with a plugin configuration (a string).
pub fn wasm_filter_with(name: &str, vm_id: &str, configuration: &str, code: &str) -> String {
    format!(
        r#"          - name: {name}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: {configuration} }}
                vm_config:
                  vm_id: {vm_id}
                  code: {code}
"#
    )
}

/// A module whose filter does nothing: every request goes through.
pub const NOOP_FILTER: &str = r#"(module (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#;

/// An HTTP filter item running [`NOOP_FILTER`]; for tests that need a Wasm
/// filter in the chain (the connection manager's general path) and no more.
pub fn noop_filter() -> String {
    wasm_filter("noop", "noop", &format!("{{ local: {{ inline_string: {NOOP_FILTER:?} }} }}"))
}

/// WAT for a bump allocator from `start` up: `proxy_on_memory_allocate`,
/// for test modules that receive more than one value from the host.
pub fn wat_bump_allocator(start: u32) -> String {
    format!(
        r#"(global $next (mut i32) (i32.const {start}))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (local.get $at))"#
    )
}

/// `vm_config.code` for a module file.
pub fn file_code(path: &std::path::Path) -> String {
    format!("{{ local: {{ filename: {:?} }} }}", path.display().to_string())
}

/// A TCP upstream for tests: sends back every byte it receives, and closes
/// its side when the client ends its own. Returns its address.
pub fn tcp_echo_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let mut writer = stream;
                let _ = std::io::copy(&mut reader, &mut writer);
                let _ = writer.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    address
}

/// One item of `listeners:`: a listener on 127.0.0.1:`port` running the
/// network Wasm filter `name` (module `code`, see [`wasm_filter`]) in front
/// of a `tcp_proxy` to `cluster`; `policy` is the plugin's failure policy
/// (`failure_policy: ...` in flow style, e.g. `{ failure_policy: FAIL_OPEN }`
/// merged in as `failure_policy` and `reload_config` fields).
pub fn tcp_listener(name: &str, port: u16, code: &str, policy: &str, cluster: &str) -> String {
    format!(
        r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config:
            name: {name}
{policy}            vm_config: {{ vm_id: {name}, code: {code} }}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: {cluster}
"#
    )
}

/// A port that was free a moment ago (for configurations that must name
/// the same port twice, such as a cluster pointing at the admin endpoint).
pub fn free_port() -> u16 {
    reserve_port().local_addr().unwrap().port()
}

/// A listening socket on a free port below the kernel's ephemeral range,
/// held until the caller drops it just before the host binds the port.
/// Below that range no client connection of a test running meanwhile can
/// take the port as its own (a port from `bind(0)` could be, and the host
/// would then fail to listen); each port is handed out once per process.
pub fn reserve_port() -> std::net::TcpListener {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(32768);
    let (low, span) = (10_000, ephemeral.saturating_sub(10_000).max(1000));
    // Test binaries run one at a time; start each at its own place anyway.
    let start = (std::process::id() as usize * 7919) % span;
    for _ in 0..span {
        let port = low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if let Ok(socket) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return socket;
        }
    }
    panic!("no free port between {low} and {}", low + span)
}

/// A counter or gauge from `ferry`'s admin endpoint (`/stats`).
pub fn stat(ferry: &Ferry, name: &str) -> i64 {
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], ferry.admin.expect("admin").port()));
    let text = request(admin, "GET", &format!("/stats?filter={name}$"), &[], b"").text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// Reads a chunked body and its trailers from `reader`.
pub fn read_chunked(reader: &mut impl BufRead) -> (Vec<u8>, Vec<String>) {
    let (body, trailers, complete) = try_read_chunked(reader);
    assert!(complete, "the chunked body was cut after {} bytes", body.len());
    (body, trailers)
}

/// A chunked body and its trailers, and whether it came whole (the last
/// chunk arrived) rather than cut by the connection's end.
pub fn try_read_chunked(reader: &mut impl BufRead) -> (Vec<u8>, Vec<String>, bool) {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return (body, Vec::new(), false);
        }
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
        if size == 0 {
            break;
        }
        let mut chunk = vec![0; size + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return (body, Vec::new(), false);
        }
        body.extend_from_slice(&chunk[..size]);
    }
    let mut trailers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return (body, trailers, false);
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        trailers.push(line.to_ascii_lowercase());
    }
    (body, trailers, true)
}

/// Reads a message head; returns its lower-cased header lines.
pub fn read_head(reader: &mut impl BufRead) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        // A connection reset ends the head as its close does.
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        lines.push(line.to_ascii_lowercase());
    }
    lines
}

/// An upstream that answers each request (chunked or with a length) with
/// its body, chunked, and its trailers sent back as response trailers
/// (announced in a `trailer` header). Returns its address.
pub fn trailer_echo_server() -> SocketAddr {
    serve_blocking(|stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let head = read_head(&mut reader);
        let (body, trailers) = if head.iter().any(|l| l == "transfer-encoding: chunked") {
            read_chunked(&mut reader)
        } else {
            (read_sized_body(&mut reader, &head), Vec::new())
        };
        let names: Vec<&str> = trailers.iter().filter_map(|t| t.split(':').next()).collect();
        let mut reply = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n");
        if !names.is_empty() {
            reply.push_str(&format!("Trailer: {}\r\n", names.join(", ")));
        }
        reply.push_str("\r\n");
        let mut out = reply.into_bytes();
        if !body.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
            out.extend_from_slice(&body);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for trailer in &trailers {
            out.extend_from_slice(format!("{trailer}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        let mut stream = stream;
        let _ = stream.write_all(&out);
    })
}

/// Sends a chunked request with `trailers` (and `te: trailers`); returns
/// the response, with its trailers as `trailer:NAME` headers.
pub fn request_with_trailers(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    trailers: &[(&str, &str)],
) -> Response {
    let chunks: Vec<&[u8]> = if body.is_empty() { Vec::new() } else { vec![body] };
    request_chunked(address, method, path, headers, &chunks, trailers)
}

/// Sends a chunked request, each of `chunks` written 200 ms after the one
/// before, then the last chunk with `trailers` (and `te: trailers` if there
/// are any); returns the response, with its trailers as `trailer:NAME` headers.
pub fn request_chunked(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
    trailers: &[(&str, &str)],
) -> Response {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let names: Vec<&str> = trailers.iter().map(|(n, _)| *n).collect();
    let mut extra: String = headers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
    if !trailers.is_empty() {
        extra.push_str(&format!("TE: trailers\r\nTrailer: {}\r\n", names.join(", ")));
    }
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut out = format!("{:x}\r\n", chunk.len()).into_bytes();
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        stream.write_all(&out).unwrap();
    }
    let mut out = b"0\r\n".to_vec();
    for (name, value) in trailers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    stream.write_all(&out).unwrap();
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader);
    let Some(status_line) = head.first() else {
        // Closed (reset) before a response.
        return Response { status: 0, headers: Vec::new(), body: Vec::new(), complete: false };
    };
    let status =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad head {head:?}"));
    let mut headers: Vec<(String, String)> = head[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let (body, complete) = if headers.iter().any(|(n, v)| n == "transfer-encoding" && v == "chunked") {
        let (body, trailers, complete) = try_read_chunked(&mut reader);
        for line in trailers {
            if let Some((n, v)) = line.split_once(':') {
                headers.push((format!("trailer:{}", n.trim()), v.trim().to_owned()));
            }
        }
        (body, complete)
    } else {
        let mut body = Vec::new();
        let _ = reader.read_to_end(&mut body);
        (body, true)
    };
    Response { status, headers, body, complete }
}
