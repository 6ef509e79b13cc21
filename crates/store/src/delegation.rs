//! Delegation (seed 001): children created with budget sliced from their
//! parent, and reclaimed (by the parent, or by the reaper when their TTL
//! runs out) with their unspent budget refunded, descendants first.

use std::collections::BTreeMap;

use agentry_domain::{AgentId, LifecycleState, Money, TenantId};
use agentry_ledger::Entry;
use agentry_lifecycle::{
    Access, Lifecycle, LifecycleCommand, LifecycleError, LifecycleEvent, RequestScope,
    TerminationReason,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;

use crate::AgentRecord;
use crate::agents::{AgentRow, NewAgent, apply_lifecycle, new_agent, persist_lifecycle};
use crate::changes::Change;
use crate::db::{read, write_tx};
use crate::ledger::{LedgerView, append_entries, load_accounts, load_agents};
use crate::limits::load_limits;
use crate::schema::agents;
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError, new_id};

/// Inside a transaction: `root` and its descendants with their depth,
/// breadth first.
macro_rules! subtree {
    ($conn:ident, $tenant_id:expr, $root:expr) => {{
        let mut depth_of: BTreeMap<AgentId, usize> = BTreeMap::from([($root, 0)]);
        let mut frontier = vec![DbUuid($root.as_uuid())];
        let mut depth = 0;
        while !frontier.is_empty() {
            depth += 1;
            let children: Vec<DbUuid> = agents::table
                .filter(agents::tenant_id.eq($tenant_id))
                .filter(agents::parent_id.eq_any(&frontier))
                .select(agents::id)
                .load($conn)
                .await?;
            frontier = children
                .into_iter()
                .filter(|child| {
                    depth_of
                        .insert(AgentId::from_uuid(child.0), depth)
                        .is_none()
                })
                .collect();
        }
        depth_of
    }};
}

/// What reclaiming an agent did.
#[derive(Debug, Clone, PartialEq)]
pub struct Reclaimed {
    /// What the reclaimed agent returned to its parent (its descendants'
    /// refunds included).
    pub refunded: Money,
    /// It was terminated before this call.
    pub already_terminated: bool,
    /// Every agent this call terminated, deepest first.
    pub terminated: Vec<AgentId>,
    /// The reclaimed agent as it is now.
    pub agent: AgentRecord,
    /// Its termination, if this call terminated it.
    pub event: Option<LifecycleEvent>,
}

/// How many times a reclaim starts over when its subtree changed under it.
pub const RECLAIM_ATTEMPTS: u32 = 3;

const SUBTREE_CHANGED: &str = "the agent's sub-agents changed while reclaiming; retry";

impl Store {
    /// Seed 001's delegation as one command: creates `child` under `parent`
    /// with `allocation` sliced from the parent's budget, after judging
    /// again, under the parent's lock, that its lifecycle lets it act (a
    /// parent suspended a moment ago cannot delegate) and letting the
    /// ledger decide the slice against the parent's enforced limits. A
    /// taken slug is `Conflict("agent")`.
    pub async fn delegate(
        &self,
        tenant: TenantId,
        parent: AgentId,
        child: NewAgent,
        allocation: Money,
        now: OffsetDateTime,
    ) -> Result<AgentRecord, StoreError> {
        self.create_delegated_agent(tenant, parent, child, now, |view, child| {
            let record = view.agent(parent)?;
            Access::for_agent(&Lifecycle::of(record), now).permits(RequestScope::Other)?;
            let limits = view.enforced(parent)?;
            Ok(view
                .account(parent)?
                .delegate(parent, child, allocation, &limits, now)?)
        })
        .await
    }

    /// The transaction under [`Store::delegate`], with the decision left to
    /// the caller (tests give it limits of their own). Creates `child` under
    /// `parent` and slices its budget from the parent in one transaction:
    /// `decide` sees the parent's account, record and
    /// limits as they are under its lock, and the child's new id; it checks
    /// the parent may delegate and returns the ledger's transfer. Either both
    /// the agent and the transfer are written or neither is. A taken slug is
    /// `Conflict("agent")`.
    pub async fn create_delegated_agent<F>(
        &self,
        tenant: TenantId,
        parent: AgentId,
        mut child: NewAgent,
        now: OffsetDateTime,
        decide: F,
    ) -> Result<AgentRecord, StoreError>
    where
        F: FnOnce(&LedgerView, AgentId) -> Result<(Entry, Entry), StoreError> + Send,
    {
        child.parent_id = Some(parent);
        let record = new_agent(tenant, AgentId::from_uuid(new_id()), child, now);
        let (touched, record) = write_tx!(self, |conn| {
            let (accounts, mut next_seq) = load_accounts!(conn, self.accounts, tenant, [parent]);
            let agents = load_agents!(conn, tenant, [parent]);
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
            let (slice, allocation) = decide(&view, record.id)?;
            let mut record = record.clone();
            record.parent_slug = Some(view.agent(parent)?.slug.clone());
            diesel::insert_into(agents::table)
                .values(&AgentRow::from(&record))
                .execute(conn)
                .await
                .map_err(|error| crate::tenants::conflict_as(error, "agent"))?;
            next_seq.insert(record.id, 1);
            let touched = append_entries!(
                conn,
                tenant,
                &mut next_seq,
                [(parent, slice), (record.id, allocation)],
                None
            );
            Ok::<_, StoreError>((touched, record))
        })?;
        self.publish_ledger_changes(&touched);
        Ok(record)
    }

