//! The shared_queue example spread over a fleet: two sender processes and
//! two receiver processes of the real binary, their queue bridged through a
//! real `nats-server -js` (installed by `cargo xtask test` from Debian's
//! packages). Every request carries an `x-item` header with a unique id; the
//! receivers' `dequeued data` lines are counted per id.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Ferry, free_port, plugin, request, temp_file};

/// Items a receiver fetches ahead, in these tests.
const FETCH_AHEAD: usize = 64;
/// Most items the bridge packs into one broker message: a receiver holds at
/// most `FETCH_AHEAD` items rounded up to its last message.
const PACK_ITEMS: usize = 64;
/// Most items a receiver holds unacknowledged.
const HELD_AT_MOST: usize = FETCH_AHEAD + PACK_ITEMS - 1;
/// Items a sender publishes before awaiting their confirmations, in these tests.
const PUBLISH_BATCH: usize = 64;

/// A `nats-server -js` on a free port, its store in a fresh directory.
struct Broker {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    /// Extra command-line arguments (e.g. `--user`, `--pass`).
    args: Vec<String>,
}

fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FERRY_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nats-server")).find(|f| f.is_file()))
        .unwrap_or_default();
    on_path.or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|f| f.is_file())).unwrap_or_else(|| {
        panic!("nats-server is missing: `cargo xtask test` installs it (apt-get install nats-server)")
    })
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(&[])
    }

    fn start_with(args: &[&str]) -> Broker {
        let store = std::env::temp_dir().join(format!("ferry-nats-{}-{}", std::process::id(), free_port()));
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut broker = Broker { child: None, port: free_port(), store, args };
        broker.restart();
        broker
    }

    /// Starts the server (again) on the same port and store.
    fn restart(&mut self) {
        let child = Command::new(nats_server_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {} within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server as an operator restarting it would (SIGTERM): it
    /// writes what it holds and closes its clients' connections.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Kills the server outright (SIGKILL): no goodbye to its clients.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// The bridge settings the tests give every process.
fn bridge_settings(config: String, broker: &Broker) -> String {
    config.replace("nats://127.0.0.1:4222", &format!("nats://127.0.0.1:{}", broker.port)).replace(
        "      durable: receivers",
        &format!(
            "      durable: receivers\n      ack_wait: 3s\n      fetch_ahead: {FETCH_AHEAD}\n      publish_batch: {PUBLISH_BATCH}\n      publish_timeout: 2s"
        ),
    )
}

/// A file of the fleet example with its ports set to 0 (any free port) and
/// its module paths made absolute.
fn example(file: &str) -> String {
    let mut config =
        std::fs::read_to_string(common::repo_root().join("examples/shared_queue_fleet").join(file)).unwrap();
    for port in [18010, 18011, 8010, 8011, 8012] {
        config = config.replace(&format!("port_value: {port}"), "port_value: 0");
    }
    for module in ["shared_queue_sender.wasm", "shared_queue_receiver.wasm"] {
        config = config.replace(&format!("./target/wasm32-wasip1/release/{module}"), plugin(module).to_str().unwrap());
    }
    config
}

/// A sender of the fleet example on free ports.
fn sender(broker: &Broker, file: &str) -> Ferry {
    let config = example(file);
    // The senders' own lines (one per header) are not what is counted.
    Ferry::start(&bridge_settings(config, broker), &["--concurrency", "2", "--component-log-level", "wasm:warn"])
}

/// A receiver of the fleet example on a free admin port.
fn receiver(broker: &Broker) -> Ferry {
    let config = example("receiver.yaml");
    Ferry::start(&bridge_settings(config, broker), &["--concurrency", "1"])
}

/// The ids of the `x-item` headers a receiver dequeued, in its log.
fn received_ids(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.split("dequeued data: {\"key\": \"x-item\",\"value\": \"").nth(1))
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect()
}

/// Sends one request with `x-item: <id>` for each id, from `clients`
/// threads, through hyper's client on kept-alive connections; every
/// response must be the example's 200.
fn send_items(address: SocketAddr, ids: std::ops::Range<u64>, clients: u64) {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let ids: Vec<u64> = ids.clone().filter(|id| id % clients == c).collect();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async move {
                    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                        .build_http::<http_body_util::Empty<bytes::Bytes>>();
                    for id in ids {
                        let request = http::Request::get(format!("http://{address}/"))
                            .header("x-item", id.to_string())
                            .body(http_body_util::Empty::new())
                            .unwrap();
                        let response = client.request(request).await.unwrap();
                        assert_eq!(response.status(), 200, "item {id}");
                    }
                });
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// A counter or gauge from a process's `/stats`.
fn stat(ferry: &Ferry, name: &str) -> u64 {
    let admin = SocketAddr::from(([127, 0, 0, 1], ferry.admin.expect("admin").port()));
    let text = request(admin, "GET", &format!("/stats?filter={name}$"), &[], b"").text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {text:?}"))
        .parse()
        .unwrap()
}

const QUEUE: &str = "ferry.queue_bridge.receiver.http_headers";

/// How often each id was dequeued, over every receiver's log; waits (at
/// most `timeout`) until each of `0..count` was dequeued at least once.
fn wait_for_every_item(
    receivers: &[&Ferry],
    extra_logs: &[Vec<String>],
    count: u64,
    timeout: Duration,
) -> HashMap<u64, usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut seen: HashMap<u64, usize> = HashMap::new();
        let logs = receivers.iter().map(|r| r.lines()).chain(extra_logs.iter().cloned());
        for id in logs.flat_map(|lines| received_ids(&lines)) {
            *seen.entry(id).or_default() += 1;
        }
        let missing: Vec<u64> = (0..count).filter(|id| !seen.contains_key(id)).collect();
        if missing.is_empty() {
            return seen;
        }
        if Instant::now() >= deadline {
            for r in receivers {
                let admin = SocketAddr::from(([127, 0, 0, 1], r.admin.unwrap().port()));
                eprintln!("receiver: {}", request(admin, "GET", "/queue_bridge", &[], b"").text());
                eprintln!(
                    "log tail: {:?}",
                    r.lines().iter().rev().filter(|l| !l.contains("dequeued")).take(20).collect::<Vec<_>>()
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} items never reached a receiver within {timeout:?}, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn duplicates(seen: &HashMap<u64, usize>) -> usize {
    seen.values().map(|n| n - 1).sum()
}

#[test]
fn every_item_reaches_exactly_one_receiver_while_nothing_fails() {
    let broker = Broker::start();
    let receivers = [receiver(&broker), receiver(&broker)];
    let senders = [sender(&broker, "sender_a.yaml"), sender(&broker, "sender_b.yaml")];
    const ITEMS: u64 = 2000;
    let (a, b) = (senders[0].address("main"), senders[1].address("main"));
    let to_a = std::thread::spawn(move || send_items(a, 0..ITEMS / 2, 4));
    send_items(b, ITEMS / 2..ITEMS, 4);
    to_a.join().unwrap();

    let seen = wait_for_every_item(&[&receivers[0], &receivers[1]], &[], ITEMS, Duration::from_secs(60));
    assert_eq!(duplicates(&seen), 0, "an item reached a receiver twice");
    // The consumer is shared: both receivers took part.
    for (i, r) in receivers.iter().enumerate() {
        assert!(!received_ids(&r.lines()).is_empty(), "receiver {i} got nothing");
    }
    // Seven items per request (the pseudo-headers, x-item, x-forwarded-proto, x-request-id): every one
    // published, confirmed, fetched and acknowledged once.
    let items = ITEMS * 7;
    let published: u64 = senders.iter().map(|s| stat(s, &format!("{QUEUE}.acked"))).sum();
    assert_eq!(published, items);
    assert_eq!(senders.iter().map(|s| stat(s, &format!("{QUEUE}.retried"))).sum::<u64>(), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while receivers.iter().map(|r| stat(r, &format!("{QUEUE}.delivered"))).sum::<u64>() < items {
        assert!(Instant::now() < deadline, "the receivers acknowledged fewer than {items} items");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(receivers.iter().map(|r| stat(r, &format!("{QUEUE}.redelivered"))).sum::<u64>(), 0);
    assert_eq!(receivers.iter().map(|r| stat(r, &format!("{QUEUE}.held"))).sum::<u64>(), 0);
}

/// Two senders and two receivers under load while the broker goes away
/// (`crash`: SIGKILL, else SIGTERM) and comes back; returns the duplicates
/// plugins received and what the processes counted.
fn broker_restart_mid_load(crash: bool) -> (usize, u64) {
    let mut broker = Broker::start();
    let receivers = [receiver(&broker), receiver(&broker)];
    let senders = [sender(&broker, "sender_a.yaml"), sender(&broker, "sender_b.yaml")];
    const ITEMS: u64 = 1500;
    let (a, b) = (senders[0].address("main"), senders[1].address("main"));
    let load = std::thread::spawn(move || {
        for part in 0..3 {
            let (start, end) = (part * ITEMS / 3, (part + 1) * ITEMS / 3);
            let middle = (start + end) / 2;
            let to_a = std::thread::spawn(move || send_items(a, start..middle, 2));
            send_items(b, middle..end, 2);
            to_a.join().unwrap();
        }
    });
    // Mid-load: the broker has confirmed the items of the first 50 requests.
    let deadline = Instant::now() + Duration::from_secs(30);
    while senders.iter().map(|s| stat(s, &format!("{QUEUE}.acked"))).sum::<u64>() < 50 * 7 {
        assert!(Instant::now() < deadline, "the broker confirmed fewer than 50 requests' items within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let away = Instant::now();
    if crash {
        broker.kill();
    } else {
        broker.stop();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(&senders[0], "ferry.queue_bridge.broker_connected") != 0 {
        assert!(Instant::now() < deadline, "sender a still connected 10 s after the broker went away");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The request path does not wait for the broker: requests go on being
    // served (the load thread asserts each 200) while items wait. The
    // broker stays away 2 s in all.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(away.elapsed()));
    let waiting: u64 = senders.iter().map(|s| stat(s, &format!("{QUEUE}.waiting"))).sum();
    broker.restart();
    load.join().unwrap();

    let seen = wait_for_every_item(&[&receivers[0], &receivers[1]], &[], ITEMS, Duration::from_secs(90));
    let counted: u64 = senders.iter().map(|s| stat(s, &format!("{QUEUE}.retried"))).sum::<u64>()
        + receivers.iter().map(|r| stat(r, &format!("{QUEUE}.redelivered"))).sum::<u64>();
    let dups = duplicates(&seen);
    let dropped: u64 = receivers.iter().map(|r| stat(r, &format!("{QUEUE}.duplicates"))).sum();
    eprintln!(
        "broker {}: {waiting} item(s) waited, {dups} duplicate(s) delivered, {dropped} dropped, {counted} retried or redelivered",
        if crash { "crash" } else { "restart" }
    );
    assert_eq!(stat(&senders[0], "ferry.queue_bridge.broker_connected"), 1);
    (dups, counted)
}

#[test]
fn a_broker_restarted_mid_load_loses_no_item_and_duplicates_are_bounded_and_counted() {
    let (dups, counted) = broker_restart_mid_load(false);
    // Duplicates come from confirmations and acknowledgements the restart
    // cut: at most a publish batch per sender and the fetch-ahead window per
    // receiver, and each is counted as retried or redelivered.
    let bound = 2 * PUBLISH_BATCH + 2 * HELD_AT_MOST;
    assert!(dups <= bound, "{dups} duplicates, over the bound of {bound}");
    assert!(dups as u64 <= counted, "{dups} duplicates but only {counted} retries and redeliveries counted");
}

#[test]
fn a_broker_killed_mid_load_loses_no_item() {
    broker_restart_mid_load(true);
}

#[test]
fn a_receiver_killed_mid_load_loses_no_item() {
    let broker = Broker::start();
    let mut receivers = vec![receiver(&broker), receiver(&broker)];
    let senders = [sender(&broker, "sender_a.yaml"), sender(&broker, "sender_b.yaml")];
    const ITEMS: u64 = 1500;
    let (a, b) = (senders[0].address("main"), senders[1].address("main"));
    let load = std::thread::spawn(move || {
        let to_a = std::thread::spawn(move || send_items(a, 0..ITEMS / 2, 2));
        send_items(b, ITEMS / 2..ITEMS, 2);
        to_a.join().unwrap();
    });
    // Kill one receiver (SIGKILL: nothing returned, nothing acknowledged
    // on the way out) once it has dequeued some items.
    receivers[0].wait_for_count("dequeued data: {\"key\": \"x-item\"", 50, Duration::from_secs(30));
    let killed = receivers.remove(0);
    let _ = Command::new("kill").args(["-KILL", &killed.pid().to_string()]).status();
    // Its whole log: the process is reaped and its log pipe closed.
    let (_, killed_log) = killed.stop_with_log();
    load.join().unwrap();

    // The survivor gets what the dead one held once `ack_wait` (3 s) passes.
    // SIGKILL can cut the dead one's last log lines: its log writer thread
    // lags the plugin, and a bridged message (a pack of up to PACK_ITEMS
    // items, 7 per request) is acknowledged once the plugin took its last
    // item, so the items of one pack may have been taken with no line to
    // show it. Every item but at most one pack's requests must be seen.
    // (Open question, in the closing note of stop 25: whether such a pack
    // is only unlogged, or lost; the test cannot tell them apart.)
    let pack_requests = (PACK_ITEMS / 7 + 1) as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for id in received_ids(&receivers[0].lines()).into_iter().chain(received_ids(&killed_log)) {
            *seen.entry(id).or_default() += 1;
        }
        let missing: Vec<u64> = (0..ITEMS).filter(|id| !seen.contains_key(id)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            assert!(
                missing.len() as u64 <= pack_requests,
                "{} items never reached a receiver, more than one pack: {missing:?}",
                missing.len()
            );
            break seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dups = duplicates(&seen);
    assert!(dups <= HELD_AT_MOST, "{dups} duplicates, over the fetch-ahead window of {HELD_AT_MOST}");
    let redelivered = stat(&receivers[0], &format!("{QUEUE}.redelivered"));
    assert!(dups as u64 <= redelivered, "{dups} duplicates but {redelivered} redeliveries counted");
}

#[test]
fn a_stopping_sender_publishes_what_it_still_holds() {
    let mut broker = Broker::start();
    let config = example("sender_a.yaml").replace("    queues:", "    drain_timeout: 20s\n    queues:");
    let sender =
        Ferry::start(&bridge_settings(config, &broker), &["--concurrency", "1", "--component-log-level", "wasm:warn"]);
    // With the broker gone, items wait in the sender's buffer.
    broker.kill();
    send_items(sender.address("main"), 0..20, 1);
    assert_eq!(stat(&sender, &format!("{QUEUE}.waiting")), 20 * 7);
    // SIGTERM while the broker is still away: the sender keeps them and
    // publishes them once the broker is back, before it exits.
    let _ = Command::new("kill").args(["-TERM", &sender.pid().to_string()]).status();
    sender.wait_for("publishing 140 buffered item(s)", Duration::from_secs(10));
    broker.restart();
    let (status, log) = sender.stop_with_log();
    assert!(status.success(), "{}", log.join("\n"));
    assert!(!log.iter().any(|l| l.contains("not published")), "{}", log.join("\n"));
    let receiver = receiver(&broker);
    let seen = wait_for_every_item(&[&receiver], &[], 20, Duration::from_secs(20));
    assert_eq!(duplicates(&seen), 0);
}

/// A receiver (vm_id `receiver`) that registers `http_headers` and never
/// dequeues: what is fetched for it stays held.
const HOARDER: &str = r#"(module
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "http_headers")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $register (i32.const 100) (i32.const 12) (i32.const 200)))
    i32.const 1)
  (func (export "proxy_on_queue_ready") (param i32 i32)))"#;

#[test]
fn a_stopping_receiver_returns_what_it_fetched_to_the_fleet() {
    let broker = Broker::start();
    // A long ack_wait: what the stopping receiver held could only come back
    // this quickly by being returned.
    let long_wait = |config: String| bridge_settings(config, &broker).replace("ack_wait: 3s", "ack_wait: 120s");
    let sender_config = example("sender_a.yaml");
    let sender = Ferry::start(&long_wait(sender_config), &["--concurrency", "1", "--component-log-level", "wasm:warn"]);
    send_items(sender.address("main"), 0..20, 1);
    let hoarder_config = example("receiver.yaml").replace(
        &format!("filename: {:?}", plugin("shared_queue_receiver.wasm").to_str().unwrap()),
        &format!("inline_string: {HOARDER:?}"),
    );
    let hoarder = Ferry::start(&long_wait(hoarder_config), &["--concurrency", "1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(&hoarder, &format!("{QUEUE}.held")) < FETCH_AHEAD as u64 {
        assert!(Instant::now() < deadline, "the hoarder never filled its fetch-ahead window");
        std::thread::sleep(Duration::from_millis(50));
    }
    let held = stat(&hoarder, &format!("{QUEUE}.held"));
    assert!(held <= HELD_AT_MOST as u64, "{held} held, past the window");
    let (status, log) = hoarder.stop_with_log();
    assert!(status.success());
    let returned = format!("returned {held} undelivered item(s) to the broker");
    assert!(log.iter().any(|l| l.contains(&returned)), "{}", log.join("\n"));
    // A plugin's own items left at exit are said too (none here: the
    // returned ones are not counted as left).
    assert!(!log.iter().any(|l| l.contains("were not dequeued before exit")), "{}", log.join("\n"));

    let receiver = Ferry::start(&long_wait(example("receiver.yaml")), &["--concurrency", "1"]);
    let seen = wait_for_every_item(&[&receiver], &[], 20, Duration::from_secs(20));
    assert_eq!(duplicates(&seen), 0);
    assert_eq!(stat(&receiver, &format!("{QUEUE}.redelivered")), held, "the returned items come back once each");
}

#[test]
fn a_down_broker_makes_the_instance_not_ready_when_configured() {
    let mut broker = Broker::start();
    let config = example("receiver.yaml").replace("    queues:", "    ready_requires_broker: true\n    queues:");
    let ferry = Ferry::start(&bridge_settings(config, &broker), &["--concurrency", "1"]);
    let admin = SocketAddr::from(([127, 0, 0, 1], ferry.admin.unwrap().port()));
    let ready = || request(admin, "GET", "/ready", &[], b"");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready().status != 200 {
        assert!(Instant::now() < deadline, "never ready with the broker up");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = ready();
        if response.status == 503 {
            assert_eq!(response.text(), "BROKER UNREACHABLE\n");
            break;
        }
        assert!(Instant::now() < deadline, "still ready 10 s after the broker died");
        std::thread::sleep(Duration::from_millis(50));
    }
    let state: serde_json::Value =
        serde_json::from_slice(&request(admin, "GET", "/queue_bridge", &[], b"").body).unwrap();
    assert_eq!(state["broker"], "DISCONNECTED");
    assert_eq!(state["queues"][0]["receiving"], true);
    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while ready().status != 200 {
        assert!(Instant::now() < deadline, "not ready again 15 s after the broker came back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_bad_bridge_configuration_names_the_field() {
    let config = example("receiver.yaml").replace("stream: FERRY_HTTP_HEADERS", "stream: FERRY.HEADERS");
    let path = temp_file("bridge.yaml", &config);
    let (status, _, log) = common::run_to_end(&["-c", path.to_str().unwrap(), "--mode", "validate"]);
    assert!(!status.success());
    assert!(log.contains("bootstrap_extensions[1].typed_config.queues[0].stream"), "{log}");
}

#[test]
fn a_broker_that_asks_for_a_password_gets_the_configured_one() {
    let broker = Broker::start_with(&["--user", "ferry", "--pass", "s3cret"]);
    let with = |password: &str| {
        let config = example("receiver.yaml")
            .replace("      servers: [", &format!("      user: ferry\n      password: {password}\n      servers: ["));
        Ferry::start(&bridge_settings(config, &broker), &["--concurrency", "1"])
    };
    let state = |ferry: &Ferry| -> serde_json::Value {
        let admin = SocketAddr::from(([127, 0, 0, 1], ferry.admin.unwrap().port()));
        serde_json::from_slice(&request(admin, "GET", "/queue_bridge", &[], b"").body).unwrap()
    };
    let right = with("s3cret");
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&right)["broker"] != "CONNECTED" {
        assert!(Instant::now() < deadline, "not connected with the right password: {}", state(&right));
        std::thread::sleep(Duration::from_millis(50));
    }
    let wrong = with("guess");
    // The NATS client logs the broker's refusal (under `bridge`).
    wrong.wait_for("authorization violation", Duration::from_secs(10));
    assert_eq!(state(&wrong)["broker"], "DISCONNECTED", "the broker let a wrong password in");
}
