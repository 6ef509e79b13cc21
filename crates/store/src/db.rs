//! Connections: the backend chosen from the URL, the pool of each, and the
//! one place where code branches on the backend (`write_tx!`, `read!`).

use std::sync::Arc;
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
use crate::postgres_tls::{PostgresConnector, TlsOptions};

pub(crate) type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// Which database a URL names. `Debug` and `Display` show it with its
/// password replaced by `***` (see [`redact_database_url`]), so no log line
/// or error message can carry it.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A file path (`sqlite://agentry.db`, `sqlite:///abs/path.db` or a bare path).
    Sqlite(String),
    Postgres(String),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&redact_database_url(url))
                .finish(),
        }
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{path}"),
            Self::Postgres(url) => f.write_str(&redact_database_url(url)),
        }
    }
}

/// `url` fit to print: the password of its user-info part
/// (`postgres://user:secret@host/db`) and any `password=` option of its
/// query become `***`. Anything that is not a URL comes back unchanged
/// except for those two patterns.
pub fn redact_database_url(url: &str) -> String {
    let mut redacted = String::with_capacity(url.len());
    let (head, rest) = match url.find("://") {
        Some(scheme_end) => url.split_at(scheme_end + 3),
        None => ("", url),
    };
    redacted.push_str(head);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            match user_info.split_once(':') {
                Some((user, _password)) => {
                    redacted.push_str(user);
                    redacted.push_str(":***");
                }
                None => redacted.push_str(user_info),
            }
            redacted.push('@');
            redacted.push_str(host);
        }
        None => redacted.push_str(authority),
    }
    match tail.split_once('?') {
        Some((path, query)) => {
            redacted.push_str(path);
            redacted.push('?');
            let options: Vec<String> = query
                .split('&')
                .map(|option| match option.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => option.to_owned(),
                })
                .collect();
            redacted.push_str(&options.join("&"));
        }
        None => redacted.push_str(tail),
    }
    redacted
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // A mistyped sslmode is refused at startup, not at first use.
            TlsOptions::from_url(url)?;
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
                "DATABASE_URL {:?} is neither postgres://... nor a SQLite file path",
                redact_database_url(url)
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
    Sqlite(SqlitePools),
    Postgres(Pool<AsyncPgConnection>),
}

/// SQLite's connections: readers, which WAL lets run beside a writer, and
/// the one connection every write goes through. SQLite lets one writer in
/// at a time whatever the number of connections; with many, the others
/// spin in `busy_timeout` backoff (sleeps of up to 100 ms) while the one
/// writes. A pool of one is a first-come, first-served queue in front of
/// that writer instead, and each waiting writer is handed the connection
/// the moment the one before it commits.
#[derive(Clone)]
pub(crate) struct SqlitePools {
    pub(crate) reads: Pool<SqliteConn>,
    pub(crate) writer: Pool<SqliteConn>,
}

impl Pools {
    pub(crate) fn connect(url: &DatabaseUrl, options: &PoolOptions) -> Result<Self, StoreError> {
        match url {
            DatabaseUrl::Sqlite(path) => {
                create_owner_only(path);
                let busy_ms = options.sqlite_busy_timeout.as_millis();
                let manager = || {
                    let mut config = ManagerConfig::<SqliteConn>::default();
                    config.custom_setup = Box::new(move |path| sqlite_setup(path, busy_ms));
                    // The default re-checks every connection with `SELECT 1`
                    // on checkout: a blocking round trip per request for
                    // nothing.
                    config.recycling_method = RecyclingMethod::Fast;
                    AsyncDieselConnectionManager::<SqliteConn>::new_with_config(path, config)
                };
                // The writer is one of the connections the setting allows.
                let sized = |max_connections| PoolOptions {
                    max_connections,
                    ..options.clone()
                };
                let readers = options.max_connections.saturating_sub(1).max(1);
                Ok(Pools::Sqlite(SqlitePools {
                    reads: pool(manager(), &sized(readers))?,
                    writer: pool(manager(), &sized(1))?,
                }))
            }
            DatabaseUrl::Postgres(url) => {
                let connector = Arc::new(PostgresConnector::from_url(url)?);
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                config.custom_setup = Box::new(move |_url| {
                    let connector = Arc::clone(&connector);
                    async move { connector.connect().await }.boxed()
                });
                let manager =
                    AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
                pool(manager, options).map(Pools::Postgres)
            }
        }
    }
}

