//! `POST /v1/agent/bootstrap` (seeds 000, 001): from a provisioner key to a
//! governed agent in one call: profile, enforced limits and a 1 h token, or
//! nothing usable.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_auth::Permission;
use agentry_domain::{AgentOrigin, AgentSlug, ApiKeyRole, Money, TenantId};
use agentry_ledger::EnforcedLimits;
use agentry_lifecycle::{BootstrapRefusal, LifecycleCommand, may_take_over, repeat_bootstrap};
use agentry_store::{
    AgentLimitEntry, AgentRecord, NewAgent, NewAuditEvent, StoreError, enforced_limits,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use time::OffsetDateTime;

use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::ApiKeyPrincipal;
use crate::guard::RequestTime;
use crate::redact::debug_redacting;
use crate::state::{AgentSnapshot, AppState};
use crate::validate::Problems;
use crate::wire::{AgentProfile, AgentSlugSchema, MoneySchema, TimestampSchema, timestamp};

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.route("/v1/agent/bootstrap", web::post().to(bootstrap));
}

#[derive(OpenApi)]
#[openapi(paths(bootstrap))]
pub(crate) struct Api;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AgentBootstrapRequest)]
pub(crate) struct BootstrapRequest {
    #[schema(value_type = AgentSlugSchema)]
    agent_id: String,
    #[schema(min_length = 1, max_length = 255)]
    display_name: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    cost_center: Option<String>,
    /// The agent's daily budget; also the `maxBudgetUsd` of the limits
    /// entry bootstrap writes when the agent has none.
    #[schema(value_type = Option<MoneySchema>)]
    budget_daily_usd: Option<Money>,
    #[schema(value_type = Option<MoneySchema>)]
    budget_monthly_usd: Option<Money>,
    /// Free-form; `can_delegate: true` lets the agent delegate.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Seed 001's bootstrap answer, which delegation gives too: the profile,
/// what is enforced on it, and a fresh agent token.
#[derive(Serialize, ToSchema)]
pub(crate) struct BootstrapResponse {
    profile: AgentProfile,
    /// Agent token (EdDSA JWT) for the `agent_jwt` scheme.
    jwt: String,
    #[schema(value_type = TimestampSchema)]
    jwt_expires_at: String,
    budget: BootstrapBudget,
    next_steps: NextSteps,
}

debug_redacting!(BootstrapResponse { profile, jwt_expires_at, budget, next_steps; secret: jwt });

#[derive(Debug, Serialize, ToSchema)]
struct BootstrapBudget {
    #[schema(value_type = Option<MoneySchema>)]
    profile_daily_usd: Option<Money>,
    #[schema(value_type = Option<MoneySchema>)]
    profile_monthly_usd: Option<Money>,
    #[schema(value_type = Option<MoneySchema>)]
    enforced_daily_usd: Option<Money>,
    enforced_rpm: u32,
}

/// Where the new agent goes next: seed 001's keys, each naming what this
/// server serves for it (docs/api.md says what stands in for what it does
/// not serve), and the routes of its own budget and identity.
#[derive(Debug, Serialize, ToSchema)]
struct NextSteps {
    /// Agentry serves no completions: a model call's cost is held here
    /// before the call and captured after it.
    #[schema(value_type = String, examples("POST /v1/agent/holds"))]
    completions: &'static str,
    #[schema(value_type = String, examples("GET /v1/agent/status"))]
    self_status: &'static str,
    /// Agentry keeps no memory entries: what it keeps for the agent is its
    /// profile and metadata.
    #[schema(value_type = String, examples("GET /v1/agent/profiles/me"))]
    memory: &'static str,
    #[schema(value_type = String, examples("POST /v1/agent/delegate"))]
    delegate: &'static str,
    /// A client certificate for the mTLS listener, from a CSR.
    #[schema(value_type = String, examples("POST /v1/agent/auth/cert"))]
    cert_exchange: &'static str,
    /// This server's plain-text guide for agents (an absolute URL).
    #[schema(examples("https://agentry.example.com/llms-agent-playbook.txt"))]
    playbook: String,
    #[schema(value_type = String, examples("GET /v1/agent/limits/me"))]
    limits: &'static str,
    #[schema(value_type = String, examples("GET /v1/agent/anomaly/me"))]
    anomalies: &'static str,
    #[schema(value_type = String, examples("POST /v1/agent/spend"))]
    spend: &'static str,
    #[schema(value_type = String, examples("GET /.well-known/jwks.json"))]
    jwks: &'static str,
    /// The same routes as MCP tools.
    #[schema(value_type = String, examples("POST /mcp"))]
    mcp: &'static str,
    #[schema(value_type = String, examples("GET /.well-known/agents.json"))]
    discovery: &'static str,
}

impl NextSteps {
    fn on(public_url: &str) -> Self {
        Self {
            completions: "POST /v1/agent/holds",
            self_status: "GET /v1/agent/status",
            memory: "GET /v1/agent/profiles/me",
            delegate: "POST /v1/agent/delegate",
            cert_exchange: "POST /v1/agent/auth/cert",
            playbook: format!(
                "{}{}",
                public_url.trim_end_matches('/'),
                crate::discovery::PLAYBOOK_PATH
            ),
            limits: "GET /v1/agent/limits/me",
            anomalies: "GET /v1/agent/anomaly/me",
            spend: "POST /v1/agent/spend",
            jwks: "GET /.well-known/jwks.json",
            mcp: "POST /mcp",
            discovery: "GET /.well-known/agents.json",
        }
    }
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
        let mut agent = NewAgent::named(slug, AgentOrigin::Bootstrap);
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
    Created(Arc<AgentSnapshot>),
    Existing(Arc<AgentSnapshot>),
}

/// Profile, enforced limits and an agent token in one call.
///
/// Creates the agent (201) or answers for the existing one (200) with a
/// fresh token. The agent is activated only once its limits entry is
/// written; if that fails, nothing usable is returned.
#[utoipa::path(
    post,
    operation_id = "agent_bootstrap",
    path = "/v1/agent/bootstrap",
    tag = "agent",
    security(("api_key" = [])),
    request_body = BootstrapRequest,
    responses(
        (status = 201, description = "The agent was created and activated.", body = BootstrapResponse),
        (status = 200, description = "The agent already existed; a fresh token for it.", body = BootstrapResponse),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` (every \
            invalid field, listed).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent token or an agent's own key), \
            `permission_denied` (the key's role lacks `agent.bootstrap`), `agent_not_bootstrappable` \
            (suspended, terminated or expired, or created by delegation).",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict`: the agent changed concurrently; retry. \
            `agent_not_bootstrapped`: a provisioner key named an agent that no bootstrap created \
            (registered, set up in a workspace, delegated, or created through the profiles API).",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`limits_unavailable`: the limits entry could not be written and no \
            token was issued; `unavailable`: the database or the signing key is unavailable.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn bootstrap(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    body: Deferred<web::Json<BootstrapRequest>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentBootstrap)?;
    let new = body.read().await?.into_inner().into_new_agent()?;
    let target = format!("agent:{}", new.slug);
    let tenant = caller.tenant_id;
    let role = caller.role;
    let outcome = match ready_again(&state, tenant, &new.slug, now) {
        Some(snapshot) => may_take_over(snapshot.record.origin, role)
            .map_err(|refusal| refused(&snapshot.record.slug, refusal))
            .map(|()| Outcome::Existing(snapshot)),
        None => {
            let worker = state.get_ref().clone();
            state
                .store
                .detached(async move |_| Ok(run(&worker, role, tenant, new, now).await))
                .await?
        }
    };
    let (audit_outcome, reason) = match &outcome {
        Ok(Outcome::Created(..)) => ("created", None),
        Ok(Outcome::Existing(..)) => ("existing", None),
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
    let (status, snapshot) = match outcome? {
        Outcome::Created(snapshot) => (StatusCode::CREATED, snapshot),
        Outcome::Existing(snapshot) => (StatusCode::OK, snapshot),
    };
    respond(&state, status, &snapshot.record, snapshot.enforced, now)
}

/// A repeat bootstrap of an agent a bootstrap already found ready, still
/// bootstrappable now (its TTL is checked against the clock here): no
/// database, no write. Anything else goes the whole way. Only agents that
/// passed `complete` or were just created are filed, so none is a
/// delegated child.
fn ready_again(
    state: &AppState,
    tenant: TenantId,
    slug: &AgentSlug,
    now: OffsetDateTime,
) -> Option<Arc<AgentSnapshot>> {
    let snapshot = state.guard.ready_agent(tenant, slug)?;
    matches!(
        agentry_lifecycle::Lifecycle::of(&snapshot.record).bootstrap(now),
        Ok(None)
    )
    .then_some(snapshot)
}

/// Files an agent a bootstrap has just answered for, for [`ready_again`].
fn remember_ready(
    state: &AppState,
    generation: u64,
    agent: AgentRecord,
    enforced: EnforcedLimits,
) -> Arc<AgentSnapshot> {
    let snapshot = Arc::new(AgentSnapshot {
        record: agent,
        enforced,
    });
    state
        .guard
        .remember_ready_agent(generation, Arc::clone(&snapshot));
    snapshot
}

/// The whole flow, run to completion even if the client hangs up.
async fn run(
    state: &AppState,
    role: ApiKeyRole,
    tenant: TenantId,
    new: NewAgent,
    now: OffsetDateTime,
) -> Result<Outcome, ApiError> {
    let store = &state.store;
    let slug = new.slug.clone();
    let budget_daily = new.budget_daily;
    // Read before the database: a change after it keeps what is read out
    // of the cache.
    let generation = state.guard.generation();
    // Most bootstraps are repeats: look the agent up first, with its
    // limits entry.
    if let Some((agent, entry)) = store.find_agent_with_limits(tenant, &slug).await? {
        let (agent, enforced) = complete(state, role, agent, entry, budget_daily, now).await?;
        return Ok(Outcome::Existing(remember_ready(
            state, generation, agent, enforced,
        )));
    }
    // A new agent is created, activated and given its limits entry in one
    // transaction: never active without enforced limits (seed 000), and
    // nothing left behind when that fails.
    let entry = AgentLimitEntry::for_bootstrap(budget_daily);
    match store
        .create_bootstrapped_agent(tenant, new, entry, now)
        .await
    {
        Ok(Ok((agent, entry))) => {
            let enforced = enforced_limits(&agent, Some(&entry));
            Ok(Outcome::Created(remember_ready(
                state, generation, agent, enforced,
            )))
        }
        Ok(Err(refusal)) => Err(refused(&slug, refusal.into())),
        // Two first bootstraps racing meet at the unique index; the loser
        // answers for the winner's agent.
        Err(StoreError::Conflict(_)) => {
            let (agent, entry) = store
                .find_agent_with_limits(tenant, &slug)
                .await?
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "conflict",
                        "the agent changed concurrently; retry",
                    )
                })?;
            let (agent, enforced) = complete(state, role, agent, entry, budget_daily, now).await?;
            Ok(Outcome::Existing(remember_ready(
                state, generation, agent, enforced,
            )))
        }
        Err(error) => Err(limits_error(error)),
    }
}

