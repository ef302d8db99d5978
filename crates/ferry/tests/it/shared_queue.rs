//! The shared_queue example, end to end against the real binary: every
//! header a request carries is enqueued by the sender on a worker and
//! dequeued, once and in order, by the receiver on the main thread.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Ferry, example_config, get};

const ENQUEUED: &str = "wasm log sender: enqueued data: ";
const DEQUEUED: &str = "wasm log receiver: dequeued data: ";

/// (thread id, item) of each log line of `kind`.
fn items(lines: &[String], kind: &str) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|line| {
            let (prefix, item) = line.split_once(kind)?;
            let thread = prefix.trim_start_matches('[').split(']').next()?.to_owned();
            Some((thread, item.to_owned()))
        })
        .collect()
}

/// Whether `merged` is an interleaving of `a` and `b` (each kept in order,
/// every element used once): what FIFO delivery from two producers allows.
fn is_interleaving(a: &[String], b: &[String], merged: &[String]) -> bool {
    if a.len() + b.len() != merged.len() {
        return false;
    }
    // reachable[j] after row i: the first i + j merged items are a[..i] and b[..j] interleaved.
    let mut reachable = vec![false; b.len() + 1];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            reachable[j] = if i == 0 && j == 0 {
                true
            } else {
                let k = i + j - 1;
                (i > 0 && reachable[j] && a[i - 1] == merged[k]) || (j > 0 && reachable[j - 1] && b[j - 1] == merged[k])
            };
        }
    }
    reachable[b.len()]
}

#[test]
fn one_request_shows_the_seeds_pairs_in_order() {
    let ferry = Ferry::start(&example_config(), &["--concurrency", "2"]);
    let address = ferry.address("main");
    let response = get(address, "/", &[("Host", "localhost:18000"), ("User-Agent", "curl/7.68.0"), ("Accept", "*/*")]);
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "example body\n");
    ferry.wait_for_count(DEQUEUED, 8, Duration::from_secs(10));
    let lines = ferry.lines();
    let sent: Vec<String> = items(&lines, ENQUEUED).into_iter().map(|(_, item)| item).collect();
    let received: Vec<String> = items(&lines, DEQUEUED).into_iter().map(|(_, item)| item).collect();
    let keys: Vec<&str> = sent.iter().map(|i| i.split('"').nth(3).unwrap()).collect();
    assert_eq!(
        keys,
        [":authority", ":path", ":method", ":scheme", "user-agent", "accept", "x-forwarded-proto", "x-request-id"]
    );
    assert_eq!(sent[0], r#"{"key": ":authority","value": "localhost:18000"}"#);
    assert_eq!(sent[4], r#"{"key": "user-agent","value": "curl/7.68.0"}"#);
    assert_eq!(received, sent, "the receiver dequeues each item once, in enqueue order");
    assert_eq!(ferry.stop().code(), Some(0));
}

#[test]
fn concurrent_requests_lose_nothing_and_keep_fifo_order() {
    let ferry = Ferry::start(&example_config(), &["--concurrency", "2"]);
    let address = ferry.address("main");
    const CLIENTS: usize = 4;
    const REQUESTS: usize = 15;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                for r in 0..REQUESTS {
                    let seq = format!("{c}-{r}");
                    let response = get(address, &format!("/req/{seq}"), &[("x-test-seq", &seq)]);
                    assert_eq!(response.status, 200);
                }
            })
        })
        .collect();
    clients.into_iter().for_each(|c| c.join().unwrap());
    // Seven items per request: four pseudo-headers, x-test-seq, x-forwarded-proto, x-request-id.
    let total = CLIENTS * REQUESTS * 7;
    ferry.wait_for_count(DEQUEUED, total, Duration::from_secs(20));
    // "None twice" needs an event after which a second copy would be in the
    // log: one more request, enqueued after every other item, is dequeued
    // after them (one queue, one receiver). Its last item (a fresh
    // x-request-id) is the last enqueued line once all of them are in.
    assert_eq!(get(address, "/req/end", &[("x-test-seq", "end")]).status, 200);
    let total = total + 7;
    ferry.wait_for_count(ENQUEUED, total, Duration::from_secs(10));
    let (_, last) = items(&ferry.lines(), ENQUEUED).pop().expect("the last request's items");
    assert!(last.contains(r#""key": "x-request-id""#), "an item no other request has: {last}");
    ferry.wait_for(&format!("{DEQUEUED}{last}"), Duration::from_secs(10));
    let lines = ferry.lines();
    let sent = items(&lines, ENQUEUED);
    let received: Vec<String> = items(&lines, DEQUEUED).into_iter().map(|(_, item)| item).collect();
    assert_eq!(sent.len(), total, "every header was enqueued once");
    assert_eq!(received.len(), total, "every item was dequeued once, none twice");

    // Each worker enqueues in its own order; the queue may interleave two
    // workers but must keep each one's order.
    let mut per_worker: HashMap<String, Vec<String>> = HashMap::new();
    for (thread, item) in sent {
        per_worker.entry(thread).or_default().push(item);
    }
    assert!(per_worker.len() <= 2, "sender lines come from the 2 workers only: {:?}", per_worker.keys());
    let mut workers = per_worker.into_values();
    let a = workers.next().unwrap();
    let b = workers.next().unwrap_or_default();
    assert!(is_interleaving(&a, &b, &received), "dequeue order is not a FIFO merge of the workers' enqueue orders");
    // The host's own accounting agrees (admin /stats).
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], ferry.admin.expect("admin address").port()));
    let stats = get(admin, "/stats", &[]).text();
    assert!(stats.contains(&format!("ferry.shared_queue.enqueued: {total}\n")), "{stats}");
    assert!(stats.contains(&format!("ferry.shared_queue.dequeued: {total}\n")), "{stats}");
    assert!(stats.contains("ferry.shared_queue.waiting: 0\n"), "{stats}");
    for c in 0..CLIENTS {
        for r in 0..REQUESTS {
            let item = format!(r#"{{"key": "x-test-seq","value": "{c}-{r}"}}"#);
            assert_eq!(received.iter().filter(|i| **i == item).count(), 1, "custom header {c}-{r} dequeued once");
        }
    }
    assert_eq!(ferry.stop().code(), Some(0));
}

