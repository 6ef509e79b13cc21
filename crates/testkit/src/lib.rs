//! Test support for Agentry's suites: a fresh, migrated database of each
//! backend for every test, so one test body proves both. Only ever a
//! dev-dependency.

mod relay;

pub use relay::{Relay, authority_of};

use std::future::Future;
use std::panic::resume_unwind;

use agentry_store::{Backend, DatabaseUrl, PoolOptions, Store, connect_postgres};
use diesel::sqlite::SqliteConnection;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

const POSTGRES_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// The server the PostgreSQL halves run on: `AGENTRY_TEST_POSTGRES_URL`
/// (a URL without a database name, whose options, such as
/// `?sslmode=require`, every test database's URL keeps), else the local
/// server.
pub fn postgres_server() -> String {
    std::env::var("AGENTRY_TEST_POSTGRES_URL").unwrap_or_else(|_| POSTGRES_SERVER.to_owned())
}

/// `server`'s URL naming database `name`, with the server URL's options and
/// then `options` (`sslmode=...&...`, or empty).
pub fn postgres_url(server: &str, name: &str, options: &str) -> String {
    let (server, server_options) = server.split_once('?').unwrap_or((server, ""));
    let query: Vec<&str> = [server_options, options]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect();
    let mut url = format!("{}/{name}", server.trim_end_matches('/'));
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    url
}

/// One backend's database for one test; the SQLite file lives as long as
/// this value.
#[derive(Debug)]
pub struct TestDb {
    pub store: Store,
    pub url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
}

/// Having a `Drop` makes a `move` block that uses only `db.store` take the
/// whole `TestDb`, its temporary directory included. Without it, edition
/// 2021's precise capture moved the store alone into a test's `async move`
/// block and dropped the rest when the block was made: the SQLite file was
/// deleted before the test ran, and the tests worked on an unlinked file
/// through the one connection already open, until a second connection was
/// needed and could not open it.
impl Drop for TestDb {
    fn drop(&mut self) {}
}

impl TestDb {
    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// Runs SQL behind the store's back, as an attacker or a broken tool
    /// would (to prove that tampering is detected).
    pub async fn execute_raw(&self, sql: &str) {
        match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SyncConnectionWrapper::<SqliteConnection>::establish(path)
                    .await
                    .expect("open sqlite");
                conn.batch_execute(sql).await.expect("raw sql on sqlite");
            }
            DatabaseUrl::Postgres(url) => {
                let mut conn = connect_postgres(url).await.expect("open postgres");
                conn.batch_execute(sql).await.expect("raw sql on postgres");
            }
        }
    }
}

/// A connection of the test's own with a transaction left open, holding
/// whatever locks the SQL that opened it took, until [`Held::release`].
pub struct Held(HeldConnection);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

enum HeldConnection {
    Sqlite(SyncConnectionWrapper<SqliteConnection>),
    Postgres(Box<AsyncPgConnection>),
}

impl TestDb {
    /// Opens a transaction with `sql` (its `BEGIN` included) on a new
    /// connection and keeps it open, so the store's own transactions meet
    /// its locks: a way to hold a writer back without a clock.
    pub async fn hold(&self, sql: &str) -> Held {
        let connection = match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SyncConnectionWrapper::<SqliteConnection>::establish(path)
                    .await
                    .expect("open sqlite");
                conn.batch_execute(sql).await.expect("raw sql on sqlite");
                HeldConnection::Sqlite(conn)
            }
            DatabaseUrl::Postgres(url) => {
                let mut conn = connect_postgres(url).await.expect("open postgres");
                conn.batch_execute(sql).await.expect("raw sql on postgres");
                HeldConnection::Postgres(Box::new(conn))
            }
        };
        Held(connection)
    }
}

impl Held {
    /// Ends the transaction, and with it its locks.
    pub async fn release(self) {
        match self.0 {
            HeldConnection::Sqlite(mut conn) => conn.batch_execute("COMMIT").await,
            HeldConnection::Postgres(mut conn) => conn.batch_execute("COMMIT").await,
        }
        .expect("commit the held transaction");
    }
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    count: i64,
}

impl TestDb {
    /// Rows in `table`, read behind the store's back.
    pub async fn count(&self, table: &str) -> i64 {
        use diesel_async::RunQueryDsl;
        let sql = format!("SELECT CAST(COUNT(*) AS BIGINT) AS count FROM {table}");
        let counted: Count = match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SyncConnectionWrapper::<SqliteConnection>::establish(path)
                    .await
                    .expect("open sqlite");
                diesel::sql_query(sql)
                    .get_result(&mut conn)
                    .await
                    .expect("count on sqlite")
            }
            DatabaseUrl::Postgres(url) => {
                let mut conn = connect_postgres(url).await.expect("open postgres");
                diesel::sql_query(sql)
                    .get_result(&mut conn)
                    .await
                    .expect("count on postgres")
            }
        };
        counted.count
    }
}

