//! The tenant's agent-limits map (seed 001's `/v1/agent-limits`): one
//! versioned document per tenant, every write compare-and-swap on `version`.

use std::collections::BTreeMap;

use agentry_domain::{Money, TenantId};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::changes::{Change, NotifyChange};
use crate::db::{read, write_tx};
use crate::schema::agent_limits;
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError};

/// How many times a limits write is tried before giving up (seed 000: "3
/// OCC retries"); after that nothing is written and the caller answers 503.
pub const LIMITS_ATTEMPTS: u32 = 3;

/// One entry of the map, e.g. under `agent:my-agent-01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentLimitEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_minute: Option<u32>,
}

/// The whole map with its version. Version 0 means "never written".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentLimits {
    pub entries: BTreeMap<String, AgentLimitEntry>,
    pub version: i64,
}

impl AgentLimits {
    /// What is enforced on `agent`: its profile budgets capped by its entry
    /// here (DESIGN.md §2), with the default rpm when the entry says none.
    pub fn enforced_for(&self, agent: &crate::AgentRecord) -> agentry_ledger::EnforcedLimits {
        let entry = self.entries.get(&agent.slug.limits_key());
        agentry_ledger::EnforcedLimits::enforce(
            agent.budget_daily,
            agent.budget_monthly,
            entry.and_then(|entry| entry.max_budget),
            entry.and_then(|entry| entry.max_requests_per_minute),
        )
    }
}

/// Inside a transaction: the tenant's agent-limits map (empty, version 0,
/// when never written).
macro_rules! load_limits {
    ($conn:ident, $tenant:expr) => {{
        let row: Option<$crate::limits::AgentLimitsRow> = $crate::schema::agent_limits::table
            .find($crate::types::DbUuid($tenant.as_uuid()))
            .select($crate::limits::AgentLimitsRow::as_select())
            .first($conn)
            .await
            .optional()?;
        row.map($crate::limits::parse)
            .transpose()?
            .unwrap_or_default()
    }};
}

pub(crate) use load_limits;

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = agent_limits)]
pub(crate) struct AgentLimitsRow {
    tenant_id: DbUuid,
    document: String,
    version: i64,
    updated_at: DbTime,
}

pub(crate) fn parse(row: AgentLimitsRow) -> Result<AgentLimits, StoreError> {
    let entries = serde_json::from_str(&row.document)
        .map_err(|error| StoreError::Corrupt(format!("agent_limits document: {error}")))?;
    Ok(AgentLimits {
        entries,
        version: row.version,
    })
}

fn encode(entries: &BTreeMap<String, AgentLimitEntry>) -> Result<String, StoreError> {
    serde_json::to_string(entries).map_err(|error| StoreError::Corrupt(error.to_string()))
}

/// Outcome of one compare-and-swap attempt.
enum Attempt<E> {
    Written(AgentLimits),
    Unchanged(AgentLimits),
    Refused(E),
    LostRace,
}

