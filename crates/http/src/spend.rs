//! Spend and holds: what the seeds imply so that budgets mean something.
//! `POST /v1/agent/spend` records a cost; holds reserve money for a cost
//! learned later. Every decision is the ledger's, inside one transaction
//! per agent, so concurrent spenders can never pass the enforced limits.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_auth::Permission;
use agentry_domain::{AgentSlug, Money};
use agentry_ledger::{Account, EnforcedLimits, Entry, EntryKind, HoldId, LedgerError, Window};
use agentry_lifecycle::{Access, RequestScope};
use agentry_store::{AgentRecord, Appends, StoreError, now};
use serde::Deserialize;
use serde_json::json;
use time::Duration;

use crate::error::ApiError;
use crate::guard::{Principal, denial_error};
use crate::state::AppState;
use crate::wire::timestamp;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/agent/spend", web::post().to(spend))
        .route("/v1/agent/holds", web::post().to(hold))
        .route("/v1/agent/holds/{hold_id}/capture", web::post().to(capture))
        .route("/v1/agent/holds/{hold_id}", web::delete().to(release));
}

/// Longest a hold may live.
const MAX_HOLD_SECONDS: i64 = 86_400;
const DEFAULT_HOLD_SECONDS: i64 = 300;

/// The agent whose budget a request moves: the calling agent, or the one an
/// API key with `spend.record` names.
async fn account_holder(
    state: &AppState,
    caller: &Principal,
    named: Option<&str>,
) -> Result<AgentRecord, ApiError> {
    match caller {
        Principal::Agent(agent) => {
            agent.require_full_access()?;
            if named.is_some_and(|name| name != agent.record().slug.as_str()) {
                return Err(ApiError::forbidden(
                    "permission_denied",
                    "an agent may only spend its own budget",
                ));
            }
            Ok(agent.record().clone())
        }
        Principal::ApiKey(key) => {
            key.require(Permission::SpendRecord)?;
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
            Access::for_agent(&agent.lifecycle(), now())
                .permits(RequestScope::Other)
                .map_err(denial_error)?;
            Ok(agent)
        }
    }
}

/// Appends the one entry `decide` (a ledger operation) makes on `agent`'s
/// account. Inside the agent's ledger transaction, under its lock, the
/// lifecycle is checked again and the limits are read: a suspension or a
/// lowered limit committed a moment ago always counts. Returns the account
/// as it is afterwards and the limits that applied.
async fn move_money<F>(
    state: &AppState,
    agent: &AgentRecord,
    key: Option<String>,
    decide: F,
) -> Result<(Account, EnforcedLimits), StoreError>
where
    F: FnOnce(&Account, &EnforcedLimits) -> Result<Entry, LedgerError> + Send + 'static,
{
    let (tenant, id) = (agent.tenant_id, agent.id);
    state
        .store
        .detached(async move |store| {
            let replay = key.clone().map(|key| (id, key));
            let (_, outcome) = store
                .ledger_decision(tenant, &[id], replay, |view| {
                    let record = view.agent(id)?;
                    Access::for_agent(&record.lifecycle(), now()).permits(RequestScope::Other)?;
                    let limits = view.enforced(id)?;
                    let mut account = view.account(id)?.clone();
                    let entry = decide(&account, &limits)?;
                    account.record(&entry)?;
                    let appends = Appends {
                        entries: vec![(id, entry)],
                        idempotency_key: key,
                    };
                    Ok((appends, (account, limits)))
                })
                .await?;
            Ok(outcome)
        })
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
            let limits = store.agent_limits(tenant).await?.enforced_for(&agent);
            Ok((store.account(tenant, id).await?, limits))
        })
        .await
}

