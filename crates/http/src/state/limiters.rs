//! Per-process counters the guard consults on every request: agents' and
//! API keys' request rates, refusals already audited, agents seen.

use std::collections::HashMap;
use std::sync::Mutex;

use agentry_domain::{AgentId, TenantId};
use agentry_ledger::{LeasedWindow, RateDecision, RateLimited, lease_from};
use time::OffsetDateTime;

use super::DEFAULT_API_KEY_RPM;

/// Past this many tracked agents, windows of past minutes are dropped.
const RATE_WINDOWS_BEFORE_PRUNE: usize = 10_000;

/// Where an agent's requests-per-minute count lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateScope {
    /// In this process only: the one serving process of a SQLite file.
    #[default]
    Process,
    /// In the database replicas share: this process leases blocks of each
    /// minute from it (see `agentry_ledger::LeasedWindow`).
    Shared,
}

/// What the limiter needs before it can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateStep {
    Decided(Result<u32, RateLimited>),
    /// Lease `ask` requests of `minute` from the shared count, then hand
    /// the lease to [`RateLimiter::leased`].
    Lease {
        minute: i64,
        ask: u32,
    },
}

impl From<RateDecision> for RateStep {
    fn from(decision: RateDecision) -> Self {
        match decision {
            RateDecision::Admitted { count } => Self::Decided(Ok(count)),
            RateDecision::Refused(limited) => Self::Decided(Err(limited)),
            RateDecision::Lease { minute, ask } => Self::Lease { minute, ask },
        }
    }
}

/// Requests-per-minute windows, per agent. With [`RateScope::Shared`]
/// every replica leases its share of each minute from the database, so N
/// replicas together stay within the limit; with [`RateScope::Process`] the
/// window is this process's own. Either way admitting costs no I/O while
/// leased requests remain.
#[derive(Debug, Default)]
pub struct RateLimiter {
    scope: RateScope,
    windows: Mutex<HashMap<AgentId, LeasedWindow>>,
}

impl RateLimiter {
    pub fn new(scope: RateScope) -> Self {
        Self {
            scope,
            windows: Mutex::default(),
        }
    }

    pub fn scope(&self) -> RateScope {
        self.scope
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, LeasedWindow>> {
        // A poisoned lock still holds valid windows (each update is one
        // assignment); failing open would switch rate limiting off.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one request of `agent` at `now`, or refuses it, or (shared
    /// scope, nothing leased left) asks for a lease.
    pub fn admit(&self, agent: AgentId, limit: u32, now: OffsetDateTime) -> RateStep {
        let mut windows = self.windows();
        // Windows of past minutes count nothing; dropping them keeps the map
        // to the agents active this minute.
        if windows.len() >= RATE_WINDOWS_BEFORE_PRUNE {
            windows.retain(|_, window| window.requests_this_minute(now) > 0);
        }
        let window = windows
            .entry(agent)
            .or_insert_with(|| LeasedWindow::empty(now));
        let (mut next, mut decision) = window.admit(now, limit);
        if self.scope == RateScope::Process
            && let RateDecision::Lease { minute, ask } = decision
        {
            // The process is the only holder: it leases from itself.
            let (total, granted) = lease_from(next.leased_this_minute(now), ask, limit);
            (next, decision) = next
                .leased(minute, granted, total >= limit, now)
                .admit(now, limit);
        }
        *window = next;
        RateStep::from(decision)
    }

    /// Adds what a lease of `minute` got and admits the request that asked
    /// for it. Several requests may lease at once; each adds its grant.
    pub fn leased(
        &self,
        agent: AgentId,
        lease: (i64, u32, bool),
        limit: u32,
        now: OffsetDateTime,
    ) -> RateStep {
        let (minute, granted, spent) = lease;
        let mut windows = self.windows();
        let window = windows
            .entry(agent)
            .or_insert_with(|| LeasedWindow::empty(now));
        let (next, decision) = window.leased(minute, granted, spent, now).admit(now, limit);
        *window = next;
        RateStep::from(decision)
    }

    /// Requests this process admitted for `agent` in the minute of `now`.
    pub fn requests_this_minute(&self, agent: AgentId, now: OffsetDateTime) -> u32 {
        self.windows()
            .get(&agent)
            .map_or(0, |window| window.requests_this_minute(now))
    }
}

/// The request budget of each tenant API key in this process: GCRA
/// (`governor`), `rpm` a minute with bursts of up to a minute's worth. Only
/// keys the database knows get a cell, so the map is bounded by the keys
/// in use; [`ApiKeyRateLimiter::shrink`] drops the ones idle long enough
/// to be back at a full budget. Unlike the agents' rpm, which replicas
/// share, a key's budget is this process's: across N replicas a key may
/// get up to N times it (a tenant key is an operator's, not a fleet's).
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
