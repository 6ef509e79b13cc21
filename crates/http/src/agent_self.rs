//! Seed 000/001 self-awareness: an agent reads its own profile, limits,
//! anomalies and governance state.

use actix_web::{HttpResponse, web};
use agentry_ledger::Window;
use agentry_store::{AgentRecord, Store, StoreError};
use serde_json::json;
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::guard::AgentPrincipal;
use crate::state::AppState;
use crate::wire::{AgentProfile, AnomalyEvent, Limits, timestamp};

const RECENT_EVENTS: i64 = 20;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/agent/status", web::get().to(status))
        .route("/v1/agent/limits/me", web::get().to(limits_me))
        .route("/v1/agent/anomaly/me", web::get().to(anomaly_me))
        .route("/v1/agent/profiles/me", web::get().to(profile_me));
}

/// The live limits figures of `agent`.
async fn limits(
    store: &Store,
    agent: &AgentRecord,
    requests_this_minute: u32,
    now: OffsetDateTime,
) -> Result<Limits, StoreError> {
    let enforced = store
        .agent_limits(agent.tenant_id)
        .await?
        .enforced_for(agent);
    let account = store.account(agent.tenant_id, agent.id).await?;
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

/// Audit events about `agent` that signal trouble: refusals and failures,
/// not its routine successes.
async fn anomalies(store: &Store, agent: &AgentRecord) -> Result<Vec<AnomalyEvent>, StoreError> {
    let target = format!("agent:{}", agent.slug);
    let events = store
        .audit_events_for(agent.tenant_id, &target, RECENT_EVENTS)
        .await?;
    Ok(events
        .into_iter()
        .filter(|event| matches!(event.outcome.as_str(), "denied" | "failed"))
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

async fn status(
    state: web::Data<AppState>,
    caller: AgentPrincipal,
) -> Result<HttpResponse, ApiError> {
    let agent = caller.record().clone();
    let count = caller.requests_this_minute;
    let (limits, events) = state
        .store
        .detached(async move |store| {
            let now = agentry_store::now();
            Ok((
                limits(&store, &agent, count, now).await?,
                anomalies(&store, &agent).await?,
            ))
        })
        .await?;
    let agent = caller.record();
    Ok(HttpResponse::Ok().json(json!({
        "profile": AgentProfile::from(agent),
        "limits": limits,
        "anomaly": { "recent_events": events },
        "governance": {
            "lifecycle_state": agent.lifecycle_state.as_str(),
            "manifest_id": agent.manifest_id,
            "role": agent.role.as_str(),
        },
    })))
}

async fn limits_me(
    state: web::Data<AppState>,
    caller: AgentPrincipal,
) -> Result<HttpResponse, ApiError> {
    let agent = caller.record().clone();
    let count = caller.requests_this_minute;
    let limits = state
        .store
        .detached(async move |store| limits(&store, &agent, count, agentry_store::now()).await)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "limits": limits })))
}

async fn anomaly_me(
    state: web::Data<AppState>,
    caller: AgentPrincipal,
) -> Result<HttpResponse, ApiError> {
    let agent = caller.record().clone();
    let events = state
        .store
        .detached(async move |store| anomalies(&store, &agent).await)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "events": events })))
}

async fn profile_me(caller: AgentPrincipal) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "profile": AgentProfile::from(caller.record()) }))
}
