//! Spend and holds: what the seeds imply so that budgets mean something.
//! `POST /v1/agent/spend` records a cost; holds reserve money for a cost
//! learned later. Every decision is the ledger's, inside one transaction
//! per agent, so concurrent spenders can never pass the enforced limits.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_auth::Permission;
use agentry_domain::{AgentSlug, Money};
use agentry_ledger::{
    Account, EnforcedLimits, EntryKind, HoldId, LedgerError, Movement, Window, hold_expiry,
    released_by_capture,
};
use agentry_lifecycle::{Access, RequestScope};
use agentry_store::{AgentRecord, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use time::OffsetDateTime;

use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::Principal;
use crate::guard::RequestTime;
use crate::state::AppState;
use crate::wire::{AgentSlugSchema, MoneySchema, PositiveMoneySchema, TimestampSchema, timestamp};

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/agent/spend", web::post().to(spend))
        .route("/v1/agent/holds", web::post().to(hold))
        .route("/v1/agent/holds/{hold_id}/capture", web::post().to(capture))
        .route("/v1/agent/holds/{hold_id}", web::delete().to(release));
}

#[derive(OpenApi)]
#[openapi(paths(spend, hold, capture, release))]
pub(crate) struct Api;

/// What a caller must be to move money at all, judged before its body is
/// read: an agent with its full credentials, or a key that may record
/// spends. Every handler here calls it first.
fn require_money_access(caller: &Principal) -> Result<(), ApiError> {
    match caller {
        Principal::Agent(agent) => agent.require_full_access(),
        Principal::ApiKey(key) => key.require(Permission::SpendRecord),
    }
}

/// The agent whose budget a request moves: the calling agent, or the one an
/// API key names. The caller has passed [`require_money_access`].
async fn account_holder(
    state: &AppState,
    caller: &Principal,
    named: Option<&str>,
    now: OffsetDateTime,
) -> Result<AgentRecord, ApiError> {
    match caller {
        Principal::Agent(agent) => {
            if named.is_some_and(|name| name != agent.record().slug.as_str()) {
                return Err(ApiError::forbidden(
                    "permission_denied",
                    "an agent may only spend its own budget",
                ));
            }
            Ok(agent.record().clone())
        }
        Principal::ApiKey(key) => {
            let name = named.ok_or_else(|| {
                ApiError::bad_request("invalid_request", "agent_id is required with an API key")
            })?;
            let slug = AgentSlug::parse(name).map_err(|_| ApiError::not_found("agent"))?;
            let tenant = key.tenant_id;
            let agent = state
                .store
                .detached(async move |store| store.find_agent_by_slug(tenant, &slug).await)
                .await?
                .ok_or_else(|| ApiError::not_found("agent"))?;
            Access::for_agent(&agentry_lifecycle::Lifecycle::of(&agent), now)
                .permits(RequestScope::Other)
                .map_err(ApiError::from)?;
            Ok(agent)
        }
    }
}

/// Runs the store's one command for moving `agent`'s own money.
async fn move_money(
    state: &AppState,
    agent: &AgentRecord,
    movement: Movement,
    key: Option<String>,
    now: OffsetDateTime,
) -> Result<(Account, EnforcedLimits), StoreError> {
    let (tenant, id) = (agent.tenant_id, agent.id);
    state
        .store
        .detached(async move |store| store.move_money(tenant, id, movement, key, now).await)
        .await
}

fn idempotency_mismatch() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_mismatch",
        "this idempotency_key was already used for a different request",
    )
}

/// The account and limits of `agent` as they are now, outside any decision.
async fn current_figures(
    state: &AppState,
    agent: &AgentRecord,
) -> Result<(Account, EnforcedLimits), StoreError> {
    let (tenant, id) = (agent.tenant_id, agent.id);
    state
        .store
        .detached(async move |store| {
            let agent = store
                .find_agent(tenant, id)
                .await?
                .ok_or(StoreError::NotFound("agent"))?;
            let limits = store.enforced_for(&agent).await?;
            Ok((store.account(tenant, id).await?, limits))
        })
        .await
}

/// The agent's budget after the call, in every answer of this module.
#[derive(Debug, Serialize, ToSchema)]
struct Figures {
    #[schema(value_type = AgentSlugSchema)]
    agent_id: String,
    #[schema(value_type = MoneySchema)]
    enforced_daily_spent_usd: Money,
    /// `null` when nothing limits the agent.
    #[schema(value_type = Option<MoneySchema>)]
    enforced_daily_remaining_usd: Option<Money>,
}

