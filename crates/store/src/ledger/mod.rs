//! Ledger entries, and the transaction that makes the ledger's decisions
//! safe under concurrent spenders.

mod accounts;

use std::collections::BTreeMap;

use agentry_domain::{AgentId, TenantId};
use agentry_ledger::{Account, EnforcedLimits, Entry, LedgerError, Movement};
use agentry_lifecycle::{Access, Lifecycle, RequestScope};

use crate::AgentRecord;
use crate::limits::{AgentLimits, load_limits};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;

use crate::db::write_tx;
use crate::schema::ledger_entries;
use crate::types::DbUuid;
use crate::{Store, StoreError};

pub(crate) use accounts::{AccountCache, EntryRow, catch_up};

/// Takes an agent's row lock for a ledger decision, inside a write
/// transaction; whether the agent exists in the tenant.
pub(crate) trait LockAgent {
    fn lock_agent(
        &mut self,
        tenant: DbUuid,
        agent: DbUuid,
    ) -> impl std::future::Future<Output = diesel::QueryResult<bool>> + Send;
}

impl LockAgent for diesel_async::AsyncPgConnection {
    /// `FOR NO KEY UPDATE`, the lock an update of the row would take, but
    /// without writing a new version of the row for every spend.
    async fn lock_agent(&mut self, tenant: DbUuid, agent: DbUuid) -> diesel::QueryResult<bool> {
        use crate::schema::agents;
        agents::table
            .filter(agents::tenant_id.eq(tenant))
            .filter(agents::id.eq(agent))
            .select(agents::id)
            .for_no_key_update()
            .first::<DbUuid>(self)
            .await
            .optional()
            .map(|found| found.is_some())
    }
}

impl LockAgent for crate::db::SqliteConn {
    /// The IMMEDIATE transaction already holds the database's write lock:
    /// the agent only has to exist.
    async fn lock_agent(&mut self, tenant: DbUuid, agent: DbUuid) -> diesel::QueryResult<bool> {
        use crate::schema::agents;
        agents::table
            .filter(agents::tenant_id.eq(tenant))
            .filter(agents::id.eq(agent))
            .select(agents::id)
            .first::<DbUuid>(self)
            .await
            .optional()
            .map(|found| found.is_some())
    }
}

/// Inside a transaction: the entries of `$agent` (a `DbUuid`) of the
/// tenant `$tenant_id` from sequence number `$from` on, in order.
macro_rules! entries_from {
    ($conn:ident, $tenant_id:expr, $agent:expr, $from:expr) => {
        $crate::schema::ledger_entries::table
            .filter($crate::schema::ledger_entries::tenant_id.eq($tenant_id))
            .filter($crate::schema::ledger_entries::agent_id.eq($agent))
            .filter($crate::schema::ledger_entries::seq.ge($from))
            .order($crate::schema::ledger_entries::seq.asc())
            .select($crate::ledger::EntryRow::as_select())
            .load::<$crate::ledger::EntryRow>($conn)
            .await?
    };
}

/// Inside a transaction: `$agent`'s account from `$cache` and the entries
/// written since, and the next sequence number; the whole ledger again if
/// the cached account does not fit it. Keeps the result in `$cache`.
macro_rules! current_account {
    ($conn:ident, $cache:expr, $tenant:expr, $agent:expr) => {{
        let tenant_id = $crate::types::DbUuid($tenant.as_uuid());
        let agent_id = $crate::types::DbUuid($agent.as_uuid());
        let (cached, from) = $cache.start($tenant, $agent);
        let rows = $crate::ledger::entries_from!($conn, tenant_id, agent_id, from);
        let (account, next) = match $crate::ledger::catch_up(cached, from, rows) {
            Ok(caught_up) => caught_up,
            // Only a cache that belongs to another database could get here;
            // it must not stick.
            Err(_) if from > 1 => {
                let rows = $crate::ledger::entries_from!($conn, tenant_id, agent_id, 1_i64);
                $crate::ledger::catch_up(agentry_ledger::Account::new(), 1, rows)?
            }
            Err(error) => return Err(error),
        };
        $cache.keep($tenant, $agent, &account, next);
        (account, next)
    }};
}

