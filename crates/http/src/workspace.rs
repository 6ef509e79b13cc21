//! Agent United's API around seed 002's bootstrap, the "current flow" the
//! bootstrap collapses: `POST /api/v1/auth/register`, and the workspace's
//! agents and their keys under `/api/v1/agents`.
//!
//! `/api/v1/agents` is also seed 004's registry. Which family a request
//! belongs to is told by its credential ([`is_workspace_request`]): a
//! workspace session or a workspace agent's token or key without
//! `X-Bulwark-Tenant` is seed 002's and lands here; everything else goes
//! on to `registry.rs`.

use actix_web::guard::{self, GuardContext};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use agentry_auth::{ApiKey, ApiKeyKind};
use agentry_domain::{AgentId, Email, LifecycleState, WorkspaceAction};
use agentry_lifecycle::TerminationReason;
use agentry_store::{AgentRecord, ApiKeyRecord, NewAuditEvent, ProfilePatch, StoreError, now};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::{WorkspacePrincipal, is_workspace_request};
use crate::instance::{
    AgentProfileSpec, NewWorkspaceAgent, agent_spec, new_password, require_setup_token,
};
use crate::profiles::nullable;
use crate::redact::debug_redacting;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{TimestampSchema, timestamp};

fn workspace_family(context: &GuardContext<'_>) -> bool {
    is_workspace_request(context.head())
}

/// Mounted before `registry::configure`: each `.route` is a resource of
/// its own whose guards (method and family) must all match, so seed 002's
/// requests are taken here and every other request to the same paths
/// falls through to the registry's routes. Agent United serves the same
/// routes under `/v1` as well, where nothing else lives: there they are
/// unguarded, so a caller outside the workspace hears why (401, 403).
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    let workspace = || guard::fn_guard(workspace_family);
    config
        .route("/api/v1/auth/register", web::post().to(register))
        .route(
            "/api/v1/agents",
            web::post().guard(workspace()).to(create_agent),
        )
        .route(
            "/api/v1/agents",
            web::get().guard(workspace()).to(list_agents),
        )
        .route(
            "/api/v1/agents/{agent_id}",
            web::get().guard(workspace()).to(get_agent),
        )
        .route(
            "/api/v1/agents/{agent_id}",
            web::delete().guard(workspace()).to(delete_agent),
        )
        // Seed 002's alone: unguarded, so a caller outside the workspace
        // hears why (401, 403).
        .route("/api/v1/agents/{agent_id}", web::patch().to(update_agent))
        .route("/api/v1/agents/{agent_id}/keys", web::post().to(create_key))
        .route("/api/v1/agents/{agent_id}/keys", web::get().to(list_keys))
        .route(
            "/api/v1/agents/{agent_id}/keys/{key_id}",
            web::delete().to(delete_key),
        )
        .route("/v1/agents", web::post().to(create_agent))
        .route("/v1/agents", web::get().to(list_agents))
        .route("/v1/agents/{agent_id}", web::get().to(get_agent))
        .route("/v1/agents/{agent_id}", web::delete().to(delete_agent))
        .route("/v1/agents/{agent_id}", web::patch().to(update_agent))
        .route("/v1/agents/{agent_id}/keys", web::post().to(create_key))
        .route("/v1/agents/{agent_id}/keys", web::get().to(list_keys))
        .route(
            "/v1/agents/{agent_id}/keys/{key_id}",
            web::delete().to(delete_key),
        );
}

/// The shared routes (`POST`/`GET /api/v1/agents`, `GET`/`DELETE
/// /api/v1/agents/{agent_id}`) are documented once, by the registry's
/// operations, which describe both families; these are seed 002's own.
#[derive(OpenApi)]
#[openapi(paths(register, update_agent, create_key, list_keys, delete_key))]
pub(crate) struct Api;

// --- register -------------------------------------------------------------

/// Agent United's sign-up. Fields other clients send along are ignored.
#[derive(Deserialize, ToSchema)]
struct Register {
    email: String,
    /// At least 12 characters, and not too easy to guess.
    #[schema(min_length = 12, format = Password)]
    password: String,
    /// Defaults to the e-mail's local part.
    #[schema(min_length = 1, max_length = 255)]
    display_name: Option<String>,
}

debug_redacting!(Register { email, display_name; secret: password });

