//! The queue bridge end to end, on this machine: items enqueued through the
//! host's shared-queue API (what `proxy_enqueue_shared_queue` calls) by two
//! producer threads, published to a real `nats-server -js` started here,
//! fetched back for a registered receiver, dequeued (what
//! `proxy_dequeue_shared_queue` calls) and acknowledged.
//!
//! Two measurements: items per second with the producers unthrottled (the
//! bridge's capacity), and the enqueue → dequeue latency at a steady rate
//! below it. `BENCH_BRIDGE_ITEMS` (default 400000) items for the first,
//! `BENCH_BRIDGE_RATE` (default 20000) items/s for 5 s for the second.
//! Needs nats-server (`cargo xtask bench` installs it).

#![allow(missing_docs)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use ferry_bridge::QueueBridges;
use ferry_host::{Host, HostOptions, InstanceId, QueueBounds, QueueOwner, QueueReady, ThreadMailbox, VmKey};

/// Bytes per item: about one header as the seed's sender encodes it.
const ITEM_BYTES: usize = 96;

struct Mailbox(mpsc::Sender<QueueReady>);

impl ThreadMailbox for Mailbox {
    fn post_queue_ready(&self, notice: QueueReady) {
        let _ = self.0.send(notice);
    }
}

struct Broker(Child, PathBuf);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn nats_server() -> PathBuf {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

fn start_broker() -> (Broker, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = std::env::temp_dir().join(format!("ferry-bridge-bench-{port}"));
    let child = Command::new(nats_server())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start nats-server (apt-get install nats-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Broker(child, store), port)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// An item: when it was enqueued (nanoseconds since `epoch`), then padding.
fn item(epoch: Instant) -> [u8; ITEM_BYTES] {
    let mut bytes = [b'x'; ITEM_BYTES];
    bytes[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
    bytes
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    let (_broker, port) = start_broker();
    let config = ferry_config::from_yaml(&format!(
        "bootstrap_extensions:\n- name: bridge\n  typed_config:\n    \"@type\": type.googleapis.com/ferry.config.v1.QueueBridge\n    \
         nats: {{ servers: [\"nats://127.0.0.1:{port}\"] }}\n    queues:\n    - {{ vm_id: receiver, name: bench, stream: BENCH, \
         fetch_ahead: 1024, publish_batch: 512 }}\n"
    ))
    .expect("the bench's configuration")
    .queue_bridge
    .expect("a bridge");
    let host = Host::new(HostOptions::default()).expect("host");
    let bridges = QueueBridges::start(&config, &[QueueBounds::default()], &host).expect("bridge");
    let queues = host.shared_queues();
    let token = queues.resolve("receiver", "bench").expect("bridged queues resolve at once");

    // The receiver: a thread that dequeues one item per notification.
    let (notices, inbox) = mpsc::channel();
    let owner = QueueOwner {
        mailbox: Arc::new(Mailbox(notices)),
        instance: InstanceId { vm_key: VmKey::from_index(0), generation: 0 },
        context_id: 1,
    };
    queues.register("receiver", "bench", owner).expect("register");
    let epoch = Instant::now();
    let (latencies_tx, latencies) = mpsc::channel::<Vec<u64>>();
    let receiver_host = host.clone();
    let receiver = std::thread::spawn(move || {
        let mut batch = Vec::new();
        while let Ok(notice) = inbox.recv() {
            let Ok(item) = receiver_host.shared_queues().dequeue(notice.queue_id) else { continue };
            let sent = u64::from_le_bytes(item[..8].try_into().unwrap());
            batch.push((epoch.elapsed().as_nanos() as u64).saturating_sub(sent));
            if batch.len() == 1000 && latencies_tx.send(std::mem::take(&mut batch)).is_err() {
                return;
            }
        }
    });
    let mut received = Vec::new();
    let mut wait_for = |count: usize, timeout: Duration| -> Vec<u64> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::with_capacity(count);
        while got.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match latencies.recv_timeout(left) {
                Ok(batch) => got.extend(batch),
                Err(_) => panic!("only {} of {count} items came back within {timeout:?}", got.len()),
            }
        }
        received.push(got.len());
        got
    };

    // 1. Capacity: two producers, unthrottled.
    let items = env_number("BENCH_BRIDGE_ITEMS", 400_000) as usize / 1000 * 1000;
    let started = Instant::now();
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let host = host.clone();
            std::thread::spawn(move || {
                for _ in 0..items / 2 {
                    while host.shared_queues().enqueue(token, &item(epoch)).is_err() {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
            })
        })
        .collect();
    producers.into_iter().for_each(|p| p.join().unwrap());
    let enqueued_in = started.elapsed();
    wait_for(items, Duration::from_secs(300));
    let capacity_time = started.elapsed();
    let per_second = items as f64 / capacity_time.as_secs_f64();

    // 2. Latency at a steady rate.
    let rate = env_number("BENCH_BRIDGE_RATE", 20_000);
    let steady_items = (rate * 5) as usize / 1000 * 1000;
    let start = Instant::now();
    for i in 0..steady_items {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        queues.enqueue(token, &item(epoch)).expect("enqueue");
    }
    let mut latency = wait_for(steady_items, Duration::from_secs(60));
    latency.sort_unstable();
    let at = |q: f64| latency[((latency.len() - 1) as f64 * q) as usize] as f64 / 1e6;
    let stats = &bridges.stats()[0].counts;
    println!("queue bridge, end to end through nats-server (file storage), {ITEM_BYTES}-byte items:");
    println!(
        "  capacity: {items} items in {:.2} s = {per_second:.0} items/s (enqueued in {:.2} s)",
        capacity_time.as_secs_f64(),
        enqueued_in.as_secs_f64()
    );
    println!(
        "  latency at {rate} items/s: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
    println!(
        "  counters: acked {}, retried {}, fetched {}, delivered {}, redelivered {}, duplicates {}",
        stats.acked, stats.retried, stats.fetched, stats.delivered, stats.redelivered, stats.duplicates
    );
    drop(receiver);
}
