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

use std::path::{Path, PathBuf};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use agentry_auth::{Audience, MasterKey, Permission, SecretHash, hash_secret, mint_hex_token};
use agentry_domain::AgentSlug;
use agentry_lifecycle::CallbackStage;
use agentry_store::{
    ArtifactKind, ArtifactRecord, MachineInstance, MachineInstancePatch, NewIssuedCertificate,
    NewMachineInstance, NewMachineSession, NewToken, SessionError, StoreError, TokenError,
    TokenPurpose, now,
};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::Duration;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::error::ApiError;
use crate::guard::{ApiKeyPrincipal, CallbackPrincipal, MachineCertificate};
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::timestamp;

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

/// How long a machine has between `/cert` and `/secrets`.
const SESSION_LIFETIME: Duration = Duration::minutes(15);
/// How long a machine's client certificate is valid.
const CLIENT_CERT_LIFETIME: Duration = Duration::hours(1);
/// How long the callback token lives: a whole provisioning run.
const CALLBACK_TOKEN_LIFETIME: Duration = Duration::hours(2);
/// How long download tokens live after `/secrets`.
const DOWNLOAD_TOKEN_LIFETIME: Duration = Duration::hours(1);
/// Download tries per token (seed 003).
const DOWNLOAD_ATTEMPTS: i64 = 3;
const DEFAULT_BOOTSTRAP_TOKEN_SECONDS: i64 = 86_400;
const MAX_BOOTSTRAP_TOKEN_SECONDS: i64 = 30 * 86_400;
/// Largest JSON document (config, secrets, lockfile) kept per instance.
const MAX_DOCUMENT_BYTES: usize = 32 * 1024;
/// Most log lines one read returns.
const LOG_PAGE: i64 = 1000;

