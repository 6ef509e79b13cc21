//! Seed 004: the agent registry at `/api/v1/agents*`, over the same agents
//! as `/v1/agent/*`. `agentId` is the TypeID form of the agent's id, `name`
//! the name as registered (its slug is the agent's `agent_id` in seeds
//! 000/001); every answer is wrapped in `{ "data": ... }`.

mod routes;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use agentry_domain::{AgentId, LifecycleState, TenantId};
use agentry_store::{AgentRecord, NewAuditEvent};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::error::ApiError;
use crate::guard::ApiKeyPrincipal;
use crate::redact::debug_redacting;
use crate::state::AppState;
use crate::wire::{AgentTypeIdSchema, TimestampSchema, timestamp};
use routes::{get_agent, list, register, revoke, rotate_key};

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/api/v1/agents", web::post().to(register))
        .route("/api/v1/agents", web::get().to(list))
        .route("/api/v1/agents/{agent_id}", web::get().to(get_agent))
        .route("/api/v1/agents/{agent_id}", web::delete().to(revoke))
        .route(
            "/api/v1/agents/{agent_id}/rotate-key",
            web::post().to(rotate_key),
        );
}

#[derive(OpenApi)]
#[openapi(paths(
    routes::register,
    routes::list,
    routes::get_agent,
    routes::revoke,
    routes::rotate_key
))]
pub(crate) struct Api;

const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;
const TENANT_HEADER: &str = "x-bulwark-tenant";
/// Cursors are versioned so their form can change without breaking a
/// client in the middle of a listing.
const CURSOR_PREFIX: &str = "v1:";

/// `{ "data": ... }`, the envelope of every seed 004 answer.
#[derive(Debug, Serialize, ToSchema)]
struct Envelope<T> {
    data: T,
}

fn envelope<T: Serialize>(status: StatusCode, data: T) -> HttpResponse {
    HttpResponse::build(status).json(Envelope { data })
}

/// The body of `POST /api/v1/agents`: seed 004's with a tenant key, seed
/// 002's with a workspace credential. For the OpenAPI document only.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "describes the two families' bodies; never built")]
enum CreateAgentBody {
    Registry(Register),
    Workspace(crate::workspace::NewWorkspaceAgent),
}

/// The answers of the routes seed 002 and seed 004 share, for the OpenAPI
/// document only.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "describes the two families' answers; never built")]
enum CreateAgentAnswer {
    Registry(Envelope<Registered>),
    Workspace(crate::workspace::WorkspaceAgent),
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "describes the two families' answers; never built")]
enum ListAgentsAnswer {
    Registry(AgentPage),
    Workspace(crate::workspace::WorkspaceAgentList),
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "describes the two families' answers; never built")]
enum GetAgentAnswer {
    Registry(Envelope<AgentDetail>),
    Workspace(crate::workspace::WorkspaceAgent),
}

