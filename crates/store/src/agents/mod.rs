//! Agents: one row behind both the `/v1/agent/*` profile and the
//! `/api/v1/agents` registry record, plus their lifecycle history.

mod rows;

use agentry_domain::{
    AgentId, AgentName, AgentOrigin, AgentSlug, LifecycleState, Money, Role, TenantId, TrustLevel,
};
use agentry_lifecycle::{Lifecycle, LifecycleCommand, LifecycleError, LifecycleEvent};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use rows::stored_name;
pub(crate) use rows::{AgentRow, LifecycleEventRow};
use time::OffsetDateTime;

use crate::AgentRecord;
use crate::changes::{Change, NotifyChange};
use crate::db::{read, write_one, write_tx};
use crate::schema::{agents, api_keys, users};
use crate::tenants::conflict_as;
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError, new_id};

/// The record a new agent starts as.
pub(crate) fn new_agent(
    tenant: TenantId,
    id: AgentId,
    new: NewAgent,
    now: OffsetDateTime,
) -> AgentRecord {
    let now = DbTime::new(now).get();
    let lifecycle_state = new.birth_state();
    AgentRecord {
        id,
        tenant_id: tenant,
        slug: new.slug,
        name: new.name,
        display_name: new.display_name,
        description: new.description,
        owner_id: new.owner_id,
        cost_center: new.cost_center,
        budget_daily: new.budget_daily,
        budget_monthly: new.budget_monthly,
        role: new.role,
        lifecycle_state,
        manifest_id: None,
        parent_id: new.parent_id,
        parent_slug: None,
        expires_at: new.expires_at.map(|at| DbTime::new(at).get()),
        metadata: new.metadata,
        scopes: new.scopes,
        trust_level: new.trust_level,
        credential_epoch: 0,
        last_seen_at: None,
        // Revoked exactly when terminated, even for one created so.
        revoked_at: (lifecycle_state == LifecycleState::Terminated).then_some(now),
        created_at: now,
        updated_at: now,
        origin: new.origin,
    }
}

/// Takes on the state a lifecycle decision produced, with the effects
/// `agentry-lifecycle` attaches to it: a new credential epoch (retiring
/// every earlier token) and the revocation time, which every
/// termination sets (`revoked_at` is the one source of seed 004's
/// `revokedAt`).
pub(crate) fn apply_lifecycle(agent: &mut AgentRecord, next: &Lifecycle, event: &LifecycleEvent) {
    agent.lifecycle_state = next.state();
    agent.updated_at = DbTime::new(event.at).get();
    if event.retires_credentials() {
        agent.credential_epoch += 1;
    }
    if let Some(at) = event.revoked_at() {
        agent.revoked_at = Some(DbTime::new(at).get());
    }
}

/// Inside a write transaction: writes an agent's new lifecycle state (as
/// `apply_lifecycle` left it), its history row, and the change notice.
macro_rules! persist_lifecycle {
    ($conn:ident, $tenant:expr, $agent:expr, $event:expr) => {{
        let agent: &$crate::AgentRecord = $agent;
        diesel::update(
            $crate::schema::agents::table
                .filter(
                    $crate::schema::agents::tenant_id.eq($crate::types::DbUuid($tenant.as_uuid())),
                )
                .filter($crate::schema::agents::id.eq($crate::types::DbUuid(agent.id.as_uuid()))),
        )
        .set((
            $crate::schema::agents::lifecycle_state.eq(agent.lifecycle_state.as_str()),
            $crate::schema::agents::updated_at.eq($crate::types::DbTime::new(agent.updated_at)),
            $crate::schema::agents::credential_epoch.eq(agent.credential_epoch),
            $crate::schema::agents::revoked_at.eq(agent.revoked_at.map($crate::types::DbTime::new)),
        ))
        .execute($conn)
        .await?;
        diesel::insert_into($crate::schema::lifecycle_events::table)
            .values($crate::agents::LifecycleEventRow::new(
                $tenant, agent.id, $event,
            ))
            .execute($conn)
            .await?;
        $crate::changes::NotifyChange::notify_change(
            &mut *$conn,
            $crate::changes::Change::Agent(agent.id),
        )
        .await?;
    }};
}

