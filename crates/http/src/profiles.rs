//! Seed 001's operator routes: agent profiles, lifecycle transitions and
//! the tenant's agent-limits map.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_auth::Permission;
use agentry_domain::{AgentSlug, LifecycleState, Money, Role};
use agentry_store::{AgentLimitEntry, AgentLimits, NewAgent, NewAuditEvent, ProfilePatch, now};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use crate::error::ApiError;
use crate::guard::ApiKeyPrincipal;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::AgentProfile;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/agent/profiles", web::get().to(list))
        .route("/v1/agent/profiles", web::post().to(create))
        // Registered before `/{agentId}` so "lifecycle" is never read as an id.
        .route(
            "/v1/agent/profiles/lifecycle/{agent_id}",
            web::patch().to(transition),
        )
        .route("/v1/agent/profiles/{agent_id}", web::get().to(read))
        .route("/v1/agent/profiles/{agent_id}", web::patch().to(update))
        .route("/v1/agent/profiles/{agent_id}", web::delete().to(delete))
        .route("/v1/agent-limits", web::get().to(read_limits))
        .route("/v1/agent-limits", web::put().to(replace_limits))
        .route("/v1/agent-limits", web::patch().to(merge_limits));
}

fn slug(path: &str) -> Result<AgentSlug, ApiError> {
    // A slug that cannot exist cannot be found: 404, like any unknown agent.
    AgentSlug::parse(path).map_err(|_| ApiError::not_found("agent"))
}

/// Distinguishes "absent" (leave as is) from `null` (clear) in a PATCH.
fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

async fn list(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileRead)?;
    let tenant = caller.tenant_id;
    let agents = state
        .store
        .detached(async move |store| store.list_agents(tenant).await)
        .await?;
    let profiles: Vec<AgentProfile> = agents.iter().map(AgentProfile::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "total": profiles.len(), "profiles": profiles })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateProfile {
    agent_id: Option<String>,
    display_name: Option<String>,
    owner_id: Option<String>,
    cost_center: Option<String>,
    budget_daily_usd: Option<Money>,
    budget_monthly_usd: Option<Money>,
    role: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

async fn create(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    body: web::Json<CreateProfile>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileWrite)?;
    let body = body.into_inner();
    let mut problems = Problems::default();
    let agent_id = body
        .agent_id
        .ok_or_else(|| ApiError::bad_request("invalid_request", "agentId is required"))?;
    let slug = problems.check(AgentSlug::parse(&agent_id), "agentId");
    let role = problems.check(
        body.role.as_deref().unwrap_or("agent").parse::<Role>(),
        "role",
    );
    problems.length("displayName", body.display_name.as_deref(), 1, 255);
    problems.length("ownerId", body.owner_id.as_deref(), 1, 255);
    problems.length("costCenter", body.cost_center.as_deref(), 1, 255);
    problems.finish()?;
    let (Some(slug), Some(role)) = (slug, role) else {
        return Err(ApiError::bad_request("invalid_request", "invalid profile"));
    };
    let mut new = NewAgent::named(slug, LifecycleState::Provisioned);
    new.display_name = body.display_name;
    new.owner_id = body.owner_id;
    new.cost_center = body.cost_center;
    new.budget_daily = body.budget_daily_usd;
    new.budget_monthly = body.budget_monthly_usd;
    new.role = role;
    new.metadata = serde_json::Value::Object(body.metadata.unwrap_or_default());
    let tenant = caller.tenant_id;
    let agent = state
        .store
        .detached(async move |store| store.create_agent(tenant, new, now()).await)
        .await
        .map_err(|error| match error {
            agentry_store::StoreError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                "agent_exists",
                format!("agent {agent_id} already exists"),
            ),
            other => other.into(),
        })?;
    audit(
        &state,
        &caller,
        "agent.profile.create",
        &agent.slug,
        json!({}),
    );
    Ok(HttpResponse::Created().json(json!({ "profile": AgentProfile::from(&agent) })))
}

