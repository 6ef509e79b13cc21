//! The guard's caches of verified tokens, API keys, agents and accounts,
//! kept true by the store's change feed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentry_auth::Claims;
use agentry_domain::{AgentId, AgentSlug, TenantId};
use agentry_ledger::Account;
use agentry_store::{ApiKeyRecord, Change};
use time::{Duration, OffsetDateTime};

use super::AgentSnapshot;

/// Caches behind the guard. Every entry may be dropped at any time; the
/// store's change feed drops the ones a write made wrong.
///
/// A loader notes `generation()` (or `ledger_generation()` for accounts)
/// before reading the database and inserts only if no invalidation happened
/// since. The check and the insert happen under the same lock the
/// invalidation bumps the generation under, so a read that raced a
/// revocation can never re-insert the pre-revocation state. Ledger changes
/// (every spend) have their own generation, so a busy ledger does not keep
/// agents and keys from being cached.
#[derive(Debug, Default)]
pub struct GuardCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// The change feed was lost and has not caught up: nothing is served
    /// from here or kept here, every request reads the database.
    untrusted: bool,
    generation: u64,
    ledger_generation: u64,
    /// Moves when verified tokens are forgotten (a signing key revoked, a
    /// resync), so a verification that raced the revocation does not
    /// re-insert what it verified with the old ring.
    token_generation: u64,
    /// By signature segment; see `crate::guard`'s `token_signature`.
    tokens: HashMap<Box<str>, Claims>,
    api_keys: HashMap<[u8; 32], ApiKeyRecord>,
    /// Hashes of well-formed API keys the database did not know, with when
    /// it said so: a client retrying a made-up key gets its 401 without a
    /// database read until [`UNKNOWN_KEY_TTL`] has passed. See
    /// docs/decisions.md for why a key created afterwards is never in here.
    unknown_api_keys: HashMap<[u8; 32], OffsetDateTime>,
    /// API keys by id, for the agent certificates bought with them (a
    /// certificate names its key by id; the key itself is never seen
    /// again).
    keys_by_id: HashMap<uuid::Uuid, ApiKeyRecord>,
    agents: HashMap<AgentId, Arc<AgentSnapshot>>,
    accounts: HashMap<AgentId, Arc<Account>>,
    /// Agents a repeat bootstrap may answer for without the database (see
    /// [`GuardCache::ready_agent`]), by tenant and slug.
    ready: HashMap<(TenantId, AgentSlug), Arc<AgentSnapshot>>,
    /// Where each agent in `ready` is filed, so a change to it finds it.
    ready_keys: HashMap<AgentId, (TenantId, AgentSlug)>,
}

/// Entries per map before it is simply emptied; keeps memory bounded under
/// a flood of distinct credentials.
const CACHE_LIMIT: usize = 100_000;

/// How long "no such API key" is believed without asking the database.
pub const UNKNOWN_KEY_TTL: Duration = Duration::seconds(60);
/// Unknown key hashes kept at most (32 bytes and a time each: about 5 MB
/// with the map's overhead); past it the map is emptied, and a flood of
/// distinct made-up keys costs what it cost before the cache, one read each.
const UNKNOWN_KEY_LIMIT: usize = 65_536;

fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= CACHE_LIMIT {
        map.clear();
    }
    map.insert(key, value);
}

impl GuardCache {
    fn with<T>(&self, f: impl FnOnce(&mut CacheInner) -> T) -> Option<T> {
        self.inner.lock().ok().map(|mut inner| f(&mut inner))
    }

    /// Like `with`, but only while the feed is trusted: every read and
    /// every insert goes through here, so an untrusted cache answers
    /// nothing and keeps nothing.
    fn trusted<T>(&self, f: impl FnOnce(&mut CacheInner) -> T) -> Option<T> {
        self.inner
            .lock()
            .ok()
            .filter(|inner| !inner.untrusted)
            .map(|mut inner| f(&mut inner))
    }

    /// Whether entries are served (false while the change feed is lost).
    pub fn is_trusted(&self) -> bool {
        self.with(|inner| !inner.untrusted).unwrap_or(false)
    }

    pub fn generation(&self) -> u64 {
        self.with(|inner| inner.generation).unwrap_or(0)
    }

