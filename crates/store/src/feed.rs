//! Following other replicas' changes on PostgreSQL, and knowing when that
//! cannot be trusted (issue 18).
//!
//! A LISTEN connection can die without a sound: a half-open TCP session
//! delivers nothing and reports nothing until keepalive gives up, and a
//! replica that went on trusting its caches would honour revoked
//! credentials all that time. So the follower sends itself a heartbeat
//! (`pg_notify` on a channel of its own, from a second connection) every
//! [`HEARTBEAT_INTERVAL`], and trusts the feed only while the newest
//! heartbeat it heard back was sent less than [`HEARTBEAT_DEADLINE`] ago.
//! PostgreSQL delivers a listener's notifications in commit order, so a
//! heartbeat heard means every change committed before it was sent has
//! been heard too.
//!
//! Losing trust publishes [`Change::Untrusted`]: caches drop everything and
//! keep nothing until trust returns, so every request reads the database
//! meanwhile. Trust returns, with [`Change::Resync`], when a fresh
//! heartbeat is heard, on the same connection or on a new one: without one
//! for [`RECONNECT_AFTER`] the follower gives the connection up and makes
//! another.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;

use crate::changes::{CHANNEL, Change};

/// How often a replica sends itself a heartbeat through PostgreSQL.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// The feed is trusted while the newest heartbeat heard was sent less than
/// this long ago. With the interval, a change a silently dead feed failed
/// to deliver is honoured within about half a second: from then on every
/// request reads the database.
pub const HEARTBEAT_DEADLINE: Duration = Duration::from_millis(400);
/// Without a heartbeat heard for this long the connection is given up.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(3);
/// The pause between a failed connection and the next attempt.
const RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// Whether this process's caches can rely on the change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedHealth {
    /// No feed was started: this process only hears its own writes.
    Local,
    /// SQLite: the change log is polled every [`crate::SQLITE_POLL`].
    Polling,
    /// PostgreSQL: heartbeats come back in time.
    Live,
    /// PostgreSQL: no fresh heartbeat; caches are bypassed.
    Broken,
}

impl FeedHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Polling => "polling",
            Self::Live => "live",
            Self::Broken => "broken",
        }
    }

    const fn to_u8(self) -> u8 {
        match self {
            Self::Local => 0,
            Self::Polling => 1,
            Self::Live => 2,
            Self::Broken => 3,
        }
    }

    const fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Local,
            1 => Self::Polling,
            2 => Self::Live,
            _ => Self::Broken,
        }
    }
}

/// The feed's health, shared by the store's clones.
#[derive(Debug)]
pub(crate) struct FeedState(AtomicU8);

impl Default for FeedState {
    fn default() -> Self {
        Self(AtomicU8::new(FeedHealth::Local.to_u8()))
    }
}

impl FeedState {
    pub(crate) fn get(&self) -> FeedHealth {
        FeedHealth::from_u8(AtomicU8::load(&self.0, Ordering::Acquire))
    }

    pub(crate) fn set(&self, health: FeedHealth) -> FeedHealth {
        FeedHealth::from_u8(AtomicU8::swap(&self.0, health.to_u8(), Ordering::AcqRel))
    }
}

/// What the follower should do, judged from the heartbeats: the rule, apart
/// from the connections so it can be tested without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heartbeats {
    connected_at: Instant,
    /// When the newest heartbeat heard on this connection was sent.
    newest_heard: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Trusted,
    Untrusted,
    Reconnect,
}

impl Heartbeats {
    pub(crate) fn new(connected_at: Instant) -> Self {
        Self {
            connected_at,
            newest_heard: None,
        }
    }

    pub(crate) fn heard(&mut self, sent_at: Instant) {
        self.newest_heard = Some(
            self.newest_heard
                .map_or(sent_at, |newest| newest.max(sent_at)),
        );
    }

    pub(crate) fn verdict(&self, now: Instant) -> Verdict {
        let since = now.saturating_duration_since(self.newest_heard.unwrap_or(self.connected_at));
        match self.newest_heard {
            Some(_) if since <= HEARTBEAT_DEADLINE => Verdict::Trusted,
            _ if since > RECONNECT_AFTER => Verdict::Reconnect,
            _ => Verdict::Untrusted,
        }
    }
}

/// A heartbeat's payload: when it was sent, as microseconds since the
/// follower's own epoch (only this process reads it).
fn encode_beat(epoch: Instant, now: Instant) -> String {
    now.saturating_duration_since(epoch).as_micros().to_string()
}

fn decode_beat(epoch: Instant, payload: &str) -> Option<Instant> {
    let micros: u64 = payload.parse().ok()?;
    epoch.checked_add(Duration::from_micros(micros))
}