async fn read(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileRead)?;
    let (tenant, slug) = (caller.tenant_id, slug(&path)?);
    let agent = state
        .store
        .detached(async move |store| store.find_agent_by_slug(tenant, &slug).await)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    Ok(HttpResponse::Ok().json(json!({ "profile": AgentProfile::from(&agent) })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateProfile {
    #[serde(default, deserialize_with = "nullable")]
    display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    owner_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    cost_center: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_daily_usd: Option<Option<Money>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_monthly_usd: Option<Option<Money>>,
    role: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

async fn update(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
    body: web::Json<UpdateProfile>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileWrite)?;
    let body = body.into_inner();
    let mut problems = Problems::default();
    let role = body
        .role
        .as_deref()
        .and_then(|role| problems.check(role.parse::<Role>(), "role"));
    for (field, value) in [
        ("displayName", &body.display_name),
        ("ownerId", &body.owner_id),
        ("costCenter", &body.cost_center),
    ] {
        problems.length(
            field,
            value.as_ref().and_then(|value| value.as_deref()),
            1,
            255,
        );
    }
    problems.finish()?;
    let patch = ProfilePatch {
        display_name: body.display_name,
        owner_id: body.owner_id,
        cost_center: body.cost_center,
        budget_daily: body.budget_daily_usd,
        budget_monthly: body.budget_monthly_usd,
        role,
        metadata: body.metadata.map(serde_json::Value::Object),
    };
    let (tenant, slug) = (caller.tenant_id, slug(&path)?);
    let agent = state
        .store
        .detached(async move |store| {
            store
                .update_agent_profile(tenant, &slug, patch, now())
                .await
        })
        .await?;
    audit(
        &state,
        &caller,
        "agent.profile.update",
        &agent.slug,
        json!({}),
    );
    Ok(HttpResponse::Ok().json(json!({ "profile": AgentProfile::from(&agent) })))
}

async fn delete(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentProfileDelete)?;
    let (tenant, slug) = (caller.tenant_id, slug(&path)?);
    let deleted = slug.clone();
    state
        .store
        .detached(async move |store| store.delete_agent(tenant, &deleted).await)
        .await?;
    audit(&state, &caller, "agent.profile.delete", &slug, json!({}));
    Ok(HttpResponse::Ok().json(json!({ "ok": true, "agentId": slug.as_str() })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Transition {
    state: Option<String>,
}

async fn transition(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
    body: web::Json<Transition>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentLifecycleManage)?;
    let requested = body
        .into_inner()
        .state
        .ok_or_else(|| ApiError::bad_request("invalid_request", "state is required"))?;
    let to: LifecycleState = requested
        .parse()
        .map_err(|error: agentry_domain::StateError| {
            ApiError::bad_request("invalid_state", error.to_string())
        })?;
    let (tenant, slug) = (caller.tenant_id, slug(&path)?);
    let lookup = slug.clone();
    let changed = state
        .store
        .detached(async move |store| {
            let agent = store
                .find_agent_by_slug(tenant, &lookup)
                .await?
                .ok_or(agentry_store::StoreError::NotFound("agent"))?;
            if to != LifecycleState::Terminated {
                return store
                    .change_lifecycle(tenant, agent.id, |lifecycle| {
                        lifecycle.request(to, now()).map(Some)
                    })
                    .await;
            }
            // Termination takes the agent's sub-agents with it and settles
            // every delegated budget back up the tree, once the table allows
            // the move.
            if let Err(refusal) = agent.lifecycle().request(to, now()) {
                return Ok(Err(refusal));
            }
            store
                .reclaim_agent(
                    tenant,
                    agent.id,
                    agentry_lifecycle::TerminationReason::Operator,
                    now(),
                )
                .await?;
            let agent = store
                .find_agent(tenant, agent.id)
                .await?
                .ok_or(agentry_store::StoreError::NotFound("agent"))?;
            Ok(Ok((agent, None)))
        })
        .await?;
    let (agent, _) = changed.map_err(|refusal| {
        ApiError::new(
            StatusCode::CONFLICT,
            "invalid_transition",
            refusal.to_string(),
        )
    })?;
    audit(
        &state,
        &caller,
        "agent.lifecycle",
        &slug,
        json!({ "to": to.as_str() }),
    );
    Ok(HttpResponse::Ok().json(json!({ "profile": AgentProfile::from(&agent) })))
}

fn audit(
    state: &AppState,
    caller: &ApiKeyPrincipal,
    action: &str,
    agent: &AgentSlug,
    detail: serde_json::Value,
) {
    state.audit(
        caller.tenant_id,
        NewAuditEvent {
            actor: caller.actor(),
            action: action.into(),
            target: Some(format!("agent:{agent}")),
            outcome: "success".into(),
            detail,
        },
    );
}

/// One entry of seed 001's agent-limits map.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LimitEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_budget_usd: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
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

/// The most requests per minute an entry may allow; a guard against typos
/// that would switch rate limiting off in practice.
const MAX_RPM: u32 = 1_000_000;

fn validate_entries<'a>(
    entries: impl IntoIterator<Item = (&'a String, Option<&'a LimitEntry>)>,
) -> Result<(), ApiError> {
    let mut problems = Problems::default();
    for (key, entry) in entries {
        if key.is_empty() || key.len() > 200 {
            problems.push(format!("{key:?}: keys must be 1 to 200 characters"));
        }
        if let Some(rpm) = entry.and_then(|entry| entry.max_requests_per_minute)
            && !(1..=MAX_RPM).contains(&rpm)
        {
            problems.push(format!(
                "{key}: maxRequestsPerMinute must be 1 to {MAX_RPM}"
            ));
        }
    }
    problems.finish()
}

fn limits_body(limits: &AgentLimits) -> serde_json::Value {
    let entries: BTreeMap<&String, LimitEntry> = limits
        .entries
        .iter()
        .map(|(key, entry)| (key, LimitEntry::from(*entry)))
        .collect();
    json!({ "agentLimits": entries, "version": limits.version })
}

async fn read_limits(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentLimitsManage)?;
    let tenant = caller.tenant_id;
    let limits = state
        .store
        .detached(async move |store| store.agent_limits(tenant).await)
        .await?;
    Ok(HttpResponse::Ok().json(limits_body(&limits)))
}

async fn replace_limits(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    body: web::Json<BTreeMap<String, LimitEntry>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentLimitsManage)?;
    let replacement = body.into_inner();
    validate_entries(replacement.iter().map(|(key, entry)| (key, Some(entry))))?;
    write_limits(&state, &caller, move |entries| {
        *entries = replacement
            .iter()
            .map(|(key, entry)| (key.clone(), to_store(entry)))
            .collect();
    })
    .await
}

