//! Seed 001's operator routes: agent profiles, lifecycle transitions and
//! the tenant's agent-limits map.

mod limits;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_auth::Permission;
use agentry_domain::{AgentOrigin, AgentSlug, LifecycleState, Money, Role};
use agentry_lifecycle::LifecycleCommand;
use agentry_store::{NewAgent, NewAuditEvent, ProfilePatch};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::ApiKeyPrincipal;
use crate::guard::RequestTime;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{
    AgentProfile, AgentSlugSchema, LifecycleStateSchema, MoneySchema, ProfileResponse, RoleSchema,
};
use limits::{merge_limits, read_limits, replace_limits};

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/agent/profiles", web::get().to(list))
        .route("/v1/agent/profiles", web::post().to(create))
        // Registered before `/{agentId}` so "lifecycle" is never read as an id.
        .route(
            "/v1/agent/profiles/lifecycle/{agent_id}",
            web::patch().to(transition),
        )
        .route("/v1/agent/profiles/{agent_id}", web::get().to(read))
        .route("/v1/agent/profiles/{agent_id}", web::patch().to(update))
        .route("/v1/agent/profiles/{agent_id}", web::delete().to(delete))
        .route("/v1/agent-limits", web::get().to(read_limits))
        .route("/v1/agent-limits", web::put().to(replace_limits))
        .route("/v1/agent-limits", web::patch().to(merge_limits));
}

#[derive(OpenApi)]
#[openapi(paths(
    list,
    create,
    read,
    update,
    delete,
    transition,
    limits::read_limits,
    limits::replace_limits,
    limits::merge_limits
))]
pub(crate) struct Api;

fn slug(path: &str) -> Result<AgentSlug, ApiError> {
    // A slug that cannot exist cannot be found: 404, like any unknown agent.
    AgentSlug::parse(path).map_err(|_| ApiError::not_found("agent"))
}

/// Distinguishes "absent" (leave as is) from `null` (clear) in a PATCH.
pub(crate) fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
struct ProfileList {
    total: usize,
    profiles: Vec<AgentProfile>,
}

