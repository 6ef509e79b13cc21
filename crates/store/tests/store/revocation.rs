//! Seed 004's `revokedAt` is the agent's `revoked_at`, which every
//! termination writes in its own transaction, whatever the route; the
//! migration that made it so backfills agents terminated before. And a
//! delegated agent keeps its parent's slug.

use agentry_domain::{AgentId, AgentOrigin, AgentSlug, LifecycleState, Money, TenantId};
use agentry_ledger::EnforcedLimits;
use agentry_lifecycle::{LifecycleCommand, TerminationReason};
use agentry_store::{
    AgentRecord, Backend, DatabaseUrl, NewAgent, POSTGRES_MIGRATIONS, ProfilePatch,
    SQLITE_MIGRATIONS, Store, now,
};
use diesel::sqlite::SqliteConnection;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncMigrationHarness};
use diesel_migrations::MigrationHarness;
use time::{Duration, OffsetDateTime};

use crate::support::{TestDb, on_both_backends};
use crate::{slug, tenant};

async fn agent(store: &Store, tenant: TenantId, id: AgentId) -> AgentRecord {
    store.find_agent(tenant, id).await.unwrap().unwrap()
}

async fn create(store: &Store, tenant: TenantId, name: &str, state: LifecycleState) -> AgentRecord {
    store
        .create_agent(
            tenant,
            NewAgent::named(slug(name), AgentOrigin::Api).starting_in(state),
            now(),
        )
        .await
        .unwrap()
}

/// A child of `parent` with a slice of a dollar (half of one when the
/// parent is itself delegated) from a budget of five.
async fn delegate(
    store: &Store,
    tenant: TenantId,
    parent: AgentId,
    name: &str,
    expires_at: Option<OffsetDateTime>,
) -> AgentRecord {
    let delegated = agent(store, tenant, parent).await.parent_id.is_some();
    let slice = Money::parse_usd(if delegated { "0.5" } else { "1" }).unwrap();
    let mut child =
        NewAgent::named(slug(name), AgentOrigin::Api).starting_in(LifecycleState::Active);
    child.budget_daily = Some(slice);
    child.expires_at = expires_at;
    let limits = EnforcedLimits::enforce(Some(Money::from_usd(5)), None, None, None);
    store
        .create_delegated_agent(tenant, parent, child, now(), |view, child| {
            Ok(view
                .account(parent)?
                .delegate(parent, child, slice, &limits, now())?)
        })
        .await
        .unwrap()
}

/// The agent is terminated and revoked at the time of its termination,
/// which is its lifecycle history's last move.
async fn assert_revoked_at(store: &Store, tenant: TenantId, id: AgentId, at: OffsetDateTime) {
    let found = agent(store, tenant, id).await;
    assert_eq!(
        found.lifecycle_state,
        LifecycleState::Terminated,
        "{}",
        found.slug
    );
    assert_eq!(found.revoked_at, Some(at), "{}", found.slug);
}

/// Some time a few seconds from now, as the store keeps it (microseconds).
fn at(seconds: i64) -> OffsetDateTime {
    let when = now() + Duration::seconds(seconds);
    when.replace_nanosecond(when.nanosecond() / 1000 * 1000)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_termination_route_sets_revoked_at_in_its_transaction() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;

        // A registry revoke.
        let revoked = create(store, acme, "revoked", LifecycleState::Active).await;
        let t = at(1);
        store
            .reclaim_agent(acme, revoked.id, TerminationReason::Revoked, t)
            .await
            .unwrap();
        assert_revoked_at(store, acme, revoked.id, t).await;

        // Seed 001's lifecycle move to terminated (the handler reclaims for
        // the operator), with the cascade to a sub-agent and its own child.
        let stopped = create(store, acme, "stopped", LifecycleState::Active).await;
        let kid = delegate(store, acme, stopped.id, "stopped-kid", None).await;
        let grandkid = delegate(store, acme, kid.id, "stopped-grandkid", None).await;
        let stopped_at = at(2);
        store
            .reclaim_agent(acme, stopped.id, TerminationReason::Operator, stopped_at)
            .await
            .unwrap();
        for id in [stopped.id, kid.id, grandkid.id] {
            assert_revoked_at(store, acme, id, stopped_at).await;
        }

        // A parent's DELETE /v1/agent/sub-agents/{child}: the child and its
        // descendants; the parent stays live and unrevoked.
        let parent = create(store, acme, "parent", LifecycleState::Active).await;
        let child = delegate(store, acme, parent.id, "child", None).await;
        let grandchild = delegate(store, acme, child.id, "grandchild", None).await;
        let t = at(3);
        store
            .reclaim_agent(acme, child.id, TerminationReason::ReclaimedByParent, t)
            .await
            .unwrap();
        assert_revoked_at(store, acme, child.id, t).await;
        assert_revoked_at(store, acme, grandchild.id, t).await;
        assert_eq!(agent(store, acme, parent.id).await.revoked_at, None);

        // The reaper: an expired child, found and reclaimed as expired.
        let short = delegate(store, acme, parent.id, "short", Some(at(4))).await;
        let t = at(5);
        assert!(
            store
                .expired_agents(t, 100)
                .await
                .unwrap()
                .contains(&(acme, short.id))
        );
        store
            .reclaim_agent(acme, short.id, TerminationReason::Expired, t)
            .await
            .unwrap();
        assert_revoked_at(store, acme, short.id, t).await;

        // A lifecycle decision that terminates through transition.
        let unused = create(store, acme, "unused", LifecycleState::Provisioned).await;
        let t = at(6);
        let (changed, event) = store
            .transition(
                acme,
                unused.id,
                LifecycleCommand::Request(LifecycleState::Terminated),
                t,
            )
            .await
            .unwrap()
            .unwrap();
        assert!(event.is_some());
        assert_eq!(changed.revoked_at, Some(t), "the record answered");
        assert_revoked_at(store, acme, unused.id, t).await;

        // Moves short of termination revoke nothing.
        let (suspended, _) = store
            .transition(
                acme,
                parent.id,
                LifecycleCommand::Request(LifecycleState::Suspended),
                at(7),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(suspended.revoked_at, None);
        assert_eq!(agent(store, acme, parent.id).await.revoked_at, None);

        // A second termination attempt changes nothing: revokedAt stays.
        let again = store
            .reclaim_agent(acme, stopped.id, TerminationReason::Revoked, at(8))
            .await
            .unwrap();
        assert!(again.already_terminated);
        assert_revoked_at(store, acme, stopped.id, stopped_at).await;
        assert_eq!(
            db.count("agents WHERE lifecycle_state = 'terminated' AND revoked_at IS NULL")
                .await,
            0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delegated_agent_keeps_its_parents_slug() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let parent = create(store, acme, "parent", LifecycleState::Active).await;
        let child = delegate(store, acme, parent.id, "child", None).await;
        let grandchild = delegate(store, acme, child.id, "grandchild", None).await;
        assert_eq!(child.parent_slug, Some(slug("parent")), "as created");
        assert_eq!(parent.parent_slug, None);
        assert_eq!(
            agent(store, acme, child.id).await.parent_slug,
            Some(slug("parent"))
        );
        assert_eq!(
            agent(store, acme, grandchild.id).await.parent_slug,
            Some(slug("child"))
        );
        assert_eq!(agent(store, acme, parent.id).await.parent_slug, None);
    })
    .await;
}