async fn merge_limits(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    body: web::Json<BTreeMap<String, Option<LimitEntry>>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AgentLimitsManage)?;
    let patch = body.into_inner();
    validate_entries(patch.iter().map(|(key, entry)| (key, entry.as_ref())))?;
    write_limits(&state, &caller, move |entries| {
        for (key, entry) in &patch {
            match entry {
                // A partial entry merges into the existing one.
                Some(entry) => {
                    let merged = entries.entry(key.clone()).or_default();
                    if entry.max_budget_usd.is_some() {
                        merged.max_budget = entry.max_budget_usd;
                    }
                    if entry.max_requests_per_minute.is_some() {
                        merged.max_requests_per_minute = entry.max_requests_per_minute;
                    }
                }
                None => {
                    entries.remove(key);
                }
            }
        }
    })
    .await
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
    edit: impl Fn(&mut BTreeMap<String, AgentLimitEntry>) + Send + Sync + 'static,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant_id;
    let written = state
        .store
        .detached(async move |store| {
            store
                .update_agent_limits(tenant, now(), |entries| {
                    edit(entries);
                    Ok::<_, ()>(())
                })
                .await
        })
        .await;
    let limits = match written {
        Ok(Ok(limits)) => limits,
        Ok(Err(())) => return Err(ApiError::internal(&"a limits edit refused itself")),
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
    Ok(HttpResponse::Ok().json(limits_body(&limits)))
}