pub(crate) use persist_lifecycle;

/// What it takes to create an agent. Its first lifecycle state is not
/// chosen here: `agentry-lifecycle` derives it from the origin
/// ([`agentry_lifecycle::birth_state`]).
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub slug: AgentSlug,
    /// Set with the slug by [`NewAgent::named`] or [`NewAgent::called`].
    pub name: AgentName,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub owner_id: Option<String>,
    pub cost_center: Option<String>,
    pub budget_daily: Option<Money>,
    pub budget_monthly: Option<Money>,
    pub role: Role,
    pub parent_id: Option<AgentId>,
    pub expires_at: Option<OffsetDateTime>,
    pub metadata: serde_json::Value,
    pub scopes: Vec<String>,
    pub trust_level: TrustLevel,
    /// The route that creates it; read-only, so the birth state cannot be
    /// changed apart from it.
    origin: AgentOrigin,
    /// A state for a test to start an agent in, skipping its history.
    #[cfg(feature = "test-hooks")]
    starting_state: Option<LifecycleState>,
}

impl NewAgent {
    /// A plain agent made by `origin`, with defaults for everything but its
    /// slug.
    pub fn named(slug: AgentSlug, origin: AgentOrigin) -> Self {
        Self {
            name: AgentName::of_slug(&slug),
            slug,
            display_name: None,
            description: None,
            owner_id: None,
            cost_center: None,
            budget_daily: None,
            budget_monthly: None,
            role: Role::Agent,
            parent_id: None,
            expires_at: None,
            metadata: serde_json::Value::Object(serde_json::Map::new()),
            scopes: Vec::new(),
            trust_level: TrustLevel::Medium,
            origin,
            #[cfg(feature = "test-hooks")]
            starting_state: None,
        }
    }

    /// A plain agent called `name`, with the slug the name maps onto.
    pub fn called(name: AgentName, origin: AgentOrigin) -> Self {
        Self {
            name: name.clone(),
            ..Self::named(name.slug(), origin)
        }
    }

    pub fn origin(&self) -> AgentOrigin {
        self.origin
    }

    /// The same agent, made by the command that creates it as `origin`.
    pub(crate) fn made_by(self, origin: AgentOrigin) -> Self {
        Self { origin, ..self }
    }

    /// For tests only: the agent starts in `state` instead of its birth
    /// state, as if its history had taken it there.
    #[cfg(feature = "test-hooks")]
    pub fn starting_in(self, state: LifecycleState) -> Self {
        Self {
            starting_state: Some(state),
            ..self
        }
    }

    fn birth_state(&self) -> LifecycleState {
        #[cfg(feature = "test-hooks")]
        if let Some(state) = self.starting_state {
            return state;
        }
        Lifecycle::born(self.origin, self.expires_at).state()
    }
}

/// Fields of a profile an operator may change (seed 001's PATCH); `None`
/// leaves a field as it is, `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct ProfilePatch {
    /// A new spelling of the name; it must map onto the agent's slug (the
    /// slug never changes), else the update is `StoreError::Conflict("name")`.
    pub name: Option<AgentName>,
    pub display_name: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub owner_id: Option<Option<String>>,
    pub cost_center: Option<Option<String>>,
    pub budget_daily: Option<Option<Money>>,
    pub budget_monthly: Option<Option<Money>>,
    pub role: Option<Role>,
    pub metadata: Option<serde_json::Value>,
}

/// The outcome of [`Store::change_lifecycle`]: the agent as it is now, and
/// the change made, if any.
pub type LifecycleChange = (AgentRecord, Option<LifecycleEvent>);

