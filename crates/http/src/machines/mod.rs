//! Seed 003: provisioning a machine. The operator creates an instance
//! (`/v1/provisioning/instances`, ours) and attaches what the machine will
//! need; the machine then walks `/internal/bootstrap/*`: bootstrap token +
//! CSR for a client certificate, the certificate for its secrets and a
//! callback token, the certificate and a download token for its artifacts,
//! and the callback token for progress reports and diagnostics.
//!
//! Secrets and the bundle's decryption key are sealed under the master key
//! at rest; bundles are files under `Settings::artifact_dir`, streamed in
//! and out, never held whole in memory.

mod bootstrap;
mod downloads;
mod instances;
mod reports;
mod secrets;
mod uploads;
mod wire;

use actix_web::{HttpRequest, web};
use agentry_lifecycle::ProvisioningPolicy;
use agentry_store::MachineInstance;
use serde_json::json;
use time::Duration;
use utoipa::OpenApi;
use uuid::Uuid;

use crate::error::ApiError;
use crate::guard::ApiKeyPrincipal;
use crate::state::AppState;
use bootstrap::{ca_certificate, issue_certificate, secrets};
use downloads::{download_bundle, download_website};
use instances::{create_instance, get_instance, instance_logs, patch_instance};
use reports::{callback, diagnostic, early_diagnostic};
use uploads::{upload_bundle, upload_website};

/// Seed 003's lifetimes and limits, for every route of the family.
const POLICY: ProvisioningPolicy = ProvisioningPolicy::SEED_003;

/// How long the callback token lives: part of the longest token lifetime
/// the server mints (`Settings::max_token_ttl`).
pub(crate) const CALLBACK_TOKEN_LIFETIME: Duration = POLICY.callback_token_lifetime;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route(
            "/v1/provisioning/instances",
            web::post().to(create_instance),
        )
        .route(
            "/v1/provisioning/instances/{instance_id}",
            web::get().to(get_instance),
        )
        .route(
            "/v1/provisioning/instances/{instance_id}",
            web::patch().to(patch_instance),
        )
        .route(
            "/v1/provisioning/instances/{instance_id}/artifact",
            web::put().to(upload_bundle),
        )
        .route(
            "/v1/provisioning/instances/{instance_id}/website",
            web::put().to(upload_website),
        )
        .route(
            "/v1/provisioning/instances/{instance_id}/logs",
            web::get().to(instance_logs),
        )
        .route("/internal/bootstrap/ca.pem", web::get().to(ca_certificate))
        .route(
            "/internal/bootstrap/cert",
            web::post().to(issue_certificate),
        )
        .route("/internal/bootstrap/secrets", web::post().to(secrets))
        .route("/internal/bootstrap/callback", web::post().to(callback))
        .route("/internal/bootstrap/diagnostic", web::post().to(diagnostic))
        .route(
            "/internal/bootstrap/early-diagnostic",
            web::post().to(early_diagnostic),
        )
        .route(
            "/internal/bootstrap/artifacts/{instance_id}",
            web::get().to(download_bundle),
        )
        .route(
            "/internal/bootstrap/artifacts/{instance_id}/website",
            web::get().to(download_website),
        );
}

#[derive(OpenApi)]
#[openapi(paths(
    instances::create_instance,
    instances::get_instance,
    instances::patch_instance,
    uploads::upload_bundle,
    uploads::upload_website,
    instances::instance_logs,
    bootstrap::ca_certificate,
    bootstrap::issue_certificate,
    bootstrap::secrets,
    reports::callback,
    reports::diagnostic,
    reports::early_diagnostic,
    downloads::download_bundle,
    downloads::download_website,
))]
pub(crate) struct Api;

fn parse_instance_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::not_found("instance"))
}

/// The instance `id` if it belongs to the caller's tenant; 404 otherwise.
async fn owned_instance(
    state: &AppState,
    caller: &ApiKeyPrincipal,
    id: &str,
) -> Result<MachineInstance, ApiError> {
    let id = parse_instance_id(id)?;
    let tenant = caller.tenant_id;
    state
        .store
        .detached(async move |store| store.machine_instance(tenant, id).await)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))
}

fn audit(state: &AppState, instance: &MachineInstance, actor: String, action: &str, outcome: &str) {
    state.audit(
        instance.tenant_id,
        agentry_store::NewAuditEvent {
            actor,
            action: action.into(),
            target: Some(format!("instance:{}", instance.id)),
            outcome: outcome.into(),
            detail: json!({}),
        },
    );
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

fn invalid_bootstrap_token() -> ApiError {
    ApiError::unauthorized(
        "invalid_bootstrap_token",
        "the bootstrap token is invalid, expired or already used",
    )
}