    /// Note it before verifying a token; [`GuardCache::remember_token`]
    /// keeps the result only if no revocation came in between.
    pub fn token_generation(&self) -> u64 {
        self.with(|inner| inner.token_generation).unwrap_or(0)
    }

    pub fn token(&self, signature: &str, now: OffsetDateTime) -> Option<Claims> {
        if signature.is_empty() {
            return None;
        }
        let claims = self.trusted(|inner| inner.tokens.get(signature).cloned())??;
        // Past expiry the full check must run again to say why.
        (claims.exp + agentry_auth::LEEWAY.whole_seconds() >= now.unix_timestamp())
            .then_some(claims)
    }

    pub fn remember_token(&self, token_generation: u64, signature: &str, claims: Claims) {
        if !signature.is_empty() {
            self.trusted(|inner| {
                if inner.token_generation == token_generation {
                    insert_bounded(&mut inner.tokens, signature.into(), claims);
                }
            });
        }
    }

    /// Whether the database said, less than [`UNKNOWN_KEY_TTL`] ago, that no
    /// API key has this hash.
    pub fn is_unknown_api_key(&self, hash: &[u8; 32], now: OffsetDateTime) -> bool {
        self.trusted(|inner| {
            inner
                .unknown_api_keys
                .get(hash)
                .is_some_and(|&seen| now - seen < UNKNOWN_KEY_TTL)
        })
        .unwrap_or(false)
    }

    pub fn remember_unknown_api_key(&self, hash: [u8; 32], now: OffsetDateTime) {
        self.trusted(|inner| {
            let unknown = &mut inner.unknown_api_keys;
            if unknown.len() >= UNKNOWN_KEY_LIMIT {
                // Expired entries first; a map full of fresh ones is a
                // flood, and starts over.
                unknown.retain(|_, seen| now - *seen < UNKNOWN_KEY_TTL);
                if unknown.len() >= UNKNOWN_KEY_LIMIT {
                    unknown.clear();
                }
            }
            unknown.insert(hash, now);
        });
    }

    /// Forgets that `hash` was unknown: for a key created in this process.
    pub fn forget_unknown_api_key(&self, hash: &[u8; 32]) {
        self.with(|inner| inner.unknown_api_keys.remove(hash));
    }

    pub fn api_key(&self, hash: &[u8; 32]) -> Option<ApiKeyRecord> {
        self.trusted(|inner| inner.api_keys.get(hash).cloned())?
    }

    pub fn remember_api_key(&self, generation: u64, hash: [u8; 32], key: ApiKeyRecord) {
        self.trusted(|inner| {
            if inner.generation == generation {
                insert_bounded(&mut inner.api_keys, hash, key);
            }
        });
    }

    pub fn api_key_by_id(&self, id: uuid::Uuid) -> Option<ApiKeyRecord> {
        self.trusted(|inner| inner.keys_by_id.get(&id).cloned())?
    }

    pub fn remember_api_key_by_id(&self, generation: u64, key: ApiKeyRecord) {
        self.trusted(|inner| {
            if inner.generation == generation {
                insert_bounded(&mut inner.keys_by_id, key.id, key);
            }
        });
    }

    pub fn ledger_generation(&self) -> u64 {
        self.with(|inner| inner.ledger_generation).unwrap_or(0)
    }

    pub fn account(&self, id: AgentId) -> Option<Arc<Account>> {
        self.trusted(|inner| inner.accounts.get(&id).cloned())?
    }

    pub fn remember_account(&self, ledger_generation: u64, id: AgentId, account: Arc<Account>) {
        self.trusted(|inner| {
            if inner.ledger_generation == ledger_generation {
                insert_bounded(&mut inner.accounts, id, account);
            }
        });
    }

    pub fn agent(&self, id: AgentId) -> Option<Arc<AgentSnapshot>> {
        self.trusted(|inner| inner.agents.get(&id).cloned())?
    }

    pub fn remember_agent(&self, generation: u64, snapshot: Arc<AgentSnapshot>) {
        self.trusted(|inner| {
            if inner.generation == generation {
                insert_bounded(&mut inner.agents, snapshot.record.id, snapshot);
            }
        });
    }

