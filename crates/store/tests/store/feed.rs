//! The change feed on PostgreSQL fails safe: a feed cut without a sound (a
//! relay that stops forwarding but keeps the sockets open, as a half-open
//! TCP session does) is distrusted within the heartbeat deadline, and the
//! follower reconnects and trusts again by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agentry_domain::{AgentOrigin, LifecycleState};
use agentry_lifecycle::LifecycleCommand;
use agentry_store::{
    Change, DatabaseUrl, FeedHealth, NewAgent, PoolOptions, RECONNECT_AFTER, Store, now,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use crate::{slug, support, tenant};

/// Forwards connections to PostgreSQL until told to freeze the ones open
/// at that moment: those then swallow everything, both ways, and never
/// close. Connections made later pass.
struct Relay {
    port: u16,
    /// Connections numbered below this are frozen.
    frozen_below: Arc<AtomicU64>,
    opened: Arc<AtomicU64>,
}

impl Relay {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let opened = Arc::new(AtomicU64::new(0));
        let (frozen, count) = (Arc::clone(&frozen_below), Arc::clone(&opened));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let number = count.fetch_add(1, Ordering::SeqCst);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, number, Arc::clone(&frozen)));
                tokio::spawn(pipe(server_read, client_write, number, Arc::clone(&frozen)));
            }
        });
        Self {
            port,
            frozen_below,
            opened,
        }
    }

    fn freeze_open_connections(&self) {
        self.frozen_below
            .store(self.opened.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    number: u64,
    frozen_below: Arc<AtomicU64>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        if number < frozen_below.load(Ordering::SeqCst) {
            // Swallowed: the socket stays open, nothing arrives.
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

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
    let authority = direct
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(authority, _)| authority.to_owned())
        .expect("a URL with a host");
    let relay = Relay::start(authority.clone()).await;
    let through_relay =
        DatabaseUrl::parse(&direct.replacen(&authority, &format!("127.0.0.1:{}", relay.port), 1))
            .unwrap();
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
