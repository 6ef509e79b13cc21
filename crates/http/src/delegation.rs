//! Seed 001's delegation: a parent agent creates a child with a budget
//! sliced from its own, lists its live children, and reclaims them with
//! their unspent budget.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_domain::{AgentOrigin, AgentSlug, Money, Role};
use agentry_lifecycle::{
    DelegatingParent, DelegationAsk, DelegationError, TerminationReason, child_expiry,
    is_repeat_delegation,
};
use agentry_store::{NewAgent, NewAuditEvent, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use crate::bootstrap::{BootstrapResponse, respond};
use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::AgentPrincipal;
use crate::guard::RequestTime;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{
    AgentSlugSchema, LifecycleStateSchema, MoneySchema, PositiveMoneySchema, RoleSchema,
    TimestampSchema, timestamp,
};

/// A delegation `agentry-lifecycle` refuses, as a problem.
fn refusal(error: DelegationError) -> ApiError {
    match error {
        DelegationError::NotAllowed => {
            ApiError::forbidden("delegation_not_allowed", error.to_string())
        }
        DelegationError::RoleEscalation { .. } => {
            ApiError::forbidden("role_escalation", error.to_string())
        }
        DelegationError::Lifetime | DelegationError::NoBudget => {
            ApiError::bad_request("invalid_request", error.to_string())
        }
    }
}

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/agent/delegate", web::post().to(delegate))
        .route("/v1/agent/sub-agents", web::get().to(list))
        .route(
            "/v1/agent/sub-agents/{child_agent_id}",
            web::delete().to(reclaim),
        );
}

