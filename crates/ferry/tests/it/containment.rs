//! Containment against the real binary: a plugin that loops, exhausts its
//! memory, keeps failing or leaves calls open costs only its own requests;
//! the process keeps serving, and a failed service comes back.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Ferry, cluster, direct_route, file_code, get, listener, plugin, request, run_to_end, temp_file};

/// An HTTP filter item running the hostile plugin under `name`, with
/// `policy` (extra YAML lines of its PluginConfig) and plugin `configuration`.
fn hostile_filter(name: &str, vm_id: &str, configuration: &str, policy: &str) -> String {
    format!(
        r#"          - name: {name}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
{policy}                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: "{configuration}"
                vm_config:
                  vm_id: {vm_id}
                  code: {}
"#,
        file_code(&plugin("hostile_plugin.wasm"))
    )
}

/// A singleton service running the hostile plugin.
fn hostile_service(name: &str, vm_id: &str, configuration: &str, policy: &str) -> String {
    format!(
        r#"- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: true
    config:
      name: {name}
{policy}      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: "{configuration}"
      vm_config:
        vm_id: {vm_id}
        code: {}
"#,
        file_code(&plugin("hostile_plugin.wasm"))
    )
}

/// Two listeners on the worker: `hostile` with the filter, `plain` without.
fn two_listeners(filter: &str) -> String {
    format!(
        "{}{}",
        listener("hostile", 0, &direct_route("/", "ok\n"), filter),
        listener("plain", 0, &direct_route("/", "plain\n"), "")
    )
}

fn config(bootstrap: &str, listeners: &str, extra: &str) -> String {
    format!(
        "{bootstrap}admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\nstatic_resources:\n  listeners:\n{listeners}{extra}"
    )
}

fn admin(ferry: &Ferry, path: &str) -> String {
    let address = ferry.admin.expect("an admin address");
    get(SocketAddr::from(([127, 0, 0, 1], address.port())), path, &[]).text()
}

#[test]
fn a_looping_filter_fails_its_request_at_the_deadline_and_the_worker_keeps_serving() {
    let filter = hostile_filter("hostile", "hostile", "", "");
    let ferry = Ferry::start(
        &config("", &two_listeners(&filter), ""),
        &["--concurrency", "1", "--wasm-callback-deadline-ms", "200"],
    );
    let (hostile, plain) = (ferry.address("hostile"), ferry.address("plain"));
    let looping = std::thread::spawn(move || {
        let started = Instant::now();
        let response = get(hostile, "/loop", &[]);
        (response.status, started.elapsed())
    });
    ferry.wait_for("hostile: looping in the request headers", Duration::from_secs(5));
    // A request to the same worker while the plugin loops is answered once
    // the loop is interrupted: 200 ms of CPU, well within 2 s of wall clock
    // even on a loaded machine.
    let started = Instant::now();
    let answered = get(plain, "/", &[]);
    assert_eq!((answered.status, answered.text().as_str()), (200, "plain\n"));
    assert!(started.elapsed() < Duration::from_secs(2), "answered after {:?}", started.elapsed());
    let (status, took) = looping.join().unwrap();
    assert_eq!(status, 503, "the looping request fails closed");
    assert!(took < Duration::from_secs(2), "its failure came after {took:?}");
    let line = ferry.wait_for("Function: proxy_on_request_headers failed", Duration::from_secs(5));
    assert!(line.contains("plugin 'hostile'") && line.contains("deadline of 200ms"), "{line}");
    // After the backoff a new instance serves the filter again.
    ferry.wait_for("a new VM instance started", Duration::from_secs(5));
    let again = get(hostile, "/", &[]);
    assert_eq!((again.status, again.header("x-hostile")), (200, Some("ok")));
    assert!(admin(&ferry, "/stats").contains("wasm.hostile.deadline_exceeded: 1"));
    assert_eq!(ferry.stop().code(), Some(0));
}

/// CPU time the thread named `name` of process `pid` has used (`/proc`'s
/// utime + stime, in clock ticks of 10 ms).
fn thread_cpu(pid: u32, name: &str) -> Duration {
    let stat = std::fs::read_to_string(thread_dir(pid, name).join("stat")).unwrap();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// `/proc/<pid>/task/<tid>` of the thread named `name` of process `pid`.
fn thread_dir(pid: u32, name: &str) -> std::path::PathBuf {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| task.unwrap().path())
        .find(|task| std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.trim() == name))
        .unwrap_or_else(|| panic!("no thread {name} in process {pid}"))
}

