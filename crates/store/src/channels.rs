//! Seed 002's channels beyond the one a workspace setup creates: Agent
//! United's `/api/v1/channels` and their members. Who may do what is the
//! caller's decision (`agentry_domain::WorkspaceRole`); the store keeps
//! names unique per tenant and members within the tenant.

use agentry_domain::TenantId;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::{read, write_one, write_tx};
use crate::instance::{ChannelRecord, UserRecord, UserRow};
use crate::schema::{channels, memberships, users};
use crate::tenants::conflict_as;
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError, new_id};

/// A member of a channel: the user and the role it holds there
/// (`owner`, `admin`, `member` or `observer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMember {
    pub user: UserRecord,
    pub role: String,
    pub joined_at: OffsetDateTime,
}

/// A channel's changes: `None` leaves a field, `Some(None)` clears the topic.
#[derive(Debug, Clone, Default)]
pub struct ChannelPatch {
    pub name: Option<String>,
    pub topic: Option<Option<String>>,
}

type ChannelRow = (DbUuid, String, Option<String>, DbTime);

impl Store {
    /// Creates a channel of `tenant`; `owner` (a user of the tenant) joins
    /// it as its owner. A name taken in the tenant is
    /// `StoreError::Conflict("channel")`.
    pub async fn create_channel(
        &self,
        tenant: TenantId,
        name: String,
        topic: Option<String>,
        owner: Option<Uuid>,
        now: OffsetDateTime,
    ) -> Result<ChannelRecord, StoreError> {
        let (tenant_id, id, created_at) = (DbUuid(tenant.as_uuid()), new_id(), DbTime::new(now));
        write_tx!(self, |conn| {
            diesel::insert_into(channels::table)
                .values((
                    channels::id.eq(DbUuid(id)),
                    channels::tenant_id.eq(tenant_id),
                    channels::name.eq(&name),
                    channels::topic.eq(&topic),
                    channels::created_at.eq(created_at),
                ))
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "channel"))?;
            if let Some(owner) = owner {
                diesel::insert_into(memberships::table)
                    .values((
                        memberships::channel_id.eq(DbUuid(id)),
                        memberships::user_id.eq(DbUuid(owner)),
                        memberships::tenant_id.eq(tenant_id),
                        memberships::role.eq("owner"),
                        memberships::created_at.eq(created_at),
                    ))
                    .execute(conn)
                    .await?;
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(ChannelRecord {
            id,
            tenant_id: tenant,
            name: name.clone(),
            topic: topic.clone(),
            members: owner.into_iter().collect(),
            created_at: created_at.get(),
        })
    }

    /// The channels of `tenant`, oldest first: all of them, or those
    /// `member` belongs to.
    pub async fn channels(
        &self,
        tenant: TenantId,
        member: Option<Uuid>,
    ) -> Result<Vec<ChannelRecord>, StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        let (rows, members): (Vec<ChannelRow>, Vec<(DbUuid, DbUuid)>) = read!(self, |conn| {
            let mut query = channels::table
                .filter(channels::tenant_id.eq(tenant_id))
                .select((
                    channels::id,
                    channels::name,
                    channels::topic,
                    channels::created_at,
                ))
                .order(channels::id.asc())
                .into_boxed();
            if let Some(member) = member {
                query = query.filter(
                    channels::id.eq_any(
                        memberships::table
                            .filter(memberships::user_id.eq(DbUuid(member)))
                            .select(memberships::channel_id),
                    ),
                );
            }
            let rows: Vec<ChannelRow> = query.load(conn).await?;
            let members: Vec<(DbUuid, DbUuid)> = memberships::table
                .filter(memberships::tenant_id.eq(tenant_id))
                .order(memberships::created_at.asc())
                .select((memberships::channel_id, memberships::user_id))
                .load(conn)
                .await?;
            Ok::<_, StoreError>((rows, members))
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, name, topic, created_at)| ChannelRecord {
                id: id.0,
                tenant_id: tenant,
                name,
                topic,
                members: members
                    .iter()
                    .filter(|(channel, _)| *channel == id)
                    .map(|(_, user)| user.0)
                    .collect(),
                created_at: created_at.get(),
            })
            .collect())
    }

    /// Renames a channel or changes its topic.
    pub async fn update_channel(
        &self,
        tenant: TenantId,
        id: Uuid,
        patch: ChannelPatch,
    ) -> Result<ChannelRecord, StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        write_tx!(self, |conn| {
            let target = channels::table
                .filter(channels::tenant_id.eq(tenant_id))
                .filter(channels::id.eq(DbUuid(id)));
            let exists: i64 = target.count().get_result(conn).await?;
            if exists == 0 {
                return Err(StoreError::NotFound("channel"));
            }
            if let Some(name) = &patch.name {
                diesel::update(target)
                    .set(channels::name.eq(name))
                    .execute(conn)
                    .await
                    .map_err(|error| conflict_as(error, "channel"))?;
            }
            if let Some(topic) = &patch.topic {
                diesel::update(target)
                    .set(channels::topic.eq(topic))
                    .execute(conn)
                    .await?;
            }
            Ok::<_, StoreError>(())
        })?;
        self.channel(tenant, id)
            .await?
            .ok_or(StoreError::NotFound("channel"))
    }

    /// Deletes a channel and its memberships.
    pub async fn delete_channel(&self, tenant: TenantId, id: Uuid) -> Result<(), StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        write_tx!(self, |conn| {
            diesel::delete(
                memberships::table
                    .filter(memberships::tenant_id.eq(tenant_id))
                    .filter(memberships::channel_id.eq(DbUuid(id))),
            )
            .execute(conn)
            .await?;
            let deleted = diesel::delete(
                channels::table
                    .filter(channels::tenant_id.eq(tenant_id))
                    .filter(channels::id.eq(DbUuid(id))),
            )
            .execute(conn)
            .await?;
            if deleted == 0 {
                return Err(StoreError::NotFound("channel"));
            }
            Ok::<_, StoreError>(())
        })
    }

    /// The members of a channel of `tenant`, in the order they joined.
    pub async fn channel_members(
        &self,
        tenant: TenantId,
        channel: Uuid,
    ) -> Result<Vec<ChannelMember>, StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        let rows: Vec<(UserRow, String, DbTime)> = read!(self, |conn| {
            memberships::table
                .inner_join(users::table)
                .filter(memberships::tenant_id.eq(tenant_id))
                .filter(memberships::channel_id.eq(DbUuid(channel)))
                .order(memberships::created_at.asc())
                .select((
                    UserRow::as_select(),
                    memberships::role,
                    memberships::created_at,
                ))
                .load(conn)
                .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(user, role, joined_at)| ChannelMember {
                user: UserRecord::from(user),
                role,
                joined_at: joined_at.get(),
            })
            .collect())
    }

    /// Adds a user of `tenant` to one of its channels. An unknown channel
    /// or user is `NotFound`; a user already there is
    /// `Conflict("member")`.
    pub async fn add_channel_member(
        &self,
        tenant: TenantId,
        channel: Uuid,
        user: Uuid,
        role: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (tenant_id, role) = (DbUuid(tenant.as_uuid()), role.to_owned());
        write_tx!(self, |conn| {
            let channels_found: i64 = channels::table
                .filter(channels::tenant_id.eq(tenant_id))
                .filter(channels::id.eq(DbUuid(channel)))
                .count()
                .get_result(conn)
                .await?;
            if channels_found == 0 {
                return Err(StoreError::NotFound("channel"));
            }
            let users_found: i64 = users::table
                .filter(users::tenant_id.eq(tenant_id))
                .filter(users::id.eq(DbUuid(user)))
                .count()
                .get_result(conn)
                .await?;
            if users_found == 0 {
                return Err(StoreError::NotFound("user"));
            }
            diesel::insert_into(memberships::table)
                .values((
                    memberships::channel_id.eq(DbUuid(channel)),
                    memberships::user_id.eq(DbUuid(user)),
                    memberships::tenant_id.eq(tenant_id),
                    memberships::role.eq(&role),
                    memberships::created_at.eq(DbTime::new(now)),
                ))
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "member"))?;
            Ok::<_, StoreError>(())
        })
    }

    /// Removes a member from a channel of `tenant`.
    pub async fn remove_channel_member(
        &self,
        tenant: TenantId,
        channel: Uuid,
        user: Uuid,
    ) -> Result<(), StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        let removed = write_one!(self, |conn| {
            diesel::delete(
                memberships::table
                    .filter(memberships::tenant_id.eq(tenant_id))
                    .filter(memberships::channel_id.eq(DbUuid(channel)))
                    .filter(memberships::user_id.eq(DbUuid(user))),
            )
            .execute(conn)
            .await
        })?;
        if removed == 0 {
            Err(StoreError::NotFound("member"))
        } else {
            Ok(())
        }
    }
}