// ---------------------------------------------------------------------------
// Shapes

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInstance {
    name: String,
    agent_id: Option<String>,
    agent_config: Option<Value>,
    agent_secrets: Option<Value>,
    skill_lockfile: Option<Value>,
    decryption_key_hex: Option<String>,
    bootstrap_token_ttl_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchInstance {
    agent_config: Option<Value>,
    agent_secrets: Option<Value>,
    skill_lockfile: Option<Value>,
    decryption_key_hex: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CertRequest {
    bootstrap_token: String,
    csr_pem: String,
}

#[derive(Debug, Deserialize)]
struct SecretsRequest {
    session_id: String,
}

#[derive(Debug, Deserialize)]
struct CallbackRequest {
    seq: i64,
    stage: String,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DiagnosticRequest {
    label: String,
    level: Option<String>,
    message: String,
}

#[derive(Debug, Deserialize)]
struct EarlyDiagnosticRequest {
    bootstrap_token: String,
    instance_id: String,
    label: String,
    level: Option<String>,
    message: String,
}

fn is_hex_64(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

fn is_sha256_label(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(is_hex_64)
}

fn seal_context(instance_id: Uuid, what: &str) -> Vec<u8> {
    format!("agentry instance {instance_id} {what}").into_bytes()
}

fn seal_json(master: &MasterKey, instance_id: Uuid, what: &str, value: &Value) -> Vec<u8> {
    master.seal(
        value.to_string().as_bytes(),
        &seal_context(instance_id, what),
    )
}

fn open_sealed(
    master: &MasterKey,
    instance_id: Uuid,
    what: &str,
    sealed: &[u8],
) -> Result<String, ApiError> {
    let plain = master
        .open(sealed, &seal_context(instance_id, what))
        .map_err(|error| {
            ApiError::internal(&format!("cannot open the instance's {what}: {error}"))
        })?;
    String::from_utf8(plain.to_vec())
        .map_err(|_| ApiError::internal(&format!("the instance's {what} is not text")))
}

/// An optional JSON document that must be an object and not huge.
fn document(problems: &mut Problems, field: &str, value: Option<&Value>) {
    if let Some(value) = value {
        if !value.is_object() {
            problems.push(format!("{field}: must be a JSON object"));
        } else if value.to_string().len() > MAX_DOCUMENT_BYTES {
            problems.push(format!(
                "{field}: must be at most {MAX_DOCUMENT_BYTES} bytes of JSON"
            ));
        }
    }
}

fn decryption_key(problems: &mut Problems, value: Option<&str>) {
    if value.is_some_and(|key| !is_hex_64(key)) {
        problems.push("decryption_key_hex: must be 64 lowercase hex characters".into());
    }
}

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
        .detached(async move |store| store.machine_instance(id).await)
        .await?
        .filter(|instance| instance.tenant_id == tenant)
        .ok_or_else(|| ApiError::not_found("instance"))
}

async fn instance_view(state: &AppState, instance: &MachineInstance) -> Result<Value, ApiError> {
    let id = instance.id;
    let (token, bundle, website, callback) = state
        .store
        .detached(async move |store| {
            Ok((
                store.bootstrap_token_of(id).await?,
                store.artifact(id, ArtifactKind::Bundle).await?,
                store.artifact(id, ArtifactKind::Website).await?,
                store.callback_state(id).await?,
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
    let artifact = |record: Option<ArtifactRecord>| {
        record.map(|record| {
            json!({
                "size_bytes": record.size_bytes,
                "artifact_cipher_hash": record.cipher_hash,
                "bundle_plain_hash": record.plain_hash,
                "uploaded_at": timestamp(record.created_at),
            })
        })
    };
    let callback = callback.map(|state| {
        json!({
            "seq": state.last.map(|(seq, _)| seq),
            "stage": state.last.map(|(_, stage)| stage.as_str()),
            "message": state.message,
            "updated_at": timestamp(state.updated_at),
        })
    });
    Ok(json!({
        "instance_id": instance.id,
        "tenant_id": instance.tenant_id.to_string(),
        "name": instance.name,
        "agent_id": agent,
        "agent_config": instance.agent_config,
        "skill_lockfile": instance.skill_lockfile,
        "has_agent_secrets": instance.agent_secrets_sealed.is_some(),
        "has_decryption_key": instance.decryption_key_sealed.is_some(),
        "bootstrap_token": token.map(|(token, _)| json!({
            "expires_at": timestamp(token.expires_at),
            "consumed_at": token.consumed_at.map(timestamp),
        })),
        "artifact": artifact(bundle),
        "website": artifact(website),
        "callback": callback,
        "created_at": timestamp(instance.created_at),
    }))
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

// ---------------------------------------------------------------------------
// Operator side

async fn create_instance(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    body: web::Json<CreateInstance>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::InstanceProvision)?;
    let body = body.into_inner();
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
    let ttl = body
        .bootstrap_token_ttl_seconds
        .unwrap_or(DEFAULT_BOOTSTRAP_TOKEN_SECONDS);
    if !(60..=MAX_BOOTSTRAP_TOKEN_SECONDS).contains(&ttl) {
        problems.push(format!(
            "bootstrap_token_ttl_seconds: must be 60 to {MAX_BOOTSTRAP_TOKEN_SECONDS}"
        ));
    }
    let slug = body
        .agent_id
        .as_deref()
        .and_then(|text| problems.check(AgentSlug::parse(text), "agent_id"));
    problems.finish()?;

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
    let now = now();
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
            max_attempts: 1,
            expires_at: now + Duration::seconds(ttl),
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
    let mut view = instance_view(&state, &instance).await?;
    view["bootstrap_token"] = json!(token);
    view["bootstrap_token_expires_at"] = json!(timestamp(token_record.expires_at));
    Ok(HttpResponse::Created().json(view))
}

async fn get_instance(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::InstanceProvision)?;
    let instance = owned_instance(&state, &caller, &path).await?;
    Ok(HttpResponse::Ok().json(instance_view(&state, &instance).await?))
}

async fn patch_instance(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
    body: web::Json<PatchInstance>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::InstanceProvision)?;
    let body = body.into_inner();
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

/// Streams a request body into a new file under `dir`, hashing it on the
/// way; refuses past `limit` bytes. Returns the file, its size and its
/// `sha256:` hash. Nothing is left behind on failure.
async fn receive(
    dir: &Path,
    mut payload: web::Payload,
    limit: u64,
) -> Result<(PathBuf, u64, String), ApiError> {
    let unavailable = |error: std::io::Error| {
        tracing::error!(%error, "cannot write an uploaded artifact");
        ApiError::unavailable("cannot store the upload now; retry later")
    };
    tokio::fs::create_dir_all(dir).await.map_err(unavailable)?;
    let path = dir.join(format!(".upload-{}", Uuid::now_v7().simple()));
    let mut file = tokio::fs::File::create(&path).await.map_err(unavailable)?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let outcome: Result<(), ApiError> = async {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|error| {
                ApiError::bad_request("invalid_body", format!("the upload broke off: {error}"))
            })?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "artifact_too_large",
                    format!("artifacts may be at most {limit} bytes"),
                ));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(unavailable)?;
        }
        file.sync_all().await.map_err(unavailable)
    }
    .await;
    drop(file);
    if let Err(error) = outcome {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(error);
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok((path, size, format!("sha256:{digest}")))
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

async fn upload(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    kind: ArtifactKind,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::InstanceProvision)?;
    let plain_hash = header(&request, "x-bundle-plain-hash").map(str::to_owned);
    let expected_cipher_hash = header(&request, "x-artifact-cipher-hash").map(str::to_owned);
    let mut problems = Problems::default();
    if kind == ArtifactKind::Bundle && plain_hash.is_none() {
        problems.push("X-Bundle-Plain-Hash: required for the bundle (sha256:<64 hex>)".into());
    }
    for (name, value) in [
        ("X-Bundle-Plain-Hash", &plain_hash),
        ("X-Artifact-Cipher-Hash", &expected_cipher_hash),
    ] {
        if value
            .as_deref()
            .is_some_and(|value| !is_sha256_label(value))
        {
            problems.push(format!("{name}: must be sha256:<64 lowercase hex>"));
        }
    }
    problems.finish()?;
    let instance = owned_instance(&state, &caller, &path).await?;
    let dir = state.settings.artifact_dir.join(instance.id.to_string());
    let (temporary, size, cipher_hash) =
        receive(&dir, payload, state.settings.max_artifact_bytes).await?;
    if expected_cipher_hash
        .as_deref()
        .is_some_and(|expected| expected != cipher_hash)
    {
        let _ = tokio::fs::remove_file(&temporary).await;
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "hash_mismatch",
            format!("the upload's hash is {cipher_hash}, not X-Artifact-Cipher-Hash"),
        ));
    }
    // A new name per upload: a download of the previous file in progress
    // keeps reading it until it is done.
    let name = format!("{}-{}", kind.as_str(), Uuid::now_v7().simple());
    let final_path = dir.join(&name);
    if let Err(error) = tokio::fs::rename(&temporary, &final_path).await {
        let _ = tokio::fs::remove_file(&temporary).await;
        tracing::error!(%error, "cannot move an uploaded artifact into place");
        return Err(ApiError::unavailable(
            "cannot store the upload now; retry later",
        ));
    }
    let record = ArtifactRecord {
        instance_id: instance.id,
        kind,
        storage_path: format!("{}/{name}", instance.id),
        size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        cipher_hash: Some(cipher_hash),
        plain_hash,
        created_at: now(),
    };
    let tenant = caller.tenant_id;
    let stored = record.clone();
    let replaced = state
        .store
        .detached(async move |store| store.put_artifact(tenant, stored).await)
        .await;
    match replaced {
        Ok(Some(previous)) => {
            let _ = tokio::fs::remove_file(state.settings.artifact_dir.join(previous)).await;
        }
        Ok(None) => {}
        Err(error) => {
            let _ = tokio::fs::remove_file(&final_path).await;
            return Err(error.into());
        }
    }
    audit(
        &state,
        &instance,
        caller.actor(),
        "instance.artifact",
        kind.as_str(),
    );
    Ok(HttpResponse::Ok().json(json!({
        "kind": kind.as_str(),
        "size_bytes": record.size_bytes,
        "artifact_cipher_hash": record.cipher_hash,
        "bundle_plain_hash": record.plain_hash,
        "uploaded_at": timestamp(record.created_at),
    })))
}

async fn upload_bundle(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    upload(state, caller, request, path, payload, ArtifactKind::Bundle).await
}

async fn upload_website(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    upload(state, caller, request, path, payload, ArtifactKind::Website).await
}

async fn instance_logs(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::InstanceProvision)?;
    let instance = owned_instance(&state, &caller, &path).await?;
    let id = instance.id;
    let logs = state
        .store
        .detached(async move |store| store.provision_logs(id, LOG_PAGE).await)
        .await?;
    let logs: Vec<Value> = logs
        .into_iter()
        .map(|log| {
            json!({
                "stage": log.stage,
                "level": log.level,
                "message": log.message,
                "at": timestamp(log.at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "total": logs.len(), "logs": logs })))
}

/// The CA certificate, for `curl --cacert` and for pinning.
async fn ca_certificate(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .body(state.keys.ca().authority().cert_pem().to_owned())
}

// ---------------------------------------------------------------------------
// Machine side

fn invalid_bootstrap_token() -> ApiError {
    ApiError::unauthorized(
        "invalid_bootstrap_token",
        "the bootstrap token is invalid, expired or already used",
    )
}

async fn issue_certificate(
    state: web::Data<AppState>,
    body: web::Json<CertRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut problems = Problems::default();
    if !is_hex_64(&body.bootstrap_token) {
        problems.push("bootstrap_token: must be 64 lowercase hex characters".into());
    }
    problems.length("csr_pem", Some(&body.csr_pem), 100, 10_000);
    problems.finish()?;

    let now = now();
    let hash = hash_secret(&body.bootstrap_token).0;
    let token = state
        .store
        .detached(async move |store| store.find_token(TokenPurpose::Bootstrap, &hash).await)
        .await?
        .ok_or_else(invalid_bootstrap_token)?;
    if token.usable(now).is_err() {
        return Err(invalid_bootstrap_token());
    }
    let instance_id = token.subject_id;
    let instance = state
        .store
        .detached(async move |store| store.machine_instance(instance_id).await)
        .await?
        .ok_or_else(invalid_bootstrap_token)?;
    // The secrets go out once; handing them out before the operator has
    // attached the bundle and its key would strand the machine.
    let id = instance.id;
    let bundle = state
        .store
        .detached(async move |store| store.artifact(id, ArtifactKind::Bundle).await)
        .await?;
    if bundle.is_none() || instance.decryption_key_sealed.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "instance_not_ready",
            "the operator has not attached the artifact bundle and its decryption key yet; retry later",
        ));
    }
    let session_id = Uuid::now_v7();
    let certificate = state
        .keys
        .ca()
        .authority()
        .sign_machine_csr(
            &body.csr_pem,
            instance.id,
            session_id,
            now,
            CLIENT_CERT_LIFETIME,
        )
        .map_err(|error| match error {
            agentry_auth::CaError::InvalidCsr(reason) => {
                ApiError::bad_request("invalid_csr", reason)
            }
            other => ApiError::internal(&other),
        })?;
    let session = NewMachineSession {
        id: session_id,
        instance_id: instance.id,
        tenant_id: instance.tenant_id,
        token_id: token.id,
        expires_at: (now + SESSION_LIFETIME).min(token.expires_at),
    };
    let issued = NewIssuedCertificate {
        serial: certificate.serial.clone(),
        fingerprint: certificate.fingerprint.clone(),
        not_before: certificate.not_before,
        not_after: certificate.not_after,
    };
    state
        .store
        .detached(async move |store| store.open_machine_session(session, issued, now).await)
        .await?;
    audit(
        &state,
        &instance,
        format!("instance:{}", instance.id),
        "bootstrap.cert",
        "issued",
    );
    Ok(HttpResponse::Ok().json(json!({
        "cert_pem": certificate.pem,
        "session_id": session_id.to_string(),
    })))
}

