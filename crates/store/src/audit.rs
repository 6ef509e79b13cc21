//! The audit trail: append-only, each row chained to its predecessor in the
//! same tenant by SHA-256, so an edit or a deletion is detectable.

use std::future::Future;

use agentry_domain::TenantId;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::db::{SqliteConn, advisory, read, write_tx_locked};
use crate::schema::audit_events;
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError, new_id};

/// The hash the first event of a tenant chains to.
const GENESIS: [u8; 32] = [0; 32];

/// An event to record. `detail` is a JSON value with whatever helps an
/// investigator; it must never hold a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEvent {
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: Uuid,
    pub seq: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: serde_json::Value,
    pub at: OffsetDateTime,
}

/// The first place the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: &'static str,
}

#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
pub(crate) struct AuditRow {
    id: DbUuid,
    tenant_id: DbUuid,
    seq: i64,
    actor: String,
    action: String,
    target: Option<String>,
    outcome: String,
    detail: String,
    at: DbTime,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl AuditRow {
    /// SHA-256 over the predecessor's hash and every field of the row, each
    /// length-prefixed so no two different rows encode alike.
    fn compute_hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(&self.prev_hash);
        hasher.update(self.seq.to_be_bytes());
        let at = self.at.get().format(&Rfc3339).unwrap_or_default();
        let target = self.target.as_deref();
        let fields: [&[u8]; 8] = [
            self.id.0.as_bytes(),
            self.tenant_id.0.as_bytes(),
            self.actor.as_bytes(),
            self.action.as_bytes(),
            if target.is_some() { b"1" } else { b"0" },
            target.unwrap_or_default().as_bytes(),
            self.outcome.as_bytes(),
            self.detail.as_bytes(),
        ];
        for field in fields.iter().chain([&at.as_bytes()]) {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field);
        }
        hasher.finalize().into()
    }

    fn into_event(self) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            id: self.id.0,
            seq: self.seq,
            actor: self.actor,
            action: self.action,
            target: self.target,
            outcome: self.outcome,
            detail: serde_json::from_str(&self.detail)
                .map_err(|error| StoreError::Corrupt(format!("audit detail: {error}")))?,
            at: self.at.get(),
        })
    }
}

/// Inserts a batch of audit rows as the backend does it best.
pub(crate) trait InsertAuditRows {
    fn insert_audit_rows(
        &mut self,
        rows: &[AuditRow],
    ) -> impl Future<Output = diesel::QueryResult<()>> + Send;
}

impl InsertAuditRows for AsyncPgConnection {
    /// One statement per batch: row by row, each a round trip, a busy
    /// tenant's trail falls behind its requests.
    async fn insert_audit_rows(&mut self, rows: &[AuditRow]) -> diesel::QueryResult<()> {
        diesel::insert_into(audit_events::table)
            .values(rows)
            .execute(self)
            .await
            .map(drop)
    }
}

impl InsertAuditRows for SqliteConn {
    /// Row by row (diesel has no multi-row insert for SQLite rows that may
    /// hold NULLs), but in one trip to the blocking thread that holds the
    /// connection rather than one trip per row.
    async fn insert_audit_rows(&mut self, rows: &[AuditRow]) -> diesel::QueryResult<()> {
        let rows = rows.to_vec();
        self.spawn_blocking(move |conn| {
            for row in &rows {
                diesel::RunQueryDsl::execute(
                    diesel::insert_into(audit_events::table).values(row),
                    conn,
                )?;
            }
            Ok(())
        })
        .await
    }
}