    /// The agent `slug` of `tenant` as a bootstrap last found it: active,
    /// not delegated and with its limits entry, so a repeat bootstrap can
    /// answer without reading or writing anything. Dropped by every change
    /// to the agent and to its tenant's limits, like the guard's snapshots,
    /// so a token is never minted from a state the guard would not honour.
    pub fn ready_agent(&self, tenant: TenantId, slug: &AgentSlug) -> Option<Arc<AgentSnapshot>> {
        self.trusted(|inner| inner.ready.get(&(tenant, slug.clone())).cloned())?
    }

    /// Files `snapshot` for [`GuardCache::ready_agent`] unless something
    /// changed since `generation` was read.
    pub fn remember_ready_agent(&self, generation: u64, snapshot: Arc<AgentSnapshot>) {
        self.trusted(|inner| {
            if inner.generation != generation {
                return;
            }
            // Both maps go together: a key forgotten alone would leave its
            // snapshot where no change could reach it.
            if inner.ready.len() >= CACHE_LIMIT {
                inner.ready.clear();
                inner.ready_keys.clear();
            }
            let key = (snapshot.record.tenant_id, snapshot.record.slug.clone());
            inner.ready_keys.insert(snapshot.record.id, key.clone());
            inner.ready.insert(key, snapshot);
        });
    }

    /// Forgets what `change` may have made wrong.
    pub fn invalidate(&self, change: Change) {
        self.with(|inner| {
            if let Change::Ledger(id) = change {
                inner.ledger_generation += 1;
                inner.accounts.remove(&id);
                return;
            }
            inner.generation += 1;
            match change {
                Change::Agent(id) => {
                    inner.agents.remove(&id);
                    if let Some(key) = inner.ready_keys.remove(&id) {
                        inner.ready.remove(&key);
                    }
                    inner.api_keys.retain(|_, key| key.agent_id != Some(id));
                    inner.keys_by_id.retain(|_, key| key.agent_id != Some(id));
                }
                Change::ApiKey(id) => {
                    inner.api_keys.retain(|_, key| key.id != id);
                    inner.keys_by_id.remove(&id);
                }
                Change::TenantLimits(tenant) => {
                    inner
                        .agents
                        .retain(|_, agent| agent.record.tenant_id != tenant);
                    inner.ready.retain(|(owner, _), _| *owner != tenant);
                    inner.ready_keys.retain(|_, (owner, _)| *owner != tenant);
                }
                Change::Ledger(_) => {}
                // Verified tokens stay verified when a key is retired (they
                // keep their validity until expiry); new keys only add.
                Change::SigningKeys => {}
                // The cache does not know which key verified a token;
                // revocations are rare enough to forget them all.
                Change::SigningKeyRevoked(_) => {
                    inner.token_generation += 1;
                    inner.tokens.clear();
                }
                Change::Resync | Change::Untrusted => {
                    inner.untrusted = change == Change::Untrusted;
                    inner.ledger_generation += 1;
                    inner.token_generation += 1;
                    inner.tokens.clear();
                    inner.unknown_api_keys.clear();
                    inner.api_keys.clear();
                    inner.keys_by_id.clear();
                    inner.agents.clear();
                    inner.accounts.clear();
                    inner.ready.clear();
                    inner.ready_keys.clear();
                }
            }
        });
    }

    pub fn clear(&self) {
        self.invalidate(Change::Resync);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untrusted_cache_answers_nothing_and_keeps_nothing_until_a_resync() {
        let cache = GuardCache::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        cache.remember_unknown_api_key([1; 32], now);
        assert!(cache.is_unknown_api_key(&[1; 32], now));

        cache.invalidate(Change::Untrusted);
        assert!(!cache.is_trusted());
        assert!(!cache.is_unknown_api_key(&[1; 32], now), "dropped");
        cache.remember_unknown_api_key([2; 32], now);
        assert!(!cache.is_unknown_api_key(&[2; 32], now), "not kept");
        // Other changes do not restore trust; only a resync does.
        cache.invalidate(Change::SigningKeys);
        assert!(!cache.is_trusted());

        cache.invalidate(Change::Resync);
        assert!(cache.is_trusted());
        assert!(!cache.is_unknown_api_key(&[2; 32], now));
        cache.remember_unknown_api_key([2; 32], now);
        assert!(cache.is_unknown_api_key(&[2; 32], now));
    }
}
