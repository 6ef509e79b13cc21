//! Persistence for Agentry's domain model, on SQLite or PostgreSQL.
//!
//! This crate owns the diesel schema, the embedded migrations of both
//! backends, the connection pools, and the repository functions on
//! [`Store`]. One set of functions serves both backends; the only branch on
//! the backend is in `db.rs`. Every tenant-owned repository function takes
//! the tenant id. Uniqueness and concurrency are the database's job:
//! constraints, transactions (`BEGIN IMMEDIATE` on SQLite, row locks on
//! PostgreSQL) and version columns.
//!
//! The rules the store applies inside a transaction (whether a spend fits,
//! which lifecycle move is legal) come from `agentry-ledger` and
//! `agentry-lifecycle`; the store reads, asks them, and writes what they
//! return. It never depends on actix and knows no HTTP wire format.

mod agents;
mod audit;
mod changes;
mod channels;
mod db;
mod delegation;
mod error;
mod feed;
mod instance;
mod integrity;
mod ledger;
mod limits;
mod migrations;
mod postgres_tls;
mod provisioning;
mod rate_leases;
mod registry;
mod schema;
mod signing_keys;
mod tenants;
mod tokens;
mod types;

use time::OffsetDateTime;
use uuid::Uuid;

/// The entities the store keeps, defined in `agentry-domain`.
pub use agentry_domain::{AgentRecord, ApiKeyRecord};
pub use agents::{LifecycleChange, NewAgent, ProfilePatch};
pub use audit::{AuditEvent, BrokenLink, NewAuditEvent};
pub use changes::{Change, ChangeListener, KidDigest, SQLITE_POLL};
pub use channels::{ChannelMember, ChannelPatch};
pub use db::{Backend, DatabaseUrl, PoolOptions, redact_database_url};
pub use delegation::{RECLAIM_ATTEMPTS, Reclaimed};
pub use error::StoreError;
pub use feed::{FeedHealth, HEARTBEAT_DEADLINE, HEARTBEAT_INTERVAL, RECONNECT_AFTER};
#[cfg(feature = "test-hooks")]
pub use instance::FAIL_BOOTSTRAP_AFTER_CHANNEL;
pub use instance::{
    BootstrapAgent, BootstrapHuman, ChannelRecord, InstanceBootstrap, InstanceBootstrapped,
    UserRecord,
};
pub use integrity::IntegrityReport;
pub use ledger::{Accounts, Appends, LedgerView};
pub use limits::{AgentLimitEntry, AgentLimits, LIMITS_ATTEMPTS, enforced_limits};
pub use migrations::{MigrationStatus, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
pub use provisioning::{
    ArtifactKind, ArtifactRecord, CaRecord, CallbackState, IssuedCertificateRecord,
    MachineInstance, MachineInstancePatch, MachineSession, NewIssuedCertificate,
    NewMachineInstance, NewMachineSession, OpenSessionError, OpenedSession, ProvisionLog,
    SessionError,
};
pub use rate_leases::RateLease;
pub use registry::AgentPageQuery;
pub use signing_keys::{SigningKeyRecord, SigningKeyRevocation};
pub use tenants::{NewApiKey, Tenant};
pub use tokens::{NewToken, TokenError, TokenPurpose, TokenRecord};

/// How the connection pool stands: its bound, the connections open, the
/// idle ones, and the callers waiting for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub max_size: usize,
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
}

