//! Request metrics in the Prometheus text format (`GET /metrics`): counts
//! and latency histograms per route pattern, method and status; the
//! connection pool; and the outcomes of bootstrap and spend.
//!
//! The registry, the series and the text format are the Prometheus
//! project's `prometheus-client` (docs/decisions.md, Operations). What is
//! ours is the choice of labels, and each has a bounded set of values
//! whatever clients send: the route *pattern* (`/v1/agent/profiles/{agent_id}`,
//! or `unmatched`), never the path; the method, one of the seven the API
//! can serve or `other` (actix accepts any token as a method); the status
//! code. So there are at most routes × 8 × statuses series.

use std::time::Duration;

use agentry_store::PoolStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `Content-Type` of [`Metrics::render`]'s text (format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The labels of the request series, in the order they are written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

type Durations = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The registry of series; shared by every worker.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
    bootstraps: Family<OutcomeLabels, Counter>,
    spends: Family<OutcomeLabels, Counter>,
    pool_max: Family<BackendLabels, Gauge>,
    pool_size: Family<BackendLabels, Gauge>,
    pool_available: Family<BackendLabels, Gauge>,
    pool_waiting: Family<BackendLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            registry: Registry::default(),
            requests: Family::default(),
            durations: Durations::new_with_constructor(latency_histogram),
            bootstraps: Family::default(),
            spends: Family::default(),
            pool_max: Family::default(),
            pool_size: Family::default(),
            pool_available: Family::default(),
            pool_waiting: Family::default(),
        };
        let mut registry = Registry::default();
        // Counters are named without `_total`: the encoder appends it.
        registry.register(
            "agentry_http_requests",
            "HTTP requests answered",
            metrics.requests.clone(),
        );
        registry.register(
            "agentry_http_request_duration_seconds",
            "Time from request to response head",
            metrics.durations.clone(),
        );
        registry.register(
            "agentry_bootstrap",
            "Agent bootstraps by outcome",
            metrics.bootstraps.clone(),
        );
        registry.register(
            "agentry_spend",
            "Spend requests by outcome",
            metrics.spends.clone(),
        );
        registry.register(
            "agentry_db_pool_max",
            "Most connections the pool opens",
            metrics.pool_max.clone(),
        );
        registry.register(
            "agentry_db_pool_size",
            "Connections open now",
            metrics.pool_size.clone(),
        );
        registry.register(
            "agentry_db_pool_available",
            "Open connections idle now",
            metrics.pool_available.clone(),
        );
        registry.register(
            "agentry_db_pool_waiting",
            "Callers waiting for a connection",
            metrics.pool_waiting.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// Counts one answered request. `route` is the matched pattern or
    /// `unmatched`; `method` may be anything a client sent.
    pub fn observe(&self, route: String, method: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        let outcome = match (method, route.as_str()) {
            ("POST", "/v1/agent/bootstrap") => Some((&self.bootstraps, bootstrap_outcome(status))),
            ("POST", "/v1/agent/spend") => Some((&self.spends, spend_outcome(status))),
            _ => None,
        };
        if let Some((family, outcome)) = outcome {
            family.get_or_create(&OutcomeLabels { outcome }).inc();
        }
        let labels = RequestLabels {
            route,
            method,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Everything, in the Prometheus text exposition format 0.0.4.
    pub fn render(&self, pool: PoolStatus, backend: &'static str) -> String {
        let labels = BackendLabels { backend };
        for (gauge, value) in [
            (&self.pool_max, pool.max_size),
            (&self.pool_size, pool.size),
            (&self.pool_available, pool.available),
            (&self.pool_waiting, pool.waiting),
        ] {
            gauge
                .get_or_create(&labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing into a String cannot fail, and every metric here is one
        // the text format can carry.
        if let Err(error) = prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }
}

/// The method as a label: one of those the API serves, else `other`, so
/// made-up methods cannot mint series.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

fn bootstrap_outcome(status: u16) -> &'static str {
    match status {
        201 => "created",
        200 => "existing",
        400..=499 => "refused",
        _ => "failed",
    }
}

fn spend_outcome(status: u16) -> &'static str {
    match status {
        201 => "recorded",
        200 => "replayed",
        402 => "insufficient_budget",
        400..=499 => "refused",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PoolStatus {
        PoolStatus {
            max_size: 16,
            size: 3,
            available: 2,
            waiting: 0,
        }
    }

    fn value<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn counts_and_buckets_add_up() {
        let metrics = Metrics::default();
        let spend = || "/v1/agent/spend".to_owned();
        metrics.observe(spend(), "POST", 201, Duration::from_micros(300));
        metrics.observe(spend(), "POST", 201, Duration::from_millis(20));
        metrics.observe(spend(), "POST", 402, Duration::from_secs(30));
        metrics.observe(
            "/v1/agent/bootstrap".into(),
            "POST",
            200,
            Duration::from_millis(1),
        );
        let text = metrics.render(pool(), "sqlite");
        assert!(text.contains("# TYPE agentry_http_requests_total counter\n"));
        assert!(text.contains("# TYPE agentry_http_request_duration_seconds histogram\n"));
        let ok = r#"route="/v1/agent/spend",method="POST",status="201""#;
        assert_eq!(
            value(&text, &format!("agentry_http_requests_total{{{ok}}}")),
            "2"
        );
        let bucket = |labels: &str, le: &str| {
            value(
                &text,
                &format!("agentry_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}}"),
            )
            .to_owned()
        };
        assert_eq!(bucket(ok, "0.0005"), "1");
        assert_eq!(bucket(ok, "0.025"), "2");
        assert_eq!(
            value(
                &text,
                &format!("agentry_http_request_duration_seconds_count{{{ok}}}")
            ),
            "2"
        );
        let slow = r#"route="/v1/agent/spend",method="POST",status="402""#;
        // Past the last bucket: only in +Inf.
        assert_eq!(bucket(slow, "10"), "0");
        assert_eq!(bucket(slow, "+Inf"), "1");
        assert_eq!(
            value(&text, "agentry_spend_total{outcome=\"recorded\"}"),
            "2"
        );
        assert_eq!(
            value(
                &text,
                "agentry_spend_total{outcome=\"insufficient_budget\"}"
            ),
            "1"
        );
        assert_eq!(
            value(&text, "agentry_bootstrap_total{outcome=\"existing\"}"),
            "1"
        );
        assert_eq!(
            value(&text, "agentry_db_pool_size{backend=\"sqlite\"}"),
            "3"
        );
        assert_eq!(
            value(&text, "agentry_db_pool_max{backend=\"sqlite\"}"),
            "16"
        );
    }

    #[test]
    fn made_up_methods_all_count_as_other() {
        let metrics = Metrics::default();
        metrics.observe("/healthz".into(), "GET", 200, Duration::from_millis(1));
        let before = metrics.render(pool(), "sqlite").len();
        for i in 0..1_000 {
            let method = format!("MADEUP{i}{}", "X".repeat(1_000));
            metrics.observe("unmatched".into(), &method, 404, Duration::from_millis(1));
        }
        let text = metrics.render(pool(), "sqlite");
        assert!(!text.contains("MADEUP"), "a made-up method became a label");
        assert_eq!(
            value(
                &text,
                r#"agentry_http_requests_total{route="unmatched",method="other",status="404"}"#
            ),
            "1000"
        );
        // One new series: a counter line and a histogram's 18 lines.
        assert!(text.len() < before + 3_000, "{} bytes:\n{text}", text.len());
        assert_eq!(method_label("get"), "other", "methods are case-sensitive");
        assert_eq!(method_label("OPTIONS"), "OPTIONS");
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        metrics.observe("a\"b\\c\nd".into(), "GET", 200, Duration::ZERO);
        let text = metrics.render(pool(), "sqlite");
        assert!(text.contains(r#"route="a\"b\\c\nd""#), "{text}");
    }
}
