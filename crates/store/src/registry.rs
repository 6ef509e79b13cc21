//! Seed 004's registry over the same agents as every other family: an
//! agent registered together with its own API key, keyset pages, and key
//! rotation. Revocation is termination (`delegation::reclaim_agent`).

use agentry_domain::{AgentId, LifecycleState, TenantId, TrustLevel};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;

use crate::AgentRecord;
use crate::ApiKeyRecord;
use crate::agents::{AgentRow, NewAgent, new_agent};
use crate::changes::{Change, NotifyChange};
use crate::db::{read, write_tx};
use crate::schema::{agents, api_keys};
use crate::tenants::{ApiKeyRow, NewApiKey, conflict_as};
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError, new_id};

/// Which agents a page holds, and where it starts.
#[derive(Debug, Clone, Default)]
pub struct AgentPageQuery {
    /// The last agent of the previous page; the page starts after it.
    pub after: Option<AgentId>,
    /// Rows to return (the caller asks for one more than it shows, to know
    /// whether more follow).
    pub limit: i64,
    pub trust_level: Option<TrustLevel>,
    /// `Some(true)`: terminated agents only; `Some(false)`: all others.
    pub revoked: Option<bool>,
}

impl Store {
    /// Creates `new` and its own API key (`key_hash`) in one transaction:
    /// an agent is never registered without the key it was answered with.
    /// A taken slug is `Conflict("agent")`.
    pub async fn register_agent(
        &self,
        tenant: TenantId,
        new: NewAgent,
        key_hash: [u8; 32],
        now: OffsetDateTime,
    ) -> Result<(AgentRecord, ApiKeyRecord), StoreError> {
        let record = new_agent(tenant, AgentId::from_uuid(new_id()), new, now);
        let row = AgentRow::from(&record);
        let key = ApiKeyRow::new(
            DbUuid(tenant.as_uuid()),
            NewApiKey {
                role: None,
                agent_id: Some(record.id),
                key_hash,
                label: Some("registry".into()),
            },
            now,
        );
        let key = write_tx!(self, |conn| {
            diesel::insert_into(agents::table)
                .values(&row)
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "agent"))?;
            diesel::insert_into(api_keys::table)
                .values(&key)
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "API key"))?;
            Ok::<_, StoreError>(key)
        })?;
        Ok((record, key.try_into()?))
    }

    /// One page of the tenant's agents in id order (UUID v7: creation
    /// order). Keyset, not offset: an agent created between two reads lands
    /// after every existing one, so no agent that existed throughout is
    /// skipped or repeated.
    pub async fn agents_page(
        &self,
        tenant: TenantId,
        query: AgentPageQuery,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let terminated = LifecycleState::Terminated.as_str();
        let rows: Vec<AgentRow> = read!(self, |conn| {
            let mut select = agents::table
                .filter(agents::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .into_boxed();
            if let Some(after) = query.after {
                select = select.filter(agents::id.gt(DbUuid(after.as_uuid())));
            }
            if let Some(level) = query.trust_level {
                select = select.filter(agents::trust_level.eq(level.as_str()));
            }
            match query.revoked {
                Some(true) => select = select.filter(agents::lifecycle_state.eq(terminated)),
                Some(false) => select = select.filter(agents::lifecycle_state.ne(terminated)),
                None => {}
            }
            select
                .order(agents::id.asc())
                .limit(query.limit)
                .select(AgentRow::as_select())
                .load(conn)
                .await
        })?;
        rows.into_iter().map(AgentRecord::try_from).collect()
    }

    /// Replaces the agent's own API keys with one new key (`key_hash`) and
    /// moves its credential epoch on, so the old keys and every token issued
    /// before stop working from the next request. A terminated agent's keys
    /// are not rotated: `Refused`.
    pub async fn rotate_agent_key(
        &self,
        tenant: TenantId,
        id: AgentId,
        key_hash: [u8; 32],
        now: OffsetDateTime,
    ) -> Result<ApiKeyRecord, StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        let agent_id = DbUuid(id.as_uuid());
        let retired = write_tx!(self, |conn| {
            let target = agents::table
                .filter(agents::tenant_id.eq(tenant_id))
                .filter(agents::id.eq(agent_id));
            // The epoch bump is also the row lock: two rotations of one
            // agent cannot interleave.
            let locked = diesel::update(target)
                .set((
                    agents::credential_epoch.eq(agents::credential_epoch + 1),
                    agents::updated_at.eq(DbTime::new(now)),
                ))
                .execute(conn)
                .await?;
            if locked == 0 {
                return Err(StoreError::NotFound("agent"));
            }
            let state: String = target.select(agents::lifecycle_state).first(conn).await?;
            if state == LifecycleState::Terminated.as_str() {
                return Err(StoreError::Refused(
                    "the agent is revoked; its keys cannot be rotated",
                ));
            }
            let live = api_keys::table
                .filter(api_keys::tenant_id.eq(tenant_id))
                .filter(api_keys::agent_id.eq(agent_id))
                .filter(api_keys::revoked_at.is_null());
            let retired: Vec<(DbUuid, Option<String>)> = live
                .select((api_keys::id, api_keys::role))
                .load(conn)
                .await?;
            // A workspace's primary agent keeps administering it with its
            // new key.
            let role = retired
                .iter()
                .find_map(|(_, role)| role.as_deref())
                .map(str::parse::<agentry_domain::ApiKeyRole>)
                .transpose()
                .map_err(|error| StoreError::Corrupt(format!("api_keys row: {error}")))?;
            let key = ApiKeyRow::new(
                tenant_id,
                NewApiKey {
                    role,
                    agent_id: Some(id),
                    key_hash,
                    label: Some("registry rotation".into()),
                },
                now,
            );
            diesel::update(live)
                .set(api_keys::revoked_at.eq(DbTime::new(now)))
                .execute(conn)
                .await?;
            diesel::insert_into(api_keys::table)
                .values(&key)
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "API key"))?;
            for (old, _) in &retired {
                conn.notify_change(Change::ApiKey(old.0)).await?;
            }
            conn.notify_change(Change::Agent(id)).await?;
            Ok::<_, StoreError>((retired, key))
        })?;
        let (retired, key) = retired;
        for (old, _) in retired {
            self.publish(Change::ApiKey(old.0));
        }
        self.publish(Change::Agent(id));
        key.try_into()
    }
}