pub async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agentry-test.db");
    let url = DatabaseUrl::parse(&format!("sqlite://{}", path.display())).expect("sqlite url");
    if templates_enabled() {
        std::fs::copy(sqlite_template().await, &path).expect("copy the template database");
    }
    let store = Store::connect(&url, &PoolOptions::default()).expect("sqlite pool");
    // Nothing to do after a template copy; the check costs one query.
    store.migrate().await.expect("migrate sqlite");
    TestDb {
        store,
        url,
        _dir: Some(dir),
    }
}

/// Whether test databases are copied from a migrated template (the
/// default; `AGENTRY_TEST_TEMPLATES=0` migrates each one afresh, to compare).
fn templates_enabled() -> bool {
    std::env::var("AGENTRY_TEST_TEMPLATES").map_or(true, |value| value != "0")
}

/// A digest of one backend's migration files, so a template is only ever
/// reused for the schema it was made with. FNV-1a: a cache key, not a
/// security boundary.
fn migrations_digest(backend: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(backend);
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .expect("the migrations folder")
        .flatten()
        .flat_map(|entry| {
            std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|file| file.path())
        })
        .collect();
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files {
        let name = file
            .strip_prefix(&dir)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read(&file).expect("a migration file");
        for byte in name.bytes().chain([0]).chain(text).chain([0]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// A migrated SQLite file to copy, made once per schema and shared by every
/// test process: each maker migrates a file of its own and renames a clean
/// copy into place, so a reader never sees a half-made template.
async fn sqlite_template() -> std::path::PathBuf {
    let template = std::env::temp_dir().join(format!(
        "agentry-test-template-{}.db",
        migrations_digest("sqlite")
    ));
    if template.exists() {
        return template;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let fresh = dir.path().join("fresh.db");
    let url = DatabaseUrl::parse(&format!("sqlite://{}", fresh.display())).expect("sqlite url");
    let store = Store::connect(&url, &PoolOptions::default()).expect("sqlite pool");
    store.migrate().await.expect("migrate the sqlite template");
    drop(store);
    let copy = template.with_extension(format!("{}.tmp", uuid::Uuid::now_v7().simple()));
    // VACUUM INTO writes one self-contained file, whatever the WAL holds.
    let mut conn = SyncConnectionWrapper::<SqliteConnection>::establish(&fresh.to_string_lossy())
        .await
        .expect("open the fresh sqlite file");
    conn.batch_execute(&format!("VACUUM INTO '{}'", copy.display()))
        .await
        .expect("write the sqlite template");
    std::fs::rename(&copy, &template).expect("put the sqlite template in place");
    template
}

/// A fresh, migrated PostgreSQL database, or `None` when the server cannot
/// be reached outside CI. In CI (`CI` set) an unreachable server fails the
/// test: a skipped backend must never pass as a tested one.
pub async fn postgres_db() -> Option<(TestDb, String)> {
    postgres_db_with("").await
}

/// A connection to the server's maintenance database, or `None` when the
/// server cannot be reached outside CI. In CI (`CI` set) an unreachable
/// server fails the test: a skipped backend must never pass as a tested one.
pub async fn postgres_admin() -> Option<AsyncPgConnection> {
    let server = postgres_server();
    let shown = agentry_store::redact_database_url(&server);
    match connect_postgres(&postgres_url(&server, "postgres", "")).await {
        Ok(conn) => Some(conn),
        Err(error) => {
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL at {shown} is unreachable in CI: {error}");
            }
            eprintln!(
                "\n!!! SKIPPING the PostgreSQL half of this test: {shown} is unreachable ({error}).\n!!! Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
            );
            None
        }
    }
}

/// As [`postgres_db`], with the store's URL also carrying `options`
/// (`sslmode=require`, say).
pub async fn postgres_db_with(options: &str) -> Option<(TestDb, String)> {
    let mut admin = postgres_admin().await?;
    let name = format!("agentry_test_{}", uuid::Uuid::now_v7().simple());
    let create = if templates_enabled() {
        let template = postgres_template(&mut admin).await;
        format!("CREATE DATABASE {name} TEMPLATE {template}")
    } else {
        format!("CREATE DATABASE {name}")
    };
    admin
        .batch_execute(&create)
        .await
        .expect("create test database");
    let url = DatabaseUrl::parse(&postgres_url(&postgres_server(), &name, options))
        .expect("postgres url");
    let store = Store::connect(&url, &PoolOptions::default()).expect("postgres pool");
    // Nothing to do after a template copy; the check costs one query.
    store.migrate().await.expect("migrate postgres");
    Some((
        TestDb {
            store,
            url,
            _dir: None,
        },
        name,
    ))
}

/// The migrated template database of the current schema, made once and
/// shared by every test process: makers queue on an advisory lock, and a
/// template counts as made only once it is marked `IS_TEMPLATE` (a maker
/// that died half way leaves one that is not, and the next starts over).
async fn postgres_template(admin: &mut AsyncPgConnection) -> String {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ready: bool,
    }
    let name = format!("agentry_template_{}", migrations_digest("postgres"));
    let ready_sql =
        format!("SELECT datistemplate AS ready FROM pg_database WHERE datname = '{name}'");
    let ready = async |admin: &mut AsyncPgConnection| -> Option<bool> {
        use diesel_async::RunQueryDsl;
        diesel::sql_query(&ready_sql)
            .get_result::<Found>(admin)
            .await
            .ok()
            .map(|found| found.ready)
    };
    if ready(admin).await == Some(true) {
        return name;
    }
    admin
        .batch_execute("SELECT pg_advisory_lock(7365211890)")
        .await
        .expect("take the template lock");
    if ready(admin).await != Some(true) {
        // Templates of other schemas (older migrations) go, and one this
        // schema's maker left half made.
        let stale = {
            #[derive(diesel::QueryableByName)]
            struct Name {
                #[diesel(sql_type = diesel::sql_types::Text)]
                datname: String,
            }
            use diesel_async::RunQueryDsl;
            diesel::sql_query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'agentry\\_template\\_%'",
            )
            .load::<Name>(admin)
            .await
            .expect("list the templates")
        };
        for old in stale {
            // One statement each: DROP DATABASE cannot share a batch.
            for sql in [
                format!("ALTER DATABASE {} IS_TEMPLATE false", old.datname),
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", old.datname),
            ] {
                admin
                    .batch_execute(&sql)
                    .await
                    .expect("drop a stale template");
            }
        }
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the template database");
        let url =
            DatabaseUrl::parse(&postgres_url(&postgres_server(), &name, "")).expect("postgres url");
        let store = Store::connect(&url, &PoolOptions::default()).expect("postgres pool");
        store.migrate().await.expect("migrate the template");
        drop(store);
        // A copy needs the template to itself: the pool's connections may
        // still be closing.
        admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ))
            .await
            .expect("close the template's connections");
        admin
            .batch_execute(&format!("ALTER DATABASE {name} IS_TEMPLATE true"))
            .await
            .expect("mark the template made");
    }
    admin
        .batch_execute("SELECT pg_advisory_unlock(7365211890)")
        .await
        .expect("release the template lock");
    name
}

