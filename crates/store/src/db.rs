//! Connections: the backend chosen from the URL, the pool of each, and the
//! one place where code branches on the backend (`write_tx!`, `read!`).

use std::time::Duration;

use deadpool::Runtime;
use diesel::ConnectionError;
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::StoreError;

pub(crate) type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// Which database a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A file path (`sqlite://agentry.db`, `sqlite:///abs/path.db` or a bare path).
    Sqlite(String),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() || path == ":memory:" || path.contains("://") {
            // `:memory:` would give every pooled connection its own empty
            // database; refuse it rather than lose writes silently.
            return Err(StoreError::Config(format!(
                "DATABASE_URL {url:?} is neither postgres://... nor a SQLite file path"
            )));
        }
        Ok(Self::Sqlite(path.to_owned()))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Pool settings; the defaults suit one process on a small machine.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: usize,
    pub wait_timeout: Duration,
    /// How long SQLite waits for another writer before giving up.
    pub sqlite_busy_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            wait_timeout: Duration::from_secs(10),
            sqlite_busy_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
pub(crate) enum Pools {
    Sqlite(Pool<SqliteConn>),
    Postgres(Pool<AsyncPgConnection>),
}

impl Pools {
    pub(crate) fn connect(url: &DatabaseUrl, options: &PoolOptions) -> Result<Self, StoreError> {
        match url {
            DatabaseUrl::Sqlite(path) => {
                let busy_ms = options.sqlite_busy_timeout.as_millis();
                let mut config = ManagerConfig::<SqliteConn>::default();
                config.custom_setup = Box::new(move |path| sqlite_setup(path, busy_ms));
                // The default re-checks every connection with `SELECT 1` on
                // checkout: a blocking round trip per request for nothing.
                config.recycling_method = RecyclingMethod::Fast;
                let manager =
                    AsyncDieselConnectionManager::<SqliteConn>::new_with_config(path, config);
                pool(manager, options).map(Pools::Sqlite)
            }
            DatabaseUrl::Postgres(url) => {
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
                pool(manager, options).map(Pools::Postgres)
            }
        }
    }
}

/// One pool of either backend, sized and timed by `options`.
fn pool<M: deadpool::managed::Manager>(
    manager: M,
    options: &PoolOptions,
) -> Result<deadpool::managed::Pool<M>, StoreError> {
    deadpool::managed::Pool::builder(manager)
        .max_size(options.max_connections)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.wait_timeout))
        .create_timeout(Some(options.wait_timeout))
        .build()
        .map_err(|error| StoreError::Config(error.to_string()))
}

fn sqlite_setup(path: &str, busy_ms: u128) -> BoxFuture<'_, diesel::ConnectionResult<SqliteConn>> {
    async move {
        let mut conn = SqliteConn::establish(path).await?;
        // busy_timeout first: switching to WAL may itself wait for a lock.
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {busy_ms}; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
        ))
        .await
        .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }
    .boxed()
}

/// Splits `postgres://user@host/name?options` into the URL of the server's
/// maintenance database and `name`.
fn maintenance_url(url: &str) -> Option<(String, String)> {
    let authority_start = url.find("://")? + 3;
    let path_start = authority_start + url[authority_start..].find('/')?;
    let (path, query) = match url[path_start + 1..].split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (&url[path_start + 1..], None),
    };
    if path.is_empty() {
        return None;
    }
    let mut maintenance = format!("{}/postgres", &url[..path_start]);
    if let Some(query) = query {
        maintenance.push('?');
        maintenance.push_str(query);
    }
    Some((maintenance, path.to_owned()))
}

