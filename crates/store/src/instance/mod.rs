//! Seed 002: the one-time instance bootstrap (users, agents with keys,
//! invited humans, a channel), invites, and the users behind logins.

use agentry_domain::{AgentId, ApiKeyRole, Email, TenantId};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::AgentRecord;
use crate::agents::{AgentRow, NewAgent, new_agent};
use crate::db::{read, write_tx};
use crate::schema::{
    agents, api_keys, channels, instance, invites, memberships, one_time_tokens, tenants, users,
};
use crate::tenants::{ApiKeyRow, NewApiKey, TenantRow};
use crate::tokens::{NewToken, TokenPurpose, TokenRow};
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError, new_id};

/// The name of the tenant a workspace setup creates (suffixed with the
/// instance id when an operator already has a tenant of that name).
pub(crate) const WORKSPACE_TENANT: &str = "workspace";

/// An agent to create, with the hash of its new API key.
#[derive(Debug, Clone)]
pub struct BootstrapAgent {
    pub agent: NewAgent,
    pub key_hash: [u8; 32],
}

/// A human to invite, with the hash of their invite token.
#[derive(Debug, Clone)]
pub struct BootstrapHuman {
    pub email: Email,
    pub display_name: String,
    pub role: String,
    pub invite_hash: [u8; 32],
    pub invite_expires_at: OffsetDateTime,
}

/// Everything seed 002's bootstrap creates, validated and hashed by the
/// caller.
#[derive(Debug, Clone)]
pub struct InstanceBootstrap {
    pub primary_email: Email,
    pub primary_password_hash: String,
    pub primary_agent: BootstrapAgent,
    pub agents: Vec<BootstrapAgent>,
    pub humans: Vec<BootstrapHuman>,
    pub channel_name: String,
    pub channel_topic: Option<String>,
}

