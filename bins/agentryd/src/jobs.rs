//! The background jobs a serving process runs beside its listeners, each
//! a loop around one step `agentry_http::AppState` offers: following key
//! rotations, reaping expired agents, forgetting quiet API keys, dropping
//! past minutes' shared rate counts and writing last-seen times; and the
//! change-feed follower they rely on (`Store::follow_changes`).

use agentry_http::AppState;
use agentry_http::state::{
    QUIET_KEYS_INTERVAL, RATE_LEASE_PRUNE_INTERVAL, REAPER_INTERVAL, SIGHTINGS_FLUSH_INTERVAL,
    may_rotate_signing_keys,
};
use agentry_store::{FeedHealth, HEARTBEAT_DEADLINE};
use tokio::sync::broadcast::error::RecvError;

/// Starts every job on the current runtime, `change_feed` (the store's
/// follower, made before the listeners open) first; they run until the
/// process ends.
pub(crate) fn spawn(state: &AppState, change_feed: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(change_feed);
    let keys = state.clone();
    tokio::spawn(async move {
        let mut changes = keys.store.subscribe_changes();
        loop {
            // While the feed is broken a revocation may go unheard: the
            // ring is read again on a short cadence instead.
            let feed_broken = keys.store.change_feed() == FeedHealth::Broken;
            let change = tokio::select! {
                received = changes.recv() => match received {
                    Ok(change) => Some(change),
                    // A receiver that fell behind may have missed a rotation.
                    Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => break,
                },
                () = tokio::time::sleep(HEARTBEAT_DEADLINE), if feed_broken => None,
            };
            if may_rotate_signing_keys(change.as_ref()) {
                keys.reload_signing_keys().await;
            }
        }
    });
    let reaper = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(REAPER_INTERVAL);
        loop {
            every.tick().await;
            reaper.reap_expired(agentry_store::now()).await;
        }
    });
    let limiter = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(QUIET_KEYS_INTERVAL);
        loop {
            every.tick().await;
            limiter.forget_quiet_api_keys();
        }
    });
    let leases = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RATE_LEASE_PRUNE_INTERVAL);
        loop {
            every.tick().await;
            leases.prune_rate_leases(agentry_store::now()).await;
        }
    });
    let sightings = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SIGHTINGS_FLUSH_INTERVAL);
        loop {
            every.tick().await;
            sightings.flush_sightings().await;
        }
    });
}
