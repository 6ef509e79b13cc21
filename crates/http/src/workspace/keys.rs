//! The keys of the workspace's agents, under
//! `/api/v1/agents/{agent_id}/keys`: issue, list (never a secret), delete.

use actix_web::{HttpResponse, web};
use agentry_auth::{ApiKey, ApiKeyKind};
use agentry_domain::WorkspaceAction;
use agentry_store::{AgentRecord, ApiKeyRecord};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use uuid::Uuid;

use super::agents::{audit, workspace_agent};
use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::RequestTime;
use crate::guard::WorkspacePrincipal;
use crate::redact::debug_redacting;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{TimestampSchema, timestamp};

#[derive(Deserialize, ToSchema)]
pub(super) struct NewKey {
    /// What the key is for.
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    /// RFC 3339; in the future. Absent: the key does not expire.
    #[schema(value_type = Option<TimestampSchema>)]
    expires_at: Option<String>,
}

/// A key as listed: never its secret.
#[derive(Serialize, ToSchema)]
struct KeySummary {
    id: Uuid,
    /// The agent that holds the key (`agent_...`).
    agent_id: String,
    name: String,
    /// The key's first 16 characters (its kind, `agy_agent_`, and six of
    /// the secret) and `...`, to tell keys apart.
    key_prefix: String,
    #[schema(value_type = Option<TimestampSchema>)]
    expires_at: Option<String>,
    #[schema(value_type = Option<TimestampSchema>)]
    last_used_at: Option<String>,
    #[schema(value_type = TimestampSchema)]
    created_at: String,
}

#[derive(Serialize, ToSchema)]
struct CreatedKey {
    id: Uuid,
    /// The agent that holds the key (`agent_...`).
    agent_id: String,
    name: String,
    key_prefix: String,
    /// The key itself (`agy_agent_...`), shown only now.
    plaintext_key: String,
    #[schema(value_type = Option<TimestampSchema>)]
    expires_at: Option<String>,
    #[schema(value_type = TimestampSchema)]
    created_at: String,
}

debug_redacting!(CreatedKey { id, agent_id, name, key_prefix, expires_at, created_at; secret: plaintext_key });

#[derive(Serialize, ToSchema)]
struct KeyList {
    keys: Vec<KeySummary>,
}

/// The prefix a key's listing shows, stored in the label's place: six
/// characters of the secret past its kind, too few to help a guesser (the
/// hash is all that identifies a key). Keys made before showed 10
/// characters, the kind alone; they keep their stored prefix.
fn key_prefix(key: &str) -> String {
    format!("{}...", key.chars().take(16).collect::<String>())
}

/// The label a workspace key is stored with: its name and its prefix.
fn key_label(name: &str, prefix: &str) -> String {
    format!("{prefix} {name}")
}

fn key_summary(agent: &AgentRecord, record: &ApiKeyRecord) -> KeySummary {
    let label = record.label.clone().unwrap_or_default();
    let (key_prefix, name) = match label.split_once(' ') {
        Some((prefix, name)) if prefix.ends_with("...") => (prefix.to_owned(), name.to_owned()),
        _ => ("agy_agent_...".to_owned(), label),
    };
    KeySummary {
        id: record.id,
        agent_id: agent.id.to_type_id(),
        name,
        key_prefix,
        expires_at: record.expires_at.map(timestamp),
        last_used_at: record.last_used_at.map(timestamp),
        created_at: timestamp(record.created_at),
    }
}