/// Every agent profile of the caller's tenant.
#[utoipa::path(
    get,
    operation_id = "list_profiles",
    path = "/v1/agent/profiles",
    tag = "profiles",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The tenant's profiles.", body = ProfileList),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent's credentials), `permission_denied` \
            (the key's role lacks `agent.profile.read`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn list(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileRead)?;
    let tenant = caller.tenant_id;
    let agents = state
        .store
        .detached(async move |store| store.list_agents(tenant).await)
        .await?;
    let profiles: Vec<AgentProfile> = agents.iter().map(AgentProfile::from).collect();
    Ok(HttpResponse::Ok().json(ProfileList {
        total: profiles.len(),
        profiles,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateProfile {
    // Optional to Rust so that a missing id is a 400 `invalid_request`
    // naming it, not a serde error; required all the same.
    #[schema(value_type = AgentSlugSchema, required = true)]
    agent_id: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    display_name: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    owner_id: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    cost_center: Option<String>,
    #[schema(value_type = Option<MoneySchema>)]
    budget_daily_usd: Option<Money>,
    #[schema(value_type = Option<MoneySchema>)]
    budget_monthly_usd: Option<Money>,
    /// `agent` when absent.
    #[schema(value_type = Option<RoleSchema>)]
    role: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Creates a `provisioned` profile without minting a token.
///
/// Bootstrap does both.
#[utoipa::path(
    post,
    operation_id = "create_profile",
    path = "/v1/agent/profiles",
    tag = "profiles",
    security(("api_key" = [])),
    request_body = CreateProfile,
    responses(
        (status = 201, description = "The new profile.", body = ProfileResponse),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (`agentId` missing, or every invalid field, listed).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent's credentials), `permission_denied` \
            (the key's role lacks `agent.profile.write`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`agent_exists`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn create(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    body: Deferred<web::Json<CreateProfile>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileWrite)?;
    let body = body.read().await?.into_inner();
    let mut problems = Problems::default();
    let agent_id = body
        .agent_id
        .ok_or_else(|| ApiError::bad_request("invalid_request", "agentId is required"))?;
    let slug = problems.check(AgentSlug::parse(&agent_id), "agentId");
    let role = problems.check(
        body.role.as_deref().unwrap_or("agent").parse::<Role>(),
        "role",
    );
    problems.length("displayName", body.display_name.as_deref(), 1, 255);
    problems.length("ownerId", body.owner_id.as_deref(), 1, 255);
    problems.length("costCenter", body.cost_center.as_deref(), 1, 255);
    problems.finish()?;
    let (Some(slug), Some(role)) = (slug, role) else {
        return Err(ApiError::bad_request("invalid_request", "invalid profile"));
    };
    let mut new = NewAgent::named(slug, AgentOrigin::Api);
    new.display_name = body.display_name;
    new.owner_id = body.owner_id;
    new.cost_center = body.cost_center;
    new.budget_daily = body.budget_daily_usd;
    new.budget_monthly = body.budget_monthly_usd;
    new.role = role;
    new.metadata = serde_json::Value::Object(body.metadata.unwrap_or_default());
    let tenant = caller.tenant_id;
    let agent = state
        .store
        .detached(async move |store| store.create_agent(tenant, new, now).await)
        .await
        .map_err(|error| match error {
            agentry_store::StoreError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                "agent_exists",
                format!("agent {agent_id} already exists"),
            ),
            other => other.into(),
        })?;
    audit(
        &state,
        &caller,
        "agent.profile.create",
        &agent.slug,
        json!({}),
    );
    Ok(HttpResponse::Created().json(ProfileResponse::from(&agent)))
}

/// One profile of the caller's tenant.
#[utoipa::path(
    get,
    operation_id = "read_profile",
    path = "/v1/agent/profiles/{agent_id}",
    tag = "profiles",
    security(("api_key" = [])),
    params(("agent_id" = String, Path, description = "The agent's `agent_id`.")),
    responses(
        (status = 200, description = "The profile.", body = ProfileResponse),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent's credentials), `permission_denied` \
            (the key's role lacks `agent.profile.read`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such agent in the tenant (also for an id that \
            cannot be an `agent_id`).", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn read(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileRead)?;
    let (tenant, slug) = (caller.tenant_id, slug(&path)?);
    let agent = state
        .store
        .detached(async move |store| store.find_agent_by_slug(tenant, &slug).await)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    Ok(HttpResponse::Ok().json(ProfileResponse::from(&agent)))
}

/// A partial update: an absent field stays as it is, `null` clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateProfile {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255)]
    display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255)]
    owner_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255)]
    cost_center: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<MoneySchema>)]
    budget_daily_usd: Option<Option<Money>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<MoneySchema>)]
    budget_monthly_usd: Option<Option<Money>>,
    #[schema(value_type = Option<RoleSchema>)]
    role: Option<String>,
    /// Replaces the whole metadata object.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Updates a profile in part.
#[utoipa::path(
    patch,
    operation_id = "update_profile",
    path = "/v1/agent/profiles/{agent_id}",
    tag = "profiles",
    security(("api_key" = [])),
    params(("agent_id" = String, Path, description = "The agent's `agent_id`.")),
    request_body = UpdateProfile,
    responses(
        (status = 200, description = "The profile as updated.", body = ProfileResponse),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (every invalid field, listed).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent's credentials), `permission_denied` \
            (the key's role lacks `agent.profile.write`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such agent in the tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn update(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
    body: Deferred<web::Json<UpdateProfile>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileWrite)?;
    let body = body.read().await?.into_inner();
    let mut problems = Problems::default();
    let role = body
        .role
        .as_deref()
        .and_then(|role| problems.check(role.parse::<Role>(), "role"));
    for (field, value) in [
        ("displayName", &body.display_name),
        ("ownerId", &body.owner_id),
        ("costCenter", &body.cost_center),
    ] {
        problems.length(
            field,
            value.as_ref().and_then(|value| value.as_deref()),
            1,
            255,
        );
    }
    problems.finish()?;
    let patch = ProfilePatch {
        display_name: body.display_name,
        owner_id: body.owner_id,
        cost_center: body.cost_center,
        budget_daily: body.budget_daily_usd,
        budget_monthly: body.budget_monthly_usd,
        role,
        metadata: body.metadata.map(serde_json::Value::Object),
        ..ProfilePatch::default()
    };
    let (tenant, slug) = (caller.tenant_id, slug(&path)?);
    let agent = state
        .store
        .detached(async move |store| store.update_agent_profile(tenant, &slug, patch, now).await)
        .await?;
    audit(
        &state,
        &caller,
        "agent.profile.update",
        &agent.slug,
        json!({}),
    );
    Ok(HttpResponse::Ok().json(ProfileResponse::from(&agent)))
}

