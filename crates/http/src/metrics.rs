//! Request metrics in the Prometheus text format (`GET /metrics`): counts
//! and latency histograms per route pattern, method and status; the
//! connection pool; and the outcomes of bootstrap and spend, read off the
//! same series so they can never disagree with them.
//!
//! Series are keyed by the route *pattern* (`/v1/agent/profiles/{agent_id}`,
//! or `unmatched`), never the path, so their number stays bounded whatever
//! clients send. Recording takes a read lock and a few atomic adds; the
//! write lock is taken once per new series.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agentry_store::PoolStatus;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesKey {
    route: String,
    method: String,
    status: u16,
}

#[derive(Debug, Default)]
struct Series {
    count: AtomicU64,
    sum_micros: AtomicU64,
    /// Not cumulative: each request lands in its first fitting bucket; the
    /// text format's cumulative counts are summed when rendering.
    buckets: [AtomicU64; BUCKETS.len()],
}

/// The registry of series; shared by every worker.
#[derive(Debug, Default)]
pub struct Metrics {
    series: RwLock<HashMap<SeriesKey, Arc<Series>>>,
}

impl Metrics {
    /// Counts one answered request.
    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let key = SeriesKey {
            route: route.to_owned(),
            method: method.to_owned(),
            status,
        };
        let found = self
            .series
            .read()
            .ok()
            .and_then(|series| series.get(&key).cloned());
        let series = match found {
            Some(series) => series,
            None => match self.series.write() {
                Ok(mut all) => Arc::clone(all.entry(key).or_default()),
                Err(_) => return,
            },
        };
        let seconds = elapsed.as_secs_f64();
        series.count.fetch_add(1, Ordering::Relaxed);
        series.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            series.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Everything, in the Prometheus text exposition format 0.0.4.
    pub fn render(&self, pool: PoolStatus, backend: &str) -> String {
        let snapshot: Vec<(SeriesKey, Arc<Series>)> = self
            .series
            .read()
            .map(|series| {
                let mut all: Vec<_> = series
                    .iter()
                    .map(|(key, series)| (key.clone(), Arc::clone(series)))
                    .collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                all
            })
            .unwrap_or_default();
        let mut out = String::new();
        let labels = |key: &SeriesKey| {
            format!(
                "route=\"{}\",method=\"{}\",status=\"{}\"",
                escape(&key.route),
                escape(&key.method),
                key.status
            )
        };
        out.push_str("# HELP agentry_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE agentry_http_requests_total counter\n");
        for (key, series) in &snapshot {
            let _ = writeln!(
                out,
                "agentry_http_requests_total{{{}}} {}",
                labels(key),
                series.count.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP agentry_http_request_duration_seconds Time from request to response head.\n",
        );
        out.push_str("# TYPE agentry_http_request_duration_seconds histogram\n");
        for (key, series) in &snapshot {
            let labels = labels(key);
            let mut cumulative = 0;
            for (bound, bucket) in BUCKETS.iter().zip(&series.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "agentry_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = series.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "agentry_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let sum = series.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "agentry_http_request_duration_seconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                out,
                "agentry_http_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
        outcomes(
            &mut out,
            &snapshot,
            "agentry_bootstrap_total",
            "Agent bootstraps by outcome.",
            "/v1/agent/bootstrap",
            bootstrap_outcome,
        );
        outcomes(
            &mut out,
            &snapshot,
            "agentry_spend_total",
            "Spend requests by outcome.",
            "/v1/agent/spend",
            spend_outcome,
        );
        let gauges = [
            (
                "agentry_db_pool_max",
                "Most connections the pool opens.",
                pool.max_size,
            ),
            ("agentry_db_pool_size", "Connections open now.", pool.size),
            (
                "agentry_db_pool_available",
                "Open connections idle now.",
                pool.available,
            ),
            (
                "agentry_db_pool_waiting",
                "Callers waiting for a connection.",
                pool.waiting,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name}{{backend=\"{backend}\"}} {value}");
        }
        out
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

/// A counter by outcome, summed from the request series of one route.
fn outcomes(
    out: &mut String,
    snapshot: &[(SeriesKey, Arc<Series>)],
    name: &str,
    help: &str,
    route: &str,
    outcome: fn(u16) -> &'static str,
) {
    let mut totals: std::collections::BTreeMap<&'static str, u64> = Default::default();
    for (key, series) in snapshot {
        if key.route == route && key.method == "POST" {
            *totals.entry(outcome(key.status)).or_default() += series.count.load(Ordering::Relaxed);
        }
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (outcome, count) in totals {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {count}");
    }
}

/// Label values are escaped as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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

    #[test]
    fn counts_and_buckets_add_up() {
        let metrics = Metrics::default();
        metrics.observe("/v1/agent/spend", "POST", 201, Duration::from_micros(300));
        metrics.observe("/v1/agent/spend", "POST", 201, Duration::from_millis(20));
        metrics.observe("/v1/agent/spend", "POST", 402, Duration::from_secs(30));
        metrics.observe("/v1/agent/bootstrap", "POST", 200, Duration::from_millis(1));
        let text = metrics.render(pool(), "sqlite");
        let line = |prefix: &str| {
            text.lines()
                .find(|line| line.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let spend = r#"route="/v1/agent/spend",method="POST",status="201""#;
        assert_eq!(
            line(&format!("agentry_http_requests_total{{{spend}}}")),
            "2"
        );
        assert_eq!(
            line(&format!(
                "agentry_http_request_duration_seconds_bucket{{{spend},le=\"0.0005\"}}"
            )),
            "1"
        );
        assert_eq!(
            line(&format!(
                "agentry_http_request_duration_seconds_bucket{{{spend},le=\"0.025\"}}"
            )),
            "2"
        );
        let slow = r#"route="/v1/agent/spend",method="POST",status="402""#;
        // Past the last bucket: only in +Inf.
        assert_eq!(
            line(&format!(
                "agentry_http_request_duration_seconds_bucket{{{slow},le=\"10\"}}"
            )),
            "0"
        );
        assert_eq!(
            line(&format!(
                "agentry_http_request_duration_seconds_bucket{{{slow},le=\"+Inf\"}}"
            )),
            "1"
        );
        assert_eq!(line("agentry_spend_total{outcome=\"recorded\"}"), "2");
        assert_eq!(
            line("agentry_spend_total{outcome=\"insufficient_budget\"}"),
            "1"
        );
        assert_eq!(line("agentry_bootstrap_total{outcome=\"existing\"}"), "1");
        assert_eq!(line("agentry_db_pool_size{backend=\"sqlite\"}"), "3");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