pub(crate) async fn ensure_postgres_database(url: &str) -> Result<bool, StoreError> {
    let error = match AsyncPgConnection::establish(url).await {
        Ok(_) => return Ok(false),
        Err(error) => error,
    };
    let missing = error.to_string().contains("does not exist");
    let Some((maintenance, name)) = maintenance_url(url).filter(|_| missing) else {
        return Err(StoreError::Unavailable(error.to_string()));
    };
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(StoreError::Config(format!(
            "will not create database {name:?}: use letters, digits, '_' and '-' only"
        )));
    }
    let mut admin = AsyncPgConnection::establish(&maintenance)
        .await
        .map_err(|error| StoreError::Unavailable(error.to_string()))?;
    match admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
    {
        Ok(()) => Ok(true),
        // Another replica created it in the meantime.
        Err(error) if error.to_string().contains("already exists") => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Runs `$body` in a write transaction with `$conn` bound to the backend's
/// connection: `BEGIN IMMEDIATE` on SQLite (a deferred transaction that reads
/// then writes fails with "database is locked" under concurrency instead of
/// waiting), an ordinary transaction on PostgreSQL. The body is compiled once
/// per backend, so it must be backend-neutral diesel.
macro_rules! write_tx {
    ($store:expr, |$conn:ident| $body:expr) => {
        match &$store.pools {
            $crate::db::Pools::Sqlite(pool) => {
                let mut pooled = pool.get().await?;
                pooled.immediate_transaction(async |$conn| $body).await
            }
            $crate::db::Pools::Postgres(pool) => {
                let mut pooled = pool.get().await?;
                diesel_async::AsyncConnection::transaction(&mut *pooled, async |$conn| $body).await
            }
        }
    };
}

/// Keys of the PostgreSQL advisory locks `write_tx_locked!` takes: for an
/// "insert if absent" that has no row to lock yet, or where locking a row
/// would cost more than the lock is worth. Distinct values, prefixed so they
/// are unlikely to meet another application's locks.
pub(crate) mod advisory {
    use agentry_domain::TenantId;

    /// Creating the instance's certificate authority.
    pub(crate) const CERTIFICATE_AUTHORITY: i64 = 0x4147_4e54_5259_0001;

    /// The head of a tenant's audit chain. Not a lock on the tenant row:
    /// every lock or no-op update of that row writes to it, and every
    /// foreign-key check of the tenant's inserts then walks those versions.
    /// Two tenants may share a key (32 bits of their id); they then only
    /// take turns.
    pub(crate) fn audit_chain(tenant: TenantId) -> i64 {
        let bytes = tenant.as_uuid().into_bytes();
        let low = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        (0x4147_4155_i64 << 32) | i64::from(low)
    }
}

/// Like `write_tx!`, and serialised with every other transaction that names
/// the same `$lock` (a key from `advisory`) even when there is no row to
/// lock yet, as in an insert-if-absent. SQLite's `BEGIN IMMEDIATE` already
/// excludes every other writer; on PostgreSQL the body runs after taking a
/// transaction-scoped advisory lock, released at commit or rollback.
macro_rules! write_tx_locked {
    ($store:expr, $lock:expr, |$conn:ident| $body:expr) => {
        match &$store.pools {
            $crate::db::Pools::Sqlite(pool) => {
                let mut pooled = pool.get().await?;
                pooled.immediate_transaction(async |$conn| $body).await
            }
            $crate::db::Pools::Postgres(pool) => {
                let mut pooled = pool.get().await?;
                let lock: i64 = $lock;
                diesel_async::AsyncConnection::transaction(&mut *pooled, async |$conn| {
                    diesel_async::RunQueryDsl::execute(
                        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                            .bind::<diesel::sql_types::BigInt, _>(lock),
                        &mut *$conn,
                    )
                    .await?;
                    $body
                })
                .await
            }
        }
    };
}

/// Runs `$body` with a pooled connection bound to `$conn`, outside any
/// explicit transaction (single statements are atomic on their own).
macro_rules! read {
    ($store:expr, |$conn:ident| $body:expr) => {
        match &$store.pools {
            $crate::db::Pools::Sqlite(pool) => {
                let mut pooled = pool.get().await?;
                let $conn = &mut *pooled;
                $body
            }
            $crate::db::Pools::Postgres(pool) => {
                let mut pooled = pool.get().await?;
                let $conn = &mut *pooled;
                $body
            }
        }
    };
}

pub(crate) use {read, write_tx, write_tx_locked};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://agentry.db").unwrap(),
            DatabaseUrl::Sqlite("agentry.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/agentry/a.db").unwrap(),
            DatabaseUrl::Sqlite("/var/lib/agentry/a.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("data/a.db").unwrap(),
            DatabaseUrl::Sqlite("data/a.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("postgres://postgres@127.0.0.1:5432/agentry")
                .unwrap()
                .backend(),
            Backend::Postgres
        );
        assert!(DatabaseUrl::parse("sqlite://:memory:").is_err());
        assert!(DatabaseUrl::parse("mysql://localhost/x").is_err());
        assert!(DatabaseUrl::parse("").is_err());
    }

    #[test]
    fn the_maintenance_url_keeps_credentials_and_options() {
        assert_eq!(
            maintenance_url("postgres://postgres@127.0.0.1:5432/agentry"),
            Some((
                "postgres://postgres@127.0.0.1:5432/postgres".into(),
                "agentry".into()
            ))
        );
        assert_eq!(
            maintenance_url("postgresql://u:p@db/agentry?sslmode=require"),
            Some((
                "postgresql://u:p@db/postgres?sslmode=require".into(),
                "agentry".into()
            ))
        );
        assert_eq!(maintenance_url("postgres://db"), None);
        assert_eq!(maintenance_url("postgres://db/"), None);
    }
}