#[derive(Debug, Serialize, ToSchema)]
struct ProfileDeleted {
    /// Always `true`.
    ok: bool,
    #[serde(rename = "agentId")]
    #[schema(value_type = AgentSlugSchema)]
    agent_id: String,
}

/// Deletes an agent for good, with its keys and ledger.
///
/// An agent with sub-agents, or one holding budget delegated by its parent,
/// must be reclaimed first.
#[utoipa::path(
    delete,
    operation_id = "delete_profile",
    path = "/v1/agent/profiles/{agent_id}",
    tag = "profiles",
    security(("api_key" = [])),
    params(("agent_id" = String, Path, description = "The agent's `agent_id`.")),
    responses(
        (status = 200, description = "The agent is gone.", body = ProfileDeleted),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent's credentials), `permission_denied` \
            (only an admin key has `agent.profile.delete`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such agent in the tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`refused`: the agent has a live sub-agent, or holds budget delegated by \
            its parent.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn delete(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileDelete)?;
    let (tenant, slug) = (caller.tenant_id, slug(&path)?);
    let deleted = slug.clone();
    state
        .store
        .detached(async move |store| store.delete_agent(tenant, &deleted).await)
        .await?;
    audit(&state, &caller, "agent.profile.delete", &slug, json!({}));
    Ok(HttpResponse::Ok().json(ProfileDeleted {
        ok: true,
        agent_id: slug.into_string(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LifecycleTransition)]
struct Transition {
    // Optional to Rust so that a missing state is a 400 naming it.
    #[schema(value_type = LifecycleStateSchema, required = true)]
    state: Option<String>,
}

/// Moves an agent to another lifecycle state.
///
/// Allowed moves: active to quarantined or suspended; quarantined to active
/// or suspended; suspended to active or terminated. Termination also
/// terminates the agent's sub-agents and settles their budgets back up the
/// tree.
#[utoipa::path(
    patch,
    operation_id = "change_lifecycle",
    path = "/v1/agent/profiles/lifecycle/{agent_id}",
    tag = "profiles",
    security(("api_key" = [])),
    params(("agent_id" = String, Path, description = "The agent's `agent_id`.")),
    request_body = Transition,
    responses(
        (status = 200, description = "The profile in its new state.", body = ProfileResponse),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (`state` missing), `invalid_state` (not a lifecycle state).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent's credentials), `permission_denied` \
            (the key's role lacks `agent.lifecycle.manage`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such agent in the tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid_transition`: the move is not allowed from the current \
            state (a move to the current state included).",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable, or the agent's \
            sub-agents kept changing while terminating it (three attempts); retry.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn transition(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
    body: Deferred<web::Json<Transition>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentLifecycleManage)?;
    let requested = body
        .read()
        .await?
        .into_inner()
        .state
        .ok_or_else(|| ApiError::bad_request("invalid_request", "state is required"))?;
    let to: LifecycleState = requested
        .parse()
        .map_err(|error: agentry_domain::StateError| {
            ApiError::bad_request("invalid_state", error.to_string())
        })?;
    let (tenant, slug) = (caller.tenant_id, slug(&path)?);
    let lookup = slug.clone();
    let changed = state
        .store
        .detached(async move |store| {
            let agent = store
                .find_agent_by_slug(tenant, &lookup)
                .await?
                .ok_or(agentry_store::StoreError::NotFound("agent"))?;
            store
                .transition(tenant, agent.id, LifecycleCommand::Request(to), now)
                .await
        })
        .await?;
    let (agent, _) = changed.map_err(|refusal| {
        ApiError::new(
            StatusCode::CONFLICT,
            "invalid_transition",
            refusal.to_string(),
        )
    })?;
    audit(
        &state,
        &caller,
        "agent.lifecycle",
        &slug,
        json!({ "to": to.as_str() }),
    );
    Ok(HttpResponse::Ok().json(ProfileResponse::from(&agent)))
}

fn audit(
    state: &AppState,
    caller: &ApiKeyPrincipal,
    action: &str,
    agent: &AgentSlug,
    detail: serde_json::Value,
) {
    state.audit(
        caller.tenant_id,
        NewAuditEvent {
            actor: caller.actor(),
            action: action.into(),
            target: Some(format!("agent:{agent}")),
            outcome: "success".into(),
            detail,
        },
    );
}
