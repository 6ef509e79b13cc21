//! A replica whose change feed went silent (its LISTEN connection half
//! open, nothing delivered, nothing closed) still honours a revocation
//! within a second: it stops trusting its caches and reads the database.

use std::time::{Duration, Instant};

use agentry_domain::LifecycleState;
use agentry_lifecycle::{LifecycleCommand, TerminationReason};
use agentry_store::{DatabaseUrl, FeedHealth, PoolOptions, Store, now};
use agentry_testkit::{Relay, authority_of, drop_postgres, postgres_db};

use crate::{agent, app, get, replica_state, state_for, tenant};

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_whose_feed_went_silent_honours_a_revocation_within_a_second() {
    let Some((db, name)) = postgres_db().await else {
        return;
    };
    let first = state_for(&db).await;
    let DatabaseUrl::Postgres(direct) = &db.url else {
        unreachable!("postgres_db gives a PostgreSQL URL");
    };
    let relay = Relay::start(authority_of(direct)).await;
    let relay_url = DatabaseUrl::parse(&relay.url_for(direct)).unwrap();

    // The replica's feed opens the relay's first connections (LISTEN, then
    // the heartbeat's); its pool opens later ones.
    let store = Store::connect(&relay_url, &PoolOptions::default()).unwrap();
    store.start_change_listener(&relay_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.change_feed() != FeedHealth::Live {
        assert!(
            Instant::now() < deadline,
            "the replica's feed never went live"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let feed_connections = relay.opened();
    let replica = replica_state(store, &first).await;
    let replica_app = app(&replica).await;

    let acme = tenant(&db.store, "acme").await;
    let worker = agent(&db.store, acme, "watched", LifecycleState::Active).await;
    let (token, _) = first.mint_agent_token(&worker, now()).unwrap();
    // Admitted, and so cached, on the replica.
    assert_eq!(
        get(&replica_app, "/v1/agent/status", Some(&token)).await.0,
        200
    );
    assert_eq!(
        get(&replica_app, "/v1/agent/status", Some(&token)).await.0,
        200
    );

    // The feed goes silent; the pool's connections still work.
    relay.freeze_below(feed_connections);
    db.store
        .transition(
            acme,
            worker.id,
            LifecycleCommand::Terminate(TerminationReason::Revoked),
            now(),
        )
        .await
        .unwrap()
        .unwrap();
    let revoked_at = Instant::now();
    loop {
        let (status, body) = get(&replica_app, "/v1/agent/status", Some(&token)).await;
        if status == 403 {
            assert_eq!(body["code"], "agent_terminated");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the replica still admitted the revoked agent a second later"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("refused {:?} after the revocation", revoked_at.elapsed());
    assert_eq!(replica.store.change_feed(), FeedHealth::Broken);
    drop(replica_app);
    drop(replica);
    drop(first);
    drop(db);
    drop_postgres(&name).await;
}