fn figures(
    agent: &AgentRecord,
    account: &Account,
    limits: &EnforcedLimits,
    now: OffsetDateTime,
) -> Figures {
    Figures {
        agent_id: agent.slug.as_str().to_owned(),
        enforced_daily_spent_usd: account.spent(Window::Day, now),
        enforced_daily_remaining_usd: account.remaining(limits, now).map(|(money, _)| money),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpendRequest {
    #[schema(value_type = PositiveMoneySchema)]
    amount_usd: Money,
    /// Whose budget: required with an API key, and with an agent's own
    /// credentials only ever the agent itself.
    #[schema(value_type = Option<AgentSlugSchema>)]
    agent_id: Option<String>,
    /// The same key again records nothing twice.
    #[schema(min_length = 1, max_length = 200)]
    idempotency_key: Option<String>,
    #[schema(max_length = 500)]
    description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct SpendResponse {
    #[serde(flatten)]
    figures: Figures,
    #[schema(value_type = MoneySchema)]
    spent_usd: Money,
    /// `true` when the idempotency key was seen before and nothing was
    /// charged this time.
    idempotent_replay: bool,
}

fn check_key(key: Option<&str>) -> Result<(), ApiError> {
    if key.is_some_and(|key| key.is_empty() || key.len() > 200) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "idempotency_key must be 1 to 200 characters",
        ));
    }
    Ok(())
}

/// Records a cost against an agent's budget.
///
/// The ledger judges it inside one transaction per agent, so concurrent
/// calls never take the agent past its enforced daily, monthly or
/// allocation limit.
#[utoipa::path(
    post,
    operation_id = "spend",
    path = "/v1/agent/spend",
    tag = "spend",
    security(("agent_jwt" = []), ("api_key" = []), ("mtls" = [])),
    request_body = SpendRequest,
    responses(
        (status = 201, description = "Recorded.", body = SpendResponse),
        (status = 200, description = "The idempotency key was used before for this amount: nothing was \
            charged, the figures are as they are now.", body = SpendResponse),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (`agent_id` missing with an API key, `idempotency_key` or `description` too long), \
            `invalid_amount` (zero).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`insufficient_budget` (nothing recorded), `agent_suspended`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`certificate_not_enough` (a machine certificate only reads the agent's own state), `permission_denied` (a key without `spend.record`, or an agent naming \
            another agent), `agent_quarantined`, `agent_not_activated`, `agent_terminated`, `agent_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: the `agent_id` an API key names does not exist.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`idempotency_mismatch`: the idempotency key was used for a \
            different amount.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the calling agent's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn spend(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: Principal,
    body: Deferred<web::Json<SpendRequest>>,
) -> Result<HttpResponse, ApiError> {
    require_money_access(&caller)?;
    let body = body.read().await?.into_inner();
    check_key(body.idempotency_key.as_deref())?;
    if body
        .description
        .as_ref()
        .is_some_and(|text| text.chars().count() > 500)
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "description must be at most 500 characters",
        ));
    }
    let agent = account_holder(&state, &caller, body.agent_id.as_deref(), now).await?;
    let amount = body.amount_usd;
    let movement = Movement::Spend { amount };
    let recorded = move_money(&state, &agent, movement, body.idempotency_key, now).await;
    let (replay, (account, limits)) = match recorded {
        Ok(moved) => (false, moved),
        // The same idempotency key again: already recorded once. The
        // same request gets the figures as they are now; a different one
        // under the same key is a client bug worth telling.
        Err(StoreError::Replayed(earlier)) => {
            if !movement.is_replayed_by(&earlier) {
                return Err(idempotency_mismatch());
            }
            (true, current_figures(&state, &agent).await?)
        }
        Err(error) => {
            if matches!(
                error,
                StoreError::Ledger(LedgerError::InsufficientBudget { .. })
            ) {
                state.audit(
                    agent.tenant_id,
                    agentry_store::NewAuditEvent {
                        actor: match &caller {
                            Principal::Agent(_) => format!("agent:{}", agent.slug),
                            Principal::ApiKey(key) => key.actor(),
                        },
                        action: "budget.spend".into(),
                        target: Some(format!("agent:{}", agent.slug)),
                        outcome: "denied".into(),
                        detail: json!({ "reason": "insufficient_budget", "amount_usd": amount }),
                    },
                );
            }
            return Err(error.into());
        }
    };
    let body = SpendResponse {
        figures: figures(&agent, &account, &limits, now),
        spent_usd: amount,
        idempotent_replay: replay,
    };
    Ok(if replay {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    }
    .json(body))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HoldRequest {
    #[schema(value_type = PositiveMoneySchema)]
    amount_usd: Money,
    /// How long the money stays reserved unless captured or released.
    #[schema(minimum = 1, maximum = 86_400, default = 300)]
    #[serde(default, deserialize_with = "crate::wire::whole_number::optional")]
    ttl_seconds: Option<i64>,
    /// Whose budget: required with an API key, and with an agent's own
    /// credentials only ever the agent itself.
    #[schema(value_type = Option<AgentSlugSchema>)]
    agent_id: Option<String>,
    /// The same key again makes no second hold and answers with the first.
    #[schema(min_length = 1, max_length = 200)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct HoldResponse {
    #[serde(flatten)]
    figures: Figures,
    /// Names the hold in `/v1/agent/holds/{hold_id}`.
    #[schema(format = Uuid)]
    hold_id: String,
    #[schema(value_type = MoneySchema)]
    amount_usd: Money,
    #[schema(value_type = TimestampSchema)]
    expires_at: String,
}

