//! The queue bridge in `cargo xtask bench`: the seed example with its queue
//! bridged through nats-server (run `B-bridge`, beside `B` where the
//! receiver is in the same process), and the bridge's own end-to-end
//! benchmark (`cargo bench -p ferry-bridge`: items/s and latency).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{CLIENT_CORE, Load, Row, SERVER_CORE, Wrk, free_port, free_port_pair, start_ferry_on, wait_ready};
use crate::{cargo, stop};

/// What the bridge runs found.
pub(super) struct BridgeReport {
    /// Items the sender's broker confirmed, and the receiver delivered, after the load.
    pub acked: u64,
    pub delivered: u64,
    /// `cargo bench -p ferry-bridge`'s summary.
    pub bench: String,
}

fn bridged(text: &str, nats: u16) -> String {
    text.replace("nats://127.0.0.1:4222", &format!("nats://127.0.0.1:{nats}"))
}

/// Run `B-bridge`: the sender on the server's core, the broker and the
/// receiver with the load generator; wrk on the sender.
pub(super) fn run(
    root: &Path,
    ferry: &Path,
    work: &Path,
    wrk: &Wrk,
    (seconds, repeat): (u64, u64),
    rows: &mut Vec<Row>,
) -> anyhow::Result<BridgeReport> {
    crate::ensure_nats_server()?;
    let nats = free_port()?;
    let store = work.join("jetstream");
    let _ = std::fs::remove_dir_all(&store);
    // The broker and the receiver share the load generator's core, at the
    // lowest priority: they may fall behind during the run (items wait in
    // the stream) and catch up after it; what is measured is whether the
    // sender's request path waits for them.
    let mut broker = crate::start_nats_server(nats, &store, &["nice", "-n", "19", "taskset", "-c", CLIENT_CORE])?;
    let mut processes: Vec<Child> = Vec::new();
    let outcome = (|| {
        let fleet = root.join("examples/shared_queue_fleet");
        let receiver_admin = free_port()?;
        let receiver = bridged(&std::fs::read_to_string(fleet.join("receiver.yaml"))?, nats)
            .replace("port_value: 8012", &format!("port_value: {receiver_admin}"));
        let port = free_port_pair()?;
        let sender = bridged(&std::fs::read_to_string(fleet.join("sender_a.yaml"))?, nats)
            .replace("port_value: 18010", &format!("port_value: {port}"))
            .replace("port_value: 8010", &format!("port_value: {}", port + 1));
        let quiet = ["--component-log-level", "wasm:warn"];
        for (name, config) in [("B-bridge-receiver", receiver), ("B-bridge", sender)] {
            let path = work.join(format!("{name}.yaml"));
            std::fs::write(&path, config)?;
            let log = work.join(format!("{name}.log"));
            let _ = std::fs::remove_file(&log);
            processes.push(if name == "B-bridge" {
                start_ferry_on(SERVER_CORE, ferry, &path, &log, "1", &quiet)?
            } else {
                Command::new("nice")
                    .args(["-n", "19", "taskset", "-c", CLIENT_CORE])
                    .arg(ferry)
                    .arg("-c")
                    .arg(&path)
                    .args(["--concurrency", "1", "--log-format", "%v", "--log-path"])
                    .arg(&log)
                    .args(quiet)
                    .stderr(Stdio::null())
                    .spawn()
                    .context("cannot start the receiver")?
            });
        }
        wait_ready(receiver_admin, "/ready")?;
        wait_ready(port, "/")?;
        eprintln!("== B-bridge: the seed example, queue bridged through nats-server");
        let load: Load = wrk.measure(port, "/", seconds, repeat)?;
        let peak = super::peak_rss_kib(processes[1].id())?;
        rows.push(Row {
            id: "B-bridge",
            what: "ferry, shared_queue example's sender, queue bridged to nats-server (receiver in another process)"
                .into(),
            load,
            peak_rss_kib: peak,
        });
        // Every item the broker stored reaches the receiver.
        let stat = |port: u16, name: &str| -> anyhow::Result<u64> {
            let text = super::http_get(port, &format!("/stats?filter={name}$"))?;
            Ok(text.lines().find_map(|l| l.split(": ").nth(1)?.trim().parse().ok()).unwrap_or(0))
        };
        let queue = "ferry.queue_bridge.receiver.http_headers";
        // Judged on progress, not a fixed time: the receiver, at the lowest
        // priority, may drain for minutes on a slow machine. Give up only
        // once nothing moved for STALLED.
        const STALLED: Duration = Duration::from_secs(20);
        let mut last = (u64::MAX, u64::MAX, u64::MAX);
        let mut moved = Instant::now();
        let (acked, delivered) = loop {
            std::thread::sleep(Duration::from_millis(500));
            let acked = stat(port + 1, &format!("{queue}.acked"))?;
            let waiting = stat(port + 1, &format!("{queue}.waiting"))?;
            let delivered = stat(receiver_admin, &format!("{queue}.delivered"))?;
            if waiting == 0 && acked == delivered {
                break (acked, delivered);
            }
            if (acked, waiting, delivered) != last {
                (last, moved) = ((acked, waiting, delivered), Instant::now());
            } else if moved.elapsed() > STALLED {
                eprintln!("the bridge's counters stopped moving for {STALLED:?} short of the end");
                break (acked, delivered);
            }
        };
        anyhow::Ok((acked, delivered))
    })();
    for process in processes.iter_mut().rev() {
        stop(process);
    }
    stop(&mut broker);
    let (acked, delivered) = outcome?;

    eprintln!("== the bridge end to end: cargo bench -p ferry-bridge");
    let output = cargo()
        .args(["bench", "-p", "ferry-bridge", "--bench", "bridge"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo bench -p ferry-bridge")?;
    anyhow::ensure!(output.status.success(), "cargo bench -p ferry-bridge failed");
    let bench = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{bench}");
    Ok(BridgeReport { acked, delivered, bench })
}