/// Inside a write transaction: locks the agents `$ids` (sorted, so two
/// transactions never wait on each other crosswise; see [`LockAgent`]) and
/// brings their accounts up to date from `$cache` (see [`AccountCache`]).
/// Evaluates to `(Accounts, NextSeq)`; `?` returns `StoreError` from the
/// enclosing closure.
macro_rules! load_accounts {
    ($conn:ident, $cache:expr, $tenant:expr, $ids:expr) => {{
        let tenant_id = $crate::types::DbUuid($tenant.as_uuid());
        let mut accounts = $crate::ledger::Accounts::new();
        // Entries of one agent are numbered under its lock, so replay
        // order never depends on clocks or id generation across replicas.
        let mut next_seq = $crate::ledger::NextSeq::new();
        let mut ids: Vec<agentry_domain::AgentId> = $ids.iter().copied().collect();
        ids.sort();
        ids.dedup();
        for id in &ids {
            let agent_id = $crate::types::DbUuid(id.as_uuid());
            if !$crate::ledger::LockAgent::lock_agent($conn, tenant_id, agent_id).await? {
                return Err(StoreError::NotFound("agent"));
            }
            let (account, next) = $crate::ledger::current_account!($conn, $cache, $tenant, *id);
            next_seq.insert(*id, next);
            accounts.insert(*id, account);
        }
        (accounts, next_seq)
    }};
}

/// Inside a write transaction: appends `$entries` (agent, entry) to agents
/// whose sequence `load_accounts!` took (or that were just created with
/// sequence 1), the idempotency key on the first, and announces the change.
/// Evaluates to the agents whose ledgers moved; the caller publishes
/// [`Change::Ledger`](crate::Change::Ledger) for each once it has committed.
macro_rules! append_entries {
    ($conn:ident, $tenant:expr, $next_seq:expr, $entries:expr, $key:expr) => {{
        let mut key: Option<String> = $key;
        let entries = &$entries;
        let mut rows = Vec::new();
        for (agent, entry) in entries.iter() {
            let Some(seq) = $next_seq.get_mut(agent) else {
                return Err(StoreError::Corrupt(
                    "a ledger decision wrote to an agent it did not lock".to_owned(),
                ));
            };
            rows.push($crate::ledger::EntryRow::new(
                $tenant,
                *agent,
                *seq,
                entry,
                key.take(),
            ));
            *seq += 1;
        }
        // Row by row: diesel's SQLite backend has no multi-row VALUES.
        for row in &rows {
            diesel::insert_into($crate::schema::ledger_entries::table)
                .values(row)
                .execute($conn)
                .await
                .map_err(|error| $crate::tenants::conflict_as(error, "ledger entry"))?;
        }
        // Cached accounts of these agents are now stale, here and on every
        // other replica once this commits.
        let mut touched: Vec<agentry_domain::AgentId> =
            entries.iter().map(|(agent, _)| *agent).collect();
        touched.sort();
        touched.dedup();
        for agent in &touched {
            $crate::changes::NotifyChange::notify_change(
                $conn,
                $crate::changes::Change::Ledger(*agent),
            )
            .await?;
        }
        touched
    }};
}

pub(crate) use {append_entries, current_account, entries_from, load_accounts};

/// The next sequence number of each locked agent's entries.
pub(crate) type NextSeq = BTreeMap<AgentId, i64>;

/// Inside a transaction, after `load_accounts!` locked them: the records of
/// the agents `$ids`, by id.
macro_rules! load_agents {
    ($conn:ident, $tenant:expr, $ids:expr) => {{
        let ids: Vec<$crate::types::DbUuid> = $ids
            .iter()
            .map(|id| $crate::types::DbUuid(id.as_uuid()))
            .collect();
        let rows: Vec<$crate::agents::AgentRow> = $crate::schema::agents::table
            .filter($crate::schema::agents::tenant_id.eq($crate::types::DbUuid($tenant.as_uuid())))
            .filter($crate::schema::agents::id.eq_any(ids))
            .select($crate::agents::AgentRow::as_select())
            .load($conn)
            .await?;
        let mut agents = BTreeMap::new();
        for row in rows {
            let record = $crate::AgentRecord::try_from(row)?;
            agents.insert(record.id, record);
        }
        agents
    }};
}