/// `loop {}` fails its request after about a second of the worker's CPU
/// (on an idle machine, about a second of wall clock: within 2 s).
#[test]
fn a_response_callback_that_loops_fails_after_a_second_of_cpu_under_the_default_deadline() {
    let filter = hostile_filter("hostile", "hostile", "", "");
    let ferry = Ferry::start(&config("", &two_listeners(&filter), ""), &["--concurrency", "1"]);
    let before = thread_cpu(ferry.pid(), "worker_0");
    assert_eq!(get(ferry.address("hostile"), "/loop-response", &[]).status, 503);
    let used = thread_cpu(ferry.pid(), "worker_0") - before;
    let window = Duration::from_millis(950)..Duration::from_millis(1500);
    assert!(window.contains(&used), "the worker used {used:?} of CPU before the loop was interrupted");
    let line = ferry.wait_for("Function: proxy_on_response_headers failed: interrupted", Duration::from_secs(5));
    assert!(line.contains("deadline of 1s of CPU time"), "{line}");
}

#[test]
fn an_honest_callback_that_works_for_400_ms_finishes_under_the_default_deadline() {
    let filter = hostile_filter("hostile", "hostile", "", "");
    let ferry = Ferry::start(&config("", &two_listeners(&filter), ""), &["--concurrency", "1"]);
    let response = get(ferry.address("hostile"), "/work/400", &[]);
    assert_eq!((response.status, response.header("x-hostile")), (200, Some("ok")));
    assert!(admin(&ferry, "/stats").contains("wasm.hostile.deadline_exceeded: 0"));
}

/// Time the OS gives other threads is not held against a plugin: a
/// callback with a 400 ms deadline that works for a second of wall clock
/// while its worker thread, niced, shares its CPU with a busy process gets
/// little CPU time and finishes, where a wall-clock deadline kills it.
#[test]
fn a_callback_whose_thread_is_descheduled_is_not_charged_for_the_time_it_waited() {
    let filter = hostile_filter("hostile", "hostile", "", "");
    let ferry = Ferry::start(
        &config("", &two_listeners(&filter), ""),
        &["--concurrency", "1", "--wasm-callback-deadline-ms", "400"],
    );
    let worker = thread_dir(ferry.pid(), "worker_0");
    let tid = worker.file_name().unwrap().to_str().unwrap().to_owned();
    let run = |program: &str, args: &[&str]| {
        let status = std::process::Command::new(program).args(args).stdout(std::process::Stdio::null()).status();
        assert!(status.unwrap().success(), "{program} {args:?}");
    };
    run("taskset", &["-pc", "0", &tid]);
    run("renice", &["-n", "19", "-p", &tid]);
    let mut busy =
        std::process::Command::new("taskset").args(["-c", "0", "sh", "-c", "while :; do :; done"]).spawn().unwrap();
    let response = get(ferry.address("hostile"), "/work/1000", &[]);
    busy.kill().unwrap();
    busy.wait().unwrap();
    assert_eq!((response.status, response.header("x-hostile")), (200, Some("ok")));
    assert!(admin(&ferry, "/stats").contains("wasm.hostile.deadline_exceeded: 0"));
}

/// Envoy opens its listeners once initialisation is done: a client that
/// connects while a plugin's `proxy_on_configure` still runs is refused at
/// once, not left waiting for as long as start-up takes.
#[test]
fn a_client_connecting_while_plugins_start_is_refused_at_once_and_served_after() {
    let filter = hostile_filter("hostile", "hostile", "configure:work", "");
    let yaml = config("", &two_listeners(&filter), "");
    let ferry = Ferry::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_ferry")), &yaml, &["--concurrency", "1"]);
    ferry.wait_for("hostile: working for 3s", Duration::from_secs(30));
    let line = ferry.wait_for("'plain' bound to ", Duration::from_secs(5));
    let address: SocketAddr =
        line.split("'plain' bound to ").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    let address = SocketAddr::from(([127, 0, 0, 1], address.port()));
    let refused = TcpStream::connect_timeout(&address, Duration::from_secs(2)).map(drop);
    let still_starting = !ferry.lines().iter().any(|l| l.contains("starting workers"));
    assert_eq!(refused.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionRefused));
    assert!(still_starting, "the plugin finished starting before the check: it proves nothing");
    ferry.wait_for("starting workers", Duration::from_secs(30));
    assert_eq!(get(address, "/", &[]).text(), "plain\n");
}