/// A refused bootstrap of the agent `slug` names, as a problem.
fn refused(slug: &AgentSlug, refusal: BootstrapRefusal) -> ApiError {
    match refusal {
        BootstrapRefusal::NotMadeByBootstrap(origin) => ApiError::new(
            StatusCode::CONFLICT,
            "agent_not_bootstrapped",
            format!(
                "agent {} exists and was not created by a bootstrap (it came from the {} route); \
                 a provisioner key may not take it over",
                slug, origin
            ),
        ),
        other => ApiError::forbidden("agent_not_bootstrappable", other.to_string()),
    }
}

/// Bootstraps an agent that exists: the lifecycle must allow it, its limits
/// entry is written if it has none (an operator's entry wins), and an agent
/// still provisioned (created by another route, or by a bootstrap that did
/// not finish) is activated. An active agent with its entry costs no write.
async fn complete(
    state: &AppState,
    role: ApiKeyRole,
    agent: AgentRecord,
    entry: Option<AgentLimitEntry>,
    budget_daily: Option<Money>,
    now: OffsetDateTime,
) -> Result<(AgentRecord, EnforcedLimits), ApiError> {
    let store = &state.store;
    let activation = repeat_bootstrap(
        &agentry_lifecycle::Lifecycle::of(&agent),
        agent.parent_id.is_some(),
        agent.origin,
        role,
        now,
    )
    .map_err(|refusal| refused(&agent.slug, refusal))?;
    let entry = match entry {
        Some(entry) => entry,
        None => store
            .ensure_agent_limit_entry(
                agent.tenant_id,
                agent.id,
                &agent.slug.limits_key(),
                AgentLimitEntry::for_bootstrap(budget_daily),
            )
            .await
            .map_err(limits_error)?,
    };
    // Activated under its row lock, which re-checks the lifecycle.
    let agent = match activation {
        None => agent,
        Some(_) => {
            store
                .transition(agent.tenant_id, agent.id, LifecycleCommand::Bootstrap, now)
                .await?
                .map_err(|refusal| refused(&agent.slug, refusal.into()))?
                .0
        }
    };
    let enforced = enforced_limits(&agent, Some(&entry));
    Ok((agent, enforced))
}

/// A limits write that failed: 503, and no token is issued.
fn limits_error(error: StoreError) -> ApiError {
    if error.is_unavailable() {
        ApiError::unavailable(
            "the agent's limits could not be written; no token was issued, retry the bootstrap",
        )
        .with_code("limits_unavailable")
    } else {
        error.into()
    }
}

pub(crate) fn respond(
    state: &AppState,
    status: StatusCode,
    agent: &AgentRecord,
    enforced: EnforcedLimits,
    now: OffsetDateTime,
) -> Result<HttpResponse, ApiError> {
    let (jwt, expires_at) = state
        .mint_agent_token(agent, now)
        .ok_or_else(|| ApiError::unavailable("no signing key is loaded"))?;
    Ok(HttpResponse::build(status).json(BootstrapResponse {
        profile: AgentProfile::from(agent),
        jwt,
        jwt_expires_at: timestamp(expires_at),
        budget: BootstrapBudget {
            profile_daily_usd: agent.budget_daily,
            profile_monthly_usd: agent.budget_monthly,
            enforced_daily_usd: enforced.daily,
            enforced_rpm: enforced.rpm,
        },
        next_steps: NextSteps::on(&state.settings.public_url),
    }))
}
