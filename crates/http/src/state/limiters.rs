//! Per-process counters the guard consults on every request: agents' and
//! API keys' request rates, refusals already audited, agents seen.

use std::collections::HashMap;
use std::sync::Mutex;

use agentry_domain::{AgentId, TenantId};
use agentry_ledger::{RateLimited, RateWindow};
use time::OffsetDateTime;

use super::DEFAULT_API_KEY_RPM;

/// Past this many tracked agents, windows of past minutes are dropped.
const RATE_WINDOWS_BEFORE_PRUNE: usize = 10_000;

/// Requests-per-minute windows, per agent, in this process. Across N
/// replicas an agent may get up to N times its rpm; see docs/decisions.md.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<AgentId, RateWindow>>,
}

impl RateLimiter {
    pub fn admit(
        &self,
        agent: AgentId,
        limit: u32,
        now: OffsetDateTime,
    ) -> Result<u32, RateLimited> {
        // A poisoned lock still holds valid windows (each update is one
        // assignment); failing open would switch rate limiting off.
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Windows of past minutes count nothing; dropping them keeps the map
        // to the agents active this minute.
        if windows.len() >= RATE_WINDOWS_BEFORE_PRUNE {
            windows.retain(|_, window| window.requests_this_minute(now) > 0);
        }
        let window = windows
            .entry(agent)
            .or_insert_with(|| RateWindow::empty(now));
        let next = window.admit(now, limit)?;
        *window = next;
        Ok(next.count)
    }

    pub fn requests_this_minute(&self, agent: AgentId, now: OffsetDateTime) -> u32 {
        self.windows
            .lock()
            .ok()
            .and_then(|windows| {
                windows
                    .get(&agent)
                    .map(|window| window.requests_this_minute(now))
            })
            .unwrap_or(0)
    }
}

/// The request budget of each tenant API key in this process: GCRA
/// (`governor`), `rpm` a minute with bursts of up to a minute's worth. Only
/// keys the database knows get a cell, so the map is bounded by the keys
/// in use; [`ApiKeyRateLimiter::shrink`] drops the ones idle long enough
/// to be back at a full budget. Like the agents' rpm, across N replicas a
/// key may get up to N times its budget.
#[derive(Debug)]
pub struct ApiKeyRateLimiter {
    limiter: Option<governor::DefaultKeyedRateLimiter<uuid::Uuid>>,
}

impl ApiKeyRateLimiter {
    /// `rpm` requests a minute per key; 0 for no limit.
    pub fn new(rpm: u32) -> Self {
        Self {
            limiter: std::num::NonZeroU32::new(rpm)
                .map(|rpm| governor::RateLimiter::dashmap(governor::Quota::per_minute(rpm))),
        }
    }

    /// Counts a request of `key`; over budget, the whole seconds until the
    /// next one would be admitted (at least 1, for `Retry-After`).
    pub fn admit(&self, key: uuid::Uuid) -> Result<(), u64> {
        use governor::clock::{Clock, DefaultClock};
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }

    /// Drops the state of keys back at a full budget (as if never seen).
    pub fn shrink(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

impl Default for ApiKeyRateLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_API_KEY_RPM)
    }
}

/// Which refusals were already written to the audit trail this minute, so a
/// client hammering with a dead credential cannot flood the trail (and the
/// tenant's audit lock) with copies of one event.
#[derive(Debug, Default)]
pub struct RefusalLog {
    seen: Mutex<(i64, std::collections::HashSet<(AgentId, &'static str)>)>,
}

impl RefusalLog {
    /// True the first time `(agent, reason)` is refused in this minute.
    pub fn first_this_minute(
        &self,
        agent: AgentId,
        reason: &'static str,
        now: OffsetDateTime,
    ) -> bool {
        let minute = now.unix_timestamp().div_euclid(60);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.0 != minute {
            *seen = (minute, std::collections::HashSet::new());
        }
        seen.1.insert((agent, reason))
    }
}

/// When agents were last seen, gathered in memory and written in batches.
#[derive(Debug, Default)]
pub struct Sightings {
    pending: Mutex<HashMap<AgentId, (TenantId, OffsetDateTime)>>,
}

impl Sightings {
    pub fn saw(&self, tenant: TenantId, agent: AgentId, now: OffsetDateTime) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(agent, (tenant, now));
        }
    }

    /// The pending sightings, in agent order: the batch locks rows, and
    /// every transaction that locks several agents does it in id order.
    pub fn take(&self) -> Vec<(TenantId, AgentId, OffsetDateTime)> {
        let mut batch: Vec<_> = self
            .pending
            .lock()
            .map(|mut pending| {
                pending
                    .drain()
                    .map(|(agent, (tenant, at))| (tenant, agent, at))
                    .collect()
            })
            .unwrap_or_default();
        batch.sort_by_key(|(_, agent, _)| *agent);
        batch
    }
}
