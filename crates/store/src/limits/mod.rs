//! The tenant's agent-limits map (seed 001's `/v1/agent-limits`), stored as
//! a row per entry under a header row per tenant.
//!
//! Rows, not one document: a bootstrap adds its agent's entry with one
//! insert, without locking or rewriting the rest of the map, and readers
//! fetch the one entry they need. Whole-map writes (the operator's PUT and
//! PATCH) lock the header row, so they are serialised with one another.
//! The map's version is the highest of the header's and the entries'
//! versions, each drawn from one counter, so every change moves it forward.

use std::collections::BTreeMap;

use agentry_domain::{AgentId, AgentOrigin, AgentSlug, Money, TenantId};
use agentry_ledger::{LimitsEdit, LimitsEditError};
use agentry_lifecycle::{Lifecycle, LifecycleError};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;

use crate::agents::{AgentRow, LifecycleEventRow, apply_lifecycle, new_agent};
use crate::changes::{Change, NotifyChange};
use crate::db::{read, write_tx};
use crate::schema::{agent_limit_entries, agent_limits, agents};
use crate::types::{DbTime, DbUuid};
use crate::{AgentRecord, NewAgent, Store, StoreError, new_id};

/// How many attempts seed 000 allows a bootstrap's limits write ("3 OCC
/// retries"). Writes no longer race for the map; the figure names the
/// failure a test forces.
pub const LIMITS_ATTEMPTS: u32 = 3;

/// One entry of the map, e.g. under `agent:my-agent-01`: the ledger's.
pub use agentry_ledger::LimitEntry as AgentLimitEntry;

/// The whole map (or, inside a ledger decision, the entries of the agents
/// it locked) with its version. Version 0 means "never written".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentLimits {
    pub entries: BTreeMap<String, AgentLimitEntry>,
    pub version: i64,
}

impl AgentLimits {
    /// What is enforced on `agent`: its profile budgets capped by its entry
    /// here (DESIGN.md §2), with the default rpm when the entry says none.
    pub fn enforced_for(&self, agent: &crate::AgentRecord) -> agentry_ledger::EnforcedLimits {
        enforced_limits(agent, self.entries.get(&agent.slug.limits_key()))
    }
}

/// What is enforced on `agent` given its agent-limits entry, if it has one.
pub fn enforced_limits(
    agent: &crate::AgentRecord,
    entry: Option<&AgentLimitEntry>,
) -> agentry_ledger::EnforcedLimits {
    agentry_ledger::EnforcedLimits::enforce(
        agent.budget_daily,
        agent.budget_monthly,
        entry.and_then(|entry| entry.max_budget),
        entry.and_then(|entry| entry.max_requests_per_minute),
    )
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = agent_limit_entries)]
pub(crate) struct EntryRow {
    tenant_id: DbUuid,
    limit_key: String,
    max_budget_micros: Option<i64>,
    max_requests_per_minute: Option<i64>,
    version: i64,
}

impl EntryRow {
    fn new(tenant: TenantId, key: String, entry: &AgentLimitEntry, version: i64) -> Self {
        Self {
            tenant_id: DbUuid(tenant.as_uuid()),
            limit_key: key,
            max_budget_micros: entry.max_budget.map(Money::micros),
            max_requests_per_minute: entry.max_requests_per_minute.map(i64::from),
            version,
        }
    }

    pub(crate) fn into_entry(self) -> Result<(String, AgentLimitEntry), StoreError> {
        let corrupt = |what: &str| {
            StoreError::Corrupt(format!("agent-limits entry {}: {what}", self.limit_key))
        };
        let max_budget = self
            .max_budget_micros
            .map(Money::from_micros)
            .transpose()
            .map_err(|error| corrupt(&error.to_string()))?;
        let max_requests_per_minute = self
            .max_requests_per_minute
            .map(u32::try_from)
            .transpose()
            .map_err(|_| corrupt("requests per minute out of range"))?;
        Ok((
            self.limit_key,
            AgentLimitEntry {
                max_budget,
                max_requests_per_minute,
            },
        ))
    }
}