/// The migration that makes every termination a revocation.
const REVOKED_AT_MIGRATION: &str = "20261202000300";

/// Reverts migrations down to and including `version`, on a worker of the
/// multi-thread runtime (the harness blocks in place).
async fn revert_to(url: &DatabaseUrl, version: &'static str) {
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
                    != version
                {}
            }
            DatabaseUrl::Postgres(url) => {
                let conn = agentry_store::connect_postgres(&url).await.unwrap();
                let mut harness = AsyncMigrationHarness::new(conn);
                while harness
                    .revert_last_migration(POSTGRES_MIGRATIONS)
                    .unwrap()
                    .to_string()
                    != version
                {}
            }
        }
    })
    .await
    .unwrap();
}

fn id_literal(db: &TestDb, id: AgentId) -> String {
    match db.backend() {
        Backend::Sqlite => format!("x'{}'", id.as_uuid().simple()),
        Backend::Postgres => format!("'{}'", id.as_uuid()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_terminated_before_the_migration_get_their_revoked_at_and_parent_slug() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let revoked = create(store, acme, "revoked", LifecycleState::Active).await;
        let stopped = create(store, acme, "stopped", LifecycleState::Active).await;
        let kid = delegate(store, acme, stopped.id, "kid", None).await;
        let lost = create(store, acme, "lost", LifecycleState::Active).await;
        let live = create(store, acme, "live", LifecycleState::Active).await;
        let live_kid = delegate(store, acme, live.id, "live-kid", None).await;
        let (t1, t2, t3) = (at(1), at(2), at(3));
        store
            .reclaim_agent(acme, revoked.id, TerminationReason::Revoked, t1)
            .await
            .unwrap();
        store
            .reclaim_agent(acme, stopped.id, TerminationReason::Operator, t2)
            .await
            .unwrap();
        store
            .reclaim_agent(acme, lost.id, TerminationReason::Operator, t2)
            .await
            .unwrap();
        // Profiles of terminated agents can still be edited: updated_at is
        // no record of the termination.
        let patch = ProfilePatch {
            display_name: Some(Some("Edited later".into())),
            ..ProfilePatch::default()
        };
        store
            .update_agent_profile(acme, &slug("stopped"), patch.clone(), t3)
            .await
            .unwrap();
        store
            .update_agent_profile(acme, &slug("lost"), patch, t3)
            .await
            .unwrap();

        // As the schema was: only the registry revoke had a revoked_at, and
        // no agent its parent's slug. One agent's history is gone.
        revert_to(&db.url, REVOKED_AT_MIGRATION).await;
        let unrevoked = "agents WHERE lifecycle_state = 'terminated' AND revoked_at IS NULL";
        assert_eq!(db.count(unrevoked).await, 3, "stopped, kid and lost");
        db.execute_raw(&format!(
            "DELETE FROM lifecycle_events WHERE agent_id = {}",
            id_literal(&db, lost.id)
        ))
        .await;
        store.migrate().await.unwrap();

        assert_eq!(db.count(unrevoked).await, 0);
        assert_revoked_at(store, acme, revoked.id, t1).await;
        assert_revoked_at(store, acme, stopped.id, t2).await;
        assert_revoked_at(store, acme, kid.id, t2).await;
        // No history: its last update is the best there is.
        assert_revoked_at(store, acme, lost.id, t3).await;
        assert_eq!(agent(store, acme, live.id).await.revoked_at, None);
        assert_eq!(
            agent(store, acme, kid.id).await.parent_slug,
            Some(AgentSlug::parse("stopped").unwrap())
        );
        assert_eq!(
            agent(store, acme, live_kid.id).await.parent_slug,
            Some(slug("live"))
        );
        assert_eq!(agent(store, acme, live.id).await.parent_slug, None);
    })
    .await;
}
