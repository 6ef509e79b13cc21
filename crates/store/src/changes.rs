//! The change feed: who must forget what they cached.
//!
//! Every write that can make a cached decision or figure wrong (an agent's
//! lifecycle, an API key's revocation, the tenant's limits, an agent's
//! ledger, the signing keys and their revocation) publishes a [`Change`]. Subscribers in this process hear it at once; on
//! PostgreSQL the change is also sent with `pg_notify` inside the writing
//! transaction, so every other replica hears it when, and only if, the write
//! commits. A listener that loses its connection publishes [`Change::Resync`]
//! so caches start over rather than trust what they might have missed.

use std::future::Future;
use std::time::Duration;

use agentry_domain::{AgentId, TenantId};
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tokio::sync::broadcast;
use uuid::Uuid;

use diesel::prelude::*;

use crate::db::{SqliteConn, write_one};
use crate::feed::FeedHealth;
use crate::schema::change_log;
use crate::types::DbTime;
use crate::{DatabaseUrl, Store, StoreError};

pub(crate) const CHANNEL: &str = "agentry_changes";

/// Something cached elsewhere may now be wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Agent(AgentId),
    ApiKey(Uuid),
    TenantLimits(TenantId),
    /// Entries were appended to the agent's ledger: its account moved.
    Ledger(AgentId),
    SigningKeys,
    /// The signing key with this kid was revoked: drop it from the key ring
    /// and forget every token verified with it, now, not at the next reload.
    SigningKeyRevoked(KidDigest),
    /// Changes may have been missed: drop everything. Also said when a
    /// feed that was [`Change::Untrusted`] can be trusted again.
    Resync,
    /// This process can no longer be sure it hears every change (its feed
    /// is silent or reconnecting): drop everything, and cache nothing
    /// until a [`Change::Resync`]. Never sent to other processes.
    Untrusted,
}

/// A signing key's `kid`, as a fixed-size digest (the first 16 bytes of its
/// SHA-256), so a [`Change`] stays `Copy` and its text form short whatever
/// the kid. A listener compares it with the digests of the kids it holds;
/// two kids sharing a digest would take 2^64 tries to find, and would only
/// make a revocation drop one key too many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KidDigest([u8; 16]);

impl KidDigest {
    pub fn of(kid: &str) -> Self {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(kid.as_bytes());
        let mut digest = [0; 16];
        digest.copy_from_slice(&hash[..16]);
        Self(digest)
    }

    /// The digest as bytes, to carry elsewhere (an agent certificate names
    /// the key that signed the token it was bought with this way).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    fn to_hex(self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut digest = [0; 16];
        for (index, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
        }
        Some(Self(digest))
    }
}

impl Change {
    fn encode(self) -> String {
        match self {
            Change::Agent(id) => format!("agent:{id}"),
            Change::ApiKey(id) => format!("key:{id}"),
            Change::TenantLimits(id) => format!("limits:{id}"),
            Change::Ledger(id) => format!("ledger:{id}"),
            Change::SigningKeys => "signing-keys".to_owned(),
            Change::SigningKeyRevoked(digest) => format!("signing-key-revoked:{}", digest.to_hex()),
            Change::Resync => "resync".to_owned(),
            Change::Untrusted => "untrusted".to_owned(),
        }
    }

    pub(crate) fn decode(text: &str) -> Change {
        let parsed = match text.split_once(':') {
            Some(("agent", id)) => id.parse().ok().map(Change::Agent),
            Some(("key", id)) => id.parse().ok().map(Change::ApiKey),
            Some(("limits", id)) => id.parse().ok().map(Change::TenantLimits),
            Some(("ledger", id)) => id.parse().ok().map(Change::Ledger),
            Some(("signing-key-revoked", digest)) => {
                KidDigest::from_hex(digest).map(Change::SigningKeyRevoked)
            }
            None if text == "signing-keys" => Some(Change::SigningKeys),
            None if text == "untrusted" => Some(Change::Untrusted),
            _ => None,
        };
        // Something we do not understand (a newer replica?) is safest read
        // as "forget everything".
        parsed.unwrap_or(Change::Resync)
    }
}