pub(crate) use load_agents;

/// What a ledger decision sees, all read inside its transaction.
#[derive(Debug)]
pub struct LedgerView {
    pub accounts: Accounts,
    pub agents: BTreeMap<AgentId, AgentRecord>,
    /// The agent-limits entries of the locked agents (not the whole map).
    pub limits: AgentLimits,
}

impl LedgerView {
    pub fn account(&self, id: AgentId) -> Result<&Account, StoreError> {
        self.accounts.get(&id).ok_or(StoreError::NotFound("agent"))
    }

    pub fn agent(&self, id: AgentId) -> Result<&AgentRecord, StoreError> {
        self.agents.get(&id).ok_or(StoreError::NotFound("agent"))
    }

    /// The limits enforced on `id` right now.
    pub fn enforced(&self, id: AgentId) -> Result<EnforcedLimits, StoreError> {
        Ok(self.limits.enforced_for(self.agent(id)?))
    }
}

/// The accounts a ledger decision may look at, by agent.
pub type Accounts = BTreeMap<AgentId, Account>;

/// What a ledger decision asks the store to append: entries per agent, and
/// an idempotency key for the first entry so a retried request is
/// recognised instead of charged twice.
#[derive(Debug, Clone, Default)]
pub struct Appends {
    pub entries: Vec<(AgentId, Entry)>,
    pub idempotency_key: Option<String>,
}

