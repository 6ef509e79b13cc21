//! The two migration folders must describe one schema: after migrating a
//! fresh database of each kind, the tables, columns, nullability and unique
//! column sets must match, except for differences listed as intentional.
//! Migrations must also go down and up again to the same schema.

use std::collections::BTreeSet;

use agentry_store::{DatabaseUrl, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::SqliteConnection;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, RunQueryDsl};
use diesel_migrations::MigrationHarness;

use agentry_testkit::{postgres_db, sqlite_db};

/// Differences between the backends that are on purpose, as lines of the
/// snapshot that only one side has.
const INTENTIONAL: &[&str] = &[
    // SQLite's INTEGER PRIMARY KEY is the rowid itself and has no index of
    // its own to list; it is unique all the same.
    "unique change_log(id)",
    // Agent-limits versions: a sequence on PostgreSQL, a one-row counter
    // table on SQLite, which has no sequences.
    "column agent_limits_version.id NOT NULL",
    "column agent_limits_version.value NOT NULL",
];

#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = BigInt)]
    not_null: i64,
}

#[derive(QueryableByName)]
struct UniqueSet {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    columns: String,
}

const SQLITE_COLUMNS: &str = "SELECT m.name AS table_name, p.name AS column_name, \
    CAST(p.\"notnull\" AS BIGINT) AS not_null \
    FROM sqlite_master m, pragma_table_info(m.name) p \
    WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name != '__diesel_schema_migrations'";
const SQLITE_UNIQUES: &str = "SELECT m.name AS table_name, \
    (SELECT group_concat(name, ',') FROM (SELECT name FROM pragma_index_info(il.name) ORDER BY name)) AS columns \
    FROM sqlite_master m, pragma_index_list(m.name) il \
    WHERE m.type = 'table' AND il.\"unique\" = 1 AND m.name != '__diesel_schema_migrations'";
const POSTGRES_COLUMNS: &str = "SELECT table_name::text AS table_name, column_name::text AS column_name, \
    CASE WHEN is_nullable = 'NO' THEN 1 ELSE 0 END::bigint AS not_null \
    FROM information_schema.columns \
    WHERE table_schema = 'public' AND table_name != '__diesel_schema_migrations'";
const POSTGRES_UNIQUES: &str = "SELECT t.relname::text AS table_name, \
    string_agg(a.attname::text, ',' ORDER BY a.attname::text) AS columns \
    FROM pg_index ix \
    JOIN pg_class t ON t.oid = ix.indrelid \
    JOIN pg_namespace n ON n.oid = t.relnamespace \
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(ix.indkey) \
    WHERE n.nspname = 'public' AND ix.indisunique AND t.relname != '__diesel_schema_migrations' \
    GROUP BY t.relname, ix.indexrelid";

fn snapshot(columns: Vec<Column>, uniques: Vec<UniqueSet>) -> BTreeSet<String> {
    let columns = columns.into_iter().map(|column| {
        let nullability = if column.not_null == 1 {
            "NOT NULL"
        } else {
            "NULL"
        };
        format!(
            "column {}.{} {nullability}",
            column.table_name, column.column_name
        )
    });
    let uniques = uniques
        .into_iter()
        .map(|set| format!("unique {}({})", set.table_name, set.columns));
    columns.chain(uniques).collect()
}

async fn snapshot_of(url: &DatabaseUrl) -> BTreeSet<String> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            let mut conn = SyncConnectionWrapper::<SqliteConnection>::establish(path)
                .await
                .unwrap();
            let columns = diesel::sql_query(SQLITE_COLUMNS)
                .load(&mut conn)
                .await
                .unwrap();
            let uniques = diesel::sql_query(SQLITE_UNIQUES)
                .load(&mut conn)
                .await
                .unwrap();
            snapshot(columns, uniques)
        }
        DatabaseUrl::Postgres(url) => {
            let mut conn = agentry_store::connect_postgres(url).await.unwrap();
            let columns = diesel::sql_query(POSTGRES_COLUMNS)
                .load(&mut conn)
                .await
                .unwrap();
            let uniques = diesel::sql_query(POSTGRES_UNIQUES)
                .load(&mut conn)
                .await
                .unwrap();
            snapshot(columns, uniques)
        }
    }
}

/// Reverts every migration, checks the database is empty, and applies them
/// again; returns nothing, panics on any failure.
async fn down_and_up_again(url: &DatabaseUrl) {
    match url {
        DatabaseUrl::Sqlite(path) => {
            let conn = SyncConnectionWrapper::<SqliteConnection>::establish(path)
                .await
                .unwrap();
            let mut harness = AsyncMigrationHarness::new(conn);
            harness.revert_all_migrations(SQLITE_MIGRATIONS).unwrap();
        }
        DatabaseUrl::Postgres(url) => {
            let conn = agentry_store::connect_postgres(url).await.unwrap();
            let mut harness = AsyncMigrationHarness::new(conn);
            harness.revert_all_migrations(POSTGRES_MIGRATIONS).unwrap();
        }
    }
    assert!(
        snapshot_of(url).await.is_empty(),
        "down.sql leaves tables behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn both_backends_have_the_same_schema_and_migrations_reverse() {
    let sqlite = sqlite_db().await;
    let sqlite_schema = snapshot_of(&sqlite.url).await;
    assert!(
        sqlite_schema
            .iter()
            .any(|line| line == "column agents.slug NOT NULL")
    );
    assert!(
        sqlite_schema
            .iter()
            .any(|line| line == "unique agents(slug,tenant_id)")
    );

    down_and_up_again(&sqlite.url).await;
    sqlite.store.migrate().await.unwrap();
    assert_eq!(
        snapshot_of(&sqlite.url).await,
        sqlite_schema,
        "sqlite: up, down, up differs"
    );

    let Some((postgres, name)) = postgres_db().await else {
        return;
    };
    let postgres_schema = snapshot_of(&postgres.url).await;
    down_and_up_again(&postgres.url).await;
    postgres.store.migrate().await.unwrap();
    let again = snapshot_of(&postgres.url).await;
    drop(postgres);
    agentry_testkit::drop_postgres(&name).await;
    assert_eq!(again, postgres_schema, "postgres: up, down, up differs");

    let unexplained: Vec<&String> = sqlite_schema
        .symmetric_difference(&postgres_schema)
        .filter(|line| !INTENTIONAL.contains(&line.as_str()))
        .collect();
    assert!(
        unexplained.is_empty(),
        "the SQLite and PostgreSQL schemas differ (only on one side):\n{}",
        unexplained
            .iter()
            .map(|line| line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