/// Sends a change inside the writing transaction, where the backend can.
pub(crate) trait NotifyChange {
    fn notify_change(
        &mut self,
        change: Change,
    ) -> impl Future<Output = diesel::QueryResult<()>> + Send;
}

impl NotifyChange for AsyncPgConnection {
    async fn notify_change(&mut self, change: Change) -> diesel::QueryResult<()> {
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<Text, _>(CHANNEL)
            .bind::<Text, _>(change.encode())
            .execute(self)
            .await
            .map(drop)
    }
}

impl NotifyChange for SqliteConn {
    /// SQLite has no notifications; the change is logged in the same
    /// transaction, and every process using the file polls the log (see
    /// [`Store::start_change_listener`]).
    async fn notify_change(&mut self, change: Change) -> diesel::QueryResult<()> {
        diesel::insert_into(change_log::table)
            .values((
                change_log::change.eq(change.encode()),
                change_log::at.eq(DbTime::new(time::OffsetDateTime::now_utc())),
            ))
            .execute(self)
            .await
            .map(drop)
    }
}

pub(crate) fn channel() -> broadcast::Sender<Change> {
    broadcast::channel(1024).0
}

/// A function told of every change, synchronously, before the write that
/// caused it returns to its caller.
pub type ChangeListener = std::sync::Arc<dyn Fn(Change) + Send + Sync>;

impl Store {
    /// Registers `listener` to be called for every change, local or heard
    /// from another replica. A local write calls it before returning, so a
    /// cache invalidated here is correct for the very next request.
    pub fn on_change(&self, listener: ChangeListener) {
        if let Ok(mut listeners) = self.listeners.write() {
            listeners.push(listener);
        }
    }

    /// Hears every change from now on. A receiver that falls behind gets a
    /// `Lagged` error from tokio; treat it as [`Change::Resync`].
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub(crate) fn publish(&self, change: Change) {
        publish(&self.listeners, &self.changes, change);
    }

    /// Hears the changes other processes commit and republishes them here,
    /// on the store's runtime: [`Store::follow_changes`], spawned. Call once
    /// per process.
    pub async fn start_change_listener(&self, url: &DatabaseUrl) -> Result<(), StoreError> {
        let follower = self.follow_changes(url).await?;
        self.runtime.spawn(follower);
        Ok(())
    }

    /// The change-feed follower, for the caller to run as a job for as long
    /// as the process serves (it never ends): on PostgreSQL by LISTEN, with
    /// the heartbeat of `feed.rs`, reconnecting after a failure; on SQLite
    /// by polling the change log every [`SQLITE_POLL`] (an operator's CLI
    /// writing to the same file is another process). Before this returns,
    /// the caches distrust the feed (PostgreSQL, until its first heartbeat)
    /// or the log's position is taken (SQLite), so nothing committed after
    /// this call is missed.
    pub async fn follow_changes(
        &self,
        url: &DatabaseUrl,
    ) -> Result<impl Future<Output = ()> + Send + 'static, StoreError> {
        let follower: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match url {
            DatabaseUrl::Postgres(url) => {
                self.feed.set(FeedHealth::Broken);
                self.publish(Change::Untrusted);
                let (url, sender, listeners) =
                    (url.clone(), self.changes.clone(), self.listeners.clone());
                let health = std::sync::Arc::clone(&self.feed);
                Box::pin(async move {
                    let publish = |change| publish(&listeners, &sender, change);
                    crate::feed::follow(url, health, publish).await;
                })
            }
            DatabaseUrl::Sqlite(_) => {
                self.feed.set(FeedHealth::Polling);
                Box::pin(self.change_log_poller().await?)
            }
        };
        Ok(follower)
    }

    /// Whether this process's caches can rely on the change feed now.
    pub fn change_feed(&self) -> FeedHealth {
        self.feed.get()
    }
}

