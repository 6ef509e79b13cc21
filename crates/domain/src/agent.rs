//! The entities: an agent and the API keys that speak for it or its tenant,
//! as every crate sees them. How they are stored is `agentry-store`'s
//! business (its row types stay inside it); how they change is
//! `agentry-lifecycle`'s and `agentry-ledger`'s.

use time::OffsetDateTime;

use crate::{AgentId, AgentName, AgentOrigin, AgentSlug, ApiKeyRole, LifecycleState, Money, Role};
use crate::{TenantId, TrustLevel};

/// An agent: one entity behind seed 001's profile, seed 004's registry
/// record and seed 002's workspace agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub id: AgentId,
    pub tenant_id: TenantId,
    pub slug: AgentSlug,
    /// The name as the client wrote it (seeds 002, 004); its slug is `slug`.
    pub name: AgentName,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub owner_id: Option<String>,
    pub cost_center: Option<String>,
    pub budget_daily: Option<Money>,
    pub budget_monthly: Option<Money>,
    pub role: Role,
    pub lifecycle_state: LifecycleState,
    pub manifest_id: Option<String>,
    pub parent_id: Option<AgentId>,
    /// The parent's slug (its `agent_id`), for an agent created by
    /// delegation: written with the child, since slugs never change.
    pub parent_slug: Option<AgentSlug>,
    pub expires_at: Option<OffsetDateTime>,
    pub metadata: serde_json::Value,
    pub scopes: Vec<String>,
    pub trust_level: TrustLevel,
    /// Bumped whenever the agent's credentials must stop working (revoke,
    /// rotate, termination), so caches keyed on it go stale at once.
    pub credential_epoch: i64,
    pub last_seen_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// The route that created it.
    pub origin: AgentOrigin,
}

/// An API key as known after it is issued: never the key itself, which is
/// shown once and kept only as a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    /// The tenant role it carries; `None` for an agent's own key.
    pub role: Option<ApiKeyRole>,
    /// The agent it belongs to, for an agent's own key (and a workspace
    /// primary agent's, which also carries the admin role).
    pub agent_id: Option<AgentId>,
    pub label: Option<String>,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    /// When the key stops working by itself (seed 002's `expires_at`).
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

impl ApiKeyRecord {
    /// Whether the key may still authenticate at `now`: not revoked, and
    /// `now` is before its expiry, if it has one.
    pub fn usable_at(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expires| now < expires)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    fn key(revoked: bool, expires_in: Option<i64>) -> (ApiKeyRecord, OffsetDateTime) {
        let now = datetime!(2026-12-01 12:00 UTC);
        let record = ApiKeyRecord {
            id: uuid::Uuid::nil(),
            tenant_id: TenantId::from_uuid(uuid::Uuid::nil()),
            role: Some(ApiKeyRole::Admin),
            agent_id: None,
            label: None,
            created_at: now - Duration::hours(1),
            revoked_at: revoked.then_some(now - Duration::minutes(1)),
            expires_at: expires_in.map(|seconds| now + Duration::seconds(seconds)),
            last_used_at: None,
        };
        (record, now)
    }

    #[test]
    fn a_key_works_until_revoked_or_expired() {
        let (open, now) = key(false, None);
        assert!(open.usable_at(now));
        let (revoked, now) = key(true, None);
        assert!(!revoked.usable_at(now));
        let (later, now) = key(false, Some(1));
        assert!(later.usable_at(now));
        // Expiry is exclusive: at the instant itself the key has stopped.
        let (expiring, now) = key(false, Some(0));
        assert!(!expiring.usable_at(now));
    }
}
