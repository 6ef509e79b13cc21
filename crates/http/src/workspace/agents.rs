//! The workspace's agents as Agent United serves them under
//! `/api/v1/agents`: create, list, read, change and delete.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_domain::{AgentId, LifecycleState, WorkspaceAction};
use agentry_lifecycle::TerminationReason;
use agentry_store::{AgentRecord, NewAuditEvent, ProfilePatch, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::spec::{AgentProfileSpec, NewWorkspaceAgent, agent_spec};
use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::RequestTime;
use crate::guard::WorkspacePrincipal;
use crate::profiles::nullable;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{TimestampSchema, timestamp};

/// An agent as Agent United answers it: bare, optional fields omitted when
/// empty.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkspaceAgent {
    /// The agent's internal id (`agent_` + 26 base32 characters), as the
    /// bootstrap's `agent_id`.
    id: String,
    /// As written when the agent was made.
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avatar_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Whether the agent may act now (its lifecycle state is `active`).
    is_active: bool,
    /// Seed 001's lifecycle state.
    lifecycle_state: &'static str,
    #[schema(value_type = TimestampSchema)]
    created_at: String,
    #[schema(value_type = TimestampSchema)]
    updated_at: String,
}

impl From<&AgentRecord> for WorkspaceAgent {
    fn from(agent: &AgentRecord) -> Self {
        // The avatar lives in the metadata (as the bootstrap keeps it).
        let mut metadata = agent.metadata.as_object().cloned().unwrap_or_default();
        let avatar_url = match metadata.remove("avatar_url") {
            Some(serde_json::Value::String(url)) => Some(url),
            _ => None,
        };
        WorkspaceAgent {
            id: agent.id.to_type_id(),
            name: agent.name.to_string(),
            display_name: agent.display_name.clone(),
            description: agent.description.clone(),
            avatar_url,
            metadata: (!metadata.is_empty()).then_some(metadata),
            is_active: agent.lifecycle_state == LifecycleState::Active,
            lifecycle_state: agent.lifecycle_state.as_str(),
            created_at: timestamp(agent.created_at),
            updated_at: timestamp(agent.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkspaceAgentList {
    agents: Vec<WorkspaceAgent>,
}

/// An agent id in a path: the `agent_...` form, or the bare UUID (seed 002
/// prints ids as UUIDs). Anything else is an agent that does not exist.
fn parse_agent_id(text: &str) -> Result<AgentId, ApiError> {
    AgentId::parse_type_id(text)
        .ok()
        .or_else(|| text.parse::<Uuid>().ok().map(AgentId::from_uuid))
        .ok_or_else(|| ApiError::not_found("agent"))
}

/// A live (not terminated) agent of the caller's workspace.
pub(super) async fn workspace_agent(
    state: &AppState,
    caller: &WorkspacePrincipal,
    path: &str,
) -> Result<AgentRecord, ApiError> {
    let (tenant, id) = (caller.tenant_id, parse_agent_id(path)?);
    state
        .store
        .detached(async move |store| store.find_agent(tenant, id).await)
        .await?
        .filter(|agent| agent.lifecycle_state != LifecycleState::Terminated)
        .ok_or_else(|| ApiError::not_found("agent"))
}

pub(super) fn audit(state: &AppState, caller: &WorkspacePrincipal, action: &str, target: String) {
    state.audit(
        caller.tenant_id,
        NewAuditEvent {
            actor: caller.actor(),
            action: action.into(),
            target: Some(target),
            outcome: "success".into(),
            detail: json!({}),
        },
    );
}

/// Seed 002's `POST /api/v1/agents` (documented with the registry's).
pub(crate) async fn create_agent(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    body: Deferred<web::Json<NewWorkspaceAgent>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(WorkspaceAction::ManageAgents)?;
    let body = AgentProfileSpec::from(body.read().await?.into_inner());
    let mut problems = Problems::default();
    let agent = agent_spec(&mut problems, "", &body, &mut BTreeSet::new());
    problems.finish()?;
    let agent = agent.ok_or_else(|| ApiError::bad_request("invalid_request", "invalid agent"))?;
    let tenant = caller.tenant_id;
    let created = state
        .store
        .detached(async move |store| store.create_agent(tenant, agent, now).await)
        .await
        .map_err(|error| match error {
            StoreError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                "agent_exists",
                "an agent of this name exists in the workspace (names are compared ignoring case)",
            ),
            other => other.into(),
        })?;
    audit(
        &state,
        &caller,
        "workspace.agent.create",
        format!("agent:{}", created.slug),
    );
    Ok(HttpResponse::Created().json(WorkspaceAgent::from(&created)))
}

/// Seed 002's `GET /api/v1/agents`: every agent of the workspace that is
/// not deleted, oldest first.
pub(crate) async fn list_agents(
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
) -> Result<HttpResponse, ApiError> {
    caller.require(WorkspaceAction::ReadAgents)?;
    let tenant = caller.tenant_id;
    let agents = state
        .store
        .detached(async move |store| store.list_agents(tenant).await)
        .await?;
    Ok(HttpResponse::Ok().json(WorkspaceAgentList {
        agents: agents
            .iter()
            .filter(|agent| agent.lifecycle_state != LifecycleState::Terminated)
            .map(WorkspaceAgent::from)
            .collect(),
    }))
}

/// Seed 002's `GET /api/v1/agents/{agent_id}`.
pub(crate) async fn get_agent(
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(WorkspaceAction::ReadAgents)?;
    let agent = workspace_agent(&state, &caller, &path).await?;
    Ok(HttpResponse::Ok().json(WorkspaceAgent::from(&agent)))
}

/// Seed 002's agent fields to change; absent fields stay, `null` clears an
/// optional one, and fields other clients send along are ignored.
#[derive(Deserialize, ToSchema)]
pub(super) struct AgentUpdate {
    /// Another spelling of the same name (case only): the agent's slug,
    /// by which seeds 000/001 know it, never changes.
    name: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    display_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 2048)]
    avatar_url: Option<Option<String>>,
    /// Replaces the metadata (the avatar is kept apart).
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Changes an agent of the workspace.
#[utoipa::path(
    patch,
    operation_id = "update_workspace_agent",
    path = "/api/v1/agents/{agent_id}",
    tag = "instance",
    security(("session_jwt" = []), ("agent_jwt" = []), ("api_key" = [])),
    params(("agent_id" = String, Path, description = "The agent's id (`agent_...`, or its UUID).")),
    request_body = AgentUpdate,
    responses(
        (status = 200, description = "The agent as it now is.", body = WorkspaceAgent),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (every problem at once).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the calling agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`workspace_credentials_required` (a tenant key, or an agent outside \
            the workspace), `insufficient_role` (only the workspace admin changes agents).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such agent in the workspace.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`name_immutable`: the new name is not the same name in another case.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn update_agent(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<String>,
    body: Deferred<web::Json<AgentUpdate>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(WorkspaceAction::ManageAgents)?;
    let body = body.read().await?.into_inner();
    let mut problems = Problems::default();
    let name = body
        .name
        .as_deref()
        .and_then(|name| problems.check(agentry_domain::AgentName::parse_workspace(name), "name"));
    problems.length("display_name", body.display_name.as_deref(), 1, 255);
    problems.length(
        "description",
        body.description.as_ref().and_then(Option::as_deref),
        0,
        2000,
    );
    problems.length(
        "avatar_url",
        body.avatar_url.as_ref().and_then(Option::as_deref),
        1,
        2048,
    );
    problems.finish()?;
    let agent = workspace_agent(&state, &caller, &path).await?;
    // The avatar is kept in the metadata: rebuild it from what stays.
    let metadata = if body.metadata.is_some() || body.avatar_url.is_some() {
        let current = agent.metadata.as_object().cloned().unwrap_or_default();
        let mut metadata = body.metadata.clone().unwrap_or_else(|| current.clone());
        let avatar = match &body.avatar_url {
            Some(avatar) => avatar.clone(),
            None => current
                .get("avatar_url")
                .and_then(|url| url.as_str())
                .map(str::to_owned),
        };
        metadata.remove("avatar_url");
        if let Some(avatar) = avatar {
            metadata.insert("avatar_url".into(), json!(avatar));
        }
        Some(serde_json::Value::Object(metadata))
    } else {
        None
    };
    let patch = ProfilePatch {
        name,
        display_name: body.display_name.map(Some),
        description: body.description,
        metadata,
        ..ProfilePatch::default()
    };
    let (tenant, slug) = (caller.tenant_id, agent.slug.clone());
    let updated = state
        .store
        .detached(async move |store| store.update_agent_profile(tenant, &slug, patch, now).await)
        .await
        .map_err(|error| match error {
            StoreError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                "name_immutable",
                "an agent's name may change its case only: seeds 000/001 know the agent by it",
            ),
            other => other.into(),
        })?;
    audit(
        &state,
        &caller,
        "workspace.agent.update",
        format!("agent:{}", updated.slug),
    );
    Ok(HttpResponse::Ok().json(WorkspaceAgent::from(&updated)))
}

/// Seed 002's `DELETE /api/v1/agents/{agent_id}`: the agent is terminated
/// (as the registry's revoke does), so its keys and tokens stop at once and
/// its history stays; it is gone from the workspace's answers.
pub(crate) async fn delete_agent(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(WorkspaceAction::ManageAgents)?;
    let agent = workspace_agent(&state, &caller, &path).await?;
    if caller.agent_id == Some(agent.id) || is_primary(&state, &agent).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "primary_agent",
            "the workspace's primary agent administers it and cannot be deleted",
        ));
    }
    let (tenant, id) = (caller.tenant_id, agent.id);
    state
        .store
        .detached(async move |store| {
            store
                .reclaim_agent(tenant, id, TerminationReason::Revoked, now)
                .await
        })
        .await?;
    audit(
        &state,
        &caller,
        "workspace.agent.delete",
        format!("agent:{}", agent.slug),
    );
    Ok(HttpResponse::NoContent().finish())
}

/// Whether `agent` has the workspace's admin account (the primary agent).
async fn is_primary(state: &AppState, agent: &AgentRecord) -> Result<bool, ApiError> {
    let (tenant, id) = (agent.tenant_id, agent.id);
    let user = state
        .store
        .detached(async move |store| store.user_of_agent(tenant, id).await)
        .await?;
    Ok(user.is_some_and(|user| user.role == "admin"))
}