fn session_error(error: SessionError) -> ApiError {
    match error {
        SessionError::Unknown => ApiError::not_found("session"),
        SessionError::Expired => ApiError::new(
            StatusCode::GONE,
            "session_expired",
            "the session has expired; start again at /internal/bootstrap/cert",
        ),
        SessionError::AlreadyComplete => ApiError::new(
            StatusCode::GONE,
            "session_complete",
            "the secrets of this instance have already been handed out",
        ),
        SessionError::Store(error) => error.into(),
    }
}

async fn secrets(
    state: web::Data<AppState>,
    machine: MachineCertificate,
    body: web::Json<SecretsRequest>,
) -> Result<HttpResponse, ApiError> {
    let wrong_session = || {
        ApiError::unauthorized(
            "certificate_session_mismatch",
            "the client certificate was not issued for this session",
        )
    };
    let session_id =
        Uuid::parse_str(body.session_id.trim()).map_err(|_| ApiError::not_found("session"))?;
    let session = state
        .store
        .detached(async move |store| store.machine_session(session_id).await)
        .await?
        .ok_or_else(|| ApiError::not_found("session"))?;
    if machine.certificate.session_id != session.id
        || machine.certificate.instance_id != session.instance_id
    {
        return Err(wrong_session());
    }
    let now = now();
    let download_token = mint_hex_token();
    let download_tokens = [ArtifactKind::Bundle, ArtifactKind::Website]
        .into_iter()
        .map(|kind| NewToken {
            purpose: TokenPurpose::Download,
            token_hash: download_token_hash(&download_token, kind).0,
            subject_id: session.instance_id,
            max_attempts: DOWNLOAD_ATTEMPTS,
            expires_at: now + DOWNLOAD_TOKEN_LIFETIME,
        })
        .collect();
    let instance = state
        .store
        .detached(async move |store| {
            Ok(store
                .complete_machine_session(session_id, now, download_tokens)
                .await)
        })
        .await?
        .map_err(session_error)?;
    let (bundle, callback) = {
        let id = instance.id;
        let bundle = state
            .store
            .detached(async move |store| store.artifact(id, ArtifactKind::Bundle).await)
            .await?;
        let callback = state
            .mint(
                Audience::Callback,
                instance.id,
                instance.tenant_id,
                0,
                now,
                CALLBACK_TOKEN_LIFETIME,
            )
            .ok_or_else(|| ApiError::unavailable("no signing key is loaded"))?;
        (bundle, callback)
    };
    let master = state.keys.master();
    let decryption_key = match &instance.decryption_key_sealed {
        Some(sealed) => Some(open_sealed(master, instance.id, "decryption_key", sealed)?),
        None => None,
    };
    let agent_secrets: Value = match &instance.agent_secrets_sealed {
        Some(sealed) => {
            serde_json::from_str(&open_sealed(master, instance.id, "agent_secrets", sealed)?)
                .map_err(|error| ApiError::internal(&error))?
        }
        None => json!({}),
    };
    audit(
        &state,
        &instance,
        format!("instance:{}", instance.id),
        "bootstrap.secrets",
        "released",
    );
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(json!({
            "callback_jwt": callback.0,
            "artifact_download_token": download_token,
            "decryption_key_hex": decryption_key,
            "artifact_cipher_hash": bundle.as_ref().and_then(|bundle| bundle.cipher_hash.clone()),
            "bundle_plain_hash": bundle.as_ref().and_then(|bundle| bundle.plain_hash.clone()),
            "agent_config": instance.agent_config,
            "agent_secrets": agent_secrets,
            "skill_lockfile": instance.skill_lockfile,
        })))
}

