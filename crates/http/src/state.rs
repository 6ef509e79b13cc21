//! What every handler shares: the store, the keys, the settings, and the
//! caches that keep the request guard cheap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentry_auth::{Audience, Claims, JwtIssuer};
use agentry_domain::{AgentId, AgentSlug, TenantId};
use agentry_ledger::{Account, EnforcedLimits, RateLimited, RateWindow};
use agentry_store::{AgentRecord, ApiKeyRecord, Change, Store, StoreError, UserRecord};
use time::{Duration, OffsetDateTime};

use crate::keys::Keys;

/// Settings read once at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `iss` of every token, and the base of URLs we hand out.
    pub public_url: String,
    /// Lifetime of agent tokens (seed 000: one hour).
    pub agent_token_ttl: Duration,
    /// Lifetime of session tokens (seed 002: 24 hours).
    pub session_token_ttl: Duration,
    /// Lifetime of invite tokens (seed 002: 7 days).
    pub invite_ttl: Duration,
    /// Where uploaded artifact bundles are kept (seed 003).
    pub artifact_dir: std::path::PathBuf,
    /// Largest artifact bundle accepted.
    pub max_artifact_bytes: u64,
    /// When set, the first-run workspace setup (seed 002) must carry it.
    pub setup_token: Option<String>,
    /// Password attempts (logins, invite acceptances) per account and per
    /// client address in any minute; 0 switches a limit off.
    pub login_attempts_per_minute: u32,
    pub login_attempts_per_address_per_minute: u32,
    /// Requests per minute each tenant API key may make (GCRA, bursts of up
    /// to a minute's worth); 0 for no limit. See [`ApiKeyRateLimiter`].
    pub api_key_rpm: u32,
}

impl Settings {
    /// The longest lifetime of any token this server mints: verification
    /// refuses longer ones, and a retired key stays in the ring this long.
    pub fn max_token_ttl(&self) -> Duration {
        self.agent_token_ttl
            .max(self.session_token_ttl)
            .max(crate::machines::CALLBACK_TOKEN_LIFETIME)
    }
}

/// The default of `--api-key-rpm`: 12,000 a minute (200 a second sustained,
/// a minute's worth at once) lets a provisioner bootstrap a fleet of
/// thousands in a minute, while one key alone cannot take the whole server
/// (which answers a few thousand requests a second on two cores).
pub const DEFAULT_API_KEY_RPM: u32 = 12_000;

/// An agent as the guard needs it: the record and what is enforced on it
/// (its profile budgets capped by the tenant's agent-limits entry).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSnapshot {
    pub record: AgentRecord,
    pub enforced: EnforcedLimits,
}

/// Caches behind the guard. Every entry may be dropped at any time; the
/// store's change feed drops the ones a write made wrong.
///
/// A loader notes `generation()` (or `ledger_generation()` for accounts)
/// before reading the database and inserts only if no invalidation happened
/// since. The check and the insert happen under the same lock the
/// invalidation bumps the generation under, so a read that raced a
/// revocation can never re-insert the pre-revocation state. Ledger changes
/// (every spend) have their own generation, so a busy ledger does not keep
/// agents and keys from being cached.
#[derive(Debug, Default)]
pub struct GuardCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    generation: u64,
    ledger_generation: u64,
    /// Moves when verified tokens are forgotten (a signing key revoked, a
    /// resync), so a verification that raced the revocation does not
    /// re-insert what it verified with the old ring.
    token_generation: u64,
    /// By signature segment; see `guard::token_signature`.
    tokens: HashMap<Box<str>, Claims>,
    api_keys: HashMap<[u8; 32], ApiKeyRecord>,
    /// Hashes of well-formed API keys the database did not know, with when
    /// it said so: a client retrying a made-up key gets its 401 without a
    /// database read until [`UNKNOWN_KEY_TTL`] has passed. See
    /// docs/decisions.md for why a key created afterwards is never in here.
    unknown_api_keys: HashMap<[u8; 32], OffsetDateTime>,
    agents: HashMap<AgentId, Arc<AgentSnapshot>>,
    accounts: HashMap<AgentId, Arc<Account>>,
    /// Agents a repeat bootstrap may answer for without the database (see
    /// [`GuardCache::ready_agent`]), by tenant and slug.
    ready: HashMap<(TenantId, AgentSlug), Arc<AgentSnapshot>>,
    /// Where each agent in `ready` is filed, so a change to it finds it.
    ready_keys: HashMap<AgentId, (TenantId, AgentSlug)>,
}

