//! The operator's side: an instance created with its bootstrap token, read,
//! patched, and its provisioning log read. Never a secret in an answer.

use actix_web::{HttpResponse, web};
use agentry_auth::{Permission, hash_secret, mint_hex_token};
use agentry_domain::AgentSlug;
use agentry_store::{
    ArtifactKind, MachineInstance, MachineInstancePatch, NewMachineInstance, NewToken, TokenPurpose,
};
use serde_json::json;
use uuid::Uuid;

use super::secrets::{seal_context, seal_json};
use super::wire::{
    ArtifactInfo, BootstrapTokenState, CallbackProgress, CreateInstance, CreatedInstance,
    InstanceFields, InstanceView, PatchInstance, ProvisionLogLine, ProvisionLogs, decryption_key,
    document,
};
use super::{POLICY, audit, owned_instance};
use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::ApiKeyPrincipal;
use crate::guard::RequestTime;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::timestamp;

/// Most log lines one read returns.
const LOG_PAGE: i64 = 1000;

async fn instance_view(
    state: &AppState,
    instance: &MachineInstance,
) -> Result<InstanceView, ApiError> {
    let (tenant, id) = (instance.tenant_id, instance.id);
    let (token, bundle, website, callback) = state
        .store
        .detached(async move |store| {
            Ok((
                store.bootstrap_token_of(id).await?,
                store.artifact(tenant, id, ArtifactKind::Bundle).await?,
                store.artifact(tenant, id, ArtifactKind::Website).await?,
                store.callback_state(tenant, id).await?,
            ))
        })
        .await?;
    let agent = match instance.agent_id {
        Some(agent_id) => {
            let tenant = instance.tenant_id;
            state
                .store
                .detached(async move |store| store.find_agent(tenant, agent_id).await)
                .await?
                .map(|agent| agent.slug.to_string())
        }
        None => None,
    };
    let callback = callback.map(|state| CallbackProgress {
        seq: state.last.map(|(seq, _)| seq),
        stage: state.last.map(|(_, stage)| stage.as_str()),
        message: state.message,
        updated_at: timestamp(state.updated_at),
    });
    let fields = InstanceFields {
        instance_id: instance.id,
        tenant_id: instance.tenant_id.to_string(),
        name: instance.name.clone(),
        agent_id: agent,
        agent_config: instance.agent_config.clone(),
        skill_lockfile: instance.skill_lockfile.clone(),
        has_agent_secrets: instance.agent_secrets_sealed.is_some(),
        has_decryption_key: instance.decryption_key_sealed.is_some(),
        artifact: bundle.map(ArtifactInfo::from),
        website: website.map(ArtifactInfo::from),
        callback,
        created_at: timestamp(instance.created_at),
    };
    let bootstrap_token = token.map(|(token, _)| BootstrapTokenState {
        expires_at: timestamp(token.expires_at),
        consumed_at: token.consumed_at.map(timestamp),
    });
    Ok(InstanceView {
        fields,
        bootstrap_token,
    })
}