/// Issues another key for an agent of the workspace.
#[utoipa::path(
    post,
    operation_id = "create_workspace_agent_key",
    path = "/api/v1/agents/{agent_id}/keys",
    tag = "instance",
    security(("session_jwt" = []), ("agent_jwt" = []), ("api_key" = [])),
    params(("agent_id" = String, Path, description = "The agent's id (`agent_...`, or its UUID).")),
    request_body = NewKey,
    responses(
        (status = 201, description = "The key, shown only now.", body = CreatedKey),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` (a \
            name out of bounds, an `expires_at` that is not RFC 3339 or not in the future).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the calling agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`workspace_credentials_required`, `insufficient_role` (only the \
            workspace admin manages keys).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such agent in the workspace.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn create_key(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<String>,
    body: Deferred<web::Json<NewKey>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(WorkspaceAction::ManageAgents)?;
    let body = body.read().await?.into_inner();
    let created_at = now;
    let mut problems = Problems::default();
    problems.length("name", Some(&body.name), 1, 255);
    let expires_at =
        body.expires_at
            .as_deref()
            .and_then(|text| match OffsetDateTime::parse(text, &Rfc3339) {
                Ok(at) if at > created_at => Some(at),
                Ok(_) => {
                    problems.push("expires_at: must be in the future".into());
                    None
                }
                Err(_) => {
                    problems.push("expires_at: must be an RFC 3339 timestamp".into());
                    None
                }
            });
    problems.finish()?;
    let agent = workspace_agent(&state, &caller, &path).await?;
    let key = ApiKey::mint(ApiKeyKind::Agent);
    let prefix = key_prefix(key.expose());
    let (tenant, id, hash, label) = (
        caller.tenant_id,
        agent.id,
        key.hash().0,
        key_label(&body.name, &prefix),
    );
    let record = state
        .store
        .detached(async move |store| {
            store
                .insert_agent_key(tenant, id, hash, label, expires_at, created_at)
                .await
        })
        .await?;
    audit(
        &state,
        &caller,
        "workspace.key.create",
        format!("api_key:{}", record.id),
    );
    Ok(HttpResponse::Created().json(CreatedKey {
        id: record.id,
        agent_id: agent.id.to_type_id(),
        name: body.name,
        key_prefix: prefix,
        plaintext_key: key.expose().to_owned(),
        expires_at: record.expires_at.map(timestamp),
        created_at: timestamp(record.created_at),
    }))
}

/// The keys an agent of the workspace holds; never their secrets.
#[utoipa::path(
    get,
    operation_id = "list_workspace_agent_keys",
    path = "/api/v1/agents/{agent_id}/keys",
    tag = "instance",
    security(("session_jwt" = []), ("agent_jwt" = []), ("api_key" = [])),
    params(("agent_id" = String, Path, description = "The agent's id (`agent_...`, or its UUID).")),
    responses(
        (status = 200, description = "Every key not deleted, oldest first (expired ones too).", body = KeyList),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the calling agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`workspace_credentials_required`, `insufficient_role`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such agent in the workspace.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn list_keys(
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(WorkspaceAction::ManageAgents)?;
    let agent = workspace_agent(&state, &caller, &path).await?;
    let (tenant, id) = (caller.tenant_id, agent.id);
    let keys = state
        .store
        .detached(async move |store| store.agent_keys(tenant, id).await)
        .await?;
    Ok(HttpResponse::Ok().json(KeyList {
        keys: keys.iter().map(|key| key_summary(&agent, key)).collect(),
    }))
}

/// Deletes a key of an agent of the workspace: it is refused from the next
/// request, on every replica.
#[utoipa::path(
    delete,
    operation_id = "delete_workspace_agent_key",
    path = "/api/v1/agents/{agent_id}/keys/{key_id}",
    tag = "instance",
    security(("session_jwt" = []), ("agent_jwt" = []), ("api_key" = [])),
    params(
        ("agent_id" = String, Path, description = "The agent's id (`agent_...`, or its UUID)."),
        ("key_id" = Uuid, Path, description = "The key's `id`."),
    ),
    responses(
        (status = 204, description = "The key no longer works."),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the calling agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`workspace_credentials_required`, `insufficient_role`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such agent in the workspace, or no such key of it.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn delete_key(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.require(WorkspaceAction::ManageAgents)?;
    let (agent_path, key_path) = path.into_inner();
    let agent = workspace_agent(&state, &caller, &agent_path).await?;
    let key_id: Uuid = key_path.parse().map_err(|_| ApiError::not_found("key"))?;
    let (tenant, id) = (caller.tenant_id, agent.id);
    let keys = state
        .store
        .detached(async move |store| store.agent_keys(tenant, id).await)
        .await?;
    if !keys.iter().any(|key| key.id == key_id) {
        return Err(ApiError::not_found("key"));
    }
    state
        .store
        .detached(async move |store| store.revoke_api_key(tenant, key_id, now).await)
        .await?;
    audit(
        &state,
        &caller,
        "workspace.key.delete",
        format!("api_key:{key_id}"),
    );
    Ok(HttpResponse::NoContent().finish())
}
