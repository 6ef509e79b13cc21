//! The registry's handlers: wire to one store command and back.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use agentry_auth::{ApiKey, ApiKeyKind, Permission};
use agentry_domain::{AgentId, AgentName, AgentOrigin, Scope, TrustLevel};
use agentry_lifecycle::TerminationReason;
use agentry_store::{AgentPageQuery, NewAgent};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::*;
use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::ApiKeyPrincipal;
use crate::guard::RequestTime;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::timestamp;

/// Registers an agent with its own API key (shown once).
///
/// Also seed 002's route (Agent United's agents API): a request carrying a
/// workspace session, or a workspace agent's token or own key, and no
/// `X-Bulwark-Tenant` header, is seed 002's and gets seed 002's shapes (the
/// second alternative of each body); a tenant API key, or any request with
/// the header, is seed 004's (docs/api.md, "Two families on one path").
#[utoipa::path(
    post,
    operation_id = "register_agent",
    path = "/api/v1/agents",
    tag = "registry",
    security(("api_key" = []), ("session_jwt" = []), ("agent_jwt" = [])),
    params(("X-Bulwark-Tenant" = Option<String>, Header, description = "The caller's tenant: its id or its name. \
        Required with a tenant key (seed 004); sending it makes the request seed 004's.")),
    request_body = CreateAgentBody,
    responses(
        (status = 201, description = "Seed 004: registered, `apiKey` shown only now. Seed 002: the agent \
            (its keys come from `/api/v1/agents/{agent_id}/keys`).", body = CreateAgentAnswer),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (a bad `name`, `scopes`, `trustLevel`, `description` or `metadata`), `tenant_header_required`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent's credentials), `permission_denied` \
            (the key's role lacks `agent.profile.write`); seed 002: `workspace_credentials_required`, \
            `insufficient_role` (only the workspace admin creates agents).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: `X-Bulwark-Tenant` names another tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict` (seed 004), `agent_exists` (seed 002): an agent with this \
            `name` exists in the tenant, ignoring case.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn register(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    request: HttpRequest,
    body: Deferred<web::Json<Register>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileWrite)?;
    check_tenant_header(&state, &request, &caller, true).await?;
    let body = body.read().await?.into_inner();
    let mut problems = Problems::default();
    let name = problems.check(AgentName::parse(&body.name), "name");
    problems.length("description", body.description.as_deref(), 0, 1000);
    let scopes = problems.check(
        Scope::parse_list(body.scopes.iter().map(String::as_str)),
        "scopes",
    );
    let trust_level = problems.check(
        body.trust_level
            .as_deref()
            .unwrap_or("medium")
            .parse::<TrustLevel>(),
        "trustLevel",
    );
    let metadata = body.metadata.unwrap_or_default();
    if serde_json::to_string(&metadata).map_or(0, |text| text.len()) > 16 * 1024 {
        problems.push("metadata: must be at most 16 KiB of JSON".into());
    }
    problems.finish()?;
    let (Some(name), Some(scopes), Some(trust_level)) = (name, scopes, trust_level) else {
        return Err(ApiError::bad_request("invalid_request", "invalid agent"));
    };
    let mut new = NewAgent::called(name, AgentOrigin::Registry);
    new.description = body.description;
    new.scopes = scopes.into_iter().map(Scope::into_string).collect();
    new.trust_level = trust_level;
    new.metadata = serde_json::Value::Object(metadata);
    let key = ApiKey::mint(ApiKeyKind::Agent);
    let (tenant, hash, now) = (caller.tenant_id, key.hash().0, now);
    let (agent, _) = state
        .store
        .detached(async move |store| store.register_agent(tenant, new, hash, now).await)
        .await?;
    audit(&state, &caller, "registry.register", &agent);
    Ok(envelope(
        StatusCode::CREATED,
        Registered {
            agent_id: agent.id.to_type_id(),
            name: agent.name.to_string(),
            api_key: key.expose().to_owned(),
            scopes: agent.scopes.clone(),
            trust_level: agent.trust_level.as_str(),
            created_at: timestamp(agent.created_at),
        },
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    trust_level: Option<String>,
    status: Option<String>,
}

fn encode_cursor(last: AgentId) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{}", last.to_type_id()))
}

fn decode_cursor(cursor: &str) -> Option<AgentId> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    AgentId::parse_type_id(text.strip_prefix(CURSOR_PREFIX)?).ok()
}

/// Lists the tenant's agents, oldest first, a page at a time.
///
/// Pages are keyset-paginated: an agent registered or revoked while a
/// client pages through never makes it see another agent twice or miss one
/// that existed throughout. Seed 002's list is every agent of the
/// workspace that is not deleted, in one answer (no query parameters).
///
/// Also seed 002's route (Agent United's agents API): a request carrying a
/// workspace session, or a workspace agent's token or own key, and no
/// `X-Bulwark-Tenant` header, is seed 002's and gets seed 002's shapes (the
/// second alternative of each body); a tenant API key, or any request with
/// the header, is seed 004's (docs/api.md, "Two families on one path").
#[utoipa::path(
    get,
    operation_id = "list_agents",
    path = "/api/v1/agents",
    tag = "registry",
    security(("api_key" = []), ("session_jwt" = []), ("agent_jwt" = [])),
    params(
        ("X-Bulwark-Tenant" = Option<String>, Header, description = "If sent, must name the caller's tenant."),
        ("limit" = Option<i64>, Query, minimum = 1, description = "Results per page (default 20, max 100): a larger \
            `limit` is answered with 100; 0, a negative number or anything but a whole number is a 400."),
        ("cursor" = Option<String>, Query, description = "`pagination.cursor` of the previous page."),
        ("trustLevel" = Option<String>, Query, description = "`low`, `medium`, `high` or `critical`."),
        ("status" = Option<String>, Query, description = "`active` or `revoked`."),
    ),
    responses(
        (status = 200, description = "Seed 004: a page. Seed 002: `{agents}`.", body = ListAgentsAnswer),
        (status = 400, description = "`invalid_query`: `limit` below 1 or not a whole number, an unknown \
            `trustLevel` or `status`, a `cursor` this service did not hand out.",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required`, `permission_denied` (needs `agent.profile.read`); \
            seed 002: `workspace_credentials_required`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: `X-Bulwark-Tenant` names another tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn list(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    request: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileRead)?;
    check_tenant_header(&state, &request, &caller, false).await?;
    let query = query.into_inner();
    let mut problems = Problems::default();
    // Seed 004's "max: 100": a larger page is clamped to it, not refused.
    let limit = match query.limit.as_deref().map(str::parse::<i64>) {
        None => DEFAULT_PAGE,
        Some(Ok(limit)) if limit >= 1 => limit.min(MAX_PAGE),
        Some(_) => {
            problems.push("limit: must be a whole number of at least 1".into());
            DEFAULT_PAGE
        }
    };
    let after = match query.cursor.as_deref() {
        None => None,
        Some(cursor) => {
            let decoded = decode_cursor(cursor);
            if decoded.is_none() {
                problems.push("cursor: not a cursor this service handed out".into());
            }
            decoded
        }
    };
    let trust_level = query
        .trust_level
        .as_deref()
        .and_then(|level| problems.check(level.parse::<TrustLevel>(), "trustLevel"));
    let revoked = match query.status.as_deref() {
        None => None,
        Some("active") => Some(false),
        Some("revoked") => Some(true),
        Some(other) => {
            problems.push(format!(
                "status: unknown status {other:?}; expected active or revoked"
            ));
            None
        }
    };
    problems
        .finish()
        .map_err(|error| error.with_code("invalid_query"))?;
    let tenant = caller.tenant_id;
    let page_query = AgentPageQuery {
        after,
        limit: limit + 1,
        trust_level,
        revoked,
    };
    let mut agents = state
        .store
        .detached(async move |store| store.agents_page(tenant, page_query).await)
        .await?;
    let has_more = agents.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    agents.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let cursor = agents
        .last()
        .filter(|_| has_more)
        .map(|last| encode_cursor(last.id));
    let data = agents
        .iter()
        .map(|agent| AgentSummary {
            agent_id: agent.id.to_type_id(),
            name: agent.name.to_string(),
            trust_level: agent.trust_level.as_str(),
            status: status(agent),
            last_seen_at: agent.last_seen_at.map(timestamp),
        })
        .collect();
    Ok(HttpResponse::Ok().json(AgentPage {
        data,
        pagination: Pagination { cursor, has_more },
    }))
}