/// Creates an instance to provision, with its one bootstrap token.
///
/// The documents, secrets and key may come now or later by `PATCH`;
/// `agent_secrets` and `decryption_key_hex` are sealed at rest and never
/// shown to an operator again.
#[utoipa::path(
    post,
    operation_id = "create_provisioning_instance",
    path = "/v1/provisioning/instances",
    tag = "provisioning",
    security(("api_key" = [])),
    request_body = CreateInstance,
    responses(
        (status = 201, description = "Created; the bootstrap token is shown this once.",
            body = CreatedInstance),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (every problem at once: `name` length, a document that is not an object or is over 32 KiB, \
            `decryption_key_hex`, `bootstrap_token_ttl_seconds`, a malformed `agent_id`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent token, an agent's own key, or only a \
            client certificate), `permission_denied` (the key's role lacks `instance.provision`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: `agent_id` names no agent of the tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn create_instance(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    body: Deferred<web::Json<CreateInstance>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::InstanceProvision)?;
    let body = body.read().await?.into_inner();
    let mut problems = Problems::default();
    problems.length("name", Some(&body.name), 1, 120);
    document(&mut problems, "agent_config", body.agent_config.as_ref());
    document(&mut problems, "agent_secrets", body.agent_secrets.as_ref());
    document(
        &mut problems,
        "skill_lockfile",
        body.skill_lockfile.as_ref(),
    );
    decryption_key(&mut problems, body.decryption_key_hex.as_deref());
    let token_expires_at = problems.check(
        POLICY.bootstrap_token_expiry(body.bootstrap_token_ttl_seconds, now),
        "bootstrap_token_ttl_seconds",
    );
    let slug = body
        .agent_id
        .as_deref()
        .and_then(|text| problems.check(AgentSlug::parse(text), "agent_id"));
    problems.finish()?;
    let Some(token_expires_at) = token_expires_at else {
        return Err(ApiError::internal(
            &"a refused bootstrap token lifetime passed validation",
        ));
    };

    let tenant = caller.tenant_id;
    let agent_id = match slug {
        Some(slug) => Some(
            state
                .store
                .detached(async move |store| store.find_agent_by_slug(tenant, &slug).await)
                .await?
                .ok_or_else(|| ApiError::not_found("agent"))?
                .id,
        ),
        None => None,
    };
    // The id is needed before the insert: the sealed values are bound to it.
    let id = Uuid::now_v7();
    let master = state.keys.master();
    let token = mint_hex_token();
    let new = NewMachineInstance {
        id,
        name: body.name,
        agent_id,
        agent_config: body.agent_config.unwrap_or_else(|| json!({})),
        agent_secrets_sealed: body
            .agent_secrets
            .as_ref()
            .map(|secrets| seal_json(master, id, "agent_secrets", secrets)),
        skill_lockfile: body.skill_lockfile.unwrap_or_else(|| json!({})),
        decryption_key_sealed: body
            .decryption_key_hex
            .map(|key| master.seal(key.as_bytes(), &seal_context(id, "decryption_key"))),
        bootstrap_token: NewToken {
            purpose: TokenPurpose::Bootstrap,
            token_hash: hash_secret(&token).0,
            subject_id: id,
            max_attempts: POLICY.bootstrap_token_attempts,
            expires_at: token_expires_at,
        },
    };
    let (instance, token_record) = state
        .store
        .detached(async move |store| store.create_machine_instance(tenant, new, now).await)
        .await?;
    audit(
        &state,
        &instance,
        caller.actor(),
        "instance.create",
        "created",
    );
    // The token itself takes the place of its state, this once.
    let view = instance_view(&state, &instance).await?;
    Ok(HttpResponse::Created().json(CreatedInstance {
        fields: view.fields,
        bootstrap_token: token,
        bootstrap_token_expires_at: timestamp(token_record.expires_at),
    }))
}

/// An instance as the operator sees it: never a secret.
#[utoipa::path(
    get,
    operation_id = "read_provisioning_instance",
    path = "/v1/provisioning/instances/{instance_id}",
    tag = "provisioning",
    security(("api_key" = [])),
    params(("instance_id" = Uuid, Path, description = "The instance's id (anything else is a 404).")),
    responses(
        (status = 200, description = "The instance: its token's state, what is attached, the last \
            callback.", body = InstanceView),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent token, an agent's own key, or only a \
            client certificate), `permission_denied` (the key's role lacks `instance.provision`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such instance in the caller's tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn get_instance(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::InstanceProvision)?;
    let instance = owned_instance(&state, &caller, &path).await?;
    Ok(HttpResponse::Ok().json(instance_view(&state, &instance).await?))
}

/// Changes an instance's documents, secrets or key.
///
/// A field left out is left as it is.
#[utoipa::path(
    patch,
    operation_id = "update_provisioning_instance",
    path = "/v1/provisioning/instances/{instance_id}",
    tag = "provisioning",
    security(("api_key" = [])),
    params(("instance_id" = Uuid, Path, description = "The instance's id (anything else is a 404).")),
    request_body = PatchInstance,
    responses(
        (status = 200, description = "The instance as updated.", body = InstanceView),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (every problem at once: a document that is not an object or is over 32 KiB, \
            `decryption_key_hex`).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent token, an agent's own key, or only a \
            client certificate), `permission_denied` (the key's role lacks `instance.provision`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such instance in the caller's tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn patch_instance(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
    body: Deferred<web::Json<PatchInstance>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::InstanceProvision)?;
    let body = body.read().await?.into_inner();
    let mut problems = Problems::default();
    document(&mut problems, "agent_config", body.agent_config.as_ref());
    document(&mut problems, "agent_secrets", body.agent_secrets.as_ref());
    document(
        &mut problems,
        "skill_lockfile",
        body.skill_lockfile.as_ref(),
    );
    decryption_key(&mut problems, body.decryption_key_hex.as_deref());
    problems.finish()?;
    let instance = owned_instance(&state, &caller, &path).await?;
    let id = instance.id;
    let master = state.keys.master();
    let patch = MachineInstancePatch {
        agent_config: body.agent_config,
        agent_secrets_sealed: body
            .agent_secrets
            .as_ref()
            .map(|secrets| seal_json(master, id, "agent_secrets", secrets)),
        skill_lockfile: body.skill_lockfile,
        decryption_key_sealed: body
            .decryption_key_hex
            .map(|key| master.seal(key.as_bytes(), &seal_context(id, "decryption_key"))),
    };
    let tenant = caller.tenant_id;
    let updated = state
        .store
        .detached(async move |store| store.update_machine_instance(tenant, id, patch).await)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    audit(
        &state,
        &updated,
        caller.actor(),
        "instance.update",
        "updated",
    );
    Ok(HttpResponse::Ok().json(instance_view(&state, &updated).await?))
}

/// The instance's provisioning log, oldest first.
///
/// Every accepted callback, diagnostic and early diagnostic.
#[utoipa::path(
    get,
    operation_id = "read_instance_logs",
    path = "/v1/provisioning/instances/{instance_id}/logs",
    tag = "provisioning",
    security(("api_key" = [])),
    params(("instance_id" = Uuid, Path, description = "The instance's id (anything else is a 404).")),
    responses(
        (status = 200, description = "The first 1000 lines.", body = ProvisionLogs),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent token, an agent's own key, or only a \
            client certificate), `permission_denied` (the key's role lacks `instance.provision`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such instance in the caller's tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn instance_logs(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::InstanceProvision)?;
    let instance = owned_instance(&state, &caller, &path).await?;
    let (tenant, id) = (instance.tenant_id, instance.id);
    let (logs, total) = state
        .store
        .detached(async move |store| store.provision_logs(tenant, id, LOG_PAGE).await)
        .await?;
    let logs: Vec<ProvisionLogLine> = logs
        .into_iter()
        .map(|log| ProvisionLogLine {
            stage: log.stage,
            level: log.level,
            message: log.message,
            at: timestamp(log.at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(ProvisionLogs {
        total: u64::try_from(total).unwrap_or(0),
        logs,
    }))
}