#[derive(OpenApi)]
#[openapi(paths(delegate, list, reclaim))]
pub(crate) struct Api;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DelegateRequest {
    /// The child's `agent_id`.
    #[schema(value_type = AgentSlugSchema)]
    agent_id: String,
    /// Sliced from the parent's budget, which keeps at least one cent; the
    /// child's daily budget, and the most it can ever spend. Required and
    /// above zero (optional to Rust so that its absence is a 400 naming it).
    #[schema(value_type = PositiveMoneySchema, required = true)]
    budget_allocation_usd: Option<Money>,
    /// At most the parent's own role; `agent` when absent.
    #[schema(value_type = Option<RoleSchema>)]
    requested_role: Option<String>,
    /// The child's display name.
    #[schema(min_length = 1, max_length = 255)]
    requested_name: Option<String>,
    /// The child is terminated and reclaimed once this runs out.
    #[schema(minimum = 1, maximum = 31_536_000)]
    ttl_seconds: Option<i64>,
    /// The child's metadata; `parentAgentId` (the caller's `agent_id`, as
    /// in the child's profile) is added, replacing any sent.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Creates a child agent with a budget sliced from the caller's.
///
/// The caller must be active and its metadata must have
/// `can_delegate: true`. The child starts active, no more trusted than its
/// parent, and the answer carries its token.
#[utoipa::path(
    post,
    operation_id = "delegate",
    path = "/v1/agent/delegate",
    tag = "delegation",
    security(("agent_jwt" = []), ("api_key" = [])),
    request_body = DelegateRequest,
    responses(
        (status = 201, description = "The child was created.", body = BootstrapResponse),
        (status = 200, description = "The same child of the same parent again: a fresh token for it.",
            body = BootstrapResponse),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (every invalid field, listed; a missing or zero allocation included).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`insufficient_budget`: the parent's budget cannot cover the \
            allocation; `agent_suspended`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`certificate_not_accepted` (a certificate does not issue credentials, and the \
            child's token is one: send the agent's token or its own API key), `delegation_not_allowed` (no `can_delegate: true`), `role_escalation` \
            (a role above the parent's), `agent_credentials_required` (a tenant key), `agent_quarantined`, \
            `agent_not_activated`, `agent_terminated`, `agent_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`agent_exists`: the `agent_id` is taken by an agent that is not a live \
            child of the caller.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the caller's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database or the signing key is unavailable; retry \
            shortly.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn delegate(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: AgentPrincipal,
    body: Deferred<web::Json<DelegateRequest>>,
) -> Result<HttpResponse, ApiError> {
    caller.require_issuing_credential()?;
    caller.require_full_access()?;
    let parent = caller.record().clone();
    let delegating = DelegatingParent {
        id: parent.id,
        role: parent.role,
        can_delegate: parent.metadata.get("can_delegate") == Some(&serde_json::Value::Bool(true)),
        trust_level: parent.trust_level,
        scopes: parent.scopes.clone(),
    };
    delegating.permits_delegation().map_err(refusal)?;
    let body = body.read().await?.into_inner();
    let mut problems = Problems::default();
    let slug = problems.check(AgentSlug::parse(&body.agent_id), "agent_id");
    let role = problems.check(
        body.requested_role
            .as_deref()
            .unwrap_or("agent")
            .parse::<Role>(),
        "requested_role",
    );
    problems.length("requested_name", body.requested_name.as_deref(), 1, 255);
    // Listed with the body's other problems; `plan` judges them again.
    if let Err(error) = child_expiry(body.ttl_seconds, now) {
        problems.push(error.to_string());
    }
    let allocation = body.budget_allocation_usd.unwrap_or(Money::ZERO);
    if allocation.is_zero() {
        problems.push(DelegationError::NoBudget.to_string());
    }
    problems.finish()?;
    let (Some(slug), Some(role)) = (slug, role) else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "invalid delegation",
        ));
    };
    let ask = DelegationAsk {
        role,
        allocation,
        ttl_seconds: body.ttl_seconds,
    };
    let terms = delegating.plan(&ask, now).map_err(refusal)?;
    let mut metadata = body.metadata.unwrap_or_default();
    metadata.insert("parentAgentId".into(), json!(parent.slug.as_str()));
    let mut child = NewAgent::named(slug.clone(), AgentOrigin::Delegation);
    child.display_name = body.requested_name;
    child.role = terms.role;
    child.budget_daily = Some(terms.budget_daily);
    child.expires_at = terms.expires_at;
    child.metadata = serde_json::Value::Object(metadata);
    child.trust_level = terms.trust_level;
    child.scopes = terms.scopes;

    let (tenant, parent_id) = (parent.tenant_id, parent.id);
    let created = state
        .store
        .detached(async move |store| {
            store
                .delegate(tenant, parent_id, child, allocation, now)
                .await
        })
        .await;
    let outcome = match created {
        Ok(child) => Ok((StatusCode::CREATED, child)),
        // The same child again, from the same parent: answer as bootstrap
        // does, with a fresh token; anything else is a conflict.
        Err(StoreError::Conflict("agent")) => {
            let existing = state
                .store
                .detached(async move |store| store.find_agent_by_slug(tenant, &slug).await)
                .await?;
            match existing {
                Some(child)
                    if is_repeat_delegation(parent_id, child.parent_id, child.lifecycle_state) =>
                {
                    Ok((StatusCode::OK, child))
                }
                _ => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "agent_exists",
                    "an agent with this agent_id already exists",
                )),
            }
        }
        Err(error) => Err(ApiError::from(error)),
    };
    state.audit(tenant, NewAuditEvent {
        actor: format!("agent:{}", parent.slug),
        action: "agent.delegate".into(),
        target: Some(format!("agent:{}", body.agent_id)),
        outcome: if outcome.is_ok() { "success" } else { "denied" }.into(),
        detail: json!({ "budget_allocation_usd": allocation, "reason": outcome.as_ref().err().map(|error| error.code) }),
    });
    let (status, child) = outcome?;
    let enforced = state.enforced(&child).await?;
    respond(&state, status, &child, enforced, now)
}

#[derive(Debug, Serialize, ToSchema)]
struct SubAgentList {
    total: usize,
    sub_agents: Vec<SubAgent>,
}

#[derive(Debug, Serialize, ToSchema)]
struct SubAgent {
    #[schema(value_type = AgentSlugSchema)]
    agent_id: String,
    display_name: Option<String>,
    #[schema(value_type = RoleSchema)]
    role: &'static str,
    /// The allocation it was given.
    #[schema(value_type = Option<MoneySchema>)]
    budget_daily_usd: Option<Money>,
    #[schema(value_type = LifecycleStateSchema)]
    lifecycle_state: &'static str,
    #[schema(value_type = Option<TimestampSchema>)]
    expires_at: Option<String>,
    #[schema(value_type = TimestampSchema)]
    created_at: String,
}

/// The caller's children that are not terminated, in any other state.
#[utoipa::path(
    get,
    operation_id = "list_sub_agents",
    path = "/v1/agent/sub-agents",
    tag = "delegation",
    security(("agent_jwt" = []), ("api_key" = []), ("mtls" = [])),
    responses(
        (status = 200, description = "The caller's live children.", body = SubAgentList),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`agent_credentials_required` (a tenant key), `agent_not_activated`, \
            `agent_terminated`, `agent_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the caller's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn list(
    state: web::Data<AppState>,
    caller: AgentPrincipal,
) -> Result<HttpResponse, ApiError> {
    let (tenant, parent) = (caller.record().tenant_id, caller.record().id);
    let children = state
        .store
        .detached(async move |store| store.live_children(tenant, parent).await)
        .await?;
    let sub_agents: Vec<SubAgent> = children
        .iter()
        .map(|child| SubAgent {
            agent_id: child.slug.as_str().to_owned(),
            display_name: child.display_name.clone(),
            role: child.role.as_str(),
            budget_daily_usd: child.budget_daily,
            lifecycle_state: child.lifecycle_state.as_str(),
            expires_at: child.expires_at.map(timestamp),
            created_at: timestamp(child.created_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(SubAgentList {
        total: sub_agents.len(),
        sub_agents,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct SubAgentReclaimed {
    /// Always `true`.
    ok: bool,
    #[schema(value_type = AgentSlugSchema)]
    terminated_agent_id: String,
    /// The child's unspent allocation, back in the caller's budget.
    #[schema(value_type = MoneySchema)]
    budget_refunded_usd: Money,
    /// Present, `true`, when the child was terminated before this call.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = bool)]
    already_terminated: Option<bool>,
}

/// Terminates a child and its descendants, taking back unspent budget.
#[utoipa::path(
    delete,
    operation_id = "reclaim_sub_agent",
    path = "/v1/agent/sub-agents/{child_agent_id}",
    tag = "delegation",
    security(("agent_jwt" = []), ("api_key" = []), ("mtls" = [])),
    params(("child_agent_id" = String, Path, description = "The child's `agent_id`.")),
    responses(
        (status = 200, description = "The child is terminated and settled.", body = SubAgentReclaimed),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`certificate_not_enough` (a machine certificate only reads the agent's own state), `agent_credentials_required` (a tenant key), `agent_quarantined`, \
            `agent_not_activated`, `agent_terminated`, `agent_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such agent, or not a child of the caller.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the caller's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable, or the child's \
            sub-agents changed while reclaiming; retry.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn reclaim(
    now: RequestTime,
    state: web::Data<AppState>,
    caller: AgentPrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    reclaim_child(now, state, caller, path.into_inner()).await
}

/// [`reclaim`] with its path parameter taken out, for the MCP tool.
pub(crate) async fn reclaim_child(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: AgentPrincipal,
    child: String,
) -> Result<HttpResponse, ApiError> {
    caller.require_full_access()?;
    let parent = caller.record().clone();
    // Someone else's child, or no such agent, reads the same: 404.
    let slug = AgentSlug::parse(&child).map_err(|_| ApiError::not_found("sub-agent"))?;
    let tenant = parent.tenant_id;
    let child = state
        .store
        .detached(async move |store| store.find_agent_by_slug(tenant, &slug).await)
        .await?
        .filter(|child| child.parent_id == Some(parent.id))
        .ok_or_else(|| ApiError::not_found("sub-agent"))?;
    let child_id = child.id;
    let reclaimed = state
        .store
        .detached(async move |store| {
            store
                .reclaim_agent(tenant, child_id, TerminationReason::ReclaimedByParent, now)
                .await
        })
        .await?;
    state.audit(tenant, NewAuditEvent {
        actor: format!("agent:{}", parent.slug),
        action: "agent.reclaim".into(),
        target: Some(format!("agent:{}", child.slug)),
        outcome: "success".into(),
        detail: json!({ "budget_refunded_usd": reclaimed.refunded, "terminated": reclaimed.terminated.len() }),
    });
    Ok(HttpResponse::Ok().json(SubAgentReclaimed {
        ok: true,
        terminated_agent_id: child.slug.into_string(),
        budget_refunded_usd: reclaimed.refunded,
        already_terminated: reclaimed.already_terminated.then_some(true),
    }))
}
