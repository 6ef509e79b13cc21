//! Seed 002's accounts after the setup: the first user, logins and
//! sessions, invites, and the channels they join.

use agentry_domain::{AgentId, Email, TenantId};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;
use crate::db::{read, write_tx};
use crate::schema::{channels, instance, memberships, one_time_tokens, tenants, users};
use crate::tenants::TenantRow;
use crate::tokens::{TokenError, TokenPurpose, TokenRow};
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError, new_id};

impl Store {
    /// Agent United's `POST /api/v1/auth/register` on a fresh instance: the
    /// first account, a human administering a workspace of its own, under
    /// the rule of the workspace setup (a conflict once any user exists,
    /// also for the losers of concurrent first calls).
    pub async fn register_first_user(
        &self,
        email: &Email,
        display_name: &str,
        password_hash: String,
        now: OffsetDateTime,
    ) -> Result<UserRecord, StoreError> {
        let created_at = DbTime::new(now);
        let (email, display_name) = (email.as_str().to_owned(), display_name.to_owned());
        write_tx!(self, |conn| {
            let existing_users: i64 = users::table.count().get_result(conn).await?;
            if existing_users > 0 {
                return Err(StoreError::Conflict("instance"));
            }
            let (_, tenant_id) = open_workspace!(conn, now, created_at);
            let user = UserRow {
                id: DbUuid(new_id()),
                tenant_id,
                email: email.clone(),
                display_name: display_name.clone(),
                kind: "human".into(),
                role: "admin".into(),
                agent_id: None,
                password_hash: Some(password_hash.clone()),
                created_at,
                session_epoch: 0,
            };
            diesel::insert_into(users::table)
                .values(&user)
                .execute(conn)
                .await
                .map_err(|error| crate::tenants::conflict_as(error, "user"))?;
            Ok::<_, StoreError>(UserRecord::from(user))
        })
    }

