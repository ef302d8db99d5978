//! A route's `retry_policy`: which answers and failures are tried again,
//! and how long to wait between tries (Envoy's defaults: 25 ms base,
//! doubling, at most 250 ms, fully jittered).

use std::time::Duration;

use ferry_config::RetryPolicy;

use super::UpstreamError;

const BASE_INTERVAL: Duration = Duration::from_millis(25);
const MAX_INTERVAL: Duration = Duration::from_millis(250);

/// Whether an upstream's answer is retried.
pub(super) fn on_status(policy: &RetryPolicy, status: u16) -> bool {
    policy.retry_on.iter().any(|condition| match condition.as_str() {
        "5xx" => (500..600).contains(&status),
        "gateway-error" => matches!(status, 502..=504),
        "retriable-4xx" => status == 409,
        "retriable-status-codes" => policy.retriable_status_codes.contains(&status),
        _ => false,
    })
}

/// Whether a failure to get an answer is retried: a connection that could
/// not be made, was reset, or a try that timed out.
pub(super) fn on_error(policy: &RetryPolicy, error: &UpstreamError) -> bool {
    policy.retry_on.iter().any(|condition| match (condition.as_str(), error) {
        ("5xx" | "gateway-error" | "reset", UpstreamError::Connect(_) | UpstreamError::Timeout) => true,
        ("connect-failure", UpstreamError::Connect(e)) => e.is_connect(),
        ("refused-stream", UpstreamError::Connect(e)) => !e.is_connect(),
        _ => false,
    })
}

/// How long to wait before try `attempt + 1`: a random time below the
/// base interval doubled `attempt - 1` times, capped.
pub(super) fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE_INTERVAL.saturating_mul(1 << (attempt - 1).min(8)).min(MAX_INTERVAL);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry_on: &[&str], codes: &[u16]) -> RetryPolicy {
        RetryPolicy {
            retry_on: retry_on.iter().map(|s| (*s).to_owned()).collect(),
            num_retries: 1,
            per_try_timeout: None,
            retriable_status_codes: codes.to_vec(),
        }
    }

    #[test]
    fn statuses_retried_by_each_condition() {
        assert!(on_status(&policy(&["5xx"], &[]), 500));
        assert!(!on_status(&policy(&["gateway-error"], &[]), 500));
        assert!(on_status(&policy(&["gateway-error"], &[]), 503));
        assert!(on_status(&policy(&["retriable-4xx"], &[]), 409));
        assert!(on_status(&policy(&["retriable-status-codes"], &[418]), 418));
        assert!(!on_status(&policy(&["connect-failure"], &[]), 503));
        assert!(on_error(&policy(&["gateway-error"], &[]), &UpstreamError::Timeout));
        assert!(!on_error(&policy(&["retriable-4xx"], &[]), &UpstreamError::Timeout));
    }

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        for attempt in 1..20 {
            let wait = backoff(attempt);
            assert!(wait <= MAX_INTERVAL);
            assert!(wait <= BASE_INTERVAL.saturating_mul(1 << (attempt - 1).min(8)));
        }
    }
}
