//! Counting and summarising: what each worker saw, merged into one report.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What one worker saw in the measured window.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Latency of every 2xx response, in microseconds.
    pub(crate) latencies_us: Vec<u32>,
    /// Non-2xx responses by status.
    pub(crate) failures: BTreeMap<u16, u64>,
    /// Requests that got no response: refused or broken connections, timeouts.
    pub(crate) transport_errors: u64,
}

impl Tally {
    pub(crate) fn success(&mut self, latency: Duration) {
        self.latencies_us
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }

    pub(crate) fn failure(&mut self, status: u16) {
        *self.failures.entry(status).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (status, count) in other.failures {
            *self.failures.entry(status).or_default() += count;
        }
        self.transport_errors += other.transport_errors;
    }
}

/// The `p`th percentile (0 < p <= 100) of sorted values by the nearest-rank
/// method: the smallest value at least `p` percent of the values are at or
/// below. Always one of the values, never an interpolation.
pub(crate) fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let count = sorted.len() as f64;
    // The cast is exact: the rank is at most the number of values.
    let rank = ((p / 100.0) * count).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// The innocent caller's figures (`--probe`): latencies of its 2xx answers,
/// and how many requests got anything else or nothing.
#[derive(Debug, PartialEq)]
pub(crate) struct Probe {
    pub(crate) count: u64,
    pub(crate) p50_us: Option<u32>,
    pub(crate) p99_us: Option<u32>,
    pub(crate) failures: u64,
}

impl Probe {
    pub(crate) fn new(mut tally: Tally, failures: u64) -> Self {
        tally.latencies_us.sort_unstable();
        Probe {
            count: tally.latencies_us.len() as u64,
            p50_us: percentile(&tally.latencies_us, 50.0),
            p99_us: percentile(&tally.latencies_us, 99.0),
            failures,
        }
    }
}

/// One scenario's figures, printed as one `key=value` line for xtask.
#[derive(Debug, PartialEq)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) seconds: f64,
    pub(crate) ok: u64,
    pub(crate) p50_us: Option<u32>,
    pub(crate) p99_us: Option<u32>,
    pub(crate) failures: BTreeMap<u16, u64>,
    pub(crate) transport_errors: u64,
    pub(crate) probe: Option<Probe>,
}

impl Report {
    pub(crate) fn new(scenario: &str, measured: Duration, mut tally: Tally) -> Self {
        tally.latencies_us.sort_unstable();
        Report {
            scenario: scenario.to_owned(),
            seconds: measured.as_secs_f64(),
            ok: tally.latencies_us.len() as u64,
            p50_us: percentile(&tally.latencies_us, 50.0),
            p99_us: percentile(&tally.latencies_us, 99.0),
            failures: tally.failures,
            transport_errors: tally.transport_errors,
            probe: None,
        }
    }

    /// 2xx responses per second: refusals are not throughput.
    pub(crate) fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub(crate) fn non_2xx(&self) -> u64 {
        self.failures.values().sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = |value: Option<u32>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let statuses = if self.failures.is_empty() {
            "-".to_owned()
        } else {
            self.failures
                .iter()
                .map(|(status, count)| format!("{status}:{count}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "scenario={} seconds={:.3} ok={} rps={:.1} p50_us={} p99_us={} non_2xx={} statuses={} transport_errors={}",
            self.scenario,
            self.seconds,
            self.ok,
            self.rps(),
            micros(self.p50_us),
            micros(self.p99_us),
            self.non_2xx(),
            statuses,
            self.transport_errors,
        )?;
        if let Some(probe) = &self.probe {
            write!(
                f,
                " probe_count={} probe_p50_us={} probe_p99_us={} probe_failures={}",
                probe.count,
                micros(probe.p50_us),
                micros(probe.p99_us),
                probe.failures,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&values, 0.1), Some(1));
        // Ten values: p99 is the largest, p50 the fifth.
        let ten: Vec<u32> = (1..=10).map(|v| v * 10).collect();
        assert_eq!(percentile(&ten, 99.0), Some(100));
        assert_eq!(percentile(&ten, 50.0), Some(50));
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&values, 0.0), None);
        assert_eq!(percentile(&values, 101.0), None);
    }

    #[test]
    fn reports_merge_workers_and_count_only_successes_as_throughput() {
        let mut first = Tally::default();
        for micros in [300, 100, 200] {
            first.success(Duration::from_micros(micros));
        }
        first.failure(429);
        let mut second = Tally::default();
        second.success(Duration::from_micros(400));
        second.failure(429);
        second.failure(503);
        second.transport_errors = 2;
        first.merge(second);
        let report = Report::new("spend", Duration::from_secs(2), first);
        assert_eq!(report.ok, 4);
        assert_eq!(report.rps(), 2.0);
        assert_eq!(report.p50_us, Some(200));
        assert_eq!(report.p99_us, Some(400));
        assert_eq!(report.non_2xx(), 3);
        assert_eq!(
            report.to_string(),
            "scenario=spend seconds=2.000 ok=4 rps=2.0 p50_us=200 p99_us=400 non_2xx=3 \
             statuses=429:2,503:1 transport_errors=2"
        );
        let mut probed = Report::new("login-guesses", Duration::from_secs(1), Tally::default());
        let mut innocent = Tally::default();
        innocent.success(Duration::from_micros(900));
        probed.probe = Some(Probe::new(innocent, 1));
        assert!(probed.to_string().ends_with(
            " transport_errors=0 probe_count=1 probe_p50_us=900 probe_p99_us=900 probe_failures=1"
        ));
        let empty = Report::new("idle", Duration::ZERO, Tally::default());
        assert_eq!(empty.rps(), 0.0);
        assert!(
            empty
                .to_string()
                .contains("p50_us=- p99_us=- non_2xx=0 statuses=-")
        );
    }
}