#[test]
fn request_ids_are_uuid_v4_and_differ_between_requests() {
    let ferry = Ferry::start(&example_config(), &["--concurrency", "2"]);
    let address = ferry.address("main");
    for _ in 0..3 {
        assert_eq!(get(address, "/", &[]).status, 200);
    }
    ferry.wait_for_count(r#"dequeued data: {"key": "x-request-id""#, 3, Duration::from_secs(10));
    let ids: Vec<String> = items(&ferry.lines(), DEQUEUED)
        .into_iter()
        .filter_map(|(_, item)| {
            item.strip_prefix(r#"{"key": "x-request-id","value": ""#)?.strip_suffix(r#""}"#).map(String::from)
        })
        .collect();
    assert_eq!(ids.len(), 3);
    for id in &ids {
        let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id:?} is not a UUID: {e}"));
        assert_eq!(uuid.get_version_num(), 4, "{id} is not a version 4 UUID");
    }
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "request ids repeat: {ids:?}");
}

#[test]
fn a_request_id_sent_by_the_client_is_kept() {
    let ferry = Ferry::start(&example_config(), &["--concurrency", "1"]);
    let response = get(ferry.address("main"), "/", &[("x-request-id", "client-chosen")]);
    assert_eq!(response.status, 200);
    ferry.wait_for(r#"dequeued data: {"key": "x-request-id","value": "client-chosen"}"#, Duration::from_secs(10));
}

#[test]
fn interleaving_check_accepts_merges_and_rejects_reorders() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(is_interleaving(&s(&["a", "b"]), &s(&["a", "c"]), &s(&["a", "a", "c", "b"])));
    assert!(!is_interleaving(&s(&["a", "b"]), &s(&["c"]), &s(&["b", "a", "c"])));
    assert!(!is_interleaving(&s(&["a"]), &s(&["b"]), &s(&["a", "b", "b"])));
}