/// Entries per map before it is simply emptied; keeps memory bounded under
/// a flood of distinct credentials.
const CACHE_LIMIT: usize = 100_000;

/// How long "no such API key" is believed without asking the database.
pub const UNKNOWN_KEY_TTL: Duration = Duration::seconds(60);
/// Unknown key hashes kept at most (32 bytes and a time each: about 5 MB
/// with the map's overhead); past it the map is emptied, and a flood of
/// distinct made-up keys costs what it cost before the cache, one read each.
const UNKNOWN_KEY_LIMIT: usize = 65_536;

fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= CACHE_LIMIT {
        map.clear();
    }
    map.insert(key, value);
}

impl GuardCache {
    fn with<T>(&self, f: impl FnOnce(&mut CacheInner) -> T) -> Option<T> {
        self.inner.lock().ok().map(|mut inner| f(&mut inner))
    }

    pub fn generation(&self) -> u64 {
        self.with(|inner| inner.generation).unwrap_or(0)
    }

    /// Note it before verifying a token; [`GuardCache::remember_token`]
    /// keeps the result only if no revocation came in between.
    pub fn token_generation(&self) -> u64 {
        self.with(|inner| inner.token_generation).unwrap_or(0)
    }

    pub fn token(&self, signature: &str, now: OffsetDateTime) -> Option<Claims> {
        if signature.is_empty() {
            return None;
        }
        let claims = self.with(|inner| inner.tokens.get(signature).cloned())??;
        // Past expiry the full check must run again to say why.
        (claims.exp + agentry_auth::LEEWAY.whole_seconds() >= now.unix_timestamp())
            .then_some(claims)
    }

    pub fn remember_token(&self, token_generation: u64, signature: &str, claims: Claims) {
        if !signature.is_empty() {
            self.with(|inner| {
                if inner.token_generation == token_generation {
                    insert_bounded(&mut inner.tokens, signature.into(), claims);
                }
            });
        }
    }

    /// Whether the database said, less than [`UNKNOWN_KEY_TTL`] ago, that no
    /// API key has this hash.
    pub fn is_unknown_api_key(&self, hash: &[u8; 32], now: OffsetDateTime) -> bool {
        self.with(|inner| {
            inner
                .unknown_api_keys
                .get(hash)
                .is_some_and(|&seen| now - seen < UNKNOWN_KEY_TTL)
        })
        .unwrap_or(false)
    }

    pub fn remember_unknown_api_key(&self, hash: [u8; 32], now: OffsetDateTime) {
        self.with(|inner| {
            let unknown = &mut inner.unknown_api_keys;
            if unknown.len() >= UNKNOWN_KEY_LIMIT {
                // Expired entries first; a map full of fresh ones is a
                // flood, and starts over.
                unknown.retain(|_, seen| now - *seen < UNKNOWN_KEY_TTL);
                if unknown.len() >= UNKNOWN_KEY_LIMIT {
                    unknown.clear();
                }
            }
            unknown.insert(hash, now);
        });
    }

    /// Forgets that `hash` was unknown: for a key created in this process.
    pub fn forget_unknown_api_key(&self, hash: &[u8; 32]) {
        self.with(|inner| inner.unknown_api_keys.remove(hash));
    }

    pub fn api_key(&self, hash: &[u8; 32]) -> Option<ApiKeyRecord> {
        self.with(|inner| inner.api_keys.get(hash).cloned())?
    }

    pub fn remember_api_key(&self, generation: u64, hash: [u8; 32], key: ApiKeyRecord) {
        self.with(|inner| {
            if inner.generation == generation {
                insert_bounded(&mut inner.api_keys, hash, key);
            }
        });
    }

    pub fn ledger_generation(&self) -> u64 {
        self.with(|inner| inner.ledger_generation).unwrap_or(0)
    }

    pub fn account(&self, id: AgentId) -> Option<Arc<Account>> {
        self.with(|inner| inner.accounts.get(&id).cloned())?
    }

    pub fn remember_account(&self, ledger_generation: u64, id: AgentId, account: Arc<Account>) {
        self.with(|inner| {
            if inner.ledger_generation == ledger_generation {
                insert_bounded(&mut inner.accounts, id, account);
            }
        });
    }

    pub fn agent(&self, id: AgentId) -> Option<Arc<AgentSnapshot>> {
        self.with(|inner| inner.agents.get(&id).cloned())?
    }

    pub fn remember_agent(&self, generation: u64, snapshot: Arc<AgentSnapshot>) {
        self.with(|inner| {
            if inner.generation == generation {
                insert_bounded(&mut inner.agents, snapshot.record.id, snapshot);
            }
        });
    }

