//! `POST /v1/agent/bootstrap` (seeds 000, 001): from a provisioner key to a
//! governed agent in one call: profile, enforced limits and a 1 h token, or
//! nothing usable.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_auth::Permission;
use agentry_domain::{AgentSlug, LifecycleState, Money, TenantId};
use agentry_ledger::DEFAULT_RPM;
use agentry_lifecycle::LifecycleError;
use agentry_store::{AgentLimitEntry, AgentRecord, NewAgent, NewAuditEvent, StoreError, now};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::guard::ApiKeyPrincipal;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{AgentProfile, timestamp};

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.route("/v1/agent/bootstrap", web::post().to(bootstrap));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapRequest {
    agent_id: String,
    display_name: Option<String>,
    cost_center: Option<String>,
    budget_daily_usd: Option<Money>,
    budget_monthly_usd: Option<Money>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl BootstrapRequest {
    fn into_new_agent(self) -> Result<NewAgent, ApiError> {
        let mut problems = Problems::default();
        let slug = problems.check(AgentSlug::parse(&self.agent_id), "agent_id");
        problems.length("display_name", self.display_name.as_deref(), 1, 255);
        problems.length("cost_center", self.cost_center.as_deref(), 1, 255);
        problems.finish()?;
        let slug =
            slug.ok_or_else(|| ApiError::bad_request("invalid_request", "agent_id is invalid"))?;
        let mut agent = NewAgent::named(slug, LifecycleState::Provisioned);
        agent.display_name = self.display_name;
        agent.cost_center = self.cost_center;
        agent.budget_daily = self.budget_daily_usd;
        agent.budget_monthly = self.budget_monthly_usd;
        agent.metadata = serde_json::Value::Object(self.metadata.unwrap_or_default());
        Ok(agent)
    }
}

/// How a bootstrap ended, for the status code and the audit trail.
enum Outcome {
    Created(AgentRecord),
    Existing(AgentRecord),
}

async fn bootstrap(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    body: web::Json<BootstrapRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentBootstrap)?;
    let new = body.into_inner().into_new_agent()?;
    let target = format!("agent:{}", new.slug);
    let worker = state.get_ref().clone();
    let tenant = caller.tenant_id;
    let outcome = state
        .store
        .detached(async move |_| Ok(run(&worker, tenant, new).await))
        .await?;
    let (audit_outcome, reason) = match &outcome {
        Ok(Outcome::Created(_)) => ("created", None),
        Ok(Outcome::Existing(_)) => ("existing", None),
        Err(error) if error.status.is_server_error() => ("failed", Some(error.code)),
        Err(error) => ("denied", Some(error.code)),
    };
    state.audit(
        tenant,
        NewAuditEvent {
            actor: caller.actor(),
            action: "agent.bootstrap".into(),
            target: Some(target),
            outcome: audit_outcome.into(),
            detail: json!({ "reason": reason }),
        },
    );
    let (status, agent) = match outcome? {
        Outcome::Created(agent) => (StatusCode::CREATED, agent),
        Outcome::Existing(agent) => (StatusCode::OK, agent),
    };
    respond(&state, status, &agent).await
}

/// The whole flow, run to completion even if the client hangs up.
async fn run(state: &AppState, tenant: TenantId, new: NewAgent) -> Result<Outcome, ApiError> {
    let store = &state.store;
    let slug = new.slug.clone();
    let budget_daily = new.budget_daily;
    // Created as provisioned, activated only once its limits are written:
    // an agent is never active without enforced limits (seed 000).
    let created = match store.create_agent(tenant, new, now()).await {
        Ok(agent) => Some(agent),
        Err(StoreError::Conflict(_)) => None,
        Err(error) => return Err(error.into()),
    };
    // The existing agent (or the one just created), re-read from the
    // database, not from any cache.
    let agent = match created {
        Some(ref agent) => agent.clone(),
        None => store
            .find_agent_by_slug(tenant, &slug)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "the agent changed concurrently; retry",
                )
            })?,
    };
    if let Err(refusal) = agent.lifecycle().bootstrap(now()) {
        return Err(refused(refusal));
    }
    // A delegated child belongs to its parent: a provisioner key must not
    // mint tokens for it.
    if agent.parent_id.is_some() {
        return Err(ApiError::forbidden(
            "agent_not_bootstrappable",
            "the agent was created by delegation; its parent holds its credentials",
        ));
    }
    ensure_limits_entry(state, tenant, &slug, budget_daily).await?;
    let (agent, _) = store
        .change_lifecycle(tenant, agent.id, |lifecycle| lifecycle.bootstrap(now()))
        .await?
        .map_err(refused)?;
    Ok(if created.is_some() {
        Outcome::Created(agent)
    } else {
        Outcome::Existing(agent)
    })
}

fn refused(refusal: LifecycleError) -> ApiError {
    ApiError::forbidden("agent_not_bootstrappable", refusal.to_string())
}

/// Writes the agent's entry in the tenant's agent-limits map unless it has
/// one (an operator's entry wins). Failure after the optimistic retries is
/// 503, and no token is issued.
async fn ensure_limits_entry(
    state: &AppState,
    tenant: TenantId,
    slug: &AgentSlug,
    budget_daily: Option<Money>,
) -> Result<(), ApiError> {
    let key = slug.limits_key();
    let written = state
        .store
        .update_agent_limits(tenant, now(), |entries| {
            entries.entry(key.clone()).or_insert(AgentLimitEntry {
                max_budget: budget_daily,
                max_requests_per_minute: Some(DEFAULT_RPM),
            });
            Ok::<_, ()>(())
        })
        .await;
    match written {
        Ok(_) => Ok(()),
        Err(error) if error.is_unavailable() => Err(ApiError::unavailable(
            "the agent's limits could not be written; no token was issued, retry the bootstrap",
        )
        .with_code("limits_unavailable")),
        Err(error) => Err(error.into()),
    }
}

pub(crate) async fn respond(
    state: &AppState,
    status: StatusCode,
    agent: &AgentRecord,
) -> Result<HttpResponse, ApiError> {
    let tenant = agent.tenant_id;
    let enforced = state
        .store
        .detached(async move |store| store.agent_limits(tenant).await)
        .await?
        .enforced_for(agent);
    let (jwt, expires_at) = state
        .mint_agent_token(agent, now())
        .ok_or_else(|| ApiError::unavailable("no signing key is loaded"))?;
    Ok(HttpResponse::build(status).json(json!({
        "profile": AgentProfile::from(agent),
        "jwt": jwt,
        "jwt_expires_at": timestamp(expires_at),
        "budget": {
            "profile_daily_usd": agent.budget_daily,
            "profile_monthly_usd": agent.budget_monthly,
            "enforced_daily_usd": enforced.daily,
            "enforced_rpm": enforced.rpm,
        },
        "next_steps": {
            "self_status": "GET /v1/agent/status",
            "limits": "GET /v1/agent/limits/me",
            "anomalies": "GET /v1/agent/anomaly/me",
            "spend": "POST /v1/agent/spend",
            "delegate": "POST /v1/agent/delegate",
            "jwks": "GET /.well-known/jwks.json",
        },
    })))
}
