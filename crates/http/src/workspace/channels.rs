//! Seed 002's channels as Agent United serves them, `/api/v1/channels`,
//! for a workspace session or a workspace agent's credential. The
//! workspace admin manages; members and observers read the channels they
//! belong to (`agentry_domain::WorkspaceRole`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_domain::WorkspaceAction;
use agentry_store::{ChannelPatch, ChannelRecord, NewAuditEvent, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::spec::channel_name_ok;
use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::RequestTime;
use crate::guard::WorkspacePrincipal;
use crate::profiles::nullable;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{TimestampSchema, timestamp};

/// A channel.
#[derive(Debug, Clone, Serialize, ToSchema)]
struct Channel {
    id: Uuid,
    /// `id` again, as the bootstrap's answer names it.
    channel_id: Uuid,
    /// Always `channel` (Agent United tells channels from direct messages,
    /// which are not part of the seeds).
    #[serde(rename = "type")]
    #[schema(example = "channel")]
    kind: &'static str,
    name: String,
    topic: Option<String>,
    /// User ids, in the order they joined.
    members: Vec<Uuid>,
    member_count: usize,
    #[schema(value_type = TimestampSchema)]
    created_at: String,
}

const CHANNEL_KIND: &str = "channel";

impl From<ChannelRecord> for Channel {
    fn from(channel: ChannelRecord) -> Self {
        Channel {
            id: channel.id,
            channel_id: channel.id,
            kind: CHANNEL_KIND,
            name: channel.name,
            topic: channel.topic,
            member_count: channel.members.len(),
            members: channel.members,
            created_at: timestamp(channel.created_at),
        }
    }
}

/// A member as a channel's own answer lists it.
#[derive(Debug, Serialize, ToSchema)]
struct ChannelMemberSummary {
    /// The user's id.
    id: Uuid,
    email: String,
    display_name: String,
    /// The member's role in this channel.
    role: String,
}

/// A channel as Agent United's clients read it under `channel`: its
/// members as objects.
#[derive(Debug, Serialize, ToSchema)]
struct ChannelDetail {
    id: Uuid,
    /// `id` again, as the bootstrap's answer names it.
    channel_id: Uuid,
    /// Always `channel`.
    #[serde(rename = "type")]
    #[schema(example = "channel")]
    kind: &'static str,
    name: String,
    topic: Option<String>,
    /// In the order they joined.
    members: Vec<ChannelMemberSummary>,
    member_count: usize,
    #[schema(value_type = TimestampSchema)]
    created_at: String,
}

/// One channel: Agent United's clients read it under `channel`; the same
/// fields are repeated at the top level (there `members` are user ids),
/// as this route answered before.
#[derive(Debug, Serialize, ToSchema)]
struct OneChannel {
    channel: ChannelDetail,
    #[serde(flatten)]
    #[schema(inline)]
    fields: Channel,
}

/// The answer for `channel`, its members read with it.
async fn one_channel(
    state: &AppState,
    status: StatusCode,
    channel: ChannelRecord,
) -> Result<HttpResponse, ApiError> {
    let (tenant, id) = (channel.tenant_id, channel.id);
    let members = state
        .store
        .detached(async move |store| store.channel_members(tenant, id).await)
        .await?;
    let fields = Channel::from(channel);
    let channel = ChannelDetail {
        id: fields.id,
        channel_id: fields.id,
        kind: CHANNEL_KIND,
        name: fields.name.clone(),
        topic: fields.topic.clone(),
        member_count: members.len(),
        members: members
            .into_iter()
            .map(|member| ChannelMemberSummary {
                id: member.user.id,
                email: member.user.email,
                display_name: member.user.display_name,
                role: member.role,
            })
            .collect(),
        created_at: fields.created_at.clone(),
    };
    Ok(HttpResponse::build(status).json(OneChannel { channel, fields }))
}

#[derive(Debug, Serialize, ToSchema)]
struct ChannelList {
    channels: Vec<Channel>,
}

fn not_found() -> ApiError {
    ApiError::not_found("channel")
}

pub(super) fn parse_id(text: &str, what: &str) -> Result<Uuid, ApiError> {
    text.parse().map_err(|_| ApiError::not_found(what))
}

/// A channel of the caller's workspace that the caller may see: the admin
/// sees every channel, anyone else those it belongs to. One it may not see
/// reads exactly as one that does not exist.
pub(super) async fn visible_channel(
    state: &AppState,
    caller: &WorkspacePrincipal,
    path: &str,
) -> Result<ChannelRecord, ApiError> {
    let (tenant, id) = (caller.tenant_id, parse_id(path, "channel")?);
    let channel = state
        .store
        .detached(async move |store| store.channel(tenant, id).await)
        .await?
        .ok_or_else(not_found)?;
    let belongs = caller
        .user_id
        .is_some_and(|user| channel.members.contains(&user));
    if caller
        .role
        .permits(WorkspaceAction::ReadChannel { belongs })
    {
        Ok(channel)
    } else {
        Err(not_found())
    }
}

pub(super) fn audit(state: &AppState, caller: &WorkspacePrincipal, action: &str, channel: Uuid) {
    state.audit(
        caller.tenant_id,
        NewAuditEvent {
            actor: caller.actor(),
            action: action.into(),
            target: Some(format!("channel:{channel}")),
            outcome: "success".into(),
            detail: json!({}),
        },
    );
}

pub(super) fn channel_store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Conflict(_) => ApiError::new(
            StatusCode::CONFLICT,
            "channel_exists",
            "a channel of this name exists in the workspace",
        ),
        StoreError::NotFound(_) => not_found(),
        other => other.into(),
    }
}