#[derive(Debug, Serialize, ToSchema)]
struct RegisteredUser {
    id: Uuid,
    email: String,
    display_name: String,
    /// `admin`: the first account administers the workspace.
    role: String,
    #[schema(value_type = TimestampSchema)]
    created_at: String,
    #[schema(value_type = TimestampSchema)]
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
struct Registered {
    user: RegisteredUser,
    /// A session token for the `session_jwt` scheme.
    token: String,
    /// The same token, under the name login and invite acceptance use.
    jwt_token: String,
    user_id: Uuid,
    email: String,
    #[schema(value_type = TimestampSchema)]
    expires_at: String,
}

debug_redacting!(Registered { user, user_id, email, expires_at; secret: token, jwt_token });

/// Creates the first account of a fresh instance: its workspace's admin.
///
/// Under the rules of the first-run workspace setup (`/api/v1/bootstrap`):
/// the account gets a workspace tenant of its own, and with `--setup-token`
/// set the call must carry it as its bearer credential. Once the instance
/// has any user, registration is closed: further people join by invite.
#[utoipa::path(
    post,
    operation_id = "register",
    path = "/api/v1/auth/register",
    tag = "instance",
    request_body = Register,
    responses(
        (status = 201, description = "The account, with a session.", body = Registered),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` (an \
            invalid e-mail or display name), `invalid_password` (too short or too easy to guess).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`setup_token_required`: the server was started with a setup token \
            and the call did not carry it.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`registration_closed`: the instance has users already; ask its admin \
            for an invite.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database or the signing key is unavailable, or too \
            many passwords are being checked at once; nothing was created.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn register(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: Deferred<web::Json<Register>>,
) -> Result<HttpResponse, ApiError> {
    require_setup_token(&state, &request)?;
    let body = body.read().await?.into_inner();
    let closed = || {
        ApiError::forbidden(
            "registration_closed",
            "this instance has users already; ask its admin for an invite",
        )
    };
    // Closed before anything is judged or hashed.
    if state
        .store
        .detached(async |store| store.instance().await)
        .await?
        .is_some()
    {
        return Err(closed());
    }
    let mut problems = Problems::default();
    let email = problems.check(Email::parse(&body.email), "email");
    problems.length("display_name", body.display_name.as_deref(), 1, 255);
    problems.finish()?;
    let Some(email) = email else {
        return Err(ApiError::bad_request("invalid_request", "invalid e-mail"));
    };
    let password = new_password(body.password, &[email.as_str()])?;
    let display_name = body.display_name.unwrap_or_else(|| {
        email
            .as_str()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    let password_hash = state.passwords.hash(password).await?;
    let created_at = now();
    let user = state
        .store
        .detached(async move |store| {
            store
                .register_first_user(&email, &display_name, password_hash, created_at)
                .await
        })
        .await
        .map_err(|error| match error {
            StoreError::Conflict(_) => closed(),
            other => other.into(),
        })?;
    state.audit(
        user.tenant_id,
        NewAuditEvent {
            actor: format!("user:{}", user.id),
            action: "workspace.register".into(),
            target: Some(format!("user:{}", user.id)),
            outcome: "success".into(),
            detail: json!({ "role": user.role }),
        },
    );
    let (jwt, expires_at) = state
        .mint_session(&user, created_at)
        .ok_or_else(|| ApiError::unavailable("no signing key is loaded"))?;
    Ok(HttpResponse::Created().json(Registered {
        user: RegisteredUser {
            id: user.id,
            email: user.email.clone(),
            display_name: user.display_name,
            role: user.role,
            created_at: timestamp(created_at),
            updated_at: timestamp(created_at),
        },
        token: jwt.clone(),
        jwt_token: jwt,
        user_id: user.id,
        email: user.email,
        expires_at: timestamp(expires_at),
    }))
}

// --- agents ---------------------------------------------------------------

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
async fn workspace_agent(
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

fn audit(state: &AppState, caller: &WorkspacePrincipal, action: &str, target: String) {
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
        .detached(async move |store| store.create_agent(tenant, agent, now()).await)
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
struct AgentUpdate {
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
async fn update_agent(
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
        .detached(async move |store| {
            store
                .update_agent_profile(tenant, &slug, patch, now())
                .await
        })
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
                .reclaim_agent(tenant, id, TerminationReason::Revoked, now())
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

// --- keys -----------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
struct NewKey {
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
async fn create_key(
    state: web::Data<AppState>,
    caller: WorkspacePrincipal,
    path: web::Path<String>,
    body: Deferred<web::Json<NewKey>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(WorkspaceAction::ManageAgents)?;
    let body = body.read().await?.into_inner();
    let created_at = now();
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
async fn list_keys(
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
async fn delete_key(
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
        .detached(async move |store| store.revoke_api_key(tenant, key_id, now()).await)
        .await?;
    audit(
        &state,
        &caller,
        "workspace.key.delete",
        format!("api_key:{key_id}"),
    );
    Ok(HttpResponse::NoContent().finish())
}
