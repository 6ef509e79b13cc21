//! How an agent and its lifecycle history are laid out in the database.

use agentry_domain::{AgentId, AgentName, AgentSlug, Money, TenantId};
use agentry_lifecycle::{LifecycleEvent, TransitionCause};
use diesel::prelude::*;

use crate::AgentRecord;
use crate::schema::{agents, lifecycle_events};
use crate::types::{DbTime, DbUuid};
use crate::{StoreError, new_id};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = agents)]
pub(crate) struct AgentRow {
    pub(super) id: DbUuid,
    tenant_id: DbUuid,
    slug: String,
    display_name: Option<String>,
    description: Option<String>,
    owner_id: Option<String>,
    cost_center: Option<String>,
    budget_daily_micros: Option<i64>,
    budget_monthly_micros: Option<i64>,
    role: String,
    lifecycle_state: String,
    manifest_id: Option<String>,
    pub(super) parent_id: Option<DbUuid>,
    expires_at: Option<DbTime>,
    metadata: String,
    scopes: String,
    trust_level: String,
    credential_epoch: i64,
    last_seen_at: Option<DbTime>,
    revoked_at: Option<DbTime>,
    created_at: DbTime,
    updated_at: DbTime,
    origin: String,
    /// `NULL` when the name is the slug itself.
    name: Option<String>,
    parent_slug: Option<String>,
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("agents row: {error}"))
}

fn money(micros: Option<i64>) -> Result<Option<Money>, StoreError> {
    micros.map(Money::from_micros).transpose().map_err(corrupt)
}

impl TryFrom<AgentRow> for AgentRecord {
    type Error = StoreError;
    fn try_from(row: AgentRow) -> Result<Self, StoreError> {
        let slug = AgentSlug::parse(&row.slug).map_err(corrupt)?;
        Ok(AgentRecord {
            id: AgentId::from_uuid(row.id.0),
            tenant_id: TenantId::from_uuid(row.tenant_id.0),
            display_name: row.display_name,
            description: row.description,
            owner_id: row.owner_id,
            cost_center: row.cost_center,
            budget_daily: money(row.budget_daily_micros)?,
            budget_monthly: money(row.budget_monthly_micros)?,
            role: row.role.parse().map_err(corrupt)?,
            lifecycle_state: row.lifecycle_state.parse().map_err(corrupt)?,
            manifest_id: row.manifest_id,
            parent_id: row.parent_id.map(|id| AgentId::from_uuid(id.0)),
            parent_slug: row
                .parent_slug
                .as_deref()
                .map(AgentSlug::parse)
                .transpose()
                .map_err(corrupt)?,
            expires_at: row.expires_at.map(DbTime::get),
            metadata: serde_json::from_str(&row.metadata).map_err(corrupt)?,
            scopes: serde_json::from_str(&row.scopes).map_err(corrupt)?,
            trust_level: row.trust_level.parse().map_err(corrupt)?,
            credential_epoch: row.credential_epoch,
            last_seen_at: row.last_seen_at.map(DbTime::get),
            revoked_at: row.revoked_at.map(DbTime::get),
            created_at: row.created_at.get(),
            updated_at: row.updated_at.get(),
            origin: row.origin.parse().map_err(corrupt)?,
            name: match row.name {
                Some(name) => AgentName::parse(&name).map_err(corrupt)?,
                None => AgentName::of_slug(&slug),
            },
            slug,
        })
    }
}

impl From<&AgentRecord> for AgentRow {
    fn from(agent: &AgentRecord) -> Self {
        AgentRow {
            id: DbUuid(agent.id.as_uuid()),
            tenant_id: DbUuid(agent.tenant_id.as_uuid()),
            slug: agent.slug.as_str().to_owned(),
            display_name: agent.display_name.clone(),
            description: agent.description.clone(),
            owner_id: agent.owner_id.clone(),
            cost_center: agent.cost_center.clone(),
            budget_daily_micros: agent.budget_daily.map(Money::micros),
            budget_monthly_micros: agent.budget_monthly.map(Money::micros),
            role: agent.role.as_str().to_owned(),
            lifecycle_state: agent.lifecycle_state.as_str().to_owned(),
            manifest_id: agent.manifest_id.clone(),
            parent_id: agent.parent_id.map(|id| DbUuid(id.as_uuid())),
            expires_at: agent.expires_at.map(DbTime::new),
            metadata: agent.metadata.to_string(),
            scopes: serde_json::Value::from(agent.scopes.clone()).to_string(),
            trust_level: agent.trust_level.as_str().to_owned(),
            credential_epoch: agent.credential_epoch,
            last_seen_at: agent.last_seen_at.map(DbTime::new),
            revoked_at: agent.revoked_at.map(DbTime::new),
            created_at: DbTime::new(agent.created_at),
            updated_at: DbTime::new(agent.updated_at),
            origin: agent.origin.as_str().to_owned(),
            name: stored_name(agent),
            parent_slug: agent
                .parent_slug
                .as_ref()
                .map(|slug| slug.as_str().to_owned()),
        }
    }
}

/// What the `name` column holds: `NULL` when the name is the slug itself.
pub(super) fn stored_name(agent: &AgentRecord) -> Option<String> {
    (agent.name.as_str() != agent.slug.as_str()).then(|| agent.name.to_string())
}

#[derive(Insertable)]
#[diesel(table_name = lifecycle_events)]
pub(crate) struct LifecycleEventRow {
    id: DbUuid,
    tenant_id: DbUuid,
    agent_id: DbUuid,
    from_state: String,
    to_state: String,
    cause: String,
    at: DbTime,
}

impl LifecycleEventRow {
    pub(crate) fn new(tenant: TenantId, agent: AgentId, event: &LifecycleEvent) -> Self {
        let cause = match event.cause {
            TransitionCause::Requested => "requested".to_owned(),
            TransitionCause::Bootstrap => "bootstrap".to_owned(),
            TransitionCause::Forced(reason) => serde_json::to_value(reason)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_else(|| "forced".to_owned()),
        };
        Self {
            id: DbUuid(new_id()),
            tenant_id: DbUuid(tenant.as_uuid()),
            agent_id: DbUuid(agent.as_uuid()),
            from_state: event.from.as_str().to_owned(),
            to_state: event.to.as_str().to_owned(),
            cause,
            at: DbTime::new(event.at),
        }
    }
}
