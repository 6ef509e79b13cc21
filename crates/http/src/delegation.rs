//! Seed 001's delegation: a parent agent creates a child with a budget
//! sliced from its own, lists its live children, and reclaims them with
//! their unspent budget.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_domain::{AgentSlug, LifecycleState, Money, Role};
use agentry_lifecycle::{Access, RequestScope, TerminationReason};
use agentry_store::{NewAgent, NewAuditEvent, StoreError, now};
use serde::Deserialize;
use serde_json::json;
use time::Duration;

use crate::bootstrap::respond;
use crate::error::ApiError;
use crate::guard::AgentPrincipal;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::timestamp;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/agent/delegate", web::post().to(delegate))
        .route("/v1/agent/sub-agents", web::get().to(list))
        .route(
            "/v1/agent/sub-agents/{child_agent_id}",
            web::delete().to(reclaim),
        );
}

/// A year: delegated agents are meant to be short-lived.
const MAX_TTL_SECONDS: i64 = 365 * 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DelegateRequest {
    agent_id: String,
    budget_allocation_usd: Option<Money>,
    requested_role: Option<String>,
    requested_name: Option<String>,
    ttl_seconds: Option<i64>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

async fn delegate(
    state: web::Data<AppState>,
    caller: AgentPrincipal,
    body: web::Json<DelegateRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_full_access()?;
    let parent = caller.record().clone();
    if parent.metadata.get("can_delegate") != Some(&serde_json::Value::Bool(true)) {
        return Err(ApiError::forbidden(
            "delegation_not_allowed",
            "this agent's metadata does not allow delegation (can_delegate)",
        ));
    }
    let body = body.into_inner();
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
    if let Some(ttl) = body.ttl_seconds
        && !(1..=MAX_TTL_SECONDS).contains(&ttl)
    {
        problems.push(format!("ttl_seconds: must be 1 to {MAX_TTL_SECONDS}"));
    }
    let allocation = body
        .budget_allocation_usd
        .filter(|amount| !amount.is_zero());
    if allocation.is_none() {
        problems.push("budget_allocation_usd: a positive budget is required".to_owned());
    }
    problems.finish()?;
    let (Some(slug), Some(role), Some(allocation)) = (slug, role, allocation) else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "invalid delegation",
        ));
    };
    if !parent.role.may_grant(role) {
        return Err(ApiError::forbidden(
            "role_escalation",
            format!("a {} may not create a {}", parent.role, role),
        ));
    }
    let mut metadata = body.metadata.unwrap_or_default();
    metadata.insert("parentAgentId".into(), json!(parent.slug.as_str()));
    let mut child = NewAgent::named(slug.clone(), LifecycleState::Active);
    child.display_name = body.requested_name;
    child.role = role;
    child.budget_daily = Some(allocation);
    child.expires_at = body.ttl_seconds.map(|ttl| now() + Duration::seconds(ttl));
    child.metadata = serde_json::Value::Object(metadata);
    // A child never starts more trusted, or with more scopes, than its parent.
    child.trust_level = parent.trust_level;
    child.scopes = parent.scopes.clone();

    let (tenant, parent_id) = (parent.tenant_id, parent.id);
    let created = state
        .store
        .detached(async move |store| {
            store
                .create_delegated_agent(tenant, parent_id, child, now(), |view, child| {
                    // Judged again under the parent's lock: a parent
                    // suspended or terminated a moment ago cannot delegate.
                    let parent = view.agent(parent_id)?;
                    Access::for_agent(&parent.lifecycle(), now()).permits(RequestScope::Other)?;
                    let limits = view.enforced(parent_id)?;
                    Ok(view.account(parent_id)?.delegate(
                        parent_id,
                        child,
                        allocation,
                        &limits,
                        now(),
                    )?)
                })
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
                    if child.parent_id == Some(parent_id)
                        && child.lifecycle_state != LifecycleState::Terminated =>
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
    respond(&state, status, &child).await
}

async fn list(
    state: web::Data<AppState>,
    caller: AgentPrincipal,
) -> Result<HttpResponse, ApiError> {
    let (tenant, parent) = (caller.record().tenant_id, caller.record().id);
    let children = state
        .store
        .detached(async move |store| store.live_children(tenant, parent).await)
        .await?;
    let sub_agents: Vec<serde_json::Value> = children
        .iter()
        .map(|child| {
            json!({
                "agent_id": child.slug.as_str(),
                "display_name": child.display_name,
                "role": child.role.as_str(),
                "budget_daily_usd": child.budget_daily,
                "lifecycle_state": child.lifecycle_state.as_str(),
                "expires_at": child.expires_at.map(timestamp),
                "created_at": timestamp(child.created_at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "total": sub_agents.len(), "sub_agents": sub_agents })))
}

async fn reclaim(
    state: web::Data<AppState>,
    caller: AgentPrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_full_access()?;
    let parent = caller.record().clone();
    // Someone else's child, or no such agent, reads the same: 404.
    let slug = AgentSlug::parse(&path).map_err(|_| ApiError::not_found("sub-agent"))?;
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
                .reclaim_agent(
                    tenant,
                    child_id,
                    TerminationReason::ReclaimedByParent,
                    now(),
                )
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
    let mut body = json!({
        "ok": true,
        "terminated_agent_id": child.slug.as_str(),
        "budget_refunded_usd": reclaimed.refunded,
    });
    if reclaimed.already_terminated {
        body["already_terminated"] = json!(true);
    }
    Ok(HttpResponse::Ok().json(body))
}