/// Inside a transaction: the agent-limits entries under `$keys` (an
/// iterator of `String`), as an [`AgentLimits`] without a version.
macro_rules! load_limits {
    ($conn:ident, $tenant:expr, $keys:expr) => {{
        let keys: Vec<String> = $keys.into_iter().collect();
        let rows: Vec<$crate::limits::EntryRow> = $crate::schema::agent_limit_entries::table
            .filter(
                $crate::schema::agent_limit_entries::tenant_id
                    .eq($crate::types::DbUuid($tenant.as_uuid())),
            )
            .filter($crate::schema::agent_limit_entries::limit_key.eq_any(keys))
            .select($crate::limits::EntryRow::as_select())
            .load($conn)
            .await?;
        $crate::limits::AgentLimits {
            entries: rows
                .into_iter()
                .map($crate::limits::EntryRow::into_entry)
                .collect::<Result<_, _>>()?,
            version: 0,
        }
    }};
}

pub(crate) use load_limits;

/// Inside a write transaction: adds `$entry` under `$key` unless the
/// tenant's map has an entry there. Evaluates to the entry now in the map
/// and whether it is the one just added.
macro_rules! insert_entry_unless_present {
    ($conn:ident, $tenant:expr, $key:expr, $entry:expr) => {{
        let version = $conn.next_limits_version().await?;
        let inserted = diesel::insert_into(agent_limit_entries::table)
            .values(EntryRow::new($tenant, $key.to_owned(), &$entry, version))
            .on_conflict_do_nothing()
            .execute($conn)
            .await?;
        if inserted == 1 {
            ($entry, true)
        } else {
            let row: EntryRow = agent_limit_entries::table
                .find((DbUuid($tenant.as_uuid()), $key))
                .select(EntryRow::as_select())
                .first($conn)
                .await?;
            (row.into_entry()?.1, false)
        }
    }};
}

// After the macros above, which it uses.
mod backends;
pub(crate) use backends::{InsertBootstrapped, NextLimitsVersion};

