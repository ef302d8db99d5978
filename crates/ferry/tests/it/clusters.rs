//! How a cluster chooses among its endpoints, against the real binary:
//! active HTTP health checks keep a failing endpoint out (and let it back
//! in), outlier detection ejects an endpoint that answers 5xx in a row,
//! LEAST_REQUEST avoids a busy endpoint; each with Envoy's counters.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Ferry, request, stat};
use http_body_util::Full;

/// An upstream answering `name` on every path; `/healthz` answers 200
/// while `healthy` holds, else 503. Every other path answers `status`.
fn upstream(name: &'static str, status: u16, healthy: Arc<AtomicBool>, delay: Duration) -> SocketAddr {
    common::hyper_upstream(move |request: http::Request<hyper::body::Incoming>| {
        let healthy = healthy.clone();
        async move {
            let status = if request.uri().path() == "/healthz" {
                if healthy.load(Ordering::SeqCst) { 200 } else { 503 }
            } else {
                tokio::time::sleep(delay).await;
                status
            };
            let mut response = http::Response::new(Full::new(Bytes::from(name)));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            response
        }
    })
}

/// One listener routing everything to cluster `app` with endpoints
/// `endpoints` and the cluster fields `extra` (at column 4).
fn start(endpoints: &[SocketAddr], extra: &str) -> Ferry {
    let lb_endpoints: String = endpoints
        .iter()
        .map(|a| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
                a.port()
            )
        })
        .collect();
    let clusters = format!(
        "  - name: app\n    connect_timeout: 1s\n{extra}    load_assignment:\n      endpoints:\n      - lb_endpoints:\n{lb_endpoints}"
    );
    let config = common::ManagerConfig {
        top: common::ADMIN,
        routes: "              - match: { prefix: \"/\" }\n                route: { cluster: app }\n",
        clusters: &clusters,
        ..Default::default()
    }
    .yaml();
    Ferry::start(&config, &["--concurrency", "1"])
}

/// Waits (up to 10 s) until `check` holds.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn answers(ferry: &Ferry, count: usize) -> Vec<String> {
    (0..count).map(|_| request(ferry.address("main"), "GET", "/", &[], b"").text()).collect()
}

#[test]
fn an_endpoint_failing_its_health_check_gets_no_traffic_until_it_passes_again() {
    let b_healthy = Arc::new(AtomicBool::new(false));
    let a = upstream("a", 200, Arc::new(AtomicBool::new(true)), Duration::ZERO);
    let b = upstream("b", 200, b_healthy.clone(), Duration::ZERO);
    let check = "    health_checks:\n    - timeout: 1s\n      interval: 0.1s\n      unhealthy_threshold: 2\n      healthy_threshold: 2\n      http_health_check: { path: /healthz }\n";
    let ferry = start(&[a, b], check);
    eventually("a passes its first check", || stat(&ferry, "cluster.app.membership_healthy") == 1);
    assert!(answers(&ferry, 6).iter().all(|a| a == "a"), "b fails its checks: only a takes traffic");
    assert_eq!(stat(&ferry, "cluster.app.membership_total"), 2);
    assert!(stat(&ferry, "cluster.app.health_check.failure") >= 1);
    b_healthy.store(true, Ordering::SeqCst);
    eventually("b passes", || stat(&ferry, "cluster.app.membership_healthy") == 2);
    let seen = answers(&ferry, 6);
    assert!(seen.contains(&"a".to_owned()) && seen.contains(&"b".to_owned()), "{seen:?}");
    assert!(stat(&ferry, "cluster.app.health_check.success") >= 3);
}

#[test]
fn an_endpoint_answering_5xx_in_a_row_is_ejected() {
    let always = Arc::new(AtomicBool::new(true));
    let bad = upstream("bad", 500, always.clone(), Duration::ZERO);
    let good = upstream("good", 200, always, Duration::ZERO);
    let outlier = "    outlier_detection: { consecutive_5xx: 2, base_ejection_time: 30s, max_ejection_percent: 50 }\n";
    let ferry = start(&[bad, good], outlier);
    // Round robin: bad, good, bad (its second 5xx in a row: ejected), then only good.
    let first: Vec<String> = answers(&ferry, 3);
    assert_eq!(first, ["bad", "good", "bad"]);
    assert!(answers(&ferry, 6).iter().all(|a| a == "good"));
    assert_eq!(stat(&ferry, "cluster.app.outlier_detection.ejections_active"), 1);
    assert_eq!(stat(&ferry, "cluster.app.outlier_detection.ejections_enforced_total"), 1);
    assert_eq!(stat(&ferry, "cluster.app.membership_healthy"), 1);
}