/// The handle to the database: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Store {
    pools: db::Pools,
    backend: Backend,
    /// The multi-thread runtime the store was opened on; see
    /// [`Store::detached`].
    runtime: tokio::runtime::Handle,
    changes: tokio::sync::broadcast::Sender<changes::Change>,
    listeners: changes::Listeners,
    /// Whether the change feed can be trusted; see `feed.rs`.
    feed: std::sync::Arc<feed::FeedState>,
    /// Accounts as last read, so reading one replays only newer entries.
    accounts: std::sync::Arc<ledger::AccountCache>,
    /// Test hook: when set, every agent-limits write fails as if it had
    /// lost its race three times. Compiled only with `test-hooks`.
    #[cfg(feature = "test-hooks")]
    fail_limits_writes: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens a pool for `url`. No connection is made until first use; call
    /// [`Store::migrate`] or [`Store::ping`] to find out whether it works.
    ///
    /// Must be called on a tokio multi-thread runtime: the SQLite driver and
    /// the migration harness block a worker thread, which a current-thread
    /// runtime cannot spare.
    pub fn connect(url: &DatabaseUrl, options: &PoolOptions) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .ok_or_else(|| {
                StoreError::Config(
                    "the store must be opened on a tokio multi-thread runtime".into(),
                )
            })?;
        Ok(Self {
            pools: db::Pools::connect(url, options)?,
            backend: url.backend(),
            runtime,
            changes: changes::channel(),
            listeners: changes::Listeners::default(),
            feed: std::sync::Arc::default(),
            accounts: std::sync::Arc::default(),
            #[cfg(feature = "test-hooks")]
            fail_limits_writes: std::sync::Arc::default(),
        })
    }

    /// Runs `task` on the store's own runtime and waits for it. If the
    /// caller stops waiting (an HTTP client hung up), the task still runs to
    /// the end: a transaction is never abandoned half way, and the SQLite
    /// driver, which cannot be cancelled mid-query, is never dropped on a
    /// current-thread runtime such as an actix-web worker's.
    pub async fn detached<T, Fut>(&self, task: impl FnOnce(Store) -> Fut) -> Result<T, StoreError>
    where
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        match self.runtime.spawn(task(self.clone())).await {
            Ok(outcome) => outcome,
            // A panic is a bug, not an outage: say so (500), do not invite
            // the client to retry.
            Err(error) if error.is_panic() => Err(StoreError::Corrupt(format!(
                "a store task panicked: {error}"
            ))),
            Err(error) => Err(StoreError::Unavailable(format!(
                "store task failed: {error}"
            ))),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool's state now, for metrics; on SQLite the readers'
    /// pool and the writer's together.
    pub fn pool_status(&self) -> PoolStatus {
        let of = |status: deadpool::Status| PoolStatus {
            max_size: status.max_size,
            size: status.size,
            available: status.available,
            waiting: status.waiting,
        };
        match &self.pools {
            db::Pools::Sqlite(pools) => {
                let (reads, writer) = (of(pools.reads.status()), of(pools.writer.status()));
                PoolStatus {
                    max_size: reads.max_size + writer.max_size,
                    size: reads.size + writer.size,
                    available: reads.available + writer.available,
                    waiting: reads.waiting + writer.waiting,
                }
            }
            db::Pools::Postgres(pool) => of(pool.status()),
        }
    }

    /// Test hook: makes every agent-limits write fail (as contention would)
    /// until turned off, to prove callers leave nothing half-done.
    #[cfg(feature = "test-hooks")]
    pub fn fail_limits_writes(&self, fail: bool) {
        self.fail_limits_writes
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// Creates the PostgreSQL database `url` names when the server says it
    /// does not exist, so `DATABASE_URL=postgres://.../agentry` works on a
    /// fresh server as `sqlite://agentry.db` does on a bare machine. Does
    /// nothing for SQLite (the file is created on first connect) or when the
    /// database exists.
    pub async fn ensure_database(url: &DatabaseUrl) -> Result<bool, StoreError> {
        let DatabaseUrl::Postgres(url) = url else {
            return Ok(false);
        };
        db::ensure_postgres_database(url).await
    }

    /// One round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        use diesel_async::SimpleAsyncConnection;
        db::read!(self, |conn| conn
            .batch_execute("SELECT 1")
            .await
            .map_err(StoreError::from))
    }
}

/// One PostgreSQL connection outside the pool, made as the pool makes its
/// own (the URL's `sslmode` and `sslrootcert` included), for tools and
/// tests that talk to the database behind the store's back.
pub async fn connect_postgres(url: &str) -> Result<diesel_async::AsyncPgConnection, StoreError> {
    postgres_tls::PostgresConnector::from_url(url)?
        .connect()
        .await
        .map_err(|error| StoreError::Unavailable(db::scrubbed(&error, url)))
}

/// A fresh UUID v7 for a new row. The store is the impure edge, so it may
/// read the clock and the OS random source that the pure crates may not.
pub(crate) fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// The current time as stored: UTC, microsecond precision.
pub fn now() -> OffsetDateTime {
    types::DbTime::new(OffsetDateTime::now_utc()).get()
}