/// One download token opens both files, each with its own attempts: the
/// website's row is keyed by a hash of the token and the kind.
fn download_token_hash(token: &str, kind: ArtifactKind) -> SecretHash {
    match kind {
        ArtifactKind::Bundle => hash_secret(token),
        ArtifactKind::Website => hash_secret(&format!("{token}:website")),
    }
}

fn level(problems: &mut Problems, level: Option<&str>) -> &'static str {
    match level.unwrap_or("info") {
        "info" => "info",
        "warn" => "warn",
        "error" => "error",
        _ => {
            problems.push("level: must be one of info, warn, error".into());
            "info"
        }
    }
}

async fn callback(
    state: web::Data<AppState>,
    machine: CallbackPrincipal,
    body: web::Json<CallbackRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut problems = Problems::default();
    let stage = problems.check(body.stage.parse::<CallbackStage>(), "stage");
    if body
        .message
        .as_ref()
        .is_some_and(|message| message.chars().count() > 2000)
    {
        problems.push("message: must be at most 2000 characters".into());
    }
    problems.finish()?;
    let Some(stage) = stage else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "stage is required",
        ));
    };
    let now = now();
    let instance_id = machine.instance_id;
    let seq = body.seq;
    let level = if stage == CallbackStage::Error {
        "error"
    } else {
        "info"
    };
    let message = body.message;
    let recorded = state
        .store
        .detached(async move |store| {
            store
                .record_callback(
                    instance_id,
                    now,
                    |last| {
                        agentry_lifecycle::CallbackSequence::resume(last)
                            .accept(seq, stage)
                            .map(|next| next.last().unwrap_or((0, stage)))
                    },
                    message,
                    level,
                )
                .await
        })
        .await;
    match recorded {
        Ok(Ok(_)) => Ok(HttpResponse::Ok().json(json!({
            "status": "ok",
            "message": format!("stage {stage} (seq {seq}) recorded"),
        }))),
        Ok(Err(violation)) => Err(ApiError::bad_request(
            "callback_sequence_violation",
            violation.to_string(),
        )),
        Err(error) => Err(error.into()),
    }
}