impl Store {
    /// The tenant's whole map with its version.
    pub async fn agent_limits(&self, tenant: TenantId) -> Result<AgentLimits, StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        let (header, rows): (Option<i64>, Vec<EntryRow>) = read!(self, |conn| {
            let header = agent_limits::table
                .find(tenant_id)
                .select(agent_limits::version)
                .first(conn)
                .await
                .optional()?;
            let rows = agent_limit_entries::table
                .filter(agent_limit_entries::tenant_id.eq(tenant_id))
                .select(EntryRow::as_select())
                .load(conn)
                .await?;
            Ok::<_, diesel::result::Error>((header, rows))
        })?;
        let version = rows
            .iter()
            .map(|row| row.version)
            .chain(header)
            .max()
            .unwrap_or(0);
        Ok(AgentLimits {
            entries: rows
                .into_iter()
                .map(EntryRow::into_entry)
                .collect::<Result<_, _>>()?,
            version,
        })
    }

    /// The entry under `key`, if the tenant's map has one.
    pub async fn agent_limit_entry(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<AgentLimitEntry>, StoreError> {
        let row: Option<EntryRow> = read!(self, |conn| {
            agent_limit_entries::table
                .find((DbUuid(tenant.as_uuid()), key))
                .select(EntryRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row
            .map(EntryRow::into_entry)
            .transpose()?
            .map(|(_, entry)| entry))
    }

    /// What is enforced on `agent` now: its profile budgets capped by its
    /// entry in the tenant's map, read from the database.
    pub async fn enforced_for(
        &self,
        agent: &AgentRecord,
    ) -> Result<agentry_ledger::EnforcedLimits, StoreError> {
        let entry = self
            .agent_limit_entry(agent.tenant_id, &agent.slug.limits_key())
            .await?;
        Ok(enforced_limits(agent, entry.as_ref()))
    }

    /// Adds `entry` under `key` for `agent` unless the map has an entry
    /// there already (an operator's entry wins); returns the entry now in
    /// the map. One insert, no lock on the rest of the map.
    pub async fn ensure_agent_limit_entry(
        &self,
        tenant: TenantId,
        agent: AgentId,
        key: &str,
        entry: AgentLimitEntry,
    ) -> Result<AgentLimitEntry, StoreError> {
        self.refuse_limits_write_if_told()?;
        let (entry, inserted) = write_tx!(self, |conn| {
            let (entry, inserted) = insert_entry_unless_present!(conn, tenant, key, entry);
            if inserted {
                // The agent's cached enforcement (its snapshot) depended on
                // the entry it did not have.
                conn.notify_change(Change::Agent(agent)).await?;
            }
            Ok::<_, StoreError>((entry, inserted))
        })?;
        if inserted {
            self.publish(Change::Agent(agent));
        }
        Ok(entry)
    }

    /// The agent named `slug` with its agent-limits entry, in one query:
    /// what a repeat bootstrap needs to answer.
    pub async fn find_agent_with_limits(
        &self,
        tenant: TenantId,
        slug: &AgentSlug,
    ) -> Result<Option<(AgentRecord, Option<AgentLimitEntry>)>, StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        let key = slug.limits_key();
        type Found = (AgentRow, Option<i64>, Option<i64>, Option<i64>);
        let row: Option<Found> = read!(self, |conn| {
            agents::table
                .left_join(
                    agent_limit_entries::table.on(agent_limit_entries::tenant_id
                        .eq(agents::tenant_id)
                        .and(agent_limit_entries::limit_key.eq(&key))),
                )
                .filter(agents::tenant_id.eq(tenant_id))
                .filter(agents::slug.eq(slug.as_str()))
                .select((
                    AgentRow::as_select(),
                    agent_limit_entries::max_budget_micros.nullable(),
                    agent_limit_entries::max_requests_per_minute.nullable(),
                    agent_limit_entries::version.nullable(),
                ))
                .first(conn)
                .await
                .optional()
        })?;
        let Some((agent, max_budget_micros, max_requests_per_minute, version)) = row else {
            return Ok(None);
        };
        // `version` is never NULL in a stored entry: NULL means no entry.
        let entry = version
            .map(|version| {
                EntryRow {
                    tenant_id,
                    limit_key: key.clone(),
                    max_budget_micros,
                    max_requests_per_minute,
                    version,
                }
                .into_entry()
            })
            .transpose()?;
        Ok(Some((
            AgentRecord::try_from(agent)?,
            entry.map(|(_, entry)| entry),
        )))
    }

    /// Creates an agent and bootstraps it in one transaction: the agent,
    /// its activation (as `agentry-lifecycle` decides it) and its
    /// agent-limits entry (`entry`, unless the map has one under its key).
    /// An agent is never active without its limits, and a failure leaves
    /// nothing behind. A taken slug is `Conflict("agent")`. Returns the
    /// agent and the entry in the map.
    pub async fn create_bootstrapped_agent(
        &self,
        tenant: TenantId,
        new: NewAgent,
        entry: AgentLimitEntry,
        now: OffsetDateTime,
    ) -> Result<Result<(AgentRecord, AgentLimitEntry), LifecycleError>, StoreError> {
        self.refuse_limits_write_if_told()?;
        // Whatever the caller filed it as, this command's agent is a
        // bootstrap's, and is born as one.
        let new = new.made_by(AgentOrigin::Bootstrap);
        let mut agent = new_agent(tenant, AgentId::from_uuid(new_id()), new, now);
        let (next, event) = match Lifecycle::of(&agent).bootstrap(now) {
            Ok(Some(activation)) => activation,
            Ok(None) => {
                return Err(StoreError::Corrupt(
                    "a new agent needs no bootstrap".to_owned(),
                ));
            }
            Err(refusal) => return Ok(Err(refusal)),
        };
        apply_lifecycle(&mut agent, &next, &event);
        let key = agent.slug.limits_key();
        let agent_row = AgentRow::from(&agent);
        let event_row = LifecycleEventRow::new(tenant, agent.id, &event);
        let entry = write_tx!(self, |conn| {
            conn.insert_bootstrapped(tenant, &agent_row, &event_row, &key, entry)
                .await
        });
        // On PostgreSQL a failed insert aborts the transaction, which then
        // reports the unique violation on commit.
        let entry = entry.map_err(|error| match error {
            StoreError::Conflict(_) => StoreError::Conflict("agent"),
            other => other,
        })?;
        Ok(Ok((agent, entry)))
    }

    /// Edits the tenant's agent-limits map as `edit` says, if the ledger
    /// finds the edit valid (every problem listed otherwise, nothing
    /// written). Under the map's lock, so concurrent edits of different
    /// keys all land; an edit that changes nothing writes nothing and keeps
    /// the version.
    pub async fn edit_agent_limits(
        &self,
        tenant: TenantId,
        edit: &LimitsEdit,
        now: OffsetDateTime,
    ) -> Result<Result<AgentLimits, LimitsEditError>, StoreError> {
        if let Err(problems) = edit.check() {
            return Ok(Err(problems));
        }
        self.update_agent_limits(tenant, now, |entries| {
            *entries = edit.apply(entries);
            Ok(())
        })
        .await
    }

    /// Reads the map, lets `change` edit it, and writes back what changed,
    /// under the tenant's header row lock. `change` may run twice (once on
    /// an unlocked read, to find edits that change nothing), so it must be
    /// a pure edit; returning `Err` from it writes nothing and hands the
    /// error back as `Ok(Err(..))`.
    async fn update_agent_limits<E, F>(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        change: F,
    ) -> Result<Result<AgentLimits, E>, StoreError>
    where
        F: Fn(&mut BTreeMap<String, AgentLimitEntry>) -> Result<(), E> + Send + Sync,
        E: Send,
    {
        self.refuse_limits_write_if_told()?;
        // Many calls change nothing: find that out without the lock.
        let current = self.agent_limits(tenant).await?;
        if current.version > 0 {
            let mut entries = current.entries.clone();
            if let Err(error) = change(&mut entries) {
                return Ok(Err(error));
            }
            if entries == current.entries {
                return Ok(Ok(current));
            }
        }
        let tenant_id = DbUuid(tenant.as_uuid());
        let now = DbTime::new(now);
        let outcome = write_tx!(self, |conn| {
            // The header row is what whole-map writers queue on; create it
            // on the first write.
            diesel::insert_into(agent_limits::table)
                .values((
                    agent_limits::tenant_id.eq(tenant_id),
                    agent_limits::version.eq(0_i64),
                    agent_limits::updated_at.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            let header_version: i64 = diesel::update(agent_limits::table.find(tenant_id))
                .set(agent_limits::version.eq(agent_limits::version))
                .returning(agent_limits::version)
                .get_result(conn)
                .await?;
            let rows: Vec<EntryRow> = agent_limit_entries::table
                .filter(agent_limit_entries::tenant_id.eq(tenant_id))
                .select(EntryRow::as_select())
                .load(conn)
                .await?;
            let current_version = rows
                .iter()
                .map(|row| row.version)
                .fold(header_version, i64::max);
            let current: BTreeMap<String, AgentLimitEntry> = rows
                .into_iter()
                .map(EntryRow::into_entry)
                .collect::<Result<_, _>>()?;
            let mut entries = current.clone();
            if let Err(error) = change(&mut entries) {
                return Ok(Err(error));
            }
            if entries == current && current_version > 0 {
                return Ok(Ok((
                    AgentLimits {
                        entries,
                        version: current_version,
                    },
                    false,
                )));
            }
            let version = conn.next_limits_version().await?;
            let stale: Vec<&String> = current
                .iter()
                .filter(|(key, entry)| entries.get(*key) != Some(entry))
                .map(|(key, _)| key)
                .collect();
            diesel::delete(
                agent_limit_entries::table
                    .filter(agent_limit_entries::tenant_id.eq(tenant_id))
                    .filter(agent_limit_entries::limit_key.eq_any(stale)),
            )
            .execute(conn)
            .await?;
            // Row by row: diesel's SQLite backend has no multi-row VALUES.
            for (key, entry) in &entries {
                if current.get(key) != Some(entry) {
                    diesel::insert_into(agent_limit_entries::table)
                        .values(EntryRow::new(tenant, key.clone(), entry, version))
                        .execute(conn)
                        .await?;
                }
            }
            diesel::update(agent_limits::table.find(tenant_id))
                .set((
                    agent_limits::version.eq(version),
                    agent_limits::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            conn.notify_change(Change::TenantLimits(tenant)).await?;
            Ok::<_, StoreError>(Ok((AgentLimits { entries, version }, true)))
        })?;
        Ok(outcome.map(|(limits, written)| {
            if written {
                self.publish(Change::TenantLimits(tenant));
            }
            limits
        }))
    }

    /// With the `test-hooks` feature, tests can make every limits write
    /// fail as if it had lost its compare-and-swap three times.
    fn refuse_limits_write_if_told(&self) -> Result<(), StoreError> {
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
        Ok(())
    }
}