/// Reserves money for a cost learned later.
///
/// The amount counts against the budget until it is captured, released or
/// expires.
#[utoipa::path(
    post,
    operation_id = "create_hold",
    path = "/v1/agent/holds",
    tag = "spend",
    security(("agent_jwt" = []), ("api_key" = []), ("mtls" = [])),
    request_body = HoldRequest,
    responses(
        (status = 201, description = "The hold is open.", body = HoldResponse),
        (status = 200, description = "The idempotency key was used before for this amount: the hold it \
            made.", body = HoldResponse),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (`agent_id` missing with an API key, `ttl_seconds` out of range, `idempotency_key` too long), \
            `invalid_amount` (zero).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`insufficient_budget` (nothing held), `agent_suspended`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`certificate_not_enough` (a machine certificate only reads the agent's own state), `permission_denied` (a key without `spend.record`, or an agent naming \
            another agent), `agent_quarantined`, `agent_not_activated`, `agent_terminated`, `agent_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: the `agent_id` an API key names does not exist.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`idempotency_mismatch`: the idempotency key was used for a \
            different request.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the calling agent's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn hold(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: Principal,
    body: Deferred<web::Json<HoldRequest>>,
) -> Result<HttpResponse, ApiError> {
    require_money_access(&caller)?;
    let body = body.read().await?.into_inner();
    check_key(body.idempotency_key.as_deref())?;
    let (amount, hold) = (body.amount_usd, HoldId(uuid::Uuid::now_v7()));
    let expires_at = hold_expiry(body.ttl_seconds, now)
        .map_err(|error| ApiError::bad_request("invalid_request", error.to_string()))?;
    let movement = Movement::Hold {
        hold,
        amount,
        expires_at,
    };
    let agent = account_holder(&state, &caller, body.agent_id.as_deref(), now).await?;
    let held = move_money(&state, &agent, movement, body.idempotency_key, now).await;
    let (status, hold, expires_at, (account, limits)) = match held {
        Ok(moved) => (StatusCode::CREATED, hold, expires_at, moved),
        // A retried hold answers with the hold it already made.
        Err(StoreError::Replayed(earlier)) => match earlier.kind {
            EntryKind::Hold {
                hold, expires_at, ..
            } if movement.is_replayed_by(&earlier) => (
                StatusCode::OK,
                hold,
                expires_at,
                current_figures(&state, &agent).await?,
            ),
            _ => return Err(idempotency_mismatch()),
        },
        Err(error) => return Err(error.into()),
    };
    Ok(HttpResponse::build(status).json(HoldResponse {
        figures: figures(&agent, &account, &limits, now),
        hold_id: hold.0.to_string(),
        amount_usd: amount,
        expires_at: timestamp(expires_at),
    }))
}

/// The hold named in the path, owned by an agent the caller may act for.
async fn held_by(
    state: &AppState,
    caller: &Principal,
    path: &str,
    now: OffsetDateTime,
) -> Result<(AgentRecord, HoldId), ApiError> {
    let hold = HoldId(path.parse().map_err(|_| ApiError::not_found("hold"))?);
    let tenant = match caller {
        Principal::Agent(agent) => agent.record().tenant_id,
        Principal::ApiKey(key) => key.tenant_id,
    };
    let owner = state
        .store
        .detached(async move |store| {
            let Some(owner) = store.hold_owner(tenant, hold).await? else {
                return Ok(None);
            };
            store.find_agent(tenant, owner).await
        })
        .await?
        .ok_or_else(|| ApiError::not_found("hold"))?;
    // Another agent's hold reads as no hold at all.
    if let Principal::Agent(agent) = caller
        && agent.record().id != owner.id
    {
        return Err(ApiError::not_found("hold"));
    }
    let agent = account_holder(state, caller, Some(owner.slug.as_str()), now).await?;
    Ok((agent, hold))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CaptureRequest {
    /// At most the held amount; the rest is released.
    #[schema(value_type = MoneySchema)]
    amount_usd: Money,
}

#[derive(Debug, Serialize, ToSchema)]
struct CaptureResponse {
    #[serde(flatten)]
    figures: Figures,
    #[schema(format = Uuid)]
    hold_id: String,
    #[schema(value_type = MoneySchema)]
    captured_usd: Money,
    /// The part of the hold given back.
    #[schema(value_type = MoneySchema)]
    released_usd: Money,
}

/// Turns a hold into a spend of up to the held amount, once.
#[utoipa::path(
    post,
    operation_id = "capture_hold",
    path = "/v1/agent/holds/{hold_id}/capture",
    tag = "spend",
    security(("agent_jwt" = []), ("api_key" = []), ("mtls" = [])),
    params(("hold_id" = String, Path, format = Uuid, description = "The `hold_id` the hold was made with.")),
    request_body = CaptureRequest,
    responses(
        (status = 200, description = "Captured; the rest of the hold is released.", body = CaptureResponse),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `capture_exceeds_hold` \
            (more than the held amount).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the hold's agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`certificate_not_enough` (a machine certificate only reads the agent's own state), `permission_denied` (a key without `spend.record`), \
            `agent_quarantined`, `agent_not_activated`, `agent_terminated`, `agent_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such hold in the tenant, or another agent's.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`hold_closed` (already captured or released), `hold_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the calling agent's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn capture(
    now: RequestTime,
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<String>,
    body: Deferred<web::Json<CaptureRequest>>,
) -> Result<HttpResponse, ApiError> {
    capture_hold(now, state, caller, path.into_inner(), body).await
}

/// [`capture`] with its path parameter taken out, for the MCP tool.
pub(crate) async fn capture_hold(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: Principal,
    hold_id: String,
    body: Deferred<web::Json<CaptureRequest>>,
) -> Result<HttpResponse, ApiError> {
    require_money_access(&caller)?;
    let body = body.read().await?;
    let (agent, hold) = held_by(&state, &caller, &hold_id, now).await?;
    let amount = body.amount_usd;
    let capture = Movement::Capture { hold, amount };
    let (account, limits) = move_money(&state, &agent, capture, None, now).await?;
    Ok(HttpResponse::Ok().json(CaptureResponse {
        figures: figures(&agent, &account, &limits, now),
        hold_id: hold.0.to_string(),
        captured_usd: amount,
        released_usd: released_by_capture(&account, hold, amount),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct ReleaseResponse {
    #[serde(flatten)]
    figures: Figures,
    #[schema(format = Uuid)]
    hold_id: String,
    /// Always `true`.
    released: bool,
}

/// Gives a hold back unused; an expired hold may still be released.
#[utoipa::path(
    delete,
    operation_id = "release_hold",
    path = "/v1/agent/holds/{hold_id}",
    tag = "spend",
    security(("agent_jwt" = []), ("api_key" = []), ("mtls" = [])),
    params(("hold_id" = String, Path, format = Uuid, description = "The `hold_id` the hold was made with.")),
    responses(
        (status = 200, description = "Released.", body = ReleaseResponse),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`: the hold's agent is suspended.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`certificate_not_enough` (a machine certificate only reads the agent's own state), `permission_denied` (a key without `spend.record`), \
            `agent_quarantined`, `agent_not_activated`, `agent_terminated`, `agent_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such hold in the tenant, or another agent's.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`hold_closed`: already captured or released.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the calling agent's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn release(
    now: RequestTime,
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    release_hold(now, state, caller, path.into_inner()).await
}

/// [`release`] with its path parameter taken out, for the MCP tool.
pub(crate) async fn release_hold(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: Principal,
    hold_id: String,
) -> Result<HttpResponse, ApiError> {
    require_money_access(&caller)?;
    let (agent, hold) = held_by(&state, &caller, &hold_id, now).await?;
    let (account, limits) =
        move_money(&state, &agent, Movement::Release { hold }, None, now).await?;
    Ok(HttpResponse::Ok().json(ReleaseResponse {
        figures: figures(&agent, &account, &limits, now),
        hold_id: hold.0.to_string(),
        released: true,
    }))
}