/// Seed 004's registration body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = RegisterAgentRequest)]
struct Register {
    /// 1 to 100 characters, no control characters, not padded with white
    /// space; unique in the tenant ignoring case. The agent's `agent_id` in
    /// seeds 000/001 is derived from it (docs/api.md: names and slugs).
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    description: Option<String>,
    /// Up to 64 scopes, each 1 to 128 characters starting with a letter, of
    /// letters, digits and `: . _ - / *`.
    #[serde(default)]
    scopes: Vec<String>,
    /// `low`, `medium` (the default), `high` or `critical`.
    trust_level: Option<String>,
    #[schema(value_type = Object)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Registered {
    #[schema(value_type = AgentTypeIdSchema)]
    agent_id: String,
    name: String,
    /// The agent's own API key: shown once.
    api_key: String,
    scopes: Vec<String>,
    trust_level: &'static str,
    #[schema(value_type = TimestampSchema)]
    created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AgentSummary {
    #[schema(value_type = AgentTypeIdSchema)]
    agent_id: String,
    name: String,
    trust_level: &'static str,
    /// `revoked` once the agent is terminated, `active` before.
    status: &'static str,
    #[schema(value_type = Option<TimestampSchema>)]
    last_seen_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AgentDetail {
    #[schema(value_type = AgentTypeIdSchema)]
    agent_id: String,
    name: String,
    description: Option<String>,
    scopes: Vec<String>,
    trust_level: &'static str,
    status: &'static str,
    /// The full lifecycle state behind `status` (seed 001's).
    lifecycle_state: &'static str,
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    #[schema(value_type = TimestampSchema)]
    created_at: String,
    #[schema(value_type = Option<TimestampSchema>)]
    last_seen_at: Option<String>,
    /// When the agent was terminated, by whatever route (a revoke here,
    /// seed 001's lifecycle move, its parent's reclaim, an ancestor's
    /// termination, its TTL); `null` while it is not.
    #[schema(value_type = Option<TimestampSchema>)]
    revoked_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Pagination {
    /// Pass as `cursor` for the next page; absent on the last one.
    cursor: Option<String>,
    #[serde(rename = "hasMore")]
    has_more: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct AgentPage {
    data: Vec<AgentSummary>,
    pagination: Pagination,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Revoked {
    #[schema(value_type = AgentTypeIdSchema)]
    agent_id: String,
    status: &'static str,
    #[schema(value_type = TimestampSchema)]
    revoked_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Rotated {
    #[schema(value_type = AgentTypeIdSchema)]
    agent_id: String,
    /// The new key: shown once. The previous one stops working now.
    api_key: String,
    #[schema(value_type = TimestampSchema)]
    rotated_at: String,
}

debug_redacting!(Registered { agent_id, name, scopes, trust_level, created_at; secret: api_key });
debug_redacting!(Rotated { agent_id, rotated_at; secret: api_key });

/// The registry's `status`: `revoked` exactly when terminated (DESIGN.md §2).
fn status(agent: &AgentRecord) -> &'static str {
    if agent.lifecycle_state == LifecycleState::Terminated {
        "revoked"
    } else {
        "active"
    }
}

fn detail(agent: &AgentRecord) -> AgentDetail {
    AgentDetail {
        agent_id: agent.id.to_type_id(),
        name: agent.name.to_string(),
        description: agent.description.clone(),
        scopes: agent.scopes.clone(),
        trust_level: agent.trust_level.as_str(),
        status: status(agent),
        lifecycle_state: agent.lifecycle_state.as_str(),
        metadata: agent.metadata.clone(),
        created_at: timestamp(agent.created_at),
        last_seen_at: agent.last_seen_at.map(timestamp),
        revoked_at: agent.revoked_at.map(timestamp),
    }
}

/// `X-Bulwark-Tenant` must name the key's own tenant (its id, or its name).
/// Any other tenant looks exactly like an unknown one: 404.
async fn check_tenant_header(
    state: &AppState,
    request: &HttpRequest,
    caller: &ApiKeyPrincipal,
    required: bool,
) -> Result<(), ApiError> {
    let Some(value) = request.headers().get(TENANT_HEADER) else {
        return if required {
            Err(ApiError::bad_request(
                "tenant_header_required",
                "send the tenant as 'X-Bulwark-Tenant: <tenant id>'",
            ))
        } else {
            Ok(())
        };
    };
    let named = value.to_str().map(str::trim).unwrap_or_default().to_owned();
    let tenant = caller.tenant_id;
    if named.parse::<TenantId>().is_ok_and(|id| id == tenant) {
        return Ok(());
    }
    let by_name = state
        .store
        .detached(async move |store| store.find_tenant_by_name(&named).await)
        .await?;
    match by_name {
        Some(found) if found.id == tenant => Ok(()),
        _ => Err(ApiError::not_found("tenant")),
    }
}

fn parse_agent_id(text: &str) -> Result<AgentId, ApiError> {
    AgentId::parse_type_id(text).map_err(|_| ApiError::not_found("agent"))
}

async fn tenant_agent(
    state: &AppState,
    tenant: TenantId,
    id: AgentId,
) -> Result<AgentRecord, ApiError> {
    state
        .store
        .detached(async move |store| store.find_agent(tenant, id).await)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))
}

fn audit(state: &AppState, caller: &ApiKeyPrincipal, action: &str, agent: &AgentRecord) {
    state.audit(
        caller.tenant_id,
        NewAuditEvent {
            actor: caller.actor(),
            action: action.into(),
            target: Some(format!("agent:{}", agent.slug)),
            outcome: "ok".into(),
            detail: serde_json::json!({ "agentId": agent.id.to_type_id() }),
        },
    );
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_agents_key() {
        let registered = Registered {
            agent_id: "agent-1".into(),
            name: "one".into(),
            api_key: "agy_agent_secretsecret".into(),
            scopes: vec![],
            trust_level: "basic",
            created_at: "2026-12-01T00:00:00Z".into(),
        };
        let shown = format!("{registered:?}");
        assert!(!shown.contains("secretsecret"), "{shown}");
        assert!(
            shown.contains("api_key: <redacted>") && shown.contains("agent-1"),
            "{shown}"
        );
        let rotated = Rotated {
            agent_id: "agent-1".into(),
            api_key: "agy_agent_secretsecret".into(),
            rotated_at: "2026-12-01T00:00:00Z".into(),
        };
        assert!(!format!("{rotated:?}").contains("secretsecret"));
    }
}