/// How often a SQLite process looks for changes made by other processes.
pub const SQLITE_POLL: Duration = Duration::from_secs(1);
/// How long logged changes are kept; far longer than any poll interval.
const LOG_RETENTION: time::Duration = time::Duration::minutes(10);

impl Store {
    /// Takes the log's current position before returning, so nothing
    /// committed after this call can be missed.
    async fn change_log_poller(
        &self,
    ) -> Result<impl Future<Output = ()> + Send + 'static, StoreError> {
        let (position, _) = self.poll_change_log(None, false).await?;
        let store = self.clone();
        Ok(async move {
            let mut last_seen = Some(position);
            let mut every = tokio::time::interval(SQLITE_POLL);
            every.tick().await;
            for poll in 1_u64.. {
                every.tick().await;
                // Pruning writes; once a minute is plenty.
                let prune = poll % 60 == 0;
                match store.poll_change_log(last_seen, prune).await {
                    Ok((newest, changes)) => {
                        for change in changes {
                            store.publish(change);
                        }
                        last_seen = Some(newest);
                    }
                    Err(error) => tracing::warn!(%error, "cannot read the change log"),
                }
            }
        })
    }

    /// Changes logged after `after` (or none, the first time: only the
    /// position is taken), and the newest id; with `prune`, drops entries
    /// past their retention first. If entries after `after` were pruned
    /// before this process read them, the answer includes `Resync`.
    async fn poll_change_log(
        &self,
        after: Option<i64>,
        prune: bool,
    ) -> Result<(i64, Vec<Change>), StoreError> {
        let cutoff = DbTime::new(time::OffsetDateTime::now_utc() - LOG_RETENTION);
        write_one!(self, |conn| {
            if prune {
                diesel::delete(change_log::table.filter(change_log::at.lt(cutoff)))
                    .execute(conn)
                    .await?;
            }
            let oldest: Option<i64> = change_log::table
                .select(diesel::dsl::min(change_log::id))
                .first(conn)
                .await?;
            let newest: Option<i64> = change_log::table
                .select(diesel::dsl::max(change_log::id))
                .first(conn)
                .await?;
            let newest = newest.unwrap_or(0);
            let Some(after) = after else {
                return Ok((newest, Vec::new()));
            };
            let rows: Vec<String> = change_log::table
                .filter(change_log::id.gt(after))
                .order(change_log::id.asc())
                .select(change_log::change)
                .load(conn)
                .await?;
            let mut changes: Vec<Change> = rows.iter().map(|text| Change::decode(text)).collect();
            // Ids only grow, so a hole between what we saw and the oldest
            // kept entry means pruned changes we never read.
            if oldest.is_some_and(|oldest| oldest > after + 1) {
                changes.push(Change::Resync);
            }
            Ok((newest.max(after), changes))
        })
    }
}

pub(crate) type Listeners = std::sync::Arc<std::sync::RwLock<Vec<ChangeListener>>>;

fn publish(listeners: &Listeners, sender: &broadcast::Sender<Change>, change: Change) {
    if let Ok(listeners) = listeners.read() {
        for listener in listeners.iter() {
            listener(change);
        }
    }
    // No subscriber is fine: nothing is cached.
    let _ = sender.send(change);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_their_text_form() {
        for change in [
            Change::Agent(AgentId::from_uuid(Uuid::from_u128(1))),
            Change::ApiKey(Uuid::from_u128(2)),
            Change::TenantLimits(TenantId::from_uuid(Uuid::from_u128(3))),
            Change::Ledger(AgentId::from_uuid(Uuid::from_u128(4))),
            Change::SigningKeys,
            Change::SigningKeyRevoked(KidDigest::of("key-1")),
            Change::Resync,
            Change::Untrusted,
        ] {
            assert_eq!(Change::decode(&change.encode()), change);
        }
        assert_eq!(Change::decode("agent:not-a-uuid"), Change::Resync);
        assert_eq!(Change::decode("from-the-future:1"), Change::Resync);
        assert_eq!(Change::decode("signing-key-revoked:zz"), Change::Resync);
        assert_ne!(KidDigest::of("key-1"), KidDigest::of("key-2"));
    }
}