    /// Children of `parent` that are not terminated, oldest first.
    pub async fn live_children(
        &self,
        tenant: TenantId,
        parent: AgentId,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let rows: Vec<AgentRow> = read!(self, |conn| {
            agents::table
                .filter(agents::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(agents::parent_id.eq(DbUuid(parent.as_uuid())))
                .filter(agents::lifecycle_state.ne(LifecycleState::Terminated.as_str()))
                .order(agents::id.asc())
                .select(AgentRow::as_select())
                .load(conn)
                .await
        })?;
        rows.into_iter().map(AgentRecord::try_from).collect()
    }

    /// Live agents whose TTL has run out at `now`, across tenants, for the
    /// reaper; at most `limit`.
    pub async fn expired_agents(
        &self,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<(TenantId, AgentId)>, StoreError> {
        let rows: Vec<(DbUuid, DbUuid)> = read!(self, |conn| {
            agents::table
                .filter(agents::expires_at.le(DbTime::new(now)))
                .filter(agents::lifecycle_state.ne(LifecycleState::Terminated.as_str()))
                .order(agents::expires_at.asc())
                .limit(limit)
                .select((agents::tenant_id, agents::id))
                .load(conn)
                .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(tenant, id)| (TenantId::from_uuid(tenant.0), AgentId::from_uuid(id.0)))
            .collect())
    }

    /// Terminates `root` and all its descendants (deepest first, each for
    /// `reason` if it is the root, as reclaimed by its parent otherwise) and
    /// settles every delegated account among them, so each unspent
    /// allocation flows back up to the parent it came from, in one
    /// transaction. An agent terminated earlier but never settled is settled
    /// now.
    ///
    /// A sub-agent created while the subtree is being locked makes one
    /// attempt give up; the reclaim starts over, up to
    /// [`RECLAIM_ATTEMPTS`] times, before it answers `Unavailable`.
    pub async fn reclaim_agent(
        &self,
        tenant: TenantId,
        root: AgentId,
        reason: TerminationReason,
        now: OffsetDateTime,
    ) -> Result<Reclaimed, StoreError> {
        self.reclaim_admitted(tenant, root, None, reason, now)
            .await?
            .map_err(|refusal| StoreError::Corrupt(refusal.to_string()))
    }

    /// [`Store::reclaim_agent`] for a lifecycle command that terminates
    /// (an operator's request, judged by the table, or a forced
    /// termination): the command is judged against the agent as it is under
    /// the subtree's locks, so a refusal and the termination cannot race.
    pub(crate) async fn reclaim_on_command(
        &self,
        tenant: TenantId,
        root: AgentId,
        command: LifecycleCommand,
        now: OffsetDateTime,
    ) -> Result<Result<Reclaimed, LifecycleError>, StoreError> {
        let reason = match command {
            LifecycleCommand::Terminate(reason) => reason,
            LifecycleCommand::Request(_) | LifecycleCommand::Bootstrap => {
                TerminationReason::Operator
            }
        };
        self.reclaim_admitted(tenant, root, Some(command), reason, now)
            .await
    }

    async fn reclaim_admitted(
        &self,
        tenant: TenantId,
        root: AgentId,
        command: Option<LifecycleCommand>,
        reason: TerminationReason,
        now: OffsetDateTime,
    ) -> Result<Result<Reclaimed, LifecycleError>, StoreError> {
        let mut attempt = 1;
        loop {
            match self
                .reclaim_agent_once(tenant, root, command, reason, now)
                .await
            {
                Err(StoreError::Unavailable(why))
                    if why == SUBTREE_CHANGED && attempt < RECLAIM_ATTEMPTS =>
                {
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn reclaim_agent_once(
        &self,
        tenant: TenantId,
        root: AgentId,
        command: Option<LifecycleCommand>,
        reason: TerminationReason,
        now: OffsetDateTime,
    ) -> Result<Result<Reclaimed, LifecycleError>, StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        let reclaimed = write_tx!(self, |conn| {
            // Which rows to lock: the subtree and the root's parent (it
            // receives the root's refund), as they look before locking.
            let before = subtree!(conn, tenant_id, root);
            let root_parent: Option<Option<DbUuid>> = agents::table
                .filter(agents::tenant_id.eq(tenant_id))
                .filter(agents::id.eq(DbUuid(root.as_uuid())))
                .select(agents::parent_id)
                .first(conn)
                .await
                .optional()?;
            let root_parent = root_parent.ok_or(StoreError::NotFound("agent"))?;
            let mut to_lock: Vec<AgentId> = before.keys().copied().collect();
            to_lock.extend(root_parent.map(|parent| AgentId::from_uuid(parent.0)));
            let (mut accounts, mut next_seq) = load_accounts!(conn, self.accounts, tenant, to_lock);
            // Under the locks nothing can join the subtree (a new child needs
            // its parent's lock); if something joined before, start over.
            let depth_of = subtree!(conn, tenant_id, root);
            if !depth_of.keys().eq(before.keys()) {
                return Err(StoreError::Unavailable(SUBTREE_CHANGED.into()));
            }
            // Records as they are under the locks, not as first read.
            let ids: Vec<DbUuid> = depth_of.keys().map(|id| DbUuid(id.as_uuid())).collect();
            let rows: Vec<AgentRow> = agents::table
                .filter(agents::tenant_id.eq(tenant_id))
                .filter(agents::id.eq_any(&ids))
                .select(AgentRow::as_select())
                .load(conn)
                .await?;
            let mut records: BTreeMap<AgentId, AgentRecord> = BTreeMap::new();
            for row in rows {
                let record = AgentRecord::try_from(row)?;
                records.insert(record.id, record);
            }
            let root_record = records.get(&root).ok_or(StoreError::NotFound("agent"))?;
            let already_terminated = root_record.lifecycle_state == LifecycleState::Terminated;
            if let Some(command) = command
                && let Err(refusal) = Lifecycle::of(root_record).apply(command, now)
            {
                return Ok(Err(refusal));
            }
            let mut root_event = None;
            let mut order: Vec<(usize, AgentId)> =
                depth_of.iter().map(|(id, depth)| (*depth, *id)).collect();
            order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut terminated = Vec::new();
            let mut settled = Vec::new();
            let mut refunded = Money::ZERO;
            for (_, id) in order {
                let Some(agent) = records.get_mut(&id) else {
                    continue;
                };
                if agent.lifecycle_state != LifecycleState::Terminated {
                    let cause = if id == root {
                        reason
                    } else {
                        TerminationReason::ReclaimedByParent
                    };
                    let (next, event) = Lifecycle::of(agent)
                        .terminate(cause, now)
                        .map_err(|error| StoreError::Corrupt(error.to_string()))?;
                    apply_lifecycle(agent, &next, &event);
                    persist_lifecycle!(conn, tenant, &*agent, &event);
                    terminated.push(id);
                    if id == root {
                        root_event = Some(event);
                    }
                }
                let Some(parent) = agent.parent_id else {
                    continue;
                };
                let account = accounts.get(&id).ok_or(StoreError::NotFound("agent"))?;
                if account.is_settled() || account.parent().is_none() {
                    continue;
                }
                let settlement = account.settle(id, now)?;
                if id == root {
                    refunded = settlement.refunded;
                }
                let mut writes: Vec<(AgentId, Entry)> = settlement
                    .child_entries
                    .iter()
                    .map(|entry| (id, entry.clone()))
                    .collect();
                writes.push((parent, settlement.parent_entry.clone()));
                for (owner, entry) in &writes {
                    accounts
                        .get_mut(owner)
                        .ok_or(StoreError::NotFound("agent"))?
                        .record(entry)?;
                }
                settled.extend(append_entries!(conn, tenant, &mut next_seq, writes, None));
            }
            let agent = records.remove(&root).ok_or(StoreError::NotFound("agent"))?;
            let reclaimed = Reclaimed {
                refunded,
                already_terminated,
                terminated,
                agent,
                event: root_event,
            };
            Ok::<_, StoreError>(Ok((reclaimed, settled)))
        })?;
        let Ok((reclaimed, settled)) = reclaimed else {
            return Ok(reclaimed.map(|(reclaimed, _)| reclaimed));
        };
        for id in &reclaimed.terminated {
            self.publish(Change::Agent(*id));
        }
        self.publish_ledger_changes(&settled);
        Ok(Ok(reclaimed))
    }
}
