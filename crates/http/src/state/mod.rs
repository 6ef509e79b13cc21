//! What every handler shares: the store, the keys, the settings, and the
//! caches that keep the request guard cheap.

mod audit;
mod cache;
mod limiters;

use std::sync::Arc;

use agentry_auth::{Audience, Claims, JwtIssuer};
use agentry_domain::{AgentId, TenantId};
use agentry_ledger::{Account, EnforcedLimits};
use agentry_store::{AgentRecord, Change, Store, StoreError, UserRecord};
use time::{Duration, OffsetDateTime};

use crate::keys::Keys;
use audit::{AUDIT_QUEUE, AuditMessage, write_audit_trail};
pub use cache::{GuardCache, UNKNOWN_KEY_TTL};
pub use limiters::{ApiKeyRateLimiter, RateLimiter, RateScope, RateStep, RefusalLog, Sightings};

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

/// How often expired delegated agents are looked for. Until the reaper
/// gets to one, the guard already refuses it (expiry is checked on every
/// request); the reaper terminates it and returns its budget.
pub const REAPER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the binary writes batched last-seen times.
pub const SIGHTINGS_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// How often the shared rate counts of past minutes are dropped.
pub const RATE_LEASE_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
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
        // A SQLite file has one serving process; PostgreSQL may have many.
        let rate_scope = match store.backend() {
            agentry_store::Backend::Sqlite => RateScope::Process,
            agentry_store::Backend::Postgres => RateScope::Shared,
        };
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
            rate: Arc::new(RateLimiter::new(rate_scope)),
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
    /// Drops the shared rate counts of minutes that are over (the shared
    /// scope only; a process's own windows age out by themselves).
    pub async fn prune_rate_leases(&self, now: OffsetDateTime) {
        if self.rate.scope() != RateScope::Shared {
            return;
        }
        let minute = now.unix_timestamp().div_euclid(60);
        if let Err(error) = self.store.prune_rate_leases(minute).await {
            tracing::warn!(%error, "cannot prune the shared rate counts");
        }
    }

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
            Change::SigningKeys | Change::SigningKeyRevoked(_) | Change::Resync | Change::Untrusted
        ),
    }
}
