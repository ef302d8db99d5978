//! Active health checks and the outlier review, run on the main thread for
//! the whole process: each checked endpoint gets a check every `interval`
//! (an HTTP GET with `user-agent: Envoy/HC`, or a TCP connect), and what
//! comes of it is shared with every worker through [`ClusterHosts`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferry_config::{HealthCheck, HealthCheckKind};

use super::hosts::ClusterHosts;
use super::{Clusters, UpstreamBody};

/// Starts the checks of every cluster that has them, and the outlier
/// review of those with outlier detection, as local tasks of the calling
/// thread's runtime; they run as long as it does.
pub(crate) fn start(clusters: &Clusters) {
    for (cluster, hosts, tls) in clusters.with_hosts() {
        if let Some(interval) = hosts.review_interval() {
            let hosts = hosts.clone();
            tokio::task::spawn_local(async move {
                let mut ticker = tokio::time::interval(interval);
                loop {
                    ticker.tick().await;
                    hosts.review();
                }
            });
        }
        let Some(check) = &cluster.health_check else { continue };
        let client = super::cluster_client(cluster, tls);
        let scheme = if tls.is_some() { "https" } else { "http" };
        for (index, endpoint) in cluster.endpoints.iter().enumerate() {
            let checker = Checker {
                check: check.clone(),
                hosts: hosts.clone(),
                index,
                address: endpoint.to_string(),
                cluster: cluster.name.clone(),
                scheme,
                client: client.clone(),
            };
            tokio::task::spawn_local(checker.run());
        }
    }
}

/// The checks of one endpoint.
struct Checker {
    check: HealthCheck,
    hosts: Arc<ClusterHosts>,
    index: usize,
    address: String,
    cluster: String,
    scheme: &'static str,
    client: hyper_util::client::legacy::Client<super::Connector, UpstreamBody>,
}

/// How a check ended.
enum Outcome {
    Passed,
    /// The endpoint answered, but not as expected.
    Failed,
    /// No answer: no connection, or not within the timeout.
    Unreachable,
}

impl Checker {
    async fn run(self) {
        let mut ticker = tokio::time::interval(self.check.interval);
        loop {
            ticker.tick().await;
            let outcome = match tokio::time::timeout(self.check.timeout, self.once()).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Unreachable,
            };
            let stats = &self.hosts.stats.health_check;
            stats.attempt.fetch_add(1, Ordering::Relaxed);
            let passed = match outcome {
                Outcome::Passed => {
                    stats.success.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Outcome::Failed => {
                    stats.failure.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Outcome::Unreachable => {
                    stats.failure.fetch_add(1, Ordering::Relaxed);
                    stats.network_failure.fetch_add(1, Ordering::Relaxed);
                    false
                }
            };
            if self.hosts.checked(self.index, passed, &self.check) {
                let now = if passed { "healthy" } else { "unhealthy" };
                tracing::info!(target: "upstream", "health check: cluster {} endpoint {} is {now}", self.cluster, self.address);
            }
        }
    }

    async fn once(&self) -> Outcome {
        match &self.check.kind {
            HealthCheckKind::Tcp => match tokio::net::TcpStream::connect(&self.address).await {
                Ok(_) => Outcome::Passed,
                Err(_) => Outcome::Unreachable,
            },
            HealthCheckKind::Http { path, host, expected } => {
                let uri = format!("{}://{}{path}", self.scheme, self.address);
                let request = http::Request::get(uri)
                    .header(http::header::HOST, host.as_deref().unwrap_or(&self.cluster))
                    .header(http::header::USER_AGENT, "Envoy/HC")
                    .body(UpstreamBody::Full(None, None));
                let Ok(request) = request else { return Outcome::Failed };
                match self.client.request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        if expected.iter().any(|&(start, end)| (start..end).contains(&status)) {
                            Outcome::Passed
                        } else {
                            Outcome::Failed
                        }
                    }
                    Err(_) => Outcome::Unreachable,
                }
            }
        }
    }
}
