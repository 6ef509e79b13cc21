//! The two backends' ways of drawing a limits version and inserting a
//! bootstrapped agent's rows.

use std::future::Future;

use agentry_domain::{Money, TenantId};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::*;
use crate::StoreError;
use crate::agents::{AgentRow, LifecycleEventRow};
use crate::db::SqliteConn;
use crate::schema::{agent_limit_entries, agents, lifecycle_events};
use crate::tenants::conflict_as;
use crate::types::DbUuid;

#[derive(QueryableByName)]
struct Counter {
    #[diesel(sql_type = BigInt)]
    value: i64,
}

/// The next agent-limits version, from the backend's counter.
pub(crate) trait NextLimitsVersion {
    fn next_limits_version(&mut self) -> impl Future<Output = diesel::QueryResult<i64>> + Send;
}

impl NextLimitsVersion for AsyncPgConnection {
    async fn next_limits_version(&mut self) -> diesel::QueryResult<i64> {
        // A sequence takes no row lock: concurrent bootstraps of one tenant
        // do not queue on each other.
        diesel::sql_query("SELECT nextval('agent_limits_version') AS value")
            .get_result::<Counter>(self)
            .await
            .map(|counter| counter.value)
    }
}

impl NextLimitsVersion for SqliteConn {
    async fn next_limits_version(&mut self) -> diesel::QueryResult<i64> {
        diesel::sql_query("UPDATE agent_limits_version SET value = value + 1 RETURNING value")
            .get_result::<Counter>(self)
            .await
            .map(|counter| counter.value)
    }
}

/// A bootstrapped agent's three rows, as one step of its transaction: the
/// agent, its activation, and its limits entry unless the map has one under
/// that key (an operator's entry wins). Returns the entry in the map.
pub(crate) trait InsertBootstrapped {
    fn insert_bootstrapped(
        &mut self,
        tenant: TenantId,
        agent: &AgentRow,
        event: &LifecycleEventRow,
        key: &str,
        entry: AgentLimitEntry,
    ) -> impl Future<Output = Result<AgentLimitEntry, StoreError>> + Send;
}

impl InsertBootstrapped for AsyncPgConnection {
    /// The three inserts are pipelined: sent together, answered together,
    /// and the entry's version is drawn inside its own insert, so a new
    /// agent costs four round trips instead of seven (each one a network
    /// round trip when PostgreSQL runs on another host). The server still
    /// runs them in order, so the event's foreign key finds its agent.
    async fn insert_bootstrapped(
        &mut self,
        tenant: TenantId,
        agent: &AgentRow,
        event: &LifecycleEventRow,
        key: &str,
        entry: AgentLimitEntry,
    ) -> Result<AgentLimitEntry, StoreError> {
        let tenant = DbUuid(tenant.as_uuid());
        let conn: &AsyncPgConnection = self;
        let (agent, event, inserted) = futures_util::future::join3(
            diesel::insert_into(agents::table)
                .values(agent)
                .execute(&mut &*conn),
            diesel::insert_into(lifecycle_events::table)
                .values(event)
                .execute(&mut &*conn),
            diesel::insert_into(agent_limit_entries::table)
                .values((
                    agent_limit_entries::tenant_id.eq(tenant),
                    agent_limit_entries::limit_key.eq(key),
                    agent_limit_entries::max_budget_micros.eq(entry.max_budget.map(Money::micros)),
                    agent_limit_entries::max_requests_per_minute
                        .eq(entry.max_requests_per_minute.map(i64::from)),
                    agent_limit_entries::version.eq(diesel::dsl::sql::<BigInt>(
                        "nextval('agent_limits_version')",
                    )),
                ))
                .on_conflict_do_nothing()
                .execute(&mut &*conn),
        )
        .await;
        // After a failed statement the rest fail too (the transaction is
        // aborted): the first failure is the one to report.
        agent.map_err(|error| conflict_as(error, "agent"))?;
        event?;
        if inserted? == 1 {
            return Ok(entry);
        }
        let row: EntryRow = agent_limit_entries::table
            .find((tenant, key))
            .select(EntryRow::as_select())
            .first(self)
            .await?;
        Ok(row.into_entry()?.1)
    }
}

impl InsertBootstrapped for SqliteConn {
    /// In order: SQLite runs in process, there is no round trip to save.
    async fn insert_bootstrapped(
        &mut self,
        tenant: TenantId,
        agent: &AgentRow,
        event: &LifecycleEventRow,
        key: &str,
        entry: AgentLimitEntry,
    ) -> Result<AgentLimitEntry, StoreError> {
        let conn = self;
        diesel::insert_into(agents::table)
            .values(agent)
            .execute(conn)
            .await
            .map_err(|error| conflict_as(error, "agent"))?;
        diesel::insert_into(lifecycle_events::table)
            .values(event)
            .execute(conn)
            .await?;
        let (entry, _) = insert_entry_unless_present!(conn, tenant, key, entry);
        Ok(entry)
    }
}