impl Store {
    /// Appends an event to the tenant's chain. Appends of one tenant are
    /// serialised (an advisory lock per tenant on PostgreSQL, the write lock
    /// on SQLite) so the chain never forks; the unique `(tenant_id, seq)`
    /// would refuse a fork anyway.
    pub async fn append_audit(
        &self,
        tenant: TenantId,
        event: NewAuditEvent,
        now: OffsetDateTime,
    ) -> Result<AuditEvent, StoreError> {
        self.append_audit_batch(tenant, vec![event], now)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("an audit append returned no event".into()))
    }

    /// Appends `events`, in order, to the tenant's chain in one transaction:
    /// the chain head is locked once for the whole batch, which is what lets
    /// a busy tenant's trail keep up with its requests.
    pub async fn append_audit_batch(
        &self,
        tenant: TenantId,
        events: Vec<NewAuditEvent>,
        now: OffsetDateTime,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let tenant_id = DbUuid(tenant.as_uuid());
        let at = DbTime::new(now);
        let rows = write_tx_locked!(self, advisory::audit_chain(tenant), |conn| {
            let last: Option<(i64, Vec<u8>)> = audit_events::table
                .filter(audit_events::tenant_id.eq(tenant_id))
                .order(audit_events::seq.desc())
                .select((audit_events::seq, audit_events::hash))
                .first(conn)
                .await
                .optional()?;
            let (mut seq, mut prev_hash) = last.unwrap_or((0, GENESIS.to_vec()));
            let mut rows = Vec::with_capacity(events.len());
            for event in &events {
                seq += 1;
                let mut row = AuditRow {
                    id: DbUuid(new_id()),
                    tenant_id,
                    seq,
                    actor: event.actor.clone(),
                    action: event.action.clone(),
                    target: event.target.clone(),
                    outcome: event.outcome.clone(),
                    detail: event.detail.to_string(),
                    at,
                    prev_hash: std::mem::take(&mut prev_hash),
                    hash: Vec::new(),
                };
                row.hash = row.compute_hash().to_vec();
                prev_hash.clone_from(&row.hash);
                rows.push(row);
            }
            conn.insert_audit_rows(&rows).await?;
            Ok::<_, StoreError>(rows)
        })?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }

    /// The newest events about `target`, newest first.
    pub async fn audit_events_for(
        &self,
        tenant: TenantId,
        target: &str,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<AuditRow> = read!(self, |conn| {
            audit_events::table
                .filter(audit_events::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(audit_events::target.eq(target))
                .order(audit_events::seq.desc())
                .limit(limit)
                .select(AuditRow::as_select())
                .load(conn)
                .await
        })?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }

    /// The newest events about `target` whose outcome is one of
    /// `outcomes`, newest first: filtered in the query, then limited, so
    /// any number of other events after them hides none of them.
    pub async fn audit_events_with_outcome(
        &self,
        tenant: TenantId,
        target: &str,
        outcomes: &[&str],
        limit: i64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<AuditRow> = read!(self, |conn| {
            audit_events::table
                .filter(audit_events::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(audit_events::target.eq(target))
                .filter(audit_events::outcome.eq_any(outcomes))
                .order(audit_events::seq.desc())
                .limit(limit)
                .select(AuditRow::as_select())
                .load(conn)
                .await
        })?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }

    /// Walks the tenant's chain from the start; `Ok(Err(link))` names the
    /// first event whose hash, predecessor or sequence does not hold.
    pub async fn verify_audit_chain(
        &self,
        tenant: TenantId,
    ) -> Result<Result<i64, BrokenLink>, StoreError> {
        let rows: Vec<AuditRow> = read!(self, |conn| {
            audit_events::table
                .filter(audit_events::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .order(audit_events::seq.asc())
                .select(AuditRow::as_select())
                .load(conn)
                .await
        })?;
        let mut expected_prev = GENESIS.to_vec();
        for (index, row) in rows.iter().enumerate() {
            let expected_seq = index as i64 + 1;
            if row.seq != expected_seq {
                return Ok(Err(BrokenLink {
                    seq: expected_seq,
                    reason: "an event is missing",
                }));
            }
            if row.prev_hash != expected_prev {
                return Ok(Err(BrokenLink {
                    seq: row.seq,
                    reason: "it does not chain to its predecessor",
                }));
            }
            if row.hash != row.compute_hash() {
                return Ok(Err(BrokenLink {
                    seq: row.seq,
                    reason: "its content does not match its hash",
                }));
            }
            expected_prev = row.hash.clone();
        }
        Ok(Ok(rows.len() as i64))
    }
}