impl Store {
    /// All entries of one agent, oldest first.
    pub async fn ledger_entries(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> Result<Vec<Entry>, StoreError> {
        let (tenant_id, agent_id) = (DbUuid(tenant.as_uuid()), DbUuid(agent.as_uuid()));
        let rows = crate::db::read!(self, |conn| {
            Ok::<_, StoreError>(entries_from!(conn, tenant_id, agent_id, 1_i64))
        })?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    /// The derived account of one agent: the account this process last
    /// read, brought up to date with the entries written since.
    pub async fn account(&self, tenant: TenantId, agent: AgentId) -> Result<Account, StoreError> {
        let (account, _) = crate::db::read!(self, |conn| {
            Ok::<_, StoreError>(current_account!(conn, self.accounts, tenant, agent))
        })?;
        Ok(account)
    }

    /// Runs a ledger decision atomically: locks the named agents (in id
    /// order, so two transactions never wait on each other crosswise),
    /// replays their accounts from the entries, lets `decide` (functions of
    /// `agentry-ledger`) judge, and appends what it returns. Concurrent
    /// spenders of one agent are serialised here, which is what keeps the sum
    /// of accepted spends within the limit.
    ///
    /// A repeated idempotency key is `StoreError::Conflict("ledger entry")`.
    pub async fn ledger_transaction<F>(
        &self,
        tenant: TenantId,
        agent_ids: &[AgentId],
        decide: F,
    ) -> Result<Appends, StoreError>
    where
        F: FnOnce(&Accounts) -> Result<Appends, LedgerError> + Send,
    {
        self.ledger_decision(tenant, agent_ids, None, |view| {
            Ok((decide(&view.accounts)?, ()))
        })
        .await
        .map(|(appends, ())| appends)
    }

    /// Moves `agent`'s own money: under the agent's ledger lock, its
    /// lifecycle is checked again (a suspension committed a moment ago
    /// counts), its enforced limits are read, and the ledger decides
    /// `movement`; the entry is appended with `idempotency_key`. Returns
    /// the account as it is afterwards and the limits that applied. A key
    /// used before is `StoreError::Replayed` with the entry it recorded
    /// ([`Movement::is_replayed_by`] tells whether it was this request).
    pub async fn move_money(
        &self,
        tenant: TenantId,
        agent: AgentId,
        movement: Movement,
        idempotency_key: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(Account, EnforcedLimits), StoreError> {
        let replay = idempotency_key.clone().map(|key| (agent, key));
        let (_, outcome) = self
            .ledger_decision(tenant, &[agent], replay, |view| {
                let record = view.agent(agent)?;
                Access::for_agent(&Lifecycle::of(record), now).permits(RequestScope::Other)?;
                let limits = view.enforced(agent)?;
                let mut account = view.account(agent)?.clone();
                let entry = movement.decide(&account, &limits, now)?;
                account.record(&entry)?;
                let appends = Appends {
                    entries: vec![(agent, entry)],
                    idempotency_key,
                };
                Ok((appends, (account, limits)))
            })
            .await?;
        Ok(outcome)
    }

    /// Like [`Store::ledger_transaction`], but the decision also sees the
    /// locked agents' records and the tenant's agent-limits map as they are
    /// inside the transaction, so a suspension or a lowered limit committed
    /// a moment earlier is always seen (no check-then-act gap). The decision
    /// may hand back a value of its own along with what to append.
    ///
    /// With `replay` (an agent and an idempotency key), an entry already
    /// recorded under that key is found before anything is decided and
    /// comes back as `StoreError::Replayed`, so a retry is recognised even
    /// when the original used up the budget.
    pub async fn ledger_decision<F, T>(
        &self,
        tenant: TenantId,
        agent_ids: &[AgentId],
        replay: Option<(AgentId, String)>,
        decide: F,
    ) -> Result<(Appends, T), StoreError>
    where
        F: FnOnce(&LedgerView) -> Result<(Appends, T), StoreError> + Send,
        T: Send,
    {
        let ids: Vec<AgentId> = agent_ids.to_vec();
        write_tx!(self, |conn| {
            let (accounts, mut next_seq) = load_accounts!(conn, self.accounts, tenant, &ids);
            if let Some((agent, key)) = &replay {
                let earlier: Option<EntryRow> = ledger_entries::table
                    .filter(ledger_entries::tenant_id.eq(DbUuid(tenant.as_uuid())))
                    .filter(ledger_entries::agent_id.eq(DbUuid(agent.as_uuid())))
                    .filter(ledger_entries::idempotency_key.eq(key))
                    .select(EntryRow::as_select())
                    .first(conn)
                    .await
                    .optional()?;
                if let Some(earlier) = earlier {
                    return Err(StoreError::Replayed(Box::new(earlier.into_entry()?)));
                }
            }
            let agents = load_agents!(conn, tenant, &ids);
            let limits = load_limits!(
                conn,
                tenant,
                agents.values().map(|agent| agent.slug.limits_key())
            );
            let view = LedgerView {
                accounts,
                agents,
                limits,
            };
            let (appends, value) = decide(&view)?;
            let touched = append_entries!(
                conn,
                tenant,
                &mut next_seq,
                &appends.entries,
                appends.idempotency_key.clone()
            );
            Ok::<_, StoreError>((appends, value, touched))
        })
        .map(|(appends, value, touched)| {
            self.publish_ledger_changes(&touched);
            (appends, value)
        })
    }

    pub(crate) fn publish_ledger_changes(&self, agents: &[AgentId]) {
        for agent in agents {
            self.publish(crate::Change::Ledger(*agent));
        }
    }

    /// The agent a hold belongs to, if the hold exists in `tenant`.
    pub async fn hold_owner(
        &self,
        tenant: TenantId,
        hold: agentry_ledger::HoldId,
    ) -> Result<Option<AgentId>, StoreError> {
        let owner: Option<DbUuid> = crate::db::read!(self, |conn| {
            ledger_entries::table
                .filter(ledger_entries::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(ledger_entries::hold_id.eq(DbUuid(hold.0)))
                .select(ledger_entries::agent_id)
                .first(conn)
                .await
                .optional()
        })?;
        Ok(owner.map(|id| AgentId::from_uuid(id.0)))
    }

    /// Ledger entries of every agent in the tenant, for whole-ledger checks
    /// (transfers balance, no window over its limit).
    pub async fn tenant_ledger(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<(AgentId, Entry)>, StoreError> {
        let rows: Vec<EntryRow> = crate::db::read!(self, |conn| {
            ledger_entries::table
                .filter(ledger_entries::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .order((ledger_entries::agent_id.asc(), ledger_entries::seq.asc()))
                .select(EntryRow::as_select())
                .load(conn)
                .await
        })?;
        rows.into_iter()
            .map(|row| {
                let agent = AgentId::from_uuid(row.agent_id.0);
                row.into_entry().map(|entry| (agent, entry))
            })
            .collect()
    }
}
