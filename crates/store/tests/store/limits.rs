//! The agent-limits map as rows: a bootstrap's entry, whole-map edits, the
//! version, and the move from the one-document form.

use std::collections::BTreeMap;
use std::sync::Arc;

use agentry_domain::{AgentId, Money};
use agentry_ledger::LimitsEdit;
use agentry_store::{
    AgentLimitEntry, Backend, DatabaseUrl, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, now,
};
use diesel::sqlite::SqliteConnection;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncMigrationHarness};
use diesel_migrations::MigrationHarness;

use crate::support::on_both_backends;
use crate::tenant;

fn entry(usd: u32, rpm: u32) -> AgentLimitEntry {
    AgentLimitEntry {
        max_budget: Some(Money::from_usd(usd)),
        max_requests_per_minute: Some(rpm),
    }
}

fn some_agent() -> AgentId {
    AgentId::from_uuid(uuid::Uuid::now_v7())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ensured_entry_is_added_once_and_an_existing_entry_wins() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let agent = some_agent();
        let first = store
            .ensure_agent_limit_entry(acme, agent, "agent:a", entry(5, 30))
            .await
            .unwrap();
        assert_eq!(first, entry(5, 30));
        let after_first = store.agent_limits(acme).await.unwrap().version;
        assert!(after_first > 0, "an added entry moves the version");

        let again = store
            .ensure_agent_limit_entry(acme, agent, "agent:a", entry(9, 90))
            .await
            .unwrap();
        assert_eq!(again, entry(5, 30), "the entry in the map wins");
        let limits = store.agent_limits(acme).await.unwrap();
        assert_eq!(limits.entries.len(), 1);
        assert_eq!(limits.version, after_first, "nothing changed");
        assert_eq!(
            store.agent_limit_entry(acme, "agent:a").await.unwrap(),
            Some(entry(5, 30))
        );
        assert_eq!(
            store.agent_limit_entry(acme, "agent:b").await.unwrap(),
            None
        );

        // An operator's edit and a later bootstrap each move the version on.
        let edited = store
            .edit_agent_limits(
                acme,
                &LimitsEdit::Merge(BTreeMap::from([
                    ("agent:a".to_owned(), None),
                    ("agent:b".to_owned(), Some(entry(1, 10))),
                ])),
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        assert!(edited.version > after_first);
        assert_eq!(
            edited.entries.keys().collect::<Vec<_>>(),
            ["agent:b"],
            "the edit removed a and added b"
        );
        assert_eq!(
            store.agent_limit_entry(acme, "agent:a").await.unwrap(),
            None
        );
        store
            .ensure_agent_limit_entry(acme, agent, "agent:a", entry(2, 20))
            .await
            .unwrap();
        let limits = store.agent_limits(acme).await.unwrap();
        assert!(limits.version > edited.version);
        assert_eq!(limits.entries["agent:a"], entry(2, 20));
        assert_eq!(limits.entries["agent:b"], entry(1, 10));

        // Another tenant's map is another map.
        let globex = tenant(store, "globex").await;
        assert!(store.agent_limits(globex).await.unwrap().entries.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_bootstraps_and_edits_lose_no_entry() {
    on_both_backends(|db| async move {
        let store = Arc::new(db.store.clone());
        let acme = tenant(&store, "acme").await;
        let mut tasks = Vec::new();
        // From 1: an edit's rate of 0 is refused by the ledger.
        for n in 1..=24_u32 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                if n % 3 == 0 {
                    store
                        .edit_agent_limits(
                            acme,
                            &LimitsEdit::Merge(BTreeMap::from([(
                                format!("agent:edited-{n}"),
                                Some(entry(1, n)),
                            )])),
                            now(),
                        )
                        .await
                        .unwrap()
                        .unwrap();
                } else {
                    store
                        .ensure_agent_limit_entry(
                            acme,
                            some_agent(),
                            &format!("agent:booted-{n}"),
                            entry(2, n),
                        )
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let limits = store.agent_limits(acme).await.unwrap();
        assert_eq!(
            limits.entries.len(),
            24,
            "{:?}: {:?}",
            db.backend(),
            limits.entries.keys()
        );
        assert_eq!(limits.entries["agent:edited-9"], entry(1, 9));
        assert_eq!(limits.entries["agent:booted-10"], entry(2, 10));
    })
    .await;
}

/// The migration that moved the map to rows.
const ROWS_MIGRATION: &str = "20261128000003";

/// Reverts migrations down to and including the move to rows. On a worker
/// of the multi-thread runtime: the migration harness blocks in place,
/// which the test body's `LocalSet` does not allow.
async fn revert_to_documents(url: &DatabaseUrl) {
    let url = url.clone();
    tokio::spawn(async move {
        match url {
            DatabaseUrl::Sqlite(path) => {
                let conn = SyncConnectionWrapper::<SqliteConnection>::establish(&path)
                    .await
                    .unwrap();
                let mut harness = AsyncMigrationHarness::new(conn);
                while harness
                    .revert_last_migration(SQLITE_MIGRATIONS)
                    .unwrap()
                    .to_string()
                    != ROWS_MIGRATION
                {}
            }
            DatabaseUrl::Postgres(url) => {
                let conn = agentry_store::connect_postgres(&url).await.unwrap();
                let mut harness = AsyncMigrationHarness::new(conn);
                while harness
                    .revert_last_migration(POSTGRES_MIGRATIONS)
                    .unwrap()
                    .to_string()
                    != ROWS_MIGRATION
                {}
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn maps_stored_as_one_document_move_to_rows_and_back() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        revert_to_documents(&db.url).await;
        let id = match db.backend() {
            Backend::Sqlite => format!("x'{}'", acme.as_uuid().simple()),
            Backend::Postgres => format!("'{}'", acme.as_uuid()),
        };
        db.execute_raw(&format!(
            "INSERT INTO agent_limits (tenant_id, document, version, updated_at) VALUES ({id}, \
             '{{\"agent:a\":{{\"max_budget\":5.25,\"max_requests_per_minute\":30}},\"agent:b\":{{}}}}', \
             7, '2026-11-28T00:00:00Z')"
        ))
        .await;
        store.migrate().await.unwrap();

        let limits = store.agent_limits(acme).await.unwrap();
        assert_eq!(limits.version, 7);
        assert_eq!(
            limits.entries["agent:a"],
            AgentLimitEntry {
                max_budget: Some(Money::parse_usd("5.25").unwrap()),
                max_requests_per_minute: Some(30),
            }
        );
        assert_eq!(limits.entries["agent:b"], AgentLimitEntry::default());
        assert_eq!(limits.entries.len(), 2);
        // Later versions continue past the migrated ones.
        let added = store
            .ensure_agent_limit_entry(acme, some_agent(), "agent:c", entry(1, 1))
            .await
            .unwrap();
        assert_eq!(added, entry(1, 1));
        assert!(store.agent_limits(acme).await.unwrap().version > 7);

        // And back: the entries return to the document.
        revert_to_documents(&db.url).await;
        assert_eq!(db.count("agent_limits").await, 1);
        store.migrate().await.unwrap();
        let limits = store.agent_limits(acme).await.unwrap();
        assert_eq!(
            limits.entries.keys().collect::<Vec<_>>(),
            ["agent:a", "agent:b", "agent:c"]
        );
        assert_eq!(
            limits.entries["agent:a"].max_budget,
            Some(Money::parse_usd("5.25").unwrap())
        );
    })
    .await;
}
