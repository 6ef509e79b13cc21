//! Ledger entries as rows, and the accounts this process has already
//! folded from them.

use std::collections::HashMap;

use agentry_domain::{AgentId, Money, TenantId};
use agentry_ledger::{Account, Entry, EntryKind, HoldId};

use diesel::prelude::*;

use crate::schema::ledger_entries;
use crate::types::{DbTime, DbUuid};
use crate::{StoreError, new_id};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = ledger_entries)]
pub(crate) struct EntryRow {
    id: DbUuid,
    tenant_id: DbUuid,
    pub(super) agent_id: DbUuid,
    seq: i64,
    kind: String,
    amount_micros: i64,
    hold_id: Option<DbUuid>,
    counterparty_id: Option<DbUuid>,
    expires_at: Option<DbTime>,
    idempotency_key: Option<String>,
    at: DbTime,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("ledger entry: {what}"))
}

impl EntryRow {
    pub(crate) fn new(
        tenant: TenantId,
        agent: AgentId,
        seq: i64,
        entry: &Entry,
        idempotency_key: Option<String>,
    ) -> Self {
        let (hold_id, counterparty_id, expires_at) = match entry.kind {
            EntryKind::Spend { .. } => (None, None, None),
            EntryKind::Hold {
                hold, expires_at, ..
            } => (Some(hold), None, Some(expires_at)),
            EntryKind::Capture { hold, .. } | EntryKind::Release { hold } => {
                (Some(hold), None, None)
            }
            EntryKind::DelegationSlice { child: other, .. }
            | EntryKind::RefundFromChild { child: other, .. }
            | EntryKind::Allocation { parent: other, .. }
            | EntryKind::RefundToParent { parent: other, .. } => (None, Some(other), None),
        };
        Self {
            id: DbUuid(new_id()),
            tenant_id: DbUuid(tenant.as_uuid()),
            agent_id: DbUuid(agent.as_uuid()),
            seq,
            kind: entry.kind.name().to_owned(),
            amount_micros: entry.kind.amount().micros(),
            hold_id: hold_id.map(|hold| DbUuid(hold.0)),
            counterparty_id: counterparty_id.map(|id| DbUuid(id.as_uuid())),
            expires_at: expires_at.map(DbTime::new),
            idempotency_key,
            at: DbTime::new(entry.at),
        }
    }

    pub(crate) fn into_entry(self) -> Result<Entry, StoreError> {
        let amount = Money::from_micros(self.amount_micros).map_err(|_| corrupt("amount"))?;
        let hold = || {
            self.hold_id
                .map(|id| HoldId(id.0))
                .ok_or_else(|| corrupt("hold id"))
        };
        let other = || {
            self.counterparty_id
                .map(|id| AgentId::from_uuid(id.0))
                .ok_or_else(|| corrupt("counterparty"))
        };
        let kind = match self.kind.as_str() {
            "spend" => EntryKind::Spend { amount },
            "hold" => EntryKind::Hold {
                hold: hold()?,
                amount,
                expires_at: self.expires_at.ok_or_else(|| corrupt("hold expiry"))?.get(),
            },
            "capture" => EntryKind::Capture {
                hold: hold()?,
                amount,
            },
            "release" => EntryKind::Release { hold: hold()? },
            "delegation_slice" => EntryKind::DelegationSlice {
                child: other()?,
                amount,
            },
            "allocation" => EntryKind::Allocation {
                parent: other()?,
                amount,
            },
            "refund_to_parent" => EntryKind::RefundToParent {
                parent: other()?,
                amount,
            },
            "refund_from_child" => EntryKind::RefundFromChild {
                child: other()?,
                amount,
            },
            _ => return Err(corrupt("unknown kind")),
        };
        Ok(Entry {
            at: self.at.get(),
            kind,
        })
    }
}

/// Accounts as this process last read them, each with the sequence number
/// of the first entry it has not seen, so a read replays only the entries
/// written since. Entries are never changed or removed (an agent's go with
/// it, and ids are never reused) and are numbered under the agent's lock,
/// so they commit in order: the account at `next` plus the entries from
/// `next` on is the account now, whoever wrote them.
#[derive(Debug, Default)]
pub(crate) struct AccountCache(std::sync::Mutex<HashMap<(TenantId, AgentId), (Account, i64)>>);

/// Agents whose accounts are kept before the cache simply starts over.
const CACHED_ACCOUNTS: usize = 10_000;

impl AccountCache {
    /// Where to start reading `agent`'s entries: its cached account and the
    /// first sequence number it has not seen, or a new account and 1.
    pub(crate) fn start(&self, tenant: TenantId, agent: AgentId) -> (Account, i64) {
        self.0
            .lock()
            .ok()
            .and_then(|cache| cache.get(&(tenant, agent)).cloned())
            .unwrap_or_else(|| (Account::new(), 1))
    }

    /// Keeps `account`, which has seen the entries before `next`, unless a
    /// reader has already kept a later one.
    pub(crate) fn keep(&self, tenant: TenantId, agent: AgentId, account: &Account, next: i64) {
        let Ok(mut cache) = self.0.lock() else {
            return;
        };
        if cache
            .get(&(tenant, agent))
            .is_some_and(|(_, seen)| *seen >= next)
        {
            return;
        }
        if cache.len() >= CACHED_ACCOUNTS {
            cache.clear();
        }
        cache.insert((tenant, agent), (account.clone(), next));
    }
}

/// `account`, which has seen the entries before `from`, brought up to date
/// with `rows` (the entries from `from` on, in order); with the sequence
/// number of the next entry.
pub(crate) fn catch_up(
    mut account: Account,
    from: i64,
    rows: Vec<EntryRow>,
) -> Result<(Account, i64), StoreError> {
    let mut next = from;
    for row in rows {
        if row.seq != next {
            return Err(StoreError::Corrupt(format!(
                "ledger entry {} where {next} was expected",
                row.seq
            )));
        }
        account.record(&row.into_entry()?)?;
        next += 1;
    }
    Ok((account, next))
}
