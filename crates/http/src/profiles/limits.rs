//! Seed 001's agent-limits map: read, replaced and merged as one entry
//! per agent.

use std::borrow::Cow;
use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use agentry_auth::Permission;
use agentry_domain::Money;
use agentry_ledger::LimitsEdit;
use agentry_store::{AgentLimitEntry, AgentLimits, NewAuditEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use time::OffsetDateTime;

use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::ApiKeyPrincipal;
use crate::guard::RequestTime;
use crate::state::AppState;
use crate::wire::MoneySchema;

/// One entry of seed 001's agent-limits map.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct LimitEntry {
    /// Caps the agent's daily budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<MoneySchema>)]
    max_budget_usd: Option<Money>,
    /// The agent's requests per minute; 30 when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::wire::whole_number::optional"
    )]
    #[schema(minimum = 1, maximum = 1_000_000)]
    max_requests_per_minute: Option<u32>,
}

impl From<AgentLimitEntry> for LimitEntry {
    fn from(entry: AgentLimitEntry) -> Self {
        LimitEntry {
            max_budget_usd: entry.max_budget,
            max_requests_per_minute: entry.max_requests_per_minute,
        }
    }
}

/// Schema of the `PATCH /v1/agent-limits` body, written by hand because
/// utoipa cannot derive one for a map of optional values.
enum LimitsPatchSchema {}

impl PartialSchema for LimitsPatchSchema {
    fn schema() -> RefOr<Schema> {
        let entry_or_null = OneOfBuilder::new()
            .item(Ref::from_schema_name(LimitEntry::name()))
            .item(ObjectBuilder::new().schema_type(Type::Null));
        ObjectBuilder::new()
            .additional_properties(Some(Schema::OneOf(entry_or_null.build())))
            .into()
    }
}

impl ToSchema for LimitsPatchSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AgentLimitsPatch")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((LimitEntry::name().into(), LimitEntry::schema()));
        LimitEntry::schemas(schemas);
    }
}

/// The tenant's agent-limits map with its version.
#[derive(Debug, Serialize, ToSchema)]
struct AgentLimitsMap {
    /// Entries by key; `agent:<agent_id>` keys apply to that agent.
    #[serde(rename = "agentLimits")]
    agent_limits: BTreeMap<String, LimitEntry>,
    /// Goes up by one with every write.
    version: i64,
}

impl From<&AgentLimits> for AgentLimitsMap {
    fn from(limits: &AgentLimits) -> Self {
        AgentLimitsMap {
            agent_limits: limits
                .entries
                .iter()
                .map(|(key, entry)| (key.clone(), LimitEntry::from(*entry)))
                .collect(),
            version: limits.version,
        }
    }
}

/// The tenant's agent-limits map.
#[utoipa::path(
    get,
    operation_id = "read_agent_limits",
    path = "/v1/agent-limits",
    tag = "limits",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The map and its version.", body = AgentLimitsMap),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent's credentials), `permission_denied` \
            (the key's role lacks `agent.limits.manage`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn read_limits(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentLimitsManage)?;
    let tenant = caller.tenant_id;
    let limits = state
        .store
        .detached(async move |store| store.agent_limits(tenant).await)
        .await?;
    Ok(HttpResponse::Ok().json(AgentLimitsMap::from(&limits)))
}

/// Replaces the whole agent-limits map.
#[utoipa::path(
    put,
    operation_id = "replace_agent_limits",
    path = "/v1/agent-limits",
    tag = "limits",
    security(("api_key" = [])),
    request_body(content = BTreeMap<String, LimitEntry>,
        description = "The new map: entries by key, `agent:<agent_id>` for an agent (keys of 1 to 200 characters)."),
    responses(
        (status = 200, description = "The map as written, with its new version.", body = AgentLimitsMap),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (every invalid key or entry, listed).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent's credentials), `permission_denied` \
            (the key's role lacks `agent.limits.manage`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`limits_unavailable`: the map changed concurrently and nothing was \
            written; `unavailable`: the database is unavailable. Retry.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn replace_limits(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    body: Deferred<web::Json<BTreeMap<String, LimitEntry>>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentLimitsManage)?;
    let replacement = body.read().await?.into_inner();
    let edit = LimitsEdit::Replace(
        replacement
            .iter()
            .map(|(key, entry)| (key.clone(), to_store(entry)))
            .collect(),
    );
    write_limits(&state, &caller, edit, now).await
}

/// Merges entries into the agent-limits map, field by field.
///
/// `null` for an entry deletes it.
#[utoipa::path(
    patch,
    operation_id = "merge_agent_limits",
    path = "/v1/agent-limits",
    tag = "limits",
    security(("api_key" = [])),
    request_body(content = LimitsPatchSchema,
        description = "Entries to merge by key; a field left out keeps its value, `null` for an entry deletes it."),
    responses(
        (status = 200, description = "The whole map as written, with its new version.", body = AgentLimitsMap),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (every invalid key or entry, listed).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent's credentials), `permission_denied` \
            (the key's role lacks `agent.limits.manage`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`limits_unavailable`: the map changed concurrently and nothing was \
            written; `unavailable`: the database is unavailable. Retry.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn merge_limits(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    body: Deferred<web::Json<BTreeMap<String, Option<LimitEntry>>>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentLimitsManage)?;
    let patch = body.read().await?.into_inner();
    let edit = LimitsEdit::Merge(
        patch
            .iter()
            .map(|(key, entry)| (key.clone(), entry.as_ref().map(to_store)))
            .collect(),
    );
    write_limits(&state, &caller, edit, now).await
}

fn to_store(entry: &LimitEntry) -> AgentLimitEntry {
    AgentLimitEntry {
        max_budget: entry.max_budget_usd,
        max_requests_per_minute: entry.max_requests_per_minute,
    }
}

async fn write_limits(
    state: &AppState,
    caller: &ApiKeyPrincipal,
    edit: LimitsEdit,
    now: OffsetDateTime,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant_id;
    let written = state
        .store
        .detached(async move |store| store.edit_agent_limits(tenant, &edit, now).await)
        .await;
    let limits = match written {
        Ok(Ok(limits)) => limits,
        Ok(Err(problems)) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                problems.to_string(),
            ));
        }
        Err(error) if error.is_unavailable() => {
            return Err(ApiError::unavailable(
                "the limits changed concurrently; nothing was written, retry",
            )
            .with_code("limits_unavailable"));
        }
        Err(error) => return Err(error.into()),
    };
    state.audit(
        tenant,
        NewAuditEvent {
            actor: caller.actor(),
            action: "agent.limits.write".into(),
            target: None,
            outcome: "success".into(),
            detail: json!({ "version": limits.version }),
        },
    );
    Ok(HttpResponse::Ok().json(AgentLimitsMap::from(&limits)))
}