impl Store {
    /// Creates an agent. A second agent with the same slug in the tenant is
    /// `StoreError::Conflict("agent")`, on both backends.
    pub async fn create_agent(
        &self,
        tenant: TenantId,
        new: NewAgent,
        now: OffsetDateTime,
    ) -> Result<AgentRecord, StoreError> {
        let record = new_agent(tenant, AgentId::from_uuid(new_id()), new, now);
        let row = AgentRow::from(&record);
        write_one!(self, |conn| {
            diesel::insert_into(agents::table)
                .values(&row)
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "agent"))
        })?;
        Ok(record)
    }

    pub async fn find_agent(
        &self,
        tenant: TenantId,
        id: AgentId,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let row: Option<AgentRow> = read!(self, |conn| {
            agents::table
                .filter(agents::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(agents::id.eq(DbUuid(id.as_uuid())))
                .select(AgentRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        row.map(AgentRecord::try_from).transpose()
    }

    pub async fn find_agent_by_slug(
        &self,
        tenant: TenantId,
        slug: &AgentSlug,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let row: Option<AgentRow> = read!(self, |conn| {
            agents::table
                .filter(agents::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(agents::slug.eq(slug.as_str()))
                .select(AgentRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        row.map(AgentRecord::try_from).transpose()
    }

    /// Every agent of the tenant, oldest first.
    pub async fn list_agents(&self, tenant: TenantId) -> Result<Vec<AgentRecord>, StoreError> {
        let rows: Vec<AgentRow> = read!(self, |conn| {
            agents::table
                .filter(agents::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .order(agents::id.asc())
                .select(AgentRow::as_select())
                .load(conn)
                .await
        })?;
        rows.into_iter().map(AgentRecord::try_from).collect()
    }

    /// Applies `patch` to the agent `slug` of `tenant` and returns it.
    pub async fn update_agent_profile(
        &self,
        tenant: TenantId,
        slug: &AgentSlug,
        patch: ProfilePatch,
        now: OffsetDateTime,
    ) -> Result<AgentRecord, StoreError> {
        let slug = slug.clone();
        let agent = write_tx!(self, |conn| {
            let target = agents::table
                .filter(agents::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(agents::slug.eq(slug.as_str()));
            // Lock before reading (see change_lifecycle), and below write only
            // the patched columns: a rewrite of the whole row could restore a
            // lifecycle state or credential epoch that a concurrent
            // termination just changed.
            diesel::update(target)
                .set(agents::credential_epoch.eq(agents::credential_epoch))
                .execute(conn)
                .await?;
            let row: Option<AgentRow> = target
                .select(AgentRow::as_select())
                .first(conn)
                .await
                .optional()?;
            let mut agent = AgentRecord::try_from(row.ok_or(StoreError::NotFound("agent"))?)?;
            let patch = patch.clone();
            if let Some(name) = patch.name {
                if name.slug() != agent.slug {
                    return Err(StoreError::Conflict("name"));
                }
                agent.name = name;
            }
            if let Some(value) = patch.display_name {
                agent.display_name = value;
            }
            if let Some(value) = patch.description {
                agent.description = value;
            }
            if let Some(value) = patch.owner_id {
                agent.owner_id = value;
            }
            if let Some(value) = patch.cost_center {
                agent.cost_center = value;
            }
            if let Some(value) = patch.budget_daily {
                agent.budget_daily = value;
            }
            if let Some(value) = patch.budget_monthly {
                agent.budget_monthly = value;
            }
            if let Some(value) = patch.role {
                agent.role = value;
            }
            if let Some(value) = patch.metadata {
                agent.metadata = value;
            }
            agent.updated_at = DbTime::new(now).get();
            diesel::update(target)
                .set((
                    agents::name.eq(stored_name(&agent)),
                    agents::display_name.eq(&agent.display_name),
                    agents::description.eq(&agent.description),
                    agents::owner_id.eq(&agent.owner_id),
                    agents::cost_center.eq(&agent.cost_center),
                    agents::budget_daily_micros.eq(agent.budget_daily.map(Money::micros)),
                    agents::budget_monthly_micros.eq(agent.budget_monthly.map(Money::micros)),
                    agents::role.eq(agent.role.as_str()),
                    agents::metadata.eq(agent.metadata.to_string()),
                    agents::updated_at.eq(DbTime::new(agent.updated_at)),
                ))
                .execute(conn)
                .await?;
            conn.notify_change(Change::Agent(agent.id)).await?;
            Ok::<_, StoreError>(agent)
        })?;
        self.publish(Change::Agent(agent.id));
        Ok(agent)
    }

    /// Hard-deletes an agent with its keys, ledger and history (seed 001's
    /// DELETE), and its terminated sub-agents with it. An agent that still
    /// has a live sub-agent is refused: it would be orphaned with budget
    /// sliced from it.
    pub async fn delete_agent(
        &self,
        tenant: TenantId,
        slug: &AgentSlug,
    ) -> Result<AgentId, StoreError> {
        let slug = slug.clone();
        let id = write_tx!(self, |conn| {
            let row: Option<AgentRow> = agents::table
                .filter(agents::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(agents::slug.eq(slug.as_str()))
                .select(AgentRow::as_select())
                .first(conn)
                .await
                .optional()?;
            let row = row.ok_or(StoreError::NotFound("agent"))?;
            let id = row.id;
            if row.parent_id.is_some() {
                // Its allocation must flow back to its parent first (reclaim
                // it), or the parent's slice would stay committed forever.
                let settled: i64 = crate::schema::ledger_entries::table
                    .filter(crate::schema::ledger_entries::agent_id.eq(id))
                    .filter(crate::schema::ledger_entries::kind.eq("refund_to_parent"))
                    .count()
                    .get_result(conn)
                    .await?;
                if settled == 0 {
                    return Err(StoreError::Refused(
                        "the agent holds budget delegated by its parent; reclaim it through its parent first",
                    ));
                }
            }
            // Its sub-agents, every level down, parents before children. A
            // live one refuses the delete (its slice is still out); the
            // terminated ones have settled and go with it (seed 001 deletes
            // a sub-agent, then its parent's profile).
            let mut subtree: Vec<DbUuid> = Vec::new();
            let mut frontier = vec![id];
            while !frontier.is_empty() {
                let children: Vec<(DbUuid, String)> = agents::table
                    .filter(agents::parent_id.eq_any(frontier.clone()))
                    .select((agents::id, agents::lifecycle_state))
                    .load(conn)
                    .await?;
                if children
                    .iter()
                    .any(|(_, state)| state != LifecycleState::Terminated.as_str())
                {
                    return Err(StoreError::Refused(
                        "the agent has live sub-agents; terminate or delete them first",
                    ));
                }
                frontier = children.into_iter().map(|(child, _)| child).collect();
                subtree.extend(frontier.iter().copied());
            }
            // Children before their parents: a parent row is still referenced
            // until its children are gone.
            for doomed in subtree.into_iter().rev().chain(std::iter::once(id)) {
                diesel::delete(api_keys::table.filter(api_keys::agent_id.eq(doomed)))
                    .execute(conn)
                    .await?;
                diesel::update(users::table.filter(users::agent_id.eq(doomed)))
                    .set(users::agent_id.eq(None::<DbUuid>))
                    .execute(conn)
                    .await?;
                diesel::delete(agents::table.find(doomed))
                    .execute(conn)
                    .await?;
            }
            let id = AgentId::from_uuid(id.0);
            conn.notify_change(Change::Agent(id)).await?;
            Ok::<_, StoreError>(id)
        })?;
        self.publish(Change::Agent(id));
        Ok(id)
    }

    /// Records when agents were last seen, in one transaction. Callers batch
    /// sightings in memory and flush them now and then, so an authenticated
    /// request never pays for a write. Times only move forward.
    pub async fn record_last_seen(
        &self,
        tenant_sightings: Vec<(TenantId, AgentId, OffsetDateTime)>,
    ) -> Result<(), StoreError> {
        if tenant_sightings.is_empty() {
            return Ok(());
        }
        write_tx!(self, |conn| {
            for (tenant, agent, seen) in &tenant_sightings {
                let seen = DbTime::new(*seen);
                diesel::update(
                    agents::table
                        .filter(agents::tenant_id.eq(DbUuid(tenant.as_uuid())))
                        .filter(agents::id.eq(DbUuid(agent.as_uuid())))
                        .filter(
                            agents::last_seen_at
                                .is_null()
                                .or(agents::last_seen_at.lt(seen)),
                        ),
                )
                .set(agents::last_seen_at.eq(seen))
                .execute(conn)
                .await?;
            }
            Ok::<_, StoreError>(())
        })
    }

    /// Changes an agent's lifecycle as `command` asks: reads the agent under
    /// a write lock, lets `agentry-lifecycle` judge the command at `now`,
    /// and writes the new state, its history row and a new credential epoch
    /// when the agent is terminated. A refusal writes nothing.
    ///
    /// A termination (an operator's request for `terminated`, or a forced
    /// one) takes the agent's sub-agents with it and settles every delegated
    /// budget back up the tree, as [`Store::reclaim_agent`] does, in the same
    /// transaction as the decision.
    pub async fn transition(
        &self,
        tenant: TenantId,
        id: AgentId,
        command: LifecycleCommand,
        now: OffsetDateTime,
    ) -> Result<Result<LifecycleChange, LifecycleError>, StoreError> {
        let terminates = matches!(
            command,
            LifecycleCommand::Request(LifecycleState::Terminated) | LifecycleCommand::Terminate(_)
        );
        if terminates {
            let reclaimed = self.reclaim_on_command(tenant, id, command, now).await?;
            return Ok(reclaimed.map(|reclaimed| (reclaimed.agent, reclaimed.event)));
        }
        self.change_lifecycle(tenant, id, |lifecycle| lifecycle.apply(command, now))
            .await
    }

    /// Applies a lifecycle decision atomically: reads the agent under a write
    /// lock, lets `decide` (a function of `agentry-lifecycle`) judge, and
    /// writes the new state, its history row and a new credential epoch when
    /// the agent is terminated.
    pub(crate) async fn change_lifecycle<F>(
        &self,
        tenant: TenantId,
        id: AgentId,
        decide: F,
    ) -> Result<Result<LifecycleChange, LifecycleError>, StoreError>
    where
        F: FnOnce(&Lifecycle) -> Result<Option<(Lifecycle, LifecycleEvent)>, LifecycleError> + Send,
    {
        let outcome = write_tx!(self, |conn| {
            let target = agents::table
                .filter(agents::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(agents::id.eq(DbUuid(id.as_uuid())));
            // A no-op update takes the row lock on PostgreSQL (SQLite's
            // IMMEDIATE transaction already holds the write lock), so two
            // decisions about one agent cannot interleave.
            let locked = diesel::update(target)
                .set(agents::credential_epoch.eq(agents::credential_epoch))
                .execute(conn)
                .await?;
            if locked == 0 {
                return Err(StoreError::NotFound("agent"));
            }
            let row: AgentRow = target.select(AgentRow::as_select()).first(conn).await?;
            let mut agent = AgentRecord::try_from(row)?;
            let decision = match decide(&Lifecycle::of(&agent)) {
                Ok(decision) => decision,
                Err(refusal) => return Ok(Err(refusal)),
            };
            let Some((next, event)) = decision else {
                return Ok(Ok((agent, None)));
            };
            apply_lifecycle(&mut agent, &next, &event);
            persist_lifecycle!(conn, tenant, &agent, &event);
            Ok(Ok((agent, Some(event))))
        });
        if let Ok(Ok((_, Some(_)))) = &outcome {
            self.publish(Change::Agent(id));
        }
        outcome
    }
}
