//! Seed 000/001 self-awareness: an agent reads its own profile, limits,
//! anomalies and governance state.

use actix_web::{HttpResponse, web};
use agentry_ledger::Window;
use agentry_store::{AgentRecord, Store, StoreError};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiError, Problem};
use crate::guard::AgentPrincipal;
use crate::guard::RequestTime;
use crate::state::AppState;
use crate::wire::{
    AgentProfile, AnomalyEvent, LifecycleStateSchema, Limits, ProfileResponse, RoleSchema,
    timestamp,
};

const RECENT_EVENTS: i64 = 20;
/// The outcomes of audit events that signal trouble: refusals and
/// failures, not the agent's routine successes.
const ANOMALY_OUTCOMES: &[&str] = &["denied", "failed"];

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/agent/status", web::get().to(status))
        .route("/v1/agent/limits/me", web::get().to(limits_me))
        .route("/v1/agent/anomaly/me", web::get().to(anomaly_me))
        .route("/v1/agent/profiles/me", web::get().to(profile_me));
}

#[derive(OpenApi)]
#[openapi(paths(status, limits_me, anomaly_me, profile_me))]
pub(crate) struct Api;

/// Seed 001's `GET /v1/agent/status`.
#[derive(Debug, Serialize, ToSchema)]
struct AgentStatus {
    profile: AgentProfile,
    limits: Limits,
    anomaly: RecentAnomalies,
    governance: Governance,
}

#[derive(Debug, Serialize, ToSchema)]
struct RecentAnomalies {
    recent_events: Vec<AnomalyEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Governance {
    #[schema(value_type = LifecycleStateSchema)]
    lifecycle_state: &'static str,
    manifest_id: Option<String>,
    #[schema(value_type = RoleSchema)]
    role: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
struct LimitsResponse {
    limits: Limits,
}

#[derive(Debug, Serialize, ToSchema)]
struct AnomaliesResponse {
    events: Vec<AnomalyEvent>,
}

/// The live limits figures of the calling agent: what the guard's snapshot
/// says is enforced, and its account from the cache, so a repeat read
/// touches no database.
async fn limits(
    state: &AppState,
    caller: &AgentPrincipal,
    now: OffsetDateTime,
) -> Result<Limits, StoreError> {
    let agent = caller.record();
    let enforced = caller.agent.enforced;
    let account = state.account(agent.tenant_id, agent.id).await?;
    let requests_this_minute = caller.requests_this_minute;
    Ok(Limits {
        profile_daily_usd: agent.budget_daily,
        profile_monthly_usd: agent.budget_monthly,
        enforced_daily_usd: enforced.daily,
        enforced_daily_spent_usd: account.spent(Window::Day, now),
        enforced_daily_remaining_usd: account.remaining(&enforced, now).map(|(money, _)| money),
        enforced_rpm: enforced.rpm,
        requests_this_minute,
    })
}

/// The most recent audit events about `agent` that signal trouble (see
/// [`ANOMALY_OUTCOMES`]), newest first: the store filters, then limits.
async fn anomalies(store: &Store, agent: &AgentRecord) -> Result<Vec<AnomalyEvent>, StoreError> {
    let target = format!("agent:{}", agent.slug);
    let events = store
        .audit_events_with_outcome(agent.tenant_id, &target, ANOMALY_OUTCOMES, RECENT_EVENTS)
        .await?;
    Ok(events
        .into_iter()
        .map(|event| AnomalyEvent {
            id: event.id.to_string(),
            action: event.action,
            outcome: event.outcome,
            reason: event
                .detail
                .get("reason")
                .and_then(|reason| reason.as_str())
                .map(str::to_owned),
            at: timestamp(event.at),
        })
        .collect())
}

/// Everything an agent may know about itself.
///
/// Profile, live limits, recent refusals and governance state. Quarantined
/// agents may call it.
#[utoipa::path(
    get,
    operation_id = "agent_status",
    path = "/v1/agent/status",
    tag = "agent",
    security(("agent_jwt" = []), ("api_key" = []), ("mtls" = [])),
    responses(
        (status = 200, description = "The calling agent's state.", body = AgentStatus),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`, \
            `invalid_client_certificate`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`agent_credentials_required` (a tenant key), `certificate_not_bound` \
            (a client certificate of an instance bound to no agent), `agent_not_activated`, \
            `agent_terminated`, `agent_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the agent's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn status(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: AgentPrincipal,
) -> Result<HttpResponse, ApiError> {
    let limits = limits(&state, &caller, now).await?;
    let agent = caller.record().clone();
    let events = state
        .store
        .detached(async move |store| anomalies(&store, &agent).await)
        .await?;
    let agent = caller.record();
    Ok(HttpResponse::Ok().json(AgentStatus {
        profile: AgentProfile::from(agent),
        limits,
        anomaly: RecentAnomalies {
            recent_events: events,
        },
        governance: Governance {
            lifecycle_state: agent.lifecycle_state.as_str(),
            manifest_id: agent.manifest_id.clone(),
            role: agent.role.as_str(),
        },
    }))
}

/// The calling agent's budget and rate limits.
#[utoipa::path(
    get,
    operation_id = "agent_limits_me",
    path = "/v1/agent/limits/me",
    tag = "agent",
    security(("agent_jwt" = []), ("api_key" = []), ("mtls" = [])),
    responses(
        (status = 200, description = "The calling agent's limits.", body = LimitsResponse),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`, \
            `invalid_client_certificate`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`agent_credentials_required` (a tenant key), `certificate_not_bound` \
            (a client certificate of an instance bound to no agent), `agent_not_activated`, \
            `agent_terminated`, `agent_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the agent's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn limits_me(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: AgentPrincipal,
) -> Result<HttpResponse, ApiError> {
    let limits = limits(&state, &caller, now).await?;
    Ok(HttpResponse::Ok().json(LimitsResponse { limits }))
}

/// Recent refusals and failures that concern the calling agent.
#[utoipa::path(
    get,
    operation_id = "agent_anomaly_me",
    path = "/v1/agent/anomaly/me",
    tag = "agent",
    security(("agent_jwt" = []), ("api_key" = []), ("mtls" = [])),
    responses(
        (status = 200, description = "The caller's 20 most recent refusals and failures (however many \
            other events came after them), newest first.", body = AnomaliesResponse),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`, \
            `invalid_client_certificate`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`agent_credentials_required` (a tenant key), `certificate_not_bound` \
            (a client certificate of an instance bound to no agent), `agent_not_activated`, \
            `agent_terminated`, `agent_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the agent's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn anomaly_me(
    state: web::Data<AppState>,
    caller: AgentPrincipal,
) -> Result<HttpResponse, ApiError> {
    let agent = caller.record().clone();
    let events = state
        .store
        .detached(async move |store| anomalies(&store, &agent).await)
        .await?;
    Ok(HttpResponse::Ok().json(AnomaliesResponse { events }))
}

/// The calling agent's own profile.
#[utoipa::path(
    get,
    operation_id = "agent_profile_me",
    path = "/v1/agent/profiles/me",
    tag = "agent",
    security(("agent_jwt" = []), ("api_key" = []), ("mtls" = [])),
    responses(
        (status = 200, description = "The calling agent's profile.", body = ProfileResponse),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`, \
            `invalid_client_certificate`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`agent_credentials_required` (a tenant key), `certificate_not_bound` \
            (a client certificate of an instance bound to no agent), `agent_not_activated`, \
            `agent_terminated`, `agent_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the agent's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn profile_me(caller: AgentPrincipal) -> HttpResponse {
    HttpResponse::Ok().json(ProfileResponse::from(caller.record()))
}