    /// The agent `slug` of `tenant` as a bootstrap last found it: active,
    /// not delegated and with its limits entry, so a repeat bootstrap can
    /// answer without reading or writing anything. Dropped by every change
    /// to the agent and to its tenant's limits, like the guard's snapshots,
    /// so a token is never minted from a state the guard would not honour.
    pub fn ready_agent(&self, tenant: TenantId, slug: &AgentSlug) -> Option<Arc<AgentSnapshot>> {
        self.with(|inner| inner.ready.get(&(tenant, slug.clone())).cloned())?
    }

    /// Files `snapshot` for [`GuardCache::ready_agent`] unless something
    /// changed since `generation` was read.
    pub fn remember_ready_agent(&self, generation: u64, snapshot: Arc<AgentSnapshot>) {
        self.with(|inner| {
            if inner.generation != generation {
                return;
            }
            // Both maps go together: a key forgotten alone would leave its
            // snapshot where no change could reach it.
            if inner.ready.len() >= CACHE_LIMIT {
                inner.ready.clear();
                inner.ready_keys.clear();
            }
            let key = (snapshot.record.tenant_id, snapshot.record.slug.clone());
            inner.ready_keys.insert(snapshot.record.id, key.clone());
            inner.ready.insert(key, snapshot);
        });
    }

    /// Forgets what `change` may have made wrong.
    pub fn invalidate(&self, change: Change) {
        self.with(|inner| {
            if let Change::Ledger(id) = change {
                inner.ledger_generation += 1;
                inner.accounts.remove(&id);
                return;
            }
            inner.generation += 1;
            match change {
                Change::Agent(id) => {
                    inner.agents.remove(&id);
                    if let Some(key) = inner.ready_keys.remove(&id) {
                        inner.ready.remove(&key);
                    }
                    inner.api_keys.retain(|_, key| key.agent_id != Some(id));
                }
                Change::ApiKey(id) => inner.api_keys.retain(|_, key| key.id != id),
                Change::TenantLimits(tenant) => {
                    inner
                        .agents
                        .retain(|_, agent| agent.record.tenant_id != tenant);
                    inner.ready.retain(|(owner, _), _| *owner != tenant);
                    inner.ready_keys.retain(|_, (owner, _)| *owner != tenant);
                }
                Change::Ledger(_) => {}
                // Verified tokens stay verified when a key is retired (they
                // keep their validity until expiry); new keys only add.
                Change::SigningKeys => {}
                // The cache does not know which key verified a token;
                // revocations are rare enough to forget them all.
                Change::SigningKeyRevoked(_) => {
                    inner.token_generation += 1;
                    inner.tokens.clear();
                }
                Change::Resync => {
                    inner.ledger_generation += 1;
                    inner.token_generation += 1;
                    inner.tokens.clear();
                    inner.unknown_api_keys.clear();
                    inner.api_keys.clear();
                    inner.agents.clear();
                    inner.accounts.clear();
                    inner.ready.clear();
                    inner.ready_keys.clear();
                }
            }
        });
    }

    pub fn clear(&self) {
        self.invalidate(Change::Resync);
    }
}

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

/// Audit events waiting to be written before new ones are dropped.
const AUDIT_QUEUE: usize = 65_536;
/// Most audit events written in one transaction.
const AUDIT_BATCH: usize = 512;