pub async fn drop_postgres(name: &str) {
    let admin_url = postgres_url(&postgres_server(), "postgres", "");
    if let Ok(mut admin) = connect_postgres(&admin_url).await {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

/// Runs `test` on SQLite, then on PostgreSQL. A failure on either backend
/// fails the test; the PostgreSQL database is dropped even then. The body
/// runs on a `LocalSet`, so it may hold values that are not `Send` (an
/// actix-web test service, say).
pub async fn on_both_backends<F, Fut>(test: F)
where
    F: Fn(TestDb) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let sqlite = sqlite_db().await;
    if let Err(panic) = run_local(test(sqlite)).await {
        eprintln!("failed on sqlite");
        resume_unwind(panic.into_panic());
    }
    if let Some((postgres, name)) = postgres_db().await {
        let outcome = run_local(test(postgres)).await;
        drop_postgres(&name).await;
        if let Err(panic) = outcome {
            eprintln!("failed on postgres");
            resume_unwind(panic.into_panic());
        }
    }
}

async fn run_local(body: impl Future<Output = ()> + 'static) -> Result<(), tokio::task::JoinError> {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move { tokio::task::spawn_local(body).await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_database_urls_keep_the_servers_options() {
        assert_eq!(
            postgres_url("postgres://postgres@127.0.0.1:5432", "t1", ""),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            postgres_url(
                "postgres://u:p@db:5432/?sslmode=verify-full&sslrootcert=/ca.pem",
                "t1",
                "application_name=x"
            ),
            "postgres://u:p@db:5432/t1?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x"
        );
        assert_eq!(
            postgres_url("postgres://db", "t1", "sslmode=require"),
            "postgres://db/t1?sslmode=require"
        );
    }
}