const NAME_RULE: &str = "must be 1 to 100 letters, digits, spaces and hyphens";

#[derive(Deserialize, ToSchema)]
pub(super) struct NewChannel {
    #[schema(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9 -]+$")]
    name: String,
    /// Agent United's clients may call it `description`.
    #[serde(alias = "description")]
    #[schema(max_length = 500)]
    topic: Option<String>,
}

/// Creates a channel; the caller's account joins it as its owner.
#[utoipa::path(
    post,
    operation_id = "create_channel",
    path = "/api/v1/channels",
    tag = "instance",
    security(("session_jwt" = []), ("agent_jwt" = []), ("api_key" = [])),
    request_body = NewChannel,
    responses(
        (status = 201, description = "The channel.", body = OneChannel),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` (a \
            name or topic out of bounds).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the calling agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`workspace_credentials_required` (a tenant key, or an agent outside \
            the workspace), `insufficient_role` (only the workspace admin manages channels).",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`channel_exists`: the name is taken in the workspace.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn create_channel(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    body: Deferred<web::Json<NewChannel>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(WorkspaceAction::ManageChannels)?;
    let body = body.read().await?.into_inner();
    let mut problems = Problems::default();
    if !channel_name_ok(&body.name) {
        problems.push(format!("name: {NAME_RULE}"));
    }
    problems.length("topic", body.topic.as_deref(), 0, 500);
    problems.finish()?;
    let (tenant, owner) = (caller.tenant_id, caller.user_id);
    let channel = state
        .store
        .detached(async move |store| {
            store
                .create_channel(tenant, body.name, body.topic, owner, now)
                .await
        })
        .await
        .map_err(channel_store_error)?;
    audit(&state, &caller, "workspace.channel.create", channel.id);
    one_channel(&state, StatusCode::CREATED, channel).await
}

/// The channels the caller may see: every channel for the workspace admin,
/// the ones it belongs to for anyone else. Oldest first.
#[utoipa::path(
    get,
    operation_id = "list_channels",
    path = "/api/v1/channels",
    tag = "instance",
    security(("session_jwt" = []), ("agent_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The channels (an empty list when there are none).", body = ChannelList),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the calling agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`workspace_credentials_required`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn list_channels(
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant_id;
    let channels = if caller.role.sees_every_channel() {
        state
            .store
            .detached(async move |store| store.channels(tenant, None).await)
            .await?
    } else if let Some(user) = caller.user_id {
        state
            .store
            .detached(async move |store| store.channels(tenant, Some(user)).await)
            .await?
    } else {
        Vec::new()
    };
    Ok(HttpResponse::Ok().json(ChannelList {
        channels: channels.into_iter().map(Channel::from).collect(),
    }))
}

/// A channel the caller may see.
#[utoipa::path(
    get,
    operation_id = "read_channel",
    path = "/api/v1/channels/{channel_id}",
    tag = "instance",
    security(("session_jwt" = []), ("agent_jwt" = []), ("api_key" = [])),
    params(("channel_id" = Uuid, Path, description = "The channel's id.")),
    responses(
        (status = 200, description = "The channel.", body = OneChannel),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`: every \
            credential that admits neither a session nor an agent.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the calling agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`agent_terminated`, `agent_expired`, `agent_not_activated`, \
            `workspace_credentials_required` (a tenant key, or an agent outside the workspace).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such channel, or the caller may not see it.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the calling agent's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn read_channel(
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let channel = visible_channel(&state, &caller, &path).await?;
    one_channel(&state, StatusCode::OK, channel).await
}

