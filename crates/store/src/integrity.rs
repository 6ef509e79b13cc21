//! Whole-database invariant checks, for `agentryd verify` and the chaos
//! run: what must hold however the process died. Read-only.

use std::collections::{BTreeMap, BTreeSet};

use agentry_domain::{AgentId, LifecycleState};
use agentry_ledger::{Account, Entry, verify_transfers};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;

use crate::TokenPurpose;
use crate::db::read;
use crate::schema::{invites, lifecycle_events, one_time_tokens, provisioning_sessions, users};
use crate::types::DbUuid;
use crate::{Store, StoreError};

/// What was checked, and every violation found (empty when all holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    pub tenants: usize,
    pub agents: usize,
    pub ledger_entries: usize,
    pub audit_events: i64,
    pub consumed_tokens: usize,
    pub violations: Vec<String>,
}

impl Store {
    /// Checks, per tenant: every agent bootstrap activated and that is still
    /// active has its agent-limits entry (seed 000's "profile + limits, or
    /// nothing usable"); an agent has a `revoked_at` exactly when it is
    /// terminated (seed 004's `revokedAt`); every agent's ledger replays and every transfer
    /// between parent and child is written on both sides; no account has
    /// committed more than its enforced caps at `now`; every consumed
    /// one-time token took effect (an invite's user has a password, a
    /// provisioning token's session completed); the audit hash chain is
    /// intact.
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
                let terminated = agent.lifecycle_state == LifecycleState::Terminated;
                if terminated != agent.revoked_at.is_some() {
                    report.violations.push(if terminated {
                        format!("{name}: terminated, but without its revoked_at")
                    } else {
                        format!("{name}: a revoked_at, but not terminated")
                    });
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
            let (consumed, unanswered) = self.consumed_tokens_without_effect(tenant_id).await?;
            report.consumed_tokens += consumed;
            for (purpose, token) in unanswered {
                report.violations.push(format!(
                    "tenant {}: {purpose} token {token} was consumed but did not take effect",
                    tenant.name
                ));
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

    /// How many one-time tokens of the tenant were consumed, and those whose
    /// consumption left no effect behind. Each is consumed in the same
    /// transaction as its effect, so a crash can lose the answer but never
    /// leave a used token with nothing to show for it. Download tokens are
    /// consumed once their transfer has been sent, which is their effect.
    async fn consumed_tokens_without_effect(
        &self,
        tenant: agentry_domain::TenantId,
    ) -> Result<(usize, Vec<(String, uuid::Uuid)>), StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        let (consumed, invites_without_password, sessions_incomplete) = read!(self, |conn| {
            let consumed: i64 = one_time_tokens::table
                .filter(one_time_tokens::tenant_id.eq(tenant_id))
                .filter(one_time_tokens::consumed_at.is_not_null())
                .count()
                .get_result(conn)
                .await?;
            let invites_without_password: Vec<DbUuid> = one_time_tokens::table
                .inner_join(invites::table.on(invites::token_id.eq(one_time_tokens::id)))
                .inner_join(users::table.on(users::id.eq(invites::user_id)))
                .filter(one_time_tokens::tenant_id.eq(tenant_id))
                .filter(one_time_tokens::purpose.eq(TokenPurpose::Invite.as_str()))
                .filter(one_time_tokens::consumed_at.is_not_null())
                .filter(users::password_hash.is_null())
                .select(one_time_tokens::id)
                .load(conn)
                .await?;
            let completed = provisioning_sessions::table
                .filter(provisioning_sessions::completed_at.is_not_null())
                .select(provisioning_sessions::token_id);
            let sessions_incomplete: Vec<DbUuid> = one_time_tokens::table
                .filter(one_time_tokens::tenant_id.eq(tenant_id))
                .filter(one_time_tokens::purpose.eq(TokenPurpose::Bootstrap.as_str()))
                .filter(one_time_tokens::consumed_at.is_not_null())
                .filter(one_time_tokens::id.ne_all(completed))
                .select(one_time_tokens::id)
                .load(conn)
                .await?;
            Ok::<_, diesel::result::Error>((
                consumed,
                invites_without_password,
                sessions_incomplete,
            ))
        })?;
        let unanswered = invites_without_password
            .into_iter()
            .map(|id| ("invite".to_owned(), id.0))
            .chain(
                sessions_incomplete
                    .into_iter()
                    .map(|id| ("provisioning".to_owned(), id.0)),
            )
            .collect();
        Ok((usize::try_from(consumed).unwrap_or(usize::MAX), unanswered))
    }
}