async fn append_log(
    state: &AppState,
    instance: &MachineInstance,
    label: String,
    level: &'static str,
    message: String,
) -> Result<HttpResponse, ApiError> {
    let (tenant, id, now) = (instance.tenant_id, instance.id, now());
    state
        .store
        .detached(async move |store| {
            store
                .append_provision_log(tenant, id, &label, level, &message, now)
                .await
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ok", "message": "logged" })))
}

fn diagnostic_problems(
    label: &str,
    level_text: Option<&str>,
    message: &str,
) -> Result<&'static str, ApiError> {
    let mut problems = Problems::default();
    problems.length("label", Some(label), 1, 80);
    problems.length("message", Some(message), 0, 2000);
    let level = level(&mut problems, level_text);
    problems.finish()?;
    Ok(level)
}

async fn diagnostic(
    state: web::Data<AppState>,
    machine: CallbackPrincipal,
    body: web::Json<DiagnosticRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let level = diagnostic_problems(&body.label, body.level.as_deref(), &body.message)?;
    let instance_id = machine.instance_id;
    let instance = state
        .store
        .detached(async move |store| store.machine_instance(instance_id).await)
        .await?
        .filter(|instance| instance.tenant_id == machine.tenant_id)
        .ok_or_else(|| ApiError::not_found("instance"))?;
    append_log(&state, &instance, body.label, level, body.message).await
}

async fn early_diagnostic(
    state: web::Data<AppState>,
    body: web::Json<EarlyDiagnosticRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut problems = Problems::default();
    problems.length("bootstrap_token", Some(&body.bootstrap_token), 10, 200);
    problems.length("instance_id", Some(&body.instance_id), 1, 80);
    problems.finish()?;
    let level = diagnostic_problems(&body.label, body.level.as_deref(), &body.message)?;
    // Unknown instance, wrong token, used or expired token: all alike.
    let instance_id = Uuid::parse_str(&body.instance_id).map_err(|_| invalid_bootstrap_token())?;
    let (instance, token) = state
        .store
        .detached(async move |store| {
            Ok((
                store.machine_instance(instance_id).await?,
                store.bootstrap_token_of(instance_id).await?,
            ))
        })
        .await?;
    let presented = hash_secret(&body.bootstrap_token);
    let (Some(instance), Some((token, stored))) = (instance, token) else {
        return Err(invalid_bootstrap_token());
    };
    if !presented.matches(&SecretHash(stored)) || token.usable(now()).is_err() {
        return Err(invalid_bootstrap_token());
    }
    append_log(&state, &instance, body.label, level, body.message).await
}

async fn download(
    state: web::Data<AppState>,
    machine: MachineCertificate,
    request: HttpRequest,
    path: web::Path<String>,
    kind: ArtifactKind,
) -> Result<HttpResponse, ApiError> {
    let instance_id = Uuid::parse_str(&path).map_err(|_| ApiError::not_found("instance"))?;
    if machine.certificate.instance_id != instance_id {
        return Err(ApiError::unauthorized(
            "certificate_instance_mismatch",
            "the client certificate was issued for another instance",
        ));
    }
    let invalid_download_token = || {
        ApiError::unauthorized(
            "invalid_download_token",
            "X-Download-Token is missing, invalid, expired or already used",
        )
    };
    let token = header(&request, "x-download-token")
        .filter(|token| is_hex_64(token))
        .ok_or_else(invalid_download_token)?;
    let hash = download_token_hash(token, kind).0;
    let now = now();
    let attempt = state
        .store
        .detached(async move |store| {
            Ok(store
                .record_token_attempt(TokenPurpose::Download, &hash, now)
                .await)
        })
        .await?;
    match attempt {
        Ok(token) if token.subject_id == instance_id => {}
        Ok(_) => return Err(invalid_download_token()),
        Err(StoreError::Token(TokenError::TooManyAttempts)) => {
            return Err(ApiError::too_many_requests(
                "this download token has been tried too many times",
                0,
            )
            .with_code("download_attempts_exhausted"));
        }
        Err(StoreError::Token(_)) => return Err(invalid_download_token()),
        Err(error) => return Err(error.into()),
    }
    let artifact = state
        .store
        .detached(async move |store| store.artifact(instance_id, kind).await)
        .await?
        .ok_or_else(|| ApiError::not_found(kind.as_str()))?;
    let file = tokio::fs::File::open(state.settings.artifact_dir.join(&artifact.storage_path))
        .await
        .map_err(|error| {
            tracing::error!(%error, path = %artifact.storage_path, "an artifact file is missing");
            ApiError::not_found(kind.as_str())
        })?;
    let size = u64::try_from(artifact.size_bytes).unwrap_or(0);
    let completion = Completion {
        state: state.get_ref().clone(),
        token_hash: hash,
        remaining: size,
    };
    if size == 0 {
        completion.finish();
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).scan(
        completion,
        |completion, chunk| {
            if let Ok(bytes) = &chunk {
                completion.sent(bytes.len());
            }
            std::future::ready(Some(chunk))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("cache-control", "no-store"))
        .no_chunking(size)
        .streaming(stream))
}

/// Consumes the download token once the whole file has been handed to the
/// connection; a transfer that breaks off leaves it usable for a retry.
struct Completion {
    state: AppState,
    token_hash: [u8; 32],
    remaining: u64,
}

impl Completion {
    fn sent(&mut self, bytes: usize) {
        if self.remaining > 0 {
            self.remaining = self.remaining.saturating_sub(bytes as u64);
            if self.remaining == 0 {
                self.finish();
            }
        }
    }

    fn finish(&self) {
        let store = self.state.store.clone();
        let hash = self.token_hash;
        tokio::spawn(async move {
            let consumed = store
                .detached(async move |store| {
                    store
                        .consume_token(TokenPurpose::Download, &hash, now())
                        .await
                })
                .await;
            if let Err(error) = consumed {
                tracing::warn!(%error, "cannot mark a download token used");
            }
        });
    }
}

async fn download_bundle(
    state: web::Data<AppState>,
    machine: MachineCertificate,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    download(state, machine, request, path, ArtifactKind::Bundle).await
}

async fn download_website(
    state: web::Data<AppState>,
    machine: MachineCertificate,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    download(state, machine, request, path, ArtifactKind::Website).await
}