/// One agent's registry record.
///
/// Also seed 002's route (Agent United's agents API): a request carrying a
/// workspace session, or a workspace agent's token or own key, and no
/// `X-Bulwark-Tenant` header, is seed 002's and gets seed 002's shapes (the
/// second alternative of each body); a tenant API key, or any request with
/// the header, is seed 004's (docs/api.md, "Two families on one path").
#[utoipa::path(
    get,
    operation_id = "get_agent",
    path = "/api/v1/agents/{agent_id}",
    tag = "registry",
    security(("api_key" = []), ("session_jwt" = []), ("agent_jwt" = [])),
    params(
        ("agent_id" = String, Path, description = "The agent's `agentId` (`agent_` and 26 base32 characters; \
            seed 002 also takes its UUID); anything else is a 404."),
        ("X-Bulwark-Tenant" = Option<String>, Header, description = "If sent, must name the caller's tenant."),
    ),
    responses(
        (status = 200, description = "The agent.", body = GetAgentAnswer),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required`, `permission_denied` (needs `agent.profile.read`); \
            seed 002: `workspace_credentials_required`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such agent in the tenant, or another tenant named.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn get_agent(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileRead)?;
    check_tenant_header(&state, &request, &caller, false).await?;
    let agent = tenant_agent(&state, caller.tenant_id, parse_agent_id(&path)?).await?;
    Ok(envelope(StatusCode::OK, detail(&agent)))
}

/// Revokes an agent: terminates it (and its sub-agents, whose unspent
/// budgets flow back up), so every key and token it holds stops working on
/// the next request. Revoking again answers the same. Seed 002's delete
/// does the same and answers 204; the agent is then gone from the
/// workspace's answers (404).
///
/// Also seed 002's route (Agent United's agents API): a request carrying a
/// workspace session, or a workspace agent's token or own key, and no
/// `X-Bulwark-Tenant` header, is seed 002's and gets seed 002's shapes (the
/// second alternative of each body); a tenant API key, or any request with
/// the header, is seed 004's (docs/api.md, "Two families on one path").
#[utoipa::path(
    delete,
    operation_id = "revoke_agent",
    path = "/api/v1/agents/{agent_id}",
    tag = "registry",
    security(("api_key" = []), ("session_jwt" = []), ("agent_jwt" = [])),
    params(
        ("agent_id" = String, Path, description = "The agent's `agentId` (`agent_` and 26 base32 characters; \
            seed 002 also takes its UUID); anything else is a 404."),
        ("X-Bulwark-Tenant" = Option<String>, Header, description = "If sent, must name the caller's tenant."),
    ),
    responses(
        (status = 200, description = "Seed 004: revoked (now or before).", body = Envelope<Revoked>),
        (status = 204, description = "Seed 002: deleted."),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required`, `permission_denied` (needs `agent.lifecycle.manage`); \
            seed 002: `workspace_credentials_required`, `insufficient_role`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such agent in the tenant, or another tenant named.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable, or the agent's \
            sub-agents kept changing; retry.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn revoke(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentLifecycleManage)?;
    check_tenant_header(&state, &request, &caller, false).await?;
    let tenant = caller.tenant_id;
    let id = tenant_agent(&state, tenant, parse_agent_id(&path)?)
        .await?
        .id;
    // The store's reclaim is idempotent: an agent terminated before is
    // answered as it is, with its first `revokedAt`.
    let reclaimed = state
        .store
        .detached(async move |store| {
            store
                .reclaim_agent(tenant, id, TerminationReason::Revoked, now)
                .await
        })
        .await?;
    let agent = reclaimed.agent;
    if !reclaimed.already_terminated {
        audit(&state, &caller, "registry.revoke", &agent);
    }
    Ok(envelope(
        StatusCode::OK,
        Revoked {
            agent_id: agent.id.to_type_id(),
            status: status(&agent),
            revoked_at: agent.revoked_at.map(timestamp).ok_or_else(|| {
                ApiError::internal(&format_args!(
                    "agent {} is terminated without revoked_at",
                    agent.id
                ))
            })?,
        },
    ))
}