/// With the callback deadline switched off nothing interrupts a plugin
/// that never returns, but SIGTERM still ends the process: past the drain
/// time the callback is interrupted and its request fails.
#[test]
fn sigterm_ends_the_process_after_the_drain_time_even_with_a_worker_stuck_in_a_plugin() {
    let filter = hostile_filter("hostile", "hostile", "", "");
    let ferry = Ferry::start(
        &config("", &two_listeners(&filter), ""),
        &["--concurrency", "1", "--wasm-callback-deadline-ms", "0", "--drain-time-s", "1"],
    );
    let hostile = ferry.address("hostile");
    let stuck = std::thread::spawn(move || get(hostile, "/work/3600000", &[]).status);
    let line = ferry.wait_for("hostile: working for", Duration::from_secs(10));
    assert!(line.contains("3600s"), "{line}");
    let started = Instant::now();
    let (status, lines) = ferry.stop_with_log();
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5), "exited {:?} after SIGTERM", started.elapsed());
    assert_eq!(stuck.join().unwrap(), 503, "the stuck request fails");
    assert!(lines.iter().any(|l| l.contains("interrupted: the process is shutting down")), "{lines:#?}");
}

#[test]
fn a_memory_bomb_fails_its_request_and_the_process_stays_under_the_limit() {
    let filter = hostile_filter("hostile", "hostile", "", "");
    let ferry = Ferry::start(
        &config("", &two_listeners(&filter), ""),
        &["--concurrency", "1", "--wasm-memory-limit-mb", "128", "--wasm-callback-deadline-ms", "5000"],
    );
    assert_eq!(get(ferry.address("hostile"), "/bomb", &[]).status, 503);
    ferry.wait_for("Function: proxy_on_request_headers failed", Duration::from_secs(5));
    assert_eq!(get(ferry.address("plain"), "/", &[]).status, 200, "the next request is served");
    let status = std::fs::read_to_string(format!("/proc/{}/status", ferry.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    assert!(peak_kib < (128 + 100) * 1024, "peak RSS {peak_kib} KiB is over the limit + 100 MiB");
    assert!(peak_kib > 100 * 1024, "the bomb did fill its memory: peak RSS {peak_kib} KiB");
}

#[test]
fn start_code_that_loops_fails_start_up_naming_the_plugin() {
    let service = hostile_service("looper", "looper", "loop_on_start", "");
    let config =
        config(&format!("bootstrap_extensions:\n{service}"), &listener("main", 0, &direct_route("/", "ok\n"), ""), "");
    let path = temp_file("loop.yaml", &config);
    for mode in ["serve", "validate"] {
        let started = Instant::now();
        let (status, stdout, stderr) =
            run_to_end(&["-c", path.to_str().unwrap(), "--mode", mode, "--wasm-start-deadline-ms", "300"]);
        assert_eq!(status.code(), Some(1), "{mode}: {stdout}{stderr}");
        assert!(started.elapsed() < Duration::from_secs(20), "{mode}: took {:?}", started.elapsed());
        assert!(stderr.contains("plugin 'looper'") && stderr.contains("deadline of 300ms"), "{mode}: {stderr}");
        assert!(!stdout.contains("OK"), "{mode}: {stdout}");
    }
}

#[test]
fn a_trapped_receiver_restarts_and_gets_every_item_enqueued_while_it_was_down() {
    let receiver = hostile_service(
        "receiver",
        "receiver",
        "receiver",
        "      failure_policy: FAIL_RELOAD\n      reload_config: { backoff: { base_interval: 1s } }\n",
    );
    let sender = hostile_filter("sender", "sender", "sender", "");
    let config = config(
        &format!("bootstrap_extensions:\n{receiver}"),
        &listener("main", 0, &direct_route("/", "ok\n"), &sender),
        "",
    );
    let ferry = Ferry::start(&config, &["--concurrency", "2"]);
    let address = ferry.address("main");
    assert_eq!(get(address, "/a", &[]).status, 200);
    ferry.wait_for("hostile receiver dequeued a", Duration::from_secs(5));
    assert_eq!(get(address, "/trap", &[]).status, 200, "the sender is not the one that traps");
    ferry.wait_for("Function: proxy_on_queue_ready failed", Duration::from_secs(5));
    // Enqueued while the receiver is down: kept, and each dequeued once later.
    for item in ["b", "c", "d"] {
        assert_eq!(get(address, &format!("/{item}"), &[]).status, 200);
    }
    ferry.wait_for("a new VM instance started", Duration::from_secs(10));
    for item in ["b", "c", "d"] {
        ferry.wait_for(&format!("hostile receiver dequeued {item}"), Duration::from_secs(10));
    }
    let stats = admin(&ferry, "/stats");
    for line in [
        "ferry.shared_queue.receiver.items.enqueued: 5",
        "ferry.shared_queue.receiver.items.dequeued: 5",
        "ferry.shared_queue.receiver.items.depth: 0",
        "wasm.receiver.vm_reload_success: 1",
    ] {
        assert!(stats.lines().any(|l| l == line), "no {line:?} in /stats:\n{stats}");
    }
    let (_, log) = ferry.stop_with_log();
    for item in ["b", "c", "d"] {
        let times = log.iter().filter(|l| l.ends_with(&format!("hostile receiver dequeued {item}"))).count();
        assert_eq!(times, 1, "{item} dequeued {times} times");
    }
}

#[test]
fn a_plugin_that_keeps_failing_is_held_failed_and_reported() {
    let runtime = r#"bootstrap_extensions:
- name: ferry.wasm_runtime
  typed_config:
    "@type": type.googleapis.com/ferry.config.v1.WasmRuntime
    hold_failed: { failures: 3, window: 60s }
"#;
    let policy = "                failure_policy: FAIL_RELOAD\n                reload_config: { backoff: { base_interval: 0.05s, max_interval: 0.2s } }\n";
    let filter = hostile_filter("hostile", "hostile", "", policy);
    let ferry = Ferry::start(&config(runtime, &two_listeners(&filter), ""), &["--concurrency", "1"]);
    let address = ferry.address("hostile");
    for failed in 1..=3 {
        assert_eq!(get(address, "/trap", &[]).status, 503);
        // After the backoff a new instance takes the next request (the
        // third failure holds the plugin failed instead).
        if failed < 3 {
            ferry.wait_for_count("a new VM instance started", failed, Duration::from_secs(5));
        }
    }
    let line = ferry.wait_for("held failed", Duration::from_secs(5));
    assert!(line.contains("plugin 'hostile'") && line.contains("3 times within 60s"), "{line}");
    assert_eq!(get(address, "/", &[]).status, 503, "held failed: no more restarts");
    let plugins = admin(&ferry, "/plugins");
    assert!(
        plugins.contains("hostile thread=worker_0 vm_id=hostile policy=FAIL_RELOAD state=held_failed"),
        "{plugins}"
    );
    assert!(admin(&ferry, "/stats").lines().any(|l| l == "wasm.hostile.held_failed: 1"));
    assert_eq!(get(ferry.address("plain"), "/", &[]).status, 200, "other traffic is served");
}

/// An upstream that accepts connections and never answers; counts how
/// many are open.
fn silent_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let open = counter.clone();
            open.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buffer = [0u8; 1024];
                while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (address, open)
}

#[test]
fn an_http_call_without_a_timeout_ends_with_the_stream_that_made_it() {
    let (slow, open) = silent_upstream();
    let filter = hostile_filter("hostile", "hostile", "", "");
    let clusters = format!("  clusters:\n{}", cluster("slow", slow));
    let ferry = Ferry::start(&config("", &two_listeners(&filter), &clusters), &["--concurrency", "1"]);
    let address = ferry.address("hostile");
    let clients: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut client = TcpStream::connect(address).unwrap();
            client.write_all(b"GET /call HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            client
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while open.load(Ordering::SeqCst) < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(open.load(Ordering::SeqCst), 10, "each paused stream has its call open");
    // The clients go away: their calls are cancelled and the upstream
    // connections closed.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(open.load(Ordering::SeqCst), 0, "calls still open after their streams ended");
    assert_eq!(request(ferry.address("plain"), "GET", "/", &[], b"").status, 200);
}

#[test]
fn a_service_looping_in_its_timer_is_interrupted_restarted_and_shut_down() {
    let service = hostile_service(
        "ticker",
        "ticker",
        "loop_on_tick",
        "      failure_policy: FAIL_RELOAD\n      reload_config: { backoff: { base_interval: 0.2s } }\n",
    );
    let config =
        config(&format!("bootstrap_extensions:\n{service}"), &listener("main", 0, &direct_route("/", "ok\n"), ""), "");
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    ferry.wait_for("Function: proxy_on_tick failed: interrupted", Duration::from_secs(5));
    ferry.wait_for("a new VM instance started", Duration::from_secs(5));
    assert_eq!(get(ferry.address("main"), "/", &[]).status, 200);
    let started = Instant::now();
    assert_eq!(ferry.stop().code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5), "SIGTERM took {:?}", started.elapsed());
}