/// Follows the feed until the process ends, reconnecting as needed, and
/// keeps `health` and the caches (through `publish`) in step with it.
pub(crate) async fn follow(url: String, health: Arc<FeedState>, publish: impl Fn(Change)) {
    let beat_channel = format!("agentry_heartbeat_{}", uuid::Uuid::now_v7().simple());
    let epoch = Instant::now();
    let distrust = |why: &dyn std::fmt::Display| {
        if health.set(FeedHealth::Broken) != FeedHealth::Broken {
            tracing::warn!(%why, "the change feed cannot be trusted; caches are bypassed");
            publish(Change::Untrusted);
        }
    };
    loop {
        let Err(error) = listen(&url, &beat_channel, epoch, &health, &publish).await;
        distrust(&error);
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

enum Never {}

async fn connect(url: &str) -> Result<AsyncPgConnection, String> {
    crate::postgres_tls::connect_postgres(url)
        .await
        .map_err(|error| error.to_string())
}

/// One connection's life: LISTEN, heartbeats, and the changes heard, until
/// the connection fails or its heartbeats stop.
async fn listen(
    url: &str,
    beat_channel: &str,
    epoch: Instant,
    health: &FeedState,
    publish: &impl Fn(Change),
) -> Result<Never, String> {
    let mut conn = connect(url).await?;
    for channel in [CHANNEL, beat_channel] {
        diesel::sql_query(format!("LISTEN {channel}"))
            .execute(&mut conn)
            .await
            .map_err(|error| error.to_string())?;
    }
    // Heartbeats go out on a connection of their own, so a busy pool
    // cannot delay them into a false alarm.
    let beater = tokio::spawn(beat(connect(url).await?, beat_channel.to_owned(), epoch));
    let _stop_beating = AbortOnDrop(beater);
    let mut heartbeats = Heartbeats::new(Instant::now());
    let mut notifications = std::pin::pin!(conn.notifications_stream());
    let mut check = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        tokio::select! {
            notification = notifications.next() => {
                let notification = notification
                    .ok_or("the notification stream ended")?
                    .map_err(|error| error.to_string())?;
                if notification.channel != beat_channel {
                    publish(Change::decode(&notification.payload));
                    continue;
                }
                if let Some(sent_at) = decode_beat(epoch, &notification.payload) {
                    heartbeats.heard(sent_at);
                }
            }
            _ = check.tick() => {}
        }
        match heartbeats.verdict(Instant::now()) {
            Verdict::Trusted => {
                // Everything committed before the heartbeat was sent has
                // been heard; what the caches missed before is dropped.
                if health.set(FeedHealth::Live) != FeedHealth::Live {
                    publish(Change::Resync);
                }
            }
            Verdict::Untrusted => {
                if health.set(FeedHealth::Broken) != FeedHealth::Broken {
                    tracing::warn!("no heartbeat came back in time; caches are bypassed");
                    publish(Change::Untrusted);
                }
            }
            Verdict::Reconnect => {
                return Err(format!("no heartbeat came back for {RECONNECT_AFTER:?}"));
            }
        }
    }
}

/// Sends a heartbeat every [`HEARTBEAT_INTERVAL`] until aborted or failed
/// (a failure shows as heartbeats not heard).
async fn beat(mut conn: AsyncPgConnection, channel: String, epoch: Instant) {
    let mut every = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        every.tick().await;
        let sent = diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<Text, _>(&channel)
            .bind::<Text, _>(encode_beat(epoch, Instant::now()))
            .execute(&mut conn);
        match tokio::time::timeout(HEARTBEAT_DEADLINE, sent).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot send a heartbeat");
                return;
            }
            // A send that hangs is a connection that hangs; the listener
            // will notice the silence.
            Err(_) => return,
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_is_trusted_only_while_heartbeats_come_back_in_time() {
        let start = Instant::now();
        let mut heartbeats = Heartbeats::new(start);
        // Before the first heartbeat nothing is known.
        assert_eq!(heartbeats.verdict(start), Verdict::Untrusted);
        heartbeats.heard(start + Duration::from_millis(10));
        assert_eq!(
            heartbeats.verdict(start + Duration::from_millis(300)),
            Verdict::Trusted
        );
        assert_eq!(
            heartbeats.verdict(start + Duration::from_millis(500)),
            Verdict::Untrusted
        );
        // A late heartbeat that was sent long ago restores nothing.
        heartbeats.heard(start);
        assert_eq!(
            heartbeats.verdict(start + Duration::from_millis(500)),
            Verdict::Untrusted
        );
        // A fresh one does.
        heartbeats.heard(start + Duration::from_millis(450));
        assert_eq!(
            heartbeats.verdict(start + Duration::from_millis(500)),
            Verdict::Trusted
        );
        assert_eq!(
            heartbeats.verdict(start + Duration::from_millis(450) + RECONNECT_AFTER * 2),
            Verdict::Reconnect
        );
        // A connection that never heard one is given up too.
        assert_eq!(
            Heartbeats::new(start).verdict(start + RECONNECT_AFTER * 2),
            Verdict::Reconnect
        );
    }

    #[test]
    fn heartbeats_carry_their_send_time() {
        let epoch = Instant::now();
        let sent = epoch + Duration::from_micros(1_234_567);
        assert_eq!(decode_beat(epoch, &encode_beat(epoch, sent)), Some(sent));
        assert_eq!(decode_beat(epoch, "not a number"), None);
    }

    #[test]
    fn health_survives_its_atomic_form() {
        let state = FeedState::default();
        assert_eq!(state.get(), FeedHealth::Local);
        for health in [
            FeedHealth::Polling,
            FeedHealth::Live,
            FeedHealth::Broken,
            FeedHealth::Local,
        ] {
            state.set(health);
            assert_eq!(state.get(), health);
        }
    }
}
