//! The members of seed 002's channels, under
//! `/api/v1/channels/{channel_id}/members`: list, add, remove.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_domain::{CHANNEL_ROLES, WorkspaceAction};
use agentry_store::{ChannelMember, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::channels::{audit, channel_store_error, parse_id, visible_channel};
use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::RequestTime;
use crate::guard::WorkspacePrincipal;
use crate::state::AppState;
use crate::wire::{TimestampSchema, timestamp};

#[derive(Debug, Serialize, ToSchema)]
struct Member {
    /// The user's id (`user_id` again).
    id: Uuid,
    user_id: Uuid,
    email: String,
    display_name: String,
    /// `human`, or `agent` for the primary agent's account.
    kind: String,
    /// The member's role in this channel: `owner`, `admin`, `member` or
    /// `observer`.
    role: String,
    #[schema(value_type = TimestampSchema)]
    joined_at: String,
}

impl From<ChannelMember> for Member {
    fn from(member: ChannelMember) -> Self {
        Member {
            id: member.user.id,
            user_id: member.user.id,
            email: member.user.email,
            display_name: member.user.display_name,
            kind: member.user.kind,
            role: member.role,
            joined_at: timestamp(member.joined_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct MemberList {
    members: Vec<Member>,
}

#[derive(Debug, Serialize, ToSchema)]
struct MemberAdded {
    /// `Member added successfully`.
    message: &'static str,
    member: Member,
}

/// The members of a channel the caller may see.
#[utoipa::path(
    get,
    operation_id = "list_channel_members",
    path = "/api/v1/channels/{channel_id}/members",
    tag = "instance",
    security(("session_jwt" = []), ("agent_jwt" = []), ("api_key" = [])),
    params(("channel_id" = Uuid, Path, description = "The channel's id.")),
    responses(
        (status = 200, description = "The members, in the order they joined.", body = MemberList),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the calling agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`workspace_credentials_required`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such channel, or the caller may not see it.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn list_members(
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let channel = visible_channel(&state, &caller, &path).await?;
    let (tenant, id) = (caller.tenant_id, channel.id);
    let members = state
        .store
        .detached(async move |store| store.channel_members(tenant, id).await)
        .await?;
    Ok(HttpResponse::Ok().json(MemberList {
        members: members.into_iter().map(Member::from).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
pub(super) struct NewMember {
    /// A user of the workspace.
    user_id: Uuid,
    /// `owner`, `admin`, `member` (the default) or `observer`.
    #[schema(value_type = Option<String>)]
    role: Option<String>,
}

/// Adds a user of the workspace to a channel.
#[utoipa::path(
    post,
    operation_id = "add_channel_member",
    path = "/api/v1/channels/{channel_id}/members",
    tag = "instance",
    security(("session_jwt" = []), ("agent_jwt" = []), ("api_key" = [])),
    params(("channel_id" = Uuid, Path, description = "The channel's id.")),
    request_body = NewMember,
    responses(
        (status = 201, description = "`Member added successfully`, with the member.", body = MemberAdded),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` (a \
            role that is not a channel role).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the calling agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`workspace_credentials_required`, `insufficient_role`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such channel (or the caller may not see it), or no \
            such user in the workspace.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`already_member`: the user is a member already.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn add_member(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<String>,
    body: Deferred<web::Json<NewMember>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.read().await?.into_inner();
    let role = body.role.unwrap_or_else(|| "member".into());
    if !CHANNEL_ROLES.contains(&role.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("role: must be one of {}", CHANNEL_ROLES.join(", ")),
        ));
    }
    let channel = visible_channel(&state, &caller, &path).await?;
    caller.require(WorkspaceAction::ManageChannels)?;
    let (tenant, id, user) = (caller.tenant_id, channel.id, body.user_id);
    let role_given = role.clone();
    state
        .store
        .detached(async move |store| {
            store
                .add_channel_member(tenant, id, user, &role_given, now)
                .await
        })
        .await
        .map_err(|error| match error {
            StoreError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                "already_member",
                "the user is a member of this channel already",
            ),
            StoreError::NotFound("user") => ApiError::not_found("user"),
            other => channel_store_error(other),
        })?;
    let members = state
        .store
        .detached(async move |store| store.channel_members(tenant, id).await)
        .await?;
    let member = members
        .into_iter()
        .find(|member| member.user.id == user)
        .ok_or_else(|| ApiError::not_found("user"))?;
    audit(&state, &caller, "workspace.channel.member.add", id);
    Ok(HttpResponse::Created().json(MemberAdded {
        message: "Member added successfully",
        member: Member::from(member),
    }))
}

/// Removes a member from a channel.
#[utoipa::path(
    delete,
    operation_id = "remove_channel_member",
    path = "/api/v1/channels/{channel_id}/members/{user_id}",
    tag = "instance",
    security(("session_jwt" = []), ("agent_jwt" = []), ("api_key" = [])),
    params(
        ("channel_id" = Uuid, Path, description = "The channel's id."),
        ("user_id" = Uuid, Path, description = "The member's user id."),
    ),
    responses(
        (status = 204, description = "The user is no longer a member."),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the calling agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`workspace_credentials_required`, `insufficient_role`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such channel (or the caller may not see it), or the \
            user is not a member.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn remove_member(
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (channel_path, user_path) = path.into_inner();
    let channel = visible_channel(&state, &caller, &channel_path).await?;
    caller.require(WorkspaceAction::ManageChannels)?;
    let user = parse_id(&user_path, "member")?;
    let (tenant, id) = (caller.tenant_id, channel.id);
    state
        .store
        .detached(async move |store| store.remove_channel_member(tenant, id, user).await)
        .await
        .map_err(|error| match error {
            StoreError::NotFound(_) => ApiError::not_found("member"),
            other => other.into(),
        })?;
    audit(&state, &caller, "workspace.channel.member.remove", id);
    Ok(HttpResponse::NoContent().finish())
}