/// What the bootstrap created, with the ids the response needs.
#[derive(Debug, Clone)]
pub struct InstanceBootstrapped {
    pub instance_id: Uuid,
    pub tenant_id: TenantId,
    pub primary_user_id: Uuid,
    pub primary_agent: (AgentRecord, Uuid),
    pub agents: Vec<(AgentRecord, Uuid)>,
    pub humans: Vec<(Uuid, Email)>,
    pub channel_id: Uuid,
    pub members: Vec<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub email: String,
    pub display_name: String,
    pub kind: String,
    pub role: String,
    pub agent_id: Option<AgentId>,
    pub password_hash: Option<String>,
    /// Session tokens minted before the user's sessions were last ended
    /// (logout, a password change) carry a smaller epoch and are refused.
    pub session_epoch: i64,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub(crate) struct UserRow {
    id: DbUuid,
    tenant_id: DbUuid,
    email: String,
    display_name: String,
    kind: String,
    role: String,
    agent_id: Option<DbUuid>,
    password_hash: Option<String>,
    created_at: DbTime,
    session_epoch: i64,
}

impl From<UserRow> for UserRecord {
    fn from(row: UserRow) -> Self {
        UserRecord {
            id: row.id.0,
            tenant_id: TenantId::from_uuid(row.tenant_id.0),
            email: row.email,
            display_name: row.display_name,
            kind: row.kind,
            role: row.role,
            agent_id: row.agent_id.map(|id| AgentId::from_uuid(id.0)),
            password_hash: row.password_hash,
            session_epoch: row.session_epoch,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub name: String,
    pub topic: Option<String>,
    pub members: Vec<Uuid>,
    pub created_at: OffsetDateTime,
}

/// Where a failure is injected, for tests that prove nothing is left
/// half-written. Compiled only with `test-hooks`.
#[cfg(feature = "test-hooks")]
pub static FAIL_BOOTSTRAP_AFTER_CHANNEL: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

fn injected_failure() -> Result<(), StoreError> {
    #[cfg(feature = "test-hooks")]
    if std::sync::atomic::AtomicBool::load(
        &FAIL_BOOTSTRAP_AFTER_CHANNEL,
        std::sync::atomic::Ordering::SeqCst,
    ) {
        return Err(StoreError::Unavailable(
            "injected failure after the channel insert".into(),
        ));
    }
    Ok(())
}

/// Inside a write transaction on `$conn`: creates the workspace's tenant
/// (a tenant of its own: an anonymous first call must never write into a
/// tenant the operator's keys govern) and the instance row naming it.
/// Evaluates to `(instance_id, tenant_id)`. A macro because its body is
/// compiled once per backend's connection type, like the transaction's.
macro_rules! open_workspace {
    ($conn:ident, $now:expr, $created_at:expr) => {{
        let instance_id = new_id();
        let name_taken: i64 = tenants::table
            .filter(tenants::name.eq(WORKSPACE_TENANT))
            .count()
            .get_result($conn)
            .await?;
        let name = if name_taken == 0 {
            WORKSPACE_TENANT.to_owned()
        } else {
            format!("{WORKSPACE_TENANT}-{}", instance_id.simple())
        };
        let row = TenantRow::new(&name, $now);
        diesel::insert_into(tenants::table)
            .values(&row)
            .execute($conn)
            .await
            .map_err(|error| crate::tenants::conflict_as(error, "instance"))?;
        diesel::insert_into(instance::table)
            .values((
                instance::singleton.eq(1_i64),
                instance::instance_id.eq(DbUuid(instance_id)),
                instance::tenant_id.eq(row.id),
                instance::bootstrapped_at.eq($created_at),
            ))
            .execute($conn)
            .await
            .map_err(|error| crate::tenants::conflict_as(error, "instance"))?;
        (instance_id, row.id)
    }};
}

impl Store {
    /// The workspace's tenant, where the instance's users live, once the
    /// instance is set up.
    pub async fn instance_tenant(&self) -> Result<Option<TenantId>, StoreError> {
        Ok(self.instance().await?.map(|(_, tenant, _)| tenant))
    }

    /// The instance's id, tenant and bootstrap time, once bootstrapped.
    pub async fn instance(&self) -> Result<Option<(Uuid, TenantId, OffsetDateTime)>, StoreError> {
        let row: Option<(DbUuid, DbUuid, DbTime)> = read!(self, |conn| {
            instance::table
                .select((
                    instance::instance_id,
                    instance::tenant_id,
                    instance::bootstrapped_at,
                ))
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(|(id, tenant, at)| (id.0, TenantId::from_uuid(tenant.0), at.get())))
    }

    /// Seed 002's bootstrap, in one transaction: allowed once, on an
    /// instance with zero users (`Conflict("instance")` otherwise, also for
    /// the losers of a race: the `instance` row is single). Creates the
    /// workspace's own tenant; the primary agent's key is that tenant's
    /// admin key.
    pub async fn bootstrap_instance(
        &self,
        spec: InstanceBootstrap,
        now: OffsetDateTime,
    ) -> Result<InstanceBootstrapped, StoreError> {
        let created_at = DbTime::new(now);
        write_tx!(self, |conn| {
            let spec = spec.clone();
            let existing_users: i64 = users::table.count().get_result(conn).await?;
            if existing_users > 0 {
                return Err(StoreError::Conflict("instance"));
            }
            let (instance_id, tenant_id) = open_workspace!(conn, now, created_at);
            let tenant = TenantId::from_uuid(tenant_id.0);

            let mut created_agents = Vec::new();
            for (index, entry) in std::iter::once(&spec.primary_agent)
                .chain(&spec.agents)
                .enumerate()
            {
                let record = new_agent(
                    tenant,
                    AgentId::from_uuid(new_id()),
                    entry.agent.clone(),
                    now,
                );
                diesel::insert_into(agents::table)
                    .values(&AgentRow::from(&record))
                    .execute(conn)
                    .await
                    .map_err(|error| crate::tenants::conflict_as(error, "agent"))?;
                let key = ApiKeyRow::new(
                    tenant_id,
                    NewApiKey {
                        // The primary agent administers its workspace
                        // (docs/api.md); the other agents' keys are theirs.
                        role: (index == 0).then_some(ApiKeyRole::Admin),
                        agent_id: Some(record.id),
                        key_hash: entry.key_hash,
                        label: Some(
                            if index == 0 {
                                "primary agent"
                            } else {
                                "instance bootstrap"
                            }
                            .into(),
                        ),
                    },
                    now,
                );
                diesel::insert_into(api_keys::table)
                    .values(&key)
                    .execute(conn)
                    .await?;
                created_agents.push((record, key.id.0));
            }
            let primary_user = UserRow {
                id: DbUuid(new_id()),
                tenant_id,
                email: spec.primary_email.as_str().to_owned(),
                display_name: created_agents[0]
                    .0
                    .display_name
                    .clone()
                    .unwrap_or_else(|| created_agents[0].0.slug.to_string()),
                kind: "agent".into(),
                role: "admin".into(),
                agent_id: Some(DbUuid(created_agents[0].0.id.as_uuid())),
                password_hash: Some(spec.primary_password_hash.clone()),
                created_at,
                session_epoch: 0,
            };
            diesel::insert_into(users::table)
                .values(&primary_user)
                .execute(conn)
                .await
                .map_err(|error| crate::tenants::conflict_as(error, "user"))?;

            let mut humans = Vec::new();
            for human in &spec.humans {
                let user = UserRow {
                    id: DbUuid(new_id()),
                    tenant_id,
                    email: human.email.as_str().to_owned(),
                    display_name: human.display_name.clone(),
                    kind: "human".into(),
                    role: human.role.clone(),
                    agent_id: None,
                    password_hash: None,
                    created_at,
                    session_epoch: 0,
                };
                diesel::insert_into(users::table)
                    .values(&user)
                    .execute(conn)
                    .await
                    .map_err(|error| crate::tenants::conflict_as(error, "user"))?;
                let token = TokenRow::new(
                    tenant,
                    NewToken {
                        purpose: TokenPurpose::Invite,
                        token_hash: human.invite_hash,
                        subject_id: user.id.0,
                        max_attempts: 1,
                        expires_at: human.invite_expires_at,
                    },
                    now,
                );
                diesel::insert_into(one_time_tokens::table)
                    .values(&token)
                    .execute(conn)
                    .await?;
                diesel::insert_into(invites::table)
                    .values((
                        invites::id.eq(DbUuid(new_id())),
                        invites::tenant_id.eq(tenant_id),
                        invites::user_id.eq(user.id),
                        invites::token_id.eq(token.id),
                        invites::created_at.eq(created_at),
                    ))
                    .execute(conn)
                    .await?;
                humans.push((user.id.0, human.email.clone()));
            }

            let channel_id = new_id();
            diesel::insert_into(channels::table)
                .values((
                    channels::id.eq(DbUuid(channel_id)),
                    channels::tenant_id.eq(tenant_id),
                    channels::name.eq(&spec.channel_name),
                    channels::topic.eq(&spec.channel_topic),
                    channels::created_at.eq(created_at),
                ))
                .execute(conn)
                .await?;
            injected_failure()?;
            // Seed 002: the primary agent and the humans are members.
            let members: Vec<Uuid> = std::iter::once(primary_user.id.0)
                .chain(humans.iter().map(|(id, _)| *id))
                .collect();
            for (index, member) in members.iter().enumerate() {
                diesel::insert_into(memberships::table)
                    .values((
                        memberships::channel_id.eq(DbUuid(channel_id)),
                        memberships::user_id.eq(DbUuid(*member)),
                        memberships::tenant_id.eq(tenant_id),
                        memberships::role.eq(if index == 0 { "owner" } else { "member" }),
                        memberships::created_at.eq(created_at),
                    ))
                    .execute(conn)
                    .await?;
            }
            let mut created_agents = created_agents.into_iter();
            let primary_agent = created_agents
                .next()
                .ok_or_else(|| StoreError::Corrupt("no primary agent".into()))?;
            Ok::<_, StoreError>(InstanceBootstrapped {
                instance_id,
                tenant_id: tenant,
                primary_user_id: primary_user.id.0,
                primary_agent,
                agents: created_agents.collect(),
                humans,
                channel_id,
                members,
            })
        })
    }
}

// After the macros above, which it uses.
mod accounts;
