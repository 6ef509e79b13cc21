//! The change feed on PostgreSQL fails safe: a feed cut without a sound (a
//! relay that stops forwarding but keeps the sockets open, as a half-open
//! TCP session does) is distrusted within the heartbeat deadline, and the
//! follower reconnects and trusts again by itself.

use std::time::Duration;

use agentry_domain::{AgentOrigin, LifecycleState};
use agentry_lifecycle::LifecycleCommand;
use agentry_store::{
    Change, DatabaseUrl, FeedHealth, NewAgent, PoolOptions, RECONNECT_AFTER, Store, now,
};
use agentry_testkit::{Relay, authority_of};
use tokio::sync::broadcast;

use crate::{slug, support, tenant};

/// The next change heard within `bound`, skipping those `skip` accepts.
async fn next_change(
    heard: &mut broadcast::Receiver<Change>,
    bound: Duration,
    wanted: impl Fn(&Change) -> bool,
) -> Option<Change> {
    tokio::time::timeout(bound, async {
        loop {
            match heard.recv().await {
                Ok(change) if wanted(&change) => return change,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the feed closed"),
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silently_cut_feed_is_distrusted_in_time_and_recovers_by_itself() {
    let Some((db, name)) = support::postgres_db().await else {
        return;
    };
    let DatabaseUrl::Postgres(direct) = &db.url else {
        unreachable!("postgres_db gives a PostgreSQL URL");
    };
    let relay = Relay::start(authority_of(direct)).await;
    let through_relay = DatabaseUrl::parse(&relay.url_for(direct)).unwrap();
    let replica = Store::connect(&through_relay, &PoolOptions::default()).unwrap();
    let mut heard = replica.subscribe_changes();
    replica.start_change_listener(&through_relay).await.unwrap();

    // Distrusted from the start until the first heartbeat comes back.
    assert_eq!(heard.recv().await.unwrap(), Change::Untrusted);
    assert_eq!(
        next_change(&mut heard, Duration::from_secs(5), |c| *c == Change::Resync).await,
        Some(Change::Resync)
    );
    assert_eq!(replica.change_feed(), FeedHealth::Live);

    // A healthy feed carries a lifecycle change.
    let store = &db.store;
    let acme = tenant(store, "acme").await;
    let agent = store
        .create_agent(
            acme,
            NewAgent::named(slug("watched"), AgentOrigin::Api).starting_in(LifecycleState::Active),
            now(),
        )
        .await
        .unwrap();
    let suspend = LifecycleCommand::Request(LifecycleState::Suspended);
    store
        .transition(acme, agent.id, suspend, now())
        .await
        .unwrap()
        .unwrap();
    let change = Change::Agent(agent.id);
    assert_eq!(
        next_change(&mut heard, Duration::from_secs(1), |c| *c == change).await,
        Some(change)
    );

    // Cut without a sound: the replica must stop trusting its caches within
    // a second, whatever the changes it no longer hears.
    relay.freeze_open_connections();
    let resume = LifecycleCommand::Request(LifecycleState::Active);
    store
        .transition(acme, agent.id, resume, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next_change(&mut heard, Duration::from_secs(1), |c| *c
            == Change::Untrusted)
        .await,
        Some(Change::Untrusted),
        "distrusted within the bound"
    );
    assert_eq!(replica.change_feed(), FeedHealth::Broken);

    // The follower gives the silent connection up and trusts a new one.
    assert_eq!(
        next_change(&mut heard, RECONNECT_AFTER + Duration::from_secs(5), |c| {
            *c == Change::Resync
        })
        .await,
        Some(Change::Resync)
    );
    assert_eq!(replica.change_feed(), FeedHealth::Live);
    drop(replica);
    drop(db);
    support::drop_postgres(&name).await;
}