/// Creates the SQLite file, empty, readable and writable by its owner only
/// (0600), unless it exists: SQLite would create it with the process's
/// umask (often world-readable), and it holds API key hashes, sealed keys
/// and the audit trail. SQLite gives the `-wal` and `-shm` files the
/// database file's mode. A failure here is left for SQLite's own open to
/// report.
fn create_owner_only(path: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
    #[cfg(not(unix))]
    let _ = path;
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

/// A driver's error message with any copy of `url`'s password taken out:
/// the drivers do not echo the URL today, and nothing must depend on that.
pub(crate) fn scrubbed(error: &dyn std::fmt::Display, url: &str) -> String {
    let text = error.to_string();
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(user_info, _)| user_info.split_once(':'))
        .map(|(_, password)| password)
        .filter(|password| !password.is_empty());
    match password {
        Some(password) => text.replace(password, "***"),
        None => text,
    }
}

pub(crate) async fn ensure_postgres_database(url: &str) -> Result<bool, StoreError> {
    let error = match PostgresConnector::from_url(url)?.connect().await {
        Ok(_) => return Ok(false),
        Err(error) => error,
    };
    let missing = error.to_string().contains("does not exist");
    let Some((maintenance, name)) = maintenance_url(url).filter(|_| missing) else {
        return Err(StoreError::Unavailable(scrubbed(&error, url)));
    };
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(StoreError::Config(format!(
            "will not create database {name:?}: use letters, digits, '_' and '-' only"
        )));
    }
    let mut admin = PostgresConnector::from_url(&maintenance)?
        .connect()
        .await
        .map_err(|error| StoreError::Unavailable(scrubbed(&error, url)))?;
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
            $crate::db::Pools::Sqlite(pools) => {
                let mut pooled = pools.writer.get().await?;
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
            $crate::db::Pools::Sqlite(pools) => {
                let mut pooled = pools.writer.get().await?;
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
/// explicit transaction; on SQLite from the pool named `$sqlite` (`reads` or
/// `writer`).
macro_rules! on_connection {
    ($store:expr, $sqlite:ident, |$conn:ident| $body:expr) => {
        match &$store.pools {
            $crate::db::Pools::Sqlite(pools) => {
                let mut pooled = pools.$sqlite.get().await?;
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

/// Runs `$body`, which only reads, on a pooled connection (single
/// statements are atomic on their own).
macro_rules! read {
    ($store:expr, |$conn:ident| $body:expr) => {
        $crate::db::on_connection!($store, reads, |$conn| $body)
    };
}

/// Like `read!`, for one statement that writes (atomic on its own, so no
/// transaction): on SQLite it goes through the writer, as every write does.
macro_rules! write_one {
    ($store:expr, |$conn:ident| $body:expr) => {
        $crate::db::on_connection!($store, writer, |$conn| $body)
    };
}

pub(crate) use {on_connection, read, write_one, write_tx, write_tx_locked};

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
    fn a_database_password_is_never_shown() {
        let cases = [
            (
                "postgres://agentry:hunter2@db:5432/agentry",
                "postgres://agentry:***@db:5432/agentry",
            ),
            (
                "postgresql://u:p%40ss@db/agentry?sslmode=require&password=other",
                "postgresql://u:***@db/agentry?sslmode=require&password=***",
            ),
            (
                "postgres://postgres@127.0.0.1:5432/agentry",
                "postgres://postgres@127.0.0.1:5432/agentry",
            ),
            ("postgres://u:secret@db", "postgres://u:***@db"),
            ("mysql://root:secret@db/x", "mysql://root:***@db/x"),
            ("sqlite://agentry.db", "sqlite://agentry.db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_database_url(url), shown);
        }
        let parsed = DatabaseUrl::parse("postgres://agentry:hunter2@db/agentry").unwrap();
        assert!(!format!("{parsed:?}").contains("hunter2"), "{parsed:?}");
        assert_eq!(parsed.to_string(), "postgres://agentry:***@db/agentry");
        let refused = DatabaseUrl::parse("mysql://root:hunter2@db/x").unwrap_err();
        assert!(!refused.to_string().contains("hunter2"), "{refused}");
        let error = "password authentication failed (hunter2)";
        assert_eq!(
            scrubbed(&error, "postgres://agentry:hunter2@db/agentry"),
            "password authentication failed (***)"
        );
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
