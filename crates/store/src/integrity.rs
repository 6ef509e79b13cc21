//! Whole-database invariant checks, for `agentryd verify` and the chaos
//! run: what must hold however the process died. Read-only.

use std::collections::{BTreeMap, BTreeSet};

use agentry_domain::{AgentId, LifecycleState};
use agentry_ledger::{Account, Entry, verify_transfers};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;

use crate::db::read;
use crate::schema::lifecycle_events;
use crate::types::DbUuid;
use crate::{Store, StoreError};

/// What was checked, and every violation found (empty when all holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    pub tenants: usize,
    pub agents: usize,
    pub ledger_entries: usize,
    pub audit_events: i64,
    pub violations: Vec<String>,
}

impl Store {
    /// Checks, per tenant: every agent bootstrap activated and that is still
    /// active has its agent-limits entry (seed 000's "profile + limits, or
    /// nothing usable"); every agent's ledger replays and every transfer
    /// between parent and child is written on both sides; no account has
    /// committed more than its enforced caps at `now`; the audit hash chain
    /// is intact.
    pub async fn check_integrity(
        &self,
        now: OffsetDateTime,
    ) -> Result<IntegrityReport, StoreError> {
        let mut report = IntegrityReport::default();
        for tenant in self.list_tenants().await? {
            report.tenants += 1;
            let tenant_id = tenant.id;
            let agents = self.list_agents(tenant_id).await?;
            let limits = self.agent_limits(tenant_id).await?;
            let bootstrapped: BTreeSet<AgentId> = read!(self, |conn| {
                lifecycle_events::table
                    .filter(lifecycle_events::tenant_id.eq(DbUuid(tenant_id.as_uuid())))
                    .filter(lifecycle_events::cause.eq("bootstrap"))
                    .select(lifecycle_events::agent_id)
                    .load::<DbUuid>(conn)
                    .await
            })?
            .into_iter()
            .map(|id| AgentId::from_uuid(id.0))
            .collect();
            let ledger = self.tenant_ledger(tenant_id).await?;
            report.agents += agents.len();
            report.ledger_entries += ledger.len();
            let mut entries: BTreeMap<AgentId, Vec<&Entry>> = BTreeMap::new();
            for (agent, entry) in &ledger {
                entries.entry(*agent).or_default().push(entry);
            }
            for agent in &agents {
                let name = format!("tenant {} agent {}", tenant.name, agent.slug);
                if agent.lifecycle_state == LifecycleState::Active
                    && bootstrapped.contains(&agent.id)
                    && !limits.entries.contains_key(&agent.slug.limits_key())
                {
                    report.violations.push(format!(
                        "{name}: active after bootstrap, but no agent-limits entry"
                    ));
                }
                let own = entries.remove(&agent.id).unwrap_or_default();
                match Account::replay(own) {
                    Err(error) => report
                        .violations
                        .push(format!("{name}: its ledger does not replay: {error}")),
                    Ok(account) => {
                        if let Some((window, committed, cap)) =
                            account.overshoot(&limits.enforced_for(agent), now)
                        {
                            report.violations.push(format!(
                                "{name}: {committed} committed in the {window:?} window, above its cap of {cap}"
                            ));
                        }
                    }
                }
            }
            for orphan in entries.keys() {
                report.violations.push(format!(
                    "tenant {}: ledger entries of agent {orphan}, which does not exist",
                    tenant.name
                ));
            }
            if let Err(imbalances) =
                verify_transfers(ledger.iter().map(|(agent, entry)| (*agent, entry)))
            {
                for imbalance in imbalances {
                    report
                        .violations
                        .push(format!("tenant {}: {imbalance:?}", tenant.name));
                }
            }
            match self.verify_audit_chain(tenant_id).await? {
                Ok(events) => report.audit_events += events,
                Err(link) => report.violations.push(format!(
                    "tenant {}: audit event {} breaks the chain: {}",
                    tenant.name, link.seq, link.reason
                )),
            }
        }
        Ok(report)
    }
}