#[test]
fn least_request_sends_the_next_request_to_the_endpoint_not_busy() {
    let up = Arc::new(AtomicBool::new(true));
    let one = upstream("one", 200, up.clone(), Duration::from_millis(1200));
    let two = upstream("two", 200, up, Duration::from_millis(1200));
    // Many choices: the busy endpoint is all of them only with odds of 2^-20.
    let policy = "    lb_policy: LEAST_REQUEST\n    least_request_lb_config: { choice_count: 20 }\n";
    let ferry = start(&[one, two], policy);
    let main = ferry.address("main");
    for _ in 0..3 {
        let first = std::thread::spawn(move || request(main, "GET", "/", &[], b"").text());
        eventually("the first request is in flight", || stat(&ferry, "cluster.app.upstream_rq_active") == 1);
        let second = request(main, "GET", "/", &[], b"").text();
        let first = first.join().unwrap();
        assert_ne!(first, second, "the second request went to the endpoint without one in flight");
    }
}

#[test]
fn an_unknown_lb_policy_names_the_field() {
    let config = common::ManagerConfig {
        routes: "              - match: { prefix: \"/\" }\n                direct_response: { status: 200 }\n",
        clusters: "  - name: app\n    lb_policy: MAGLEV\n",
        ..Default::default()
    }
    .yaml();
    let path = common::temp_file("maglev.yaml", &config);
    let (status, _, stderr) = common::run_to_end(&["--mode", "validate", "-c", path.to_str().unwrap()]);
    assert!(!status.success());
    assert!(stderr.contains("static_resources.clusters[0].lb_policy: MAGLEV is not supported"), "{stderr}");
}

#[test]
fn circuit_breakers_queue_then_refuse_requests_past_their_limits() {
    let up = Arc::new(AtomicBool::new(true));
    let slow = upstream("slow", 200, up, Duration::from_millis(1500));
    let breakers = "    circuit_breakers: { thresholds: [ { max_connections: 1, max_pending_requests: 1 } ] }\n";
    let ferry = start(&[slow], breakers);
    let main = ferry.address("main");
    let first = std::thread::spawn(move || request(main, "GET", "/", &[], b""));
    eventually("the first request is in flight", || stat(&ferry, "cluster.app.upstream_rq_active") == 1);
    let second = std::thread::spawn(move || request(main, "GET", "/", &[], b""));
    eventually("the second request waits for the connection", || {
        stat(&ferry, "cluster.app.circuit_breakers.default.rq_pending_open") == 1
    });
    // One busy, one waiting for the connection: the third is refused at once.
    let started = Instant::now();
    let refused = request(main, "GET", "/", &[], b"");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("x-envoy-overloaded"), Some("true"));
    assert!(started.elapsed() < Duration::from_millis(1000), "refused without waiting for the connection");
    for waited in [first, second] {
        let response = waited.join().unwrap();
        assert_eq!((response.status, response.text().as_str()), (200, "slow"), "the queued request is served");
    }
    assert_eq!(stat(&ferry, "cluster.app.upstream_rq_pending_overflow"), 1);
    assert!(stat(&ferry, "cluster.app.upstream_cx_overflow") >= 2);
}

#[test]
fn retries_past_max_retries_are_not_made() {
    let up = Arc::new(AtomicBool::new(true));
    let failing = upstream("failing", 503, up, Duration::ZERO);
    let lb_endpoints = format!(
        "        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
        failing.port()
    );
    let clusters = format!(
        "  - name: app\n    connect_timeout: 1s\n    circuit_breakers: {{ thresholds: {{ max_retries: 0 }} }}\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n{lb_endpoints}"
    );
    let config = common::ManagerConfig {
        top: common::ADMIN,
        routes: "              - match: { prefix: \"/\" }\n                route: { cluster: app, retry_policy: { retry_on: 5xx, num_retries: 3 } }\n",
        clusters: &clusters,
        ..Default::default()
    }
    .yaml();
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    assert_eq!(request(ferry.address("main"), "GET", "/", &[], b"").status, 503);
    assert_eq!(stat(&ferry, "cluster.app.upstream_rq_total"), 1, "no retry was made");
    assert_eq!(stat(&ferry, "cluster.app.upstream_rq_retry_overflow"), 1);
}