#[derive(Deserialize, ToSchema)]
pub(super) struct ChannelUpdate {
    #[schema(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9 -]+$")]
    name: Option<String>,
    /// `null` clears it.
    #[serde(default, alias = "description", deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 500)]
    topic: Option<Option<String>>,
}

/// Renames a channel or changes its topic.
#[utoipa::path(
    patch,
    operation_id = "update_channel",
    path = "/api/v1/channels/{channel_id}",
    tag = "instance",
    security(("session_jwt" = []), ("agent_jwt" = []), ("api_key" = [])),
    params(("channel_id" = Uuid, Path, description = "The channel's id.")),
    request_body = ChannelUpdate,
    responses(
        (status = 200, description = "The channel as it now is.", body = OneChannel),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the calling agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`workspace_credentials_required`, `insufficient_role` (only the \
            workspace admin manages channels).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such channel, or the caller may not see it.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`channel_exists`: the new name is taken in the workspace.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn update_channel(
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<String>,
    body: Deferred<web::Json<ChannelUpdate>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.read().await?.into_inner();
    let mut problems = Problems::default();
    if body
        .name
        .as_deref()
        .is_some_and(|name| !channel_name_ok(name))
    {
        problems.push(format!("name: {NAME_RULE}"));
    }
    problems.length(
        "topic",
        body.topic.as_ref().and_then(Option::as_deref),
        0,
        500,
    );
    problems.finish()?;
    let channel = visible_channel(&state, &caller, &path).await?;
    caller.require(WorkspaceAction::ManageChannels)?;
    let (tenant, id) = (caller.tenant_id, channel.id);
    let patch = ChannelPatch {
        name: body.name,
        topic: body.topic,
    };
    let updated = state
        .store
        .detached(async move |store| store.update_channel(tenant, id, patch).await)
        .await
        .map_err(channel_store_error)?;
    audit(&state, &caller, "workspace.channel.update", id);
    one_channel(&state, StatusCode::OK, updated).await
}

/// Deletes a channel and its memberships.
#[utoipa::path(
    delete,
    operation_id = "delete_channel",
    path = "/api/v1/channels/{channel_id}",
    tag = "instance",
    security(("session_jwt" = []), ("agent_jwt" = []), ("api_key" = [])),
    params(("channel_id" = Uuid, Path, description = "The channel's id.")),
    responses(
        (status = 204, description = "The channel is gone."),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the calling agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`workspace_credentials_required`, `insufficient_role`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such channel, or the caller may not see it.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn delete_channel(
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let channel = visible_channel(&state, &caller, &path).await?;
    caller.require(WorkspaceAction::ManageChannels)?;
    let (tenant, id) = (caller.tenant_id, channel.id);
    state
        .store
        .detached(async move |store| store.delete_channel(tenant, id).await)
        .await
        .map_err(channel_store_error)?;
    audit(&state, &caller, "workspace.channel.delete", id);
    Ok(HttpResponse::NoContent().finish())
}
