//! The embedded migrations of both backends and the runner.
//!
//! diesel-async's harness runs the synchronous migration code through
//! `block_in_place`, so these functions need tokio's multi-thread runtime.

use diesel::migration::MigrationSource;
use diesel_async::AsyncMigrationHarness;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::db::Pools;
use crate::{Store, StoreError};

/// The SQLite migrations, embedded at build time.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
/// The PostgreSQL migrations, embedded at build time.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// One migration and whether the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub name: String,
    pub applied: bool,
}

fn failed(error: impl std::fmt::Display) -> StoreError {
    StoreError::Migration(error.to_string())
}

macro_rules! with_harness {
    ($store:expr, |$harness:ident, $source:ident, $db:ident| $body:expr) => {
        match &$store.pools {
            Pools::Sqlite(pools) => {
                type $db = diesel::sqlite::Sqlite;
                let mut $harness = AsyncMigrationHarness::new(pools.writer.get().await?);
                let $source = SQLITE_MIGRATIONS;
                $body
            }
            Pools::Postgres(pool) => {
                type $db = diesel::pg::Pg;
                let mut $harness = AsyncMigrationHarness::new(pool.get().await?);
                let $source = POSTGRES_MIGRATIONS;
                $body
            }
        }
    };
}

impl Store {
    /// Applies every pending migration; returns the names it applied.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        // The harness blocks a worker thread; run it where that is allowed,
        // whatever context the caller is in.
        self.detached(async |store| store.migrate_here().await)
            .await
    }

    async fn migrate_here(&self) -> Result<Vec<String>, StoreError> {
        with_harness!(self, |harness, source, _Db| {
            let applied = harness.run_pending_migrations(source).map_err(failed)?;
            Ok(applied.iter().map(ToString::to_string).collect())
        })
    }

    /// Every migration this binary knows, oldest first, with whether the
    /// database has applied it.
    pub async fn migration_status(&self) -> Result<Vec<MigrationStatus>, StoreError> {
        self.detached(async |store| store.migration_status_here().await)
            .await
    }

    async fn migration_status_here(&self) -> Result<Vec<MigrationStatus>, StoreError> {
        with_harness!(self, |harness, source, Db| {
            let known = MigrationSource::<Db>::migrations(&source).map_err(failed)?;
            // Before the first migration there is no bookkeeping table; that
            // reads as "nothing applied", not as an error.
            let applied = harness.applied_migrations().unwrap_or_default();
            Ok(known
                .iter()
                .map(|migration| {
                    let name = migration.name();
                    MigrationStatus {
                        name: name.to_string(),
                        applied: applied.contains(&name.version()),
                    }
                })
                .collect())
        })
    }
}