/// Issues a new API key for the agent; the old one (and every token issued
/// before) stops working on the next request.
#[utoipa::path(
    post,
    operation_id = "rotate_agent_key",
    path = "/api/v1/agents/{agent_id}/rotate-key",
    tag = "registry",
    security(("api_key" = [])),
    params(
        ("agent_id" = String, Path, description = "The agent's `agentId` (`agent_` and 26 base32 characters); anything else is a 404."),
        ("X-Bulwark-Tenant" = Option<String>, Header, description = "If sent, must name the caller's tenant."),
    ),
    responses(
        (status = 200, description = "The new key, shown only now.", body = Envelope<Rotated>),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required`, `permission_denied` (needs `agent.lifecycle.manage`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such agent in the tenant, or another tenant named.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`refused`: the agent is revoked.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn rotate_key(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentLifecycleManage)?;
    check_tenant_header(&state, &request, &caller, false).await?;
    let tenant = caller.tenant_id;
    let agent = tenant_agent(&state, tenant, parse_agent_id(&path)?).await?;
    let key = ApiKey::mint(ApiKeyKind::Agent);
    let (id, hash, now) = (agent.id, key.hash().0, now);
    let issued = state
        .store
        .detached(async move |store| store.rotate_agent_key(tenant, id, hash, now).await)
        .await?;
    audit(&state, &caller, "registry.rotate_key", &agent);
    Ok(envelope(
        StatusCode::OK,
        Rotated {
            agent_id: agent.id.to_type_id(),
            api_key: key.expose().to_owned(),
            rotated_at: timestamp(issued.created_at),
        },
    ))
}