impl Store {
    pub async fn agent_limits(&self, tenant: TenantId) -> Result<AgentLimits, StoreError> {
        let row: Option<AgentLimitsRow> = read!(self, |conn| {
            agent_limits::table
                .find(DbUuid(tenant.as_uuid()))
                .select(AgentLimitsRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        row.map(parse).transpose().map(Option::unwrap_or_default)
    }

    /// Reads the map, lets `change` edit it, and writes it back if nobody
    /// else wrote in between (`version` compare-and-swap), trying up to
    /// [`LIMITS_ATTEMPTS`] times. `change` may run more than once, so it must
    /// be a pure edit; returning `Err` from it writes nothing and hands the
    /// error back as `Ok(Err(..))`.
    pub async fn update_agent_limits<E, F>(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        change: F,
    ) -> Result<Result<AgentLimits, E>, StoreError>
    where
        F: Fn(&mut BTreeMap<String, AgentLimitEntry>) -> Result<(), E> + Send + Sync,
        E: Send,
    {
        #[cfg(feature = "test-hooks")]
        if std::sync::atomic::AtomicBool::load(
            &self.fail_limits_writes,
            std::sync::atomic::Ordering::SeqCst,
        ) {
            return Err(StoreError::ContentionExhausted {
                what: "the agent-limits map",
                attempts: LIMITS_ATTEMPTS,
            });
        }
        for _ in 0..LIMITS_ATTEMPTS {
            match self.try_update_agent_limits(tenant, now, &change).await? {
                Attempt::Written(limits) => {
                    self.publish(Change::TenantLimits(tenant));
                    return Ok(Ok(limits));
                }
                Attempt::Unchanged(limits) => return Ok(Ok(limits)),
                Attempt::Refused(error) => return Ok(Err(error)),
                Attempt::LostRace => continue,
            }
        }
        Err(StoreError::ContentionExhausted {
            what: "the agent-limits map",
            attempts: LIMITS_ATTEMPTS,
        })
    }

    async fn try_update_agent_limits<E, F>(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        change: &F,
    ) -> Result<Attempt<E>, StoreError>
    where
        F: Fn(&mut BTreeMap<String, AgentLimitEntry>) -> Result<(), E> + Send + Sync,
        E: Send,
    {
        let tenant_id = DbUuid(tenant.as_uuid());
        let now = DbTime::new(now);
        let outcome = write_tx!(self, |conn| {
            // Take the row lock before reading (PostgreSQL; SQLite's IMMEDIATE
            // transaction holds the write lock already). Without it, sixteen
            // concurrent writers on PostgreSQL lose the compare-and-swap often
            // enough to exhaust three attempts; with it the version check
            // still guards against any writer that skips this path.
            diesel::update(agent_limits::table.find(tenant_id))
                .set(agent_limits::version.eq(agent_limits::version))
                .execute(conn)
                .await?;
            let current: Option<AgentLimitsRow> = agent_limits::table
                .find(tenant_id)
                .select(AgentLimitsRow::as_select())
                .first(conn)
                .await
                .optional()?;
            let current = current.map(parse).transpose()?.unwrap_or_default();
            let mut entries = current.entries.clone();
            if let Err(error) = change(&mut entries) {
                return Ok(Attempt::Refused(error));
            }
            // An edit that changes nothing writes nothing (and keeps the
            // version), so idempotent callers cost no write.
            if entries == current.entries && current.version > 0 {
                return Ok(Attempt::Unchanged(current));
            }
            let document = encode(&entries)?;
            let written = if current.version == 0 {
                let inserted = diesel::insert_into(agent_limits::table)
                    .values(AgentLimitsRow {
                        tenant_id,
                        document,
                        version: 1,
                        updated_at: now,
                    })
                    .execute(conn)
                    .await;
                match inserted {
                    Ok(count) => count,
                    // Another first writer got there: lost the race.
                    Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UniqueViolation,
                        _,
                    )) => 0,
                    Err(error) => return Err(error.into()),
                }
            } else {
                diesel::update(
                    agent_limits::table
                        .find(tenant_id)
                        .filter(agent_limits::version.eq(current.version)),
                )
                .set((
                    agent_limits::document.eq(document),
                    agent_limits::version.eq(current.version + 1),
                    agent_limits::updated_at.eq(now),
                ))
                .execute(conn)
                .await?
            };
            if written == 1 {
                conn.notify_change(Change::TenantLimits(tenant)).await?;
                Ok(Attempt::Written(AgentLimits {
                    entries,
                    version: current.version + 1,
                }))
            } else {
                Ok::<_, StoreError>(Attempt::LostRace)
            }
        });
        match outcome {
            // On PostgreSQL a failed insert aborts the transaction, which then
            // reports the unique violation on commit; that too is a lost race.
            Err(StoreError::Conflict(_)) => Ok(Attempt::LostRace),
            other => other,
        }
    }
}