fn figures(agent: &AgentRecord, account: &Account, limits: &EnforcedLimits) -> serde_json::Value {
    let now = now();
    json!({
        "agent_id": agent.slug.as_str(),
        "enforced_daily_spent_usd": account.spent(Window::Day, now),
        "enforced_daily_remaining_usd": account.remaining(limits, now).map(|(money, _)| money),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpendRequest {
    amount_usd: Money,
    agent_id: Option<String>,
    idempotency_key: Option<String>,
    description: Option<String>,
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

async fn spend(
    state: web::Data<AppState>,
    caller: Principal,
    body: web::Json<SpendRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
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
    let agent = account_holder(&state, &caller, body.agent_id.as_deref()).await?;
    let amount = body.amount_usd;
    let recorded = move_money(
        &state,
        &agent,
        body.idempotency_key,
        move |account, limits| account.spend(amount, limits, now()),
    )
    .await;
    let (replay, (account, limits)) = match recorded {
        Ok(moved) => (false, moved),
        // The same idempotency key again: already recorded once. The
        // same request gets the figures as they are now; a different one
        // under the same key is a client bug worth telling.
        Err(StoreError::Replayed(earlier)) => {
            if !matches!(earlier.kind, EntryKind::Spend { amount: recorded } if recorded == amount)
            {
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
    let mut body = figures(&agent, &account, &limits);
    body["spent_usd"] = json!(amount);
    body["idempotent_replay"] = json!(replay);
    Ok(if replay {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    }
    .json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldRequest {
    amount_usd: Money,
    ttl_seconds: Option<i64>,
    agent_id: Option<String>,
    idempotency_key: Option<String>,
}

async fn hold(
    state: web::Data<AppState>,
    caller: Principal,
    body: web::Json<HoldRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    check_key(body.idempotency_key.as_deref())?;
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_HOLD_SECONDS);
    if !(1..=MAX_HOLD_SECONDS).contains(&ttl) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("ttl_seconds must be 1 to {MAX_HOLD_SECONDS}"),
        ));
    }
    let agent = account_holder(&state, &caller, body.agent_id.as_deref()).await?;
    let (amount, hold) = (body.amount_usd, HoldId(uuid::Uuid::now_v7()));
    let expires_at = now() + Duration::seconds(ttl);
    let held = move_money(
        &state,
        &agent,
        body.idempotency_key,
        move |account, limits| account.hold(hold, amount, expires_at, limits, now()),
    )
    .await;
    let (status, hold, expires_at, (account, limits)) = match held {
        Ok(moved) => (StatusCode::CREATED, hold, expires_at, moved),
        // A retried hold answers with the hold it already made.
        Err(StoreError::Replayed(earlier)) => match earlier.kind {
            EntryKind::Hold {
                hold,
                amount: recorded,
                expires_at,
            } if recorded == amount => (
                StatusCode::OK,
                hold,
                expires_at,
                current_figures(&state, &agent).await?,
            ),
            _ => return Err(idempotency_mismatch()),
        },
        Err(error) => return Err(error.into()),
    };
    let mut body = figures(&agent, &account, &limits);
    body["hold_id"] = json!(hold.0.to_string());
    body["amount_usd"] = json!(amount);
    body["expires_at"] = json!(timestamp(expires_at));
    Ok(HttpResponse::build(status).json(body))
}

/// The hold named in the path, owned by an agent the caller may act for.
async fn held_by(
    state: &AppState,
    caller: &Principal,
    path: &str,
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
    let agent = account_holder(state, caller, Some(owner.slug.as_str())).await?;
    Ok((agent, hold))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureRequest {
    amount_usd: Money,
}

async fn capture(
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<String>,
    body: web::Json<CaptureRequest>,
) -> Result<HttpResponse, ApiError> {
    let (agent, hold) = held_by(&state, &caller, &path).await?;
    let amount = body.amount_usd;
    let (account, limits) = move_money(&state, &agent, None, move |account, _| {
        account.capture(hold, amount, now())
    })
    .await?;
    let (tenant, id) = (agent.tenant_id, agent.id);
    let entries = state
        .store
        .detached(async move |store| store.ledger_entries(tenant, id).await)
        .await?;
    let mut body = figures(&agent, &account, &limits);
    body["hold_id"] = json!(hold.0.to_string());
    body["captured_usd"] = json!(amount);
    body["released_usd"] = json!(held_amount(&entries, hold).saturating_sub(amount));
    Ok(HttpResponse::Ok().json(body))
}

fn held_amount(entries: &[Entry], hold: HoldId) -> Money {
    entries
        .iter()
        .find_map(|entry| match entry.kind {
            EntryKind::Hold {
                hold: id, amount, ..
            } if id == hold => Some(amount),
            _ => None,
        })
        .unwrap_or(Money::ZERO)
}

async fn release(
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (agent, hold) = held_by(&state, &caller, &path).await?;
    let (account, limits) = move_money(&state, &agent, None, move |account, _| {
        account.release(hold, now())
    })
    .await?;
    let mut body = figures(&agent, &account, &limits);
    body["hold_id"] = json!(hold.0.to_string());
    body["released"] = json!(true);
    Ok(HttpResponse::Ok().json(body))
}
