//! The requests-per-minute count that replicas share (issue 18): each
//! replica leases blocks of an agent's minute from one row and admits from
//! its block without the database; `agentry_ledger::LeasedWindow` decides
//! when to lease, [`agentry_ledger::lease_from`] is the rule the statement
//! below follows.

use agentry_domain::{AgentId, TenantId};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer};
use diesel_async::RunQueryDsl;

use crate::db::{read, write_one};
use crate::types::{DbUuid, PortableUuid};
use crate::{Store, StoreError};

/// What one lease got from the shared count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLease {
    /// Requests granted to this lease (0 when the minute is spent).
    pub granted: u32,
    /// Every replica's leases of the minute so far, this one included.
    pub total: u32,
}

impl RateLease {
    /// The shared count reached the limit: no later lease of the minute
    /// gets anything.
    pub fn spent(&self, limit: u32) -> bool {
        self.total >= limit
    }
}

#[derive(QueryableByName)]
struct LeaseRow {
    #[diesel(sql_type = Integer)]
    granted: i32,
    #[diesel(sql_type = Integer)]
    last_grant: i32,
}

/// One statement, so concurrent leases serialise on the row and none sees
/// a stale count. In an `UPDATE`'s `SET` every right-hand side reads the
/// row as it was, so `last_grant` is the difference this lease made. The
/// parameters first appear in order: SQLite numbers `$n` by first use.
const LEASE: &str = "\
INSERT INTO rate_leases (tenant_id, agent_id, minute, granted, last_grant) \
VALUES ($1, $2, $3, \
    CASE WHEN $4 > $5 THEN $5 ELSE $4 END, \
    CASE WHEN $4 > $5 THEN $5 ELSE $4 END) \
ON CONFLICT (tenant_id, agent_id, minute) DO UPDATE SET \
    last_grant = CASE \
        WHEN rate_leases.granted >= $5 THEN 0 \
        WHEN rate_leases.granted + $4 > $5 THEN $5 - rate_leases.granted \
        ELSE $4 END, \
    granted = CASE \
        WHEN rate_leases.granted >= $5 THEN rate_leases.granted \
        WHEN rate_leases.granted + $4 > $5 THEN $5 \
        ELSE rate_leases.granted + $4 END \
RETURNING granted, last_grant";

/// How many minutes of leases are kept: the current one and the one
/// before (a request that started just before the minute turned).
const KEPT_MINUTES: i64 = 2;

impl Store {
    /// Leases up to `ask` of the agent's requests in `minute` (a Unix
    /// minute) from the count every replica shares, never past `limit`.
    pub async fn lease_rate(
        &self,
        tenant: TenantId,
        agent: AgentId,
        minute: i64,
        ask: u32,
        limit: u32,
    ) -> Result<RateLease, StoreError> {
        let clamp = |value: u32| i32::try_from(value).unwrap_or(i32::MAX);
        let (ask, limit) = (clamp(ask), clamp(limit));
        let row: LeaseRow = read!(self, |conn| {
            diesel::sql_query(LEASE)
                .bind::<PortableUuid, _>(DbUuid(tenant.as_uuid()))
                .bind::<PortableUuid, _>(DbUuid(agent.as_uuid()))
                .bind::<BigInt, _>(minute)
                .bind::<Integer, _>(ask)
                .bind::<Integer, _>(limit)
                .get_result(conn)
                .await
        })?;
        let count = |value: i32| u32::try_from(value).unwrap_or(0);
        Ok(RateLease {
            granted: count(row.last_grant),
            total: count(row.granted),
        })
    }

    /// Drops the leases of minutes before `current_minute - 1`; returns how
    /// many rows went.
    pub async fn prune_rate_leases(&self, current_minute: i64) -> Result<usize, StoreError> {
        let before = current_minute - (KEPT_MINUTES - 1);
        Ok(write_one!(self, |conn| {
            diesel::sql_query("DELETE FROM rate_leases WHERE minute < $1")
                .bind::<BigInt, _>(before)
                .execute(conn)
                .await
        })?)
    }
}