    /// A user of `tenant` by e-mail (canonical, lowercase).
    pub async fn user_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> = read!(self, |conn| {
            users::table
                .filter(users::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(users::email.eq(email.as_str()))
                .select(UserRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(UserRecord::from))
    }

    /// The user account of an agent (the primary agent of seed 002 has one).
    pub async fn user_of_agent(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> = read!(self, |conn| {
            users::table
                .filter(users::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(users::agent_id.eq(DbUuid(agent.as_uuid())))
                .select(UserRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(UserRecord::from))
    }

    /// A user of `tenant` by id.
    pub async fn user(&self, tenant: TenantId, id: Uuid) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> = read!(self, |conn| {
            users::table
                .filter(users::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(users::id.eq(DbUuid(id)))
                .select(UserRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(UserRecord::from))
    }

    /// Ends every session of a user minted so far: moves its session epoch
    /// on, and sets `password_hash` when given (a password change), in one
    /// write. Returns the user as it now is.
    pub async fn end_sessions(
        &self,
        tenant: TenantId,
        id: Uuid,
        password_hash: Option<String>,
    ) -> Result<UserRecord, StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        write_tx!(self, |conn| {
            let target = users::table
                .filter(users::tenant_id.eq(tenant_id))
                .filter(users::id.eq(DbUuid(id)));
            let changed = match password_hash.clone() {
                Some(hash) => {
                    diesel::update(target)
                        .set((
                            users::session_epoch.eq(users::session_epoch + 1),
                            users::password_hash.eq(Some(hash)),
                        ))
                        .execute(conn)
                        .await?
                }
                None => {
                    diesel::update(target)
                        .set(users::session_epoch.eq(users::session_epoch + 1))
                        .execute(conn)
                        .await?
                }
            };
            if changed == 0 {
                return Err(StoreError::NotFound("user"));
            }
            let user: UserRow = target.select(UserRow::as_select()).first(conn).await?;
            Ok::<_, StoreError>(UserRecord::from(user))
        })
    }

    /// The user an invite token was sent to, if the token can still be
    /// spent: read before any password is hashed, so an unknown, used or
    /// expired token costs no hashing. `accept_invite` checks again.
    pub async fn invited_user(
        &self,
        token_hash: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<UserRecord, StoreError> {
        let hash = *token_hash;
        read!(self, |conn| {
            let token: Option<TokenRow> = one_time_tokens::table
                .filter(one_time_tokens::token_hash.eq(hash.as_slice()))
                .filter(one_time_tokens::purpose.eq(TokenPurpose::Invite.as_str()))
                .select(TokenRow::as_select())
                .first(conn)
                .await
                .optional()?;
            let token = token.ok_or(StoreError::Token(TokenError::Unknown))?;
            let user_id = token.subject_id;
            crate::tokens::TokenRecord::from(token).usable(now)?;
            let user: UserRow = users::table
                .find(user_id)
                .select(UserRow::as_select())
                .first(conn)
                .await?;
            Ok::<_, StoreError>(UserRecord::from(user))
        })
    }

    /// An invite and the user it was sent to, whatever its state (for the
    /// invite's own page); `None` for a token never issued.
    pub async fn invite(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<(UserRecord, crate::tokens::TokenRecord)>, StoreError> {
        let hash = *token_hash;
        read!(self, |conn| {
            let token: Option<TokenRow> = one_time_tokens::table
                .filter(one_time_tokens::token_hash.eq(hash.as_slice()))
                .filter(one_time_tokens::purpose.eq(TokenPurpose::Invite.as_str()))
                .select(TokenRow::as_select())
                .first(conn)
                .await
                .optional()?;
            let Some(token) = token else {
                return Ok(None);
            };
            let user: UserRow = users::table
                .find(token.subject_id)
                .select(UserRow::as_select())
                .first(conn)
                .await?;
            Ok::<_, StoreError>(Some((
                UserRecord::from(user),
                crate::tokens::TokenRecord::from(token),
            )))
        })
    }

    /// Accepts an invite: in one transaction, consumes the token (unused,
    /// unexpired) and sets the invited user's password, and their display
    /// name when `display_name` is given. A refused token changes nothing.
    pub async fn accept_invite(
        &self,
        token_hash: &[u8; 32],
        password_hash: String,
        display_name: Option<String>,
        now: OffsetDateTime,
    ) -> Result<UserRecord, StoreError> {
        let db_now = DbTime::new(now);
        let hash = *token_hash;
        let accepted = write_tx!(self, |conn| {
            let token: Option<TokenRow> = one_time_tokens::table
                .filter(one_time_tokens::token_hash.eq(hash.as_slice()))
                .filter(one_time_tokens::purpose.eq(TokenPurpose::Invite.as_str()))
                .select(TokenRow::as_select())
                .first(conn)
                .await
                .optional()?;
            let token = token.ok_or(StoreError::Token(TokenError::Unknown))?;
            let consumed = diesel::update(
                one_time_tokens::table
                    .find(token.id)
                    .filter(crate::tokens::admits_consume(db_now)),
            )
            .set(one_time_tokens::consumed_at.eq(db_now))
            .execute(conn)
            .await?;
            if consumed == 0 {
                let record = crate::tokens::TokenRecord::from(token);
                record.usable(now)?;
                return Err(StoreError::Token(TokenError::Consumed));
            }
            let user_id = token.subject_id;
            diesel::update(users::table.find(user_id))
                .set(users::password_hash.eq(Some(password_hash.clone())))
                .execute(conn)
                .await?;
            if let Some(display_name) = &display_name {
                diesel::update(users::table.find(user_id))
                    .set(users::display_name.eq(display_name))
                    .execute(conn)
                    .await?;
            }
            let user: UserRow = users::table
                .find(user_id)
                .select(UserRow::as_select())
                .first(conn)
                .await?;
            Ok::<_, StoreError>(UserRecord::from(user))
        })?;
        Ok(accepted)
    }

    /// A channel of `tenant` with its members.
    pub async fn channel(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        read!(self, |conn| {
            let row: Option<(DbUuid, String, Option<String>, DbTime)> = channels::table
                .filter(channels::tenant_id.eq(tenant_id))
                .filter(channels::id.eq(DbUuid(id)))
                .select((
                    channels::id,
                    channels::name,
                    channels::topic,
                    channels::created_at,
                ))
                .first(conn)
                .await
                .optional()?;
            let Some((channel_id, name, topic, created_at)) = row else {
                return Ok(None);
            };
            let members: Vec<DbUuid> = memberships::table
                .filter(memberships::channel_id.eq(channel_id))
                .order(memberships::created_at.asc())
                .select(memberships::user_id)
                .load(conn)
                .await?;
            Ok::<_, StoreError>(Some(ChannelRecord {
                id: channel_id.0,
                tenant_id: tenant,
                name,
                topic,
                members: members.into_iter().map(|member| member.0).collect(),
                created_at: created_at.get(),
            }))
        })
    }
}