/// What the audit writer is sent.
enum AuditMessage {
    Event(TenantId, agentry_store::NewAuditEvent),
    /// Answered once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Writes queued audit events until every sender is gone. Whatever queued
/// while the last batch was written goes into the next, grouped by tenant
/// in queue order, so each tenant's chain head is locked once per batch
/// rather than once per event.
async fn write_audit_trail(store: Store, mut queue: tokio::sync::mpsc::Receiver<AuditMessage>) {
    let mut queued = Vec::with_capacity(AUDIT_BATCH);
    while queue.recv_many(&mut queued, AUDIT_BATCH).await > 0 {
        let mut batches: Vec<(TenantId, Vec<agentry_store::NewAuditEvent>)> = Vec::new();
        let mut flushed = Vec::new();
        for message in queued.drain(..) {
            let (tenant, event) = match message {
                AuditMessage::Event(tenant, event) => (tenant, event),
                AuditMessage::Flush(done) => {
                    flushed.push(done);
                    continue;
                }
            };
            match batches.iter_mut().find(|(known, _)| *known == tenant) {
                Some((_, events)) => events.push(event),
                None => batches.push((tenant, vec![event])),
            }
        }
        for (tenant, events) in batches {
            let count = events.len();
            let appended = store
                .detached(async move |store| {
                    store
                        .append_audit_batch(tenant, events, agentry_store::now())
                        .await
                })
                .await;
            if let Err(error) = appended {
                tracing::warn!(%error, count, "cannot append to the audit trail");
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// How often expired delegated agents are looked for. Until the reaper
/// gets to one, the guard already refuses it (expiry is checked on every
/// request); the reaper terminates it and returns its budget.
pub const REAPER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the binary writes batched last-seen times.
pub const SIGHTINGS_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// How often the binary drops quiet API keys' request windows.
pub const QUIET_KEYS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Everything a handler needs, shared by all workers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub keys: Keys,
    pub issuer: Arc<JwtIssuer>,
    pub settings: Arc<Settings>,
    pub guard: Arc<GuardCache>,
    pub rate: Arc<RateLimiter>,
    pub api_key_rate: Arc<ApiKeyRateLimiter>,
    pub sightings: Arc<Sightings>,
    pub refusals: Arc<RefusalLog>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub passwords: Arc<crate::passwords::PasswordWork>,
    pub logins: Arc<crate::passwords::LoginThrottle>,
    audit_queue: tokio::sync::mpsc::Sender<AuditMessage>,
}

impl AppState {
    /// Builds the state and ties the guard's caches to the store's change
    /// feed, synchronously: a write in this process has invalidated them by
    /// the time it returns. Starts the audit writer, so it must be called
    /// inside a tokio runtime.
    pub fn new(store: Store, keys: Keys, settings: Settings) -> Self {
        let guard = Arc::new(GuardCache::default());
        let invalidated = Arc::clone(&guard);
        let revoked = keys.clone();
        store.on_change(Arc::new(move |change| {
            // The key leaves the ring before the cached tokens go, so no
            // request in between can verify one again with it.
            if let Change::SigningKeyRevoked(digest) = change {
                revoked.forget_revoked(digest);
            }
            invalidated.invalidate(change);
        }));
        let (audit_queue, queued) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
        tokio::spawn(write_audit_trail(store.clone(), queued));
        let logins = Arc::new(crate::passwords::LoginThrottle::new(
            settings.login_attempts_per_minute,
            settings.login_attempts_per_address_per_minute,
        ));
        Self {
            audit_queue,
            issuer: Arc::new(JwtIssuer::new(
                settings.public_url.clone(),
                settings.max_token_ttl(),
            )),
            api_key_rate: Arc::new(ApiKeyRateLimiter::new(settings.api_key_rpm)),
            store,
            keys,
            settings: Arc::new(settings),
            guard,
            rate: Arc::default(),
            sightings: Arc::default(),
            refusals: Arc::default(),
            metrics: Arc::default(),
            passwords: Arc::default(),
            logins,
        }
    }

    /// Mints an agent token for `agent`; `None` only if no signing key is
    /// loaded, which start-up prevents.
    pub fn mint_agent_token(
        &self,
        agent: &AgentRecord,
        now: OffsetDateTime,
    ) -> Option<(String, OffsetDateTime)> {
        self.mint(
            Audience::Agent,
            agent.id.as_uuid(),
            agent.tenant_id,
            agent.credential_epoch,
            now,
            self.settings.agent_token_ttl,
        )
    }

    /// Mints a session token for `user`: besides the standard claims it
    /// names the user (`user_id`, `email`), as Agent United's web client
    /// reads them from the token. `None` only if no signing key is loaded.
    pub fn mint_session(
        &self,
        user: &UserRecord,
        now: OffsetDateTime,
    ) -> Option<(String, OffsetDateTime)> {
        let mut claims = self.issuer.claims(
            Audience::Session,
            user.id,
            user.tenant_id.as_uuid(),
            user.session_epoch,
            now,
            self.settings.session_token_ttl,
            uuid::Uuid::now_v7(),
        );
        claims.user_id = Some(user.id);
        claims.email = Some(user.email.clone());
        self.sign(&claims)
    }

    /// `claims` signed with the current key, and when they expire.
    fn sign(&self, claims: &Claims) -> Option<(String, OffsetDateTime)> {
        let key = self.keys.current()?;
        Some((key.sign(claims), claims.expires_at()))
    }

    /// Mints a token for `audience`; `None` only if no signing key is loaded.
    pub fn mint(
        &self,
        audience: Audience,
        subject: uuid::Uuid,
        tenant: TenantId,
        epoch: i64,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Option<(String, OffsetDateTime)> {
        let claims = self.issuer.claims(
            audience,
            subject,
            tenant.as_uuid(),
            epoch,
            now,
            lifetime,
            uuid::Uuid::now_v7(),
        );
        self.sign(&claims)
    }

    /// Queues `event` for the tenant's audit trail without delaying the
    /// caller. Events are appended in the order they were queued, in
    /// batches; a failure is logged.
    pub fn audit(&self, tenant: TenantId, event: agentry_store::NewAuditEvent) {
        if let Err(error) = self
            .audit_queue
            .try_send(AuditMessage::Event(tenant, event))
        {
            // Full only when the database has fallen far behind; holding
            // more would trade the process's memory for the trail.
            if let AuditMessage::Event(_, event) = error.into_inner() {
                tracing::error!(action = %event.action, "audit queue full; event dropped");
            }
        }
    }

    /// Waits until every audit event queued so far is written (or its write
    /// has failed and been logged). For a graceful stop: what the server
    /// answered must not leave the trail behind in memory.
    pub async fn flush_audit(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self
            .audit_queue
            .send(AuditMessage::Flush(done))
            .await
            .is_ok()
        {
            let _ = written.await;
        }
    }

    /// What is enforced on `agent`, from its entry in its tenant's
    /// agent-limits map.
    pub async fn snapshot(&self, agent: AgentRecord) -> Result<AgentSnapshot, StoreError> {
        let enforced = self.enforced(&agent).await?;
        Ok(AgentSnapshot {
            record: agent,
            enforced,
        })
    }

    /// What is enforced on `agent` now, read from the database.
    pub async fn enforced(&self, agent: &AgentRecord) -> Result<EnforcedLimits, StoreError> {
        let agent = agent.clone();
        self.store
            .detached(async move |store| store.enforced_for(&agent).await)
            .await
    }

    /// The agent's account as its ledger replays, through the cache; every
    /// append to the ledger drops it (here at once, on other replicas when
    /// they hear of it).
    pub async fn account(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> Result<Arc<Account>, StoreError> {
        if let Some(account) = self.guard.account(agent) {
            return Ok(account);
        }
        let generation = self.guard.ledger_generation();
        let account = Arc::new(
            self.store
                .detached(async move |store| store.account(tenant, agent).await)
                .await?,
        );
        self.guard
            .remember_account(generation, agent, Arc::clone(&account));
        Ok(account)
    }

    /// Terminates agents whose TTL has run out by `now`, with their
    /// descendants, and refunds their unspent budget to their parents.
    /// Returns how many it reclaimed.
    pub async fn reap_expired(&self, now: OffsetDateTime) -> usize {
        let expired = match self.store.expired_agents(now, 100).await {
            Ok(expired) => expired,
            Err(error) => {
                tracing::warn!(%error, "reaper cannot list expired agents");
                return 0;
            }
        };
        let mut reaped = 0;
        for (tenant, agent) in expired {
            let reclaimed = self
                .store
                .reclaim_agent(
                    tenant,
                    agent,
                    agentry_lifecycle::TerminationReason::Expired,
                    now,
                )
                .await;
            match reclaimed {
                Ok(reclaimed) => {
                    reaped += 1;
                    tracing::info!(%agent, refunded = %reclaimed.refunded, "reaped an expired agent");
                }
                Err(error) => {
                    tracing::warn!(%agent, %error, "reaper cannot reclaim an expired agent")
                }
            }
        }
        reaped
    }

    /// Reloads the signing keys from the store (after a rotation was
    /// announced, or when changes may have been missed); a failure is
    /// logged and the keys in hand stay.
    pub async fn reload_signing_keys(&self) {
        if let Err(error) = self.keys.reload(&self.store, agentry_store::now()).await {
            tracing::error!(%error, "cannot reload signing keys");
        }
    }

    /// Writes the batched last-seen times of agents; a failure is logged
    /// and the batch is dropped (the next request sights the agent again).
    pub async fn flush_sightings(&self) {
        let batch = self.sightings.take();
        if let Err(error) = self.store.record_last_seen(batch).await {
            tracing::warn!(%error, "cannot record last-seen times");
        }
    }

    /// Drops the request windows of API keys that have gone quiet, so the
    /// limiter's memory follows the keys in use.
    pub fn forget_quiet_api_keys(&self) {
        self.api_key_rate.shrink();
    }
}

/// Whether `change` (or a lagged receiver, `None`) means the signing keys
/// may have changed.
pub fn may_rotate_signing_keys(change: Option<&Change>) -> bool {
    match change {
        None => true,
        Some(change) => matches!(
            change,
            Change::SigningKeys | Change::SigningKeyRevoked(_) | Change::Resync
        ),
    }
}
