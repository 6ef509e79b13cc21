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
use agentry_auth::{
    Audience, MasterKey, Permission, SecretHash, hash_secret, is_hex_token, mint_hex_token,
    sha256_label,
};
use agentry_domain::AgentSlug;
use agentry_lifecycle::CallbackStage;
use agentry_store::{
    ArtifactKind, ArtifactRecord, MachineInstance, MachineInstancePatch, NewIssuedCertificate,
    NewMachineInstance, NewMachineSession, NewToken, SessionError, StoreError, TokenError,
    TokenPurpose, now,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::Duration;
use tokio::io::AsyncWriteExt;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::{ApiKeyPrincipal, CallbackPrincipal, MachineCertificate};
use crate::redact::debug_redacting;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{
    AgentSlugSchema, ArtifactKindSchema, CallbackStageSchema, TimestampSchema, timestamp,
};

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
    create_instance,
    get_instance,
    patch_instance,
    upload_bundle,
    upload_website,
    instance_logs,
    ca_certificate,
    issue_certificate,
    secrets,
    callback,
    diagnostic,
    early_diagnostic,
    download_bundle,
    download_website,
))]
pub(crate) struct Api;

/// How long a machine has between `/cert` and `/secrets`.
const SESSION_LIFETIME: Duration = Duration::minutes(15);
/// How long a machine's client certificate is valid.
const CLIENT_CERT_LIFETIME: Duration = Duration::hours(1);
/// How long the callback token lives: a whole provisioning run.
pub(crate) const CALLBACK_TOKEN_LIFETIME: Duration = Duration::hours(2);
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
/// Most lines diagnostics may add to one instance's log (callbacks, at
/// most four, are not counted against it).
const MAX_LOG_LINES: i64 = 10_000;

// ---------------------------------------------------------------------------
// Shapes

/// An instance to provision. Only `name` is required.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateProvisioningInstance)]
struct CreateInstance {
    #[schema(min_length = 1, max_length = 120)]
    name: String,
    /// An agent of the tenant to bind the machine to: its client
    /// certificate then also reads that agent's own state.
    #[schema(value_type = Option<AgentSlugSchema>)]
    agent_id: Option<String>,
    /// A JSON object of at most 32 KiB, handed to the machine by `/secrets`.
    #[schema(value_type = Option<Object>)]
    agent_config: Option<Value>,
    /// A JSON object of at most 32 KiB; sealed at rest and shown to nobody
    /// but the machine, once.
    #[schema(value_type = Option<Object>)]
    agent_secrets: Option<Value>,
    /// A JSON object of at most 32 KiB, handed to the machine by `/secrets`.
    #[schema(value_type = Option<Object>)]
    skill_lockfile: Option<Value>,
    /// The bundle's 32-byte key; sealed at rest and shown to nobody but
    /// the machine, once.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    decryption_key_hex: Option<String>,
    /// How long the bootstrap token lives.
    #[schema(minimum = 60, maximum = 2_592_000, default = 86_400)]
    #[serde(default, deserialize_with = "crate::wire::whole_number::optional")]
    bootstrap_token_ttl_seconds: Option<i64>,
}

/// What to change on an instance; a field left out (or `null`) is left as
/// it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PatchProvisioningInstance)]
struct PatchInstance {
    /// A JSON object of at most 32 KiB.
    #[schema(value_type = Option<Object>)]
    agent_config: Option<Value>,
    /// A JSON object of at most 32 KiB; sealed at rest.
    #[schema(value_type = Option<Object>)]
    agent_secrets: Option<Value>,
    /// A JSON object of at most 32 KiB.
    #[schema(value_type = Option<Object>)]
    skill_lockfile: Option<Value>,
    /// Sealed at rest.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    decryption_key_hex: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = CertificateRequest)]
struct CertRequest {
    /// The instance's bootstrap token; not used up here.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    bootstrap_token: String,
    /// A PKCS#10 request; only its public key is used.
    #[schema(min_length = 100, max_length = 10_000)]
    csr_pem: String,
}

#[derive(Debug, Deserialize, ToSchema)]
struct SecretsRequest {
    /// The `session_id` from `/internal/bootstrap/cert`.
    #[schema(format = Uuid)]
    session_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
struct CallbackRequest {
    /// installing 1, configuring 2, securing 3, ready 4; error 2 or 3.
    /// Must be above the last accepted one.
    #[schema(minimum = 1, maximum = 4)]
    #[serde(deserialize_with = "crate::wire::whole_number::deserialize")]
    seq: i64,
    #[schema(value_type = CallbackStageSchema)]
    stage: String,
    #[schema(max_length = 2000)]
    message: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
struct DiagnosticRequest {
    /// Kept as the log line's `stage`.
    #[schema(min_length = 1, max_length = 80)]
    label: String,
    #[schema(value_type = Option<LogLevel>, default = "info")]
    level: Option<String>,
    #[schema(max_length = 2000)]
    message: String,
}

#[derive(Deserialize, ToSchema)]
struct EarlyDiagnosticRequest {
    /// The instance's bootstrap token; not used up.
    #[schema(min_length = 10, max_length = 200)]
    bootstrap_token: String,
    /// The instance's id.
    #[schema(min_length = 1, max_length = 80)]
    instance_id: String,
    /// Kept as the log line's `stage`.
    #[schema(min_length = 1, max_length = 80)]
    label: String,
    #[schema(value_type = Option<LogLevel>, default = "info")]
    level: Option<String>,
    #[schema(max_length = 2000)]
    message: String,
}

/// How serious a provisioning log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "lowercase")]
enum LogLevel {
    Info,
    Warn,
    Error,
}

impl LogLevel {
    const ALL: [LogLevel; 3] = [LogLevel::Info, LogLevel::Warn, LogLevel::Error];

    const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// An operator's view of an instance, as every operator route answers it
/// (creation adds the bootstrap token itself): never a secret.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProvisioningInstance)]
struct InstanceView {
    #[serde(flatten)]
    fields: InstanceFields,
    /// The bootstrap token's state; `null` if it is gone.
    bootstrap_token: Option<BootstrapTokenState>,
}

/// The answer to a creation: the instance and its bootstrap token, shown
/// this once.
#[derive(Serialize, ToSchema)]
#[schema(as = ProvisioningInstanceCreated)]
struct CreatedInstance {
    #[serde(flatten)]
    fields: InstanceFields,
    /// 64 lowercase hex characters; stored only as a hash, never shown
    /// again.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    bootstrap_token: String,
    #[schema(value_type = TimestampSchema)]
    bootstrap_token_expires_at: String,
}

/// What the operator views of an instance have in common.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProvisioningInstanceFields)]
struct InstanceFields {
    instance_id: Uuid,
    /// The tenant's id, a UUID.
    #[schema(format = Uuid)]
    tenant_id: String,
    name: String,
    /// The agent the machine is bound to.
    #[schema(value_type = Option<AgentSlugSchema>)]
    agent_id: Option<String>,
    #[schema(value_type = Object)]
    agent_config: Value,
    #[schema(value_type = Object)]
    skill_lockfile: Value,
    has_agent_secrets: bool,
    has_decryption_key: bool,
    /// The encrypted bundle, once uploaded.
    artifact: Option<ArtifactInfo>,
    /// The website tarball, once uploaded.
    website: Option<ArtifactInfo>,
    /// The last accepted callback.
    callback: Option<CallbackProgress>,
    #[schema(value_type = TimestampSchema)]
    created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct BootstrapTokenState {
    #[schema(value_type = TimestampSchema)]
    expires_at: String,
    /// When `/secrets` used it up.
    #[schema(value_type = Option<TimestampSchema>)]
    consumed_at: Option<String>,
}

/// An uploaded file, as stored.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProvisioningArtifact)]
struct ArtifactInfo {
    size_bytes: i64,
    /// `sha256:` and the hex digest of the bytes as uploaded.
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    artifact_cipher_hash: Option<String>,
    /// `X-Bundle-Plain-Hash` as uploaded.
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    bundle_plain_hash: Option<String>,
    #[schema(value_type = TimestampSchema)]
    uploaded_at: String,
}

impl From<ArtifactRecord> for ArtifactInfo {
    fn from(record: ArtifactRecord) -> Self {
        ArtifactInfo {
            size_bytes: record.size_bytes,
            artifact_cipher_hash: record.cipher_hash,
            bundle_plain_hash: record.plain_hash,
            uploaded_at: timestamp(record.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct CallbackProgress {
    /// `null` before the first callback.
    #[schema(minimum = 1, maximum = 4)]
    seq: Option<u8>,
    /// `null` before the first callback.
    #[schema(value_type = Option<CallbackStageSchema>)]
    stage: Option<&'static str>,
    message: Option<String>,
    #[schema(value_type = TimestampSchema)]
    updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct UploadedArtifact {
    #[schema(value_type = ArtifactKindSchema)]
    kind: &'static str,
    #[serde(flatten)]
    artifact: ArtifactInfo,
}

/// The provisioning log, oldest first.
#[derive(Debug, Serialize, ToSchema)]
struct ProvisionLogs {
    /// How many lines the log has in all; `logs` holds the last 1000.
    total: u64,
    logs: Vec<ProvisionLogLine>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ProvisionLogLine {
    /// The callback's stage, or the diagnostic's label.
    stage: String,
    #[schema(value_type = LogLevel)]
    level: String,
    message: String,
    #[schema(value_type = TimestampSchema)]
    at: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct IssuedCertificate {
    /// The client certificate, valid one hour, for client authentication
    /// only.
    cert_pem: String,
    /// For `/internal/bootstrap/secrets`.
    session_id: Uuid,
}

/// Seed 003's secrets, handed out once per instance.
#[derive(Serialize, ToSchema)]
struct MachineSecrets {
    /// For `/internal/bootstrap/callback` and `/diagnostic` (the
    /// `callback_jwt` scheme); valid two hours.
    callback_jwt: String,
    /// For `X-Download-Token`; valid one hour, three tries per file.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    artifact_download_token: String,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    decryption_key_hex: Option<String>,
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    artifact_cipher_hash: Option<String>,
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    bundle_plain_hash: Option<String>,
    #[schema(value_type = Object)]
    agent_config: Value,
    /// `{}` when the operator set none.
    #[schema(value_type = Object)]
    agent_secrets: Value,
    #[schema(value_type = Object)]
    skill_lockfile: Value,
}

debug_redacting!(CreateInstance {
    name, agent_id, agent_config, skill_lockfile, bootstrap_token_ttl_seconds;
    secret: agent_secrets, decryption_key_hex
});
debug_redacting!(PatchInstance {
    agent_config, skill_lockfile;
    secret: agent_secrets, decryption_key_hex
});
debug_redacting!(CertRequest { csr_pem; secret: bootstrap_token });
debug_redacting!(EarlyDiagnosticRequest {
    instance_id, label, level, message;
    secret: bootstrap_token
});
debug_redacting!(CreatedInstance { fields, bootstrap_token_expires_at; secret: bootstrap_token });
debug_redacting!(MachineSecrets {
    artifact_cipher_hash, bundle_plain_hash, agent_config, skill_lockfile;
    secret: callback_jwt, artifact_download_token, decryption_key_hex, agent_secrets
});

/// What a machine's report is answered with.
#[derive(Debug, Serialize, ToSchema)]
struct Acknowledgement {
    #[schema(value_type = String, examples("ok"))]
    status: &'static str,
    message: String,
}

fn is_sha256_label(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(is_hex_token)
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
    if value.is_some_and(|key| !is_hex_token(key)) {
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

async fn instance_view(
    state: &AppState,
    instance: &MachineInstance,
) -> Result<InstanceView, ApiError> {
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
async fn create_instance(
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
async fn get_instance(
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
async fn patch_instance(
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
    Ok((path, size, sha256_label(&hasher.finalize())))
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
    Ok(HttpResponse::Ok().json(UploadedArtifact {
        kind: kind.as_str(),
        artifact: ArtifactInfo::from(record),
    }))
}

/// Attaches the encrypted bundle, replacing any earlier one.
///
/// The body is streamed to disk while its SHA-256 is computed; that hash
/// is the `artifact_cipher_hash` the machine checks.
#[utoipa::path(
    put,
    operation_id = "upload_instance_artifact",
    path = "/v1/provisioning/instances/{instance_id}/artifact",
    tag = "provisioning",
    security(("api_key" = [])),
    params(
        ("instance_id" = Uuid, Path, description = "The instance's id (anything else is a 404)."),
        ("x-bundle-plain-hash" = String, Header, pattern = "^sha256:[0-9a-f]{64}$",
            description = "`sha256:` and the hex SHA-256 of the bundle before encryption; the machine \
            checks it after decrypting."),
        ("x-artifact-cipher-hash" = Option<String>, Header, nullable = false,
            pattern = "^sha256:[0-9a-f]{64}$",
            description = "The hex SHA-256 of the body as sent, `sha256:` first; when sent, an upload \
            that hashes otherwise is refused and not kept."),
    ),
    request_body(content_type = "application/octet-stream", description = "The encrypted bundle. At most \
        `--max-artifact-bytes` (default 1 GiB)."),
    responses(
        (status = 200, description = "Stored.", body = UploadedArtifact),
        (status = 400, description = "`invalid_request` (`x-bundle-plain-hash` missing, or either hash \
            header not `sha256:<64 lowercase hex>`), `invalid_body` (the upload broke off).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent token, an agent's own key, or only a \
            client certificate), `permission_denied` (the key's role lacks `instance.provision`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such instance in the caller's tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`artifact_too_large`: past `--max-artifact-bytes`; nothing is kept.",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`hash_mismatch`: the body does not hash to `x-artifact-cipher-hash`; \
            nothing is kept.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable or the file cannot be \
            written; retry shortly.", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn upload_bundle(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    upload(state, caller, request, path, payload, ArtifactKind::Bundle).await
}

/// Attaches the optional website tarball, replacing any earlier one.
///
/// Streamed to disk like the bundle; the machine downloads it with the
/// same token.
#[utoipa::path(
    put,
    operation_id = "upload_instance_website",
    path = "/v1/provisioning/instances/{instance_id}/website",
    tag = "provisioning",
    security(("api_key" = [])),
    params(
        ("instance_id" = Uuid, Path, description = "The instance's id (anything else is a 404)."),
        ("x-bundle-plain-hash" = Option<String>, Header, nullable = false,
            pattern = "^sha256:[0-9a-f]{64}$",
            description = "Kept as the website's `bundle_plain_hash` when sent."),
        ("x-artifact-cipher-hash" = Option<String>, Header, nullable = false,
            pattern = "^sha256:[0-9a-f]{64}$",
            description = "The hex SHA-256 of the body as sent, `sha256:` first; when sent, an upload \
            that hashes otherwise is refused and not kept."),
    ),
    request_body(content_type = "application/octet-stream", description = "The website tarball. At most \
        `--max-artifact-bytes` (default 1 GiB)."),
    responses(
        (status = 200, description = "Stored.", body = UploadedArtifact),
        (status = 400, description = "`invalid_request` (a hash header that is not \
            `sha256:<64 lowercase hex>`), `invalid_body` (the upload broke off).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_api_key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`api_key_required` (an agent token, an agent's own key, or only a \
            client certificate), `permission_denied` (the key's role lacks `instance.provision`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such instance in the caller's tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`artifact_too_large`: past `--max-artifact-bytes`; nothing is kept.",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`hash_mismatch`: the body does not hash to `x-artifact-cipher-hash`; \
            nothing is kept.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable or the file cannot be \
            written; retry shortly.", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn upload_website(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    upload(state, caller, request, path, payload, ArtifactKind::Website).await
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
async fn instance_logs(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::InstanceProvision)?;
    let instance = owned_instance(&state, &caller, &path).await?;
    let id = instance.id;
    let (logs, total) = state
        .store
        .detached(async move |store| store.provision_logs(id, LOG_PAGE).await)
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

/// The CA certificate, for `curl --cacert` and for pinning.
#[utoipa::path(
    get,
    operation_id = "ca_certificate",
    path = "/internal/bootstrap/ca.pem",
    tag = "machine",
    responses(
        (status = 200, description = "The CA certificate (PEM) that signs the mTLS listener's \
            certificate and the machines' client certificates.", body = String,
            content_type = "application/x-pem-file"),
    ),
)]
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

/// Issues a client certificate for a bootstrap token and a CSR (seed 003,
/// step 1).
///
/// The token is not used up here; each call opens a new session, valid
/// 15 minutes, for `/internal/bootstrap/secrets`. The certificate names the
/// instance and the session, whatever the CSR asks for.
#[utoipa::path(
    post,
    operation_id = "issue_machine_certificate",
    path = "/internal/bootstrap/cert",
    tag = "machine",
    request_body = CertRequest,
    responses(
        (status = 200, description = "The certificate and its session.", body = IssuedCertificate),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (the token is not 64 lowercase hex, `csr_pem` not 100 to 10,000 characters), `invalid_csr` \
            (not a PEM PKCS#10 request, a bad self-signature, or a key we do not sign).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_bootstrap_token`: unknown, expired or used.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`instance_not_ready`: the operator has not attached the bundle and \
            its decryption key yet; retry later, the token is still good.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn issue_certificate(
    state: web::Data<AppState>,
    body: web::Json<CertRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut problems = Problems::default();
    if !is_hex_token(&body.bootstrap_token) {
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
    Ok(HttpResponse::Ok().json(IssuedCertificate {
        cert_pem: certificate.pem,
        session_id,
    }))
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

/// Hands out the instance's secrets, once (seed 003, step 2).
///
/// Takes the client certificate issued for the session over mTLS, and uses
/// the bootstrap token up: of any number of calls, of any sessions of the
/// token, exactly one gets 200.
#[utoipa::path(
    post,
    operation_id = "machine_secrets",
    path = "/internal/bootstrap/secrets",
    tag = "machine",
    security(("mtls" = [])),
    request_body = SecretsRequest,
    responses(
        (status = 200, description = "The secrets, the callback token and the download token.",
            body = MachineSecrets,
            headers(("cache-control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_json`: not JSON, or not this shape.",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`client_certificate_required`, `invalid_client_certificate` (not \
            ours, expired or revoked), `certificate_session_mismatch` (issued for another session).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such session.",
            body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`session_expired` (15 minutes after `/cert`), `session_complete` (the \
            secrets were already handed out).", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`: also when the sealed secrets cannot be opened.",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database or the signing key is unavailable.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn secrets(
    state: web::Data<AppState>,
    machine: MachineCertificate,
    body: Deferred<web::Json<SecretsRequest>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.read().await?;
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
    // Everything that can fail is done before the session completes: the
    // secrets go out once, so a failure after that would strand the machine
    // (every retry would be 410).
    let now = now();
    let instance_id = session.instance_id;
    let (instance, bundle) = state
        .store
        .detached(async move |store| {
            Ok((
                store.machine_instance(instance_id).await?,
                store.artifact(instance_id, ArtifactKind::Bundle).await?,
            ))
        })
        .await?;
    let instance = instance.ok_or_else(|| ApiError::not_found("instance"))?;
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
    state
        .store
        .detached(async move |store| {
            Ok(store
                .complete_machine_session(session_id, now, download_tokens)
                .await)
        })
        .await?
        .map_err(session_error)?;
    audit(
        &state,
        &instance,
        format!("instance:{}", instance.id),
        "bootstrap.secrets",
        "released",
    );
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(MachineSecrets {
            callback_jwt: callback.0,
            artifact_download_token: download_token,
            decryption_key_hex: decryption_key,
            artifact_cipher_hash: bundle
                .as_ref()
                .and_then(|bundle| bundle.cipher_hash.clone()),
            bundle_plain_hash: bundle.and_then(|bundle| bundle.plain_hash),
            agent_config: instance.agent_config,
            agent_secrets,
            skill_lockfile: instance.skill_lockfile,
        }))
}

/// One download token opens both files, each with its own attempts: the
/// website's row is keyed by a hash of the token and the kind.
fn download_token_hash(token: &str, kind: ArtifactKind) -> SecretHash {
    match kind {
        ArtifactKind::Bundle => hash_secret(token),
        ArtifactKind::Website => hash_secret(&format!("{token}:website")),
    }
}

fn level(problems: &mut Problems, level: Option<&str>) -> LogLevel {
    let text = level.unwrap_or(LogLevel::Info.as_str());
    LogLevel::ALL
        .into_iter()
        .find(|level| level.as_str() == text)
        .unwrap_or_else(|| {
            problems.push("level: must be one of info, warn, error".into());
            LogLevel::Info
        })
}

/// Reports a provisioning stage.
///
/// Stages go installing (1), configuring (2), securing (3), ready (4), or
/// error at 2 or 3; each `seq` must be above the last, and nothing is
/// accepted after ready or error. A refused callback changes nothing.
#[utoipa::path(
    post,
    operation_id = "machine_callback",
    path = "/internal/bootstrap/callback",
    tag = "machine",
    security(("callback_jwt" = [])),
    request_body = CallbackRequest,
    responses(
        (status = 200, description = "Recorded and logged.", body = Acknowledgement),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` (an \
            unknown stage, `message` over 2000 characters), `callback_sequence_violation` (`seq` out of \
            range, not after the last, not the stage's, or after ready or error).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token` (not a valid callback token).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: the token's instance does not exist.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn callback(
    state: web::Data<AppState>,
    machine: CallbackPrincipal,
    body: Deferred<web::Json<CallbackRequest>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.read().await?.into_inner();
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
        LogLevel::Error
    } else {
        LogLevel::Info
    }
    .as_str();
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
        Ok(Ok(_)) => Ok(HttpResponse::Ok().json(Acknowledgement {
            status: "ok",
            message: format!("stage {stage} (seq {seq}) recorded"),
        })),
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
    let (_, lines) = state
        .store
        .detached(async move |store| store.provision_logs(id, 0).await)
        .await?;
    // A machine with a valid token must not be able to fill the database.
    if lines >= MAX_LOG_LINES {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "provision_log_full",
            format!("this instance's provision log holds its maximum of {MAX_LOG_LINES} lines"),
        ));
    }
    state
        .store
        .detached(async move |store| {
            store
                .append_provision_log(tenant, id, &label, level, &message, now)
                .await
        })
        .await?;
    Ok(HttpResponse::Ok().json(Acknowledgement {
        status: "ok",
        message: "logged".into(),
    }))
}

fn diagnostic_problems(
    mut problems: Problems,
    label: &str,
    level_text: Option<&str>,
    message: &str,
) -> Result<&'static str, ApiError> {
    problems.length("label", Some(label), 1, 80);
    problems.length("message", Some(message), 0, 2000);
    let level = level(&mut problems, level_text);
    problems.finish()?;
    Ok(level.as_str())
}

/// Appends a trace line to the provisioning log.
///
/// No sequence rule: anything well-formed from the callback token's
/// machine is logged.
#[utoipa::path(
    post,
    operation_id = "machine_diagnostic",
    path = "/internal/bootstrap/diagnostic",
    tag = "machine",
    security(("callback_jwt" = [])),
    request_body = DiagnosticRequest,
    responses(
        (status = 200, description = "Logged.", body = Acknowledgement),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (`label` not 1 to 80 characters, `message` over 2000, an unknown `level`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token` (not a valid callback token).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: the token's instance does not exist.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`provision_log_full`: the instance's log holds its 10,000 lines.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn diagnostic(
    state: web::Data<AppState>,
    machine: CallbackPrincipal,
    body: Deferred<web::Json<DiagnosticRequest>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.read().await?.into_inner();
    let level = diagnostic_problems(
        Problems::default(),
        &body.label,
        body.level.as_deref(),
        &body.message,
    )?;
    let instance_id = machine.instance_id;
    let instance = state
        .store
        .detached(async move |store| store.machine_instance(instance_id).await)
        .await?
        .filter(|instance| instance.tenant_id == machine.tenant_id)
        .ok_or_else(|| ApiError::not_found("instance"))?;
    append_log(&state, &instance, body.label, level, body.message).await
}

/// Appends a trace line to the provisioning log before the machine has a
/// certificate.
///
/// Authenticated by the instance's bootstrap token, compared in constant
/// time and not used up.
#[utoipa::path(
    post,
    operation_id = "machine_early_diagnostic",
    path = "/internal/bootstrap/early-diagnostic",
    tag = "machine",
    request_body = EarlyDiagnosticRequest,
    responses(
        (status = 200, description = "Logged.", body = Acknowledgement),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (`bootstrap_token` not 10 to 200 characters or `instance_id` not 1 to 80; then `label`, \
            `level`, `message` as for `/diagnostic`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_bootstrap_token`: a wrong, expired or used token, or an \
            unknown instance, alike.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`provision_log_full`: the instance's log holds its 10,000 lines.",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn early_diagnostic(
    state: web::Data<AppState>,
    body: web::Json<EarlyDiagnosticRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut problems = Problems::default();
    problems.length("bootstrap_token", Some(&body.bootstrap_token), 10, 200);
    problems.length("instance_id", Some(&body.instance_id), 1, 80);
    let level = diagnostic_problems(problems, &body.label, body.level.as_deref(), &body.message)?;
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
    machine.require_completed_session(&state).await?;
    let invalid_download_token = || {
        ApiError::unauthorized(
            "invalid_download_token",
            "X-Download-Token is missing, invalid, expired or already used",
        )
    };
    let token = header(&request, "x-download-token")
        .filter(|token| is_hex_token(token))
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
            // No Retry-After: the token will never work again.
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "download_attempts_exhausted",
                "this download token has been tried too many times; provisioning must start again",
            ));
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

/// Streams the encrypted bundle (seed 003).
///
/// Check its SHA-256 against `artifact_cipher_hash`, decrypt it with
/// `decryption_key_hex`, check `bundle_plain_hash`. The token allows three
/// tries and is used up once the whole file has been sent.
#[utoipa::path(
    get,
    operation_id = "download_artifact",
    path = "/internal/bootstrap/artifacts/{instance_id}",
    tag = "machine",
    security(("mtls" = [])),
    params(
        ("instance_id" = Uuid, Path, description = "The instance the client certificate was issued for."),
        ("x-download-token" = String, Header, pattern = "^[0-9a-f]{64}$",
            description = "`artifact_download_token` from `/internal/bootstrap/secrets`."),
    ),
    responses(
        (status = 200, description = "The encrypted bundle, as uploaded.",
            content_type = "application/octet-stream",
            headers(
                ("content-length" = u64, description = "The file's size."),
                ("cache-control" = String, description = "`no-store`"),
            )),
        (status = 401, description = "`client_certificate_required`, `invalid_client_certificate` (not \
            ours, expired or revoked), `certificate_instance_mismatch` (issued for another instance), \
            `invalid_download_token` (missing, wrong, expired or used).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no bundle is attached (the try counts), or the id is \
            not a UUID.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`download_attempts_exhausted`: the token's three tries for this file \
            are spent.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Always 0: the token will not work again."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn download_bundle(
    state: web::Data<AppState>,
    machine: MachineCertificate,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    download(state, machine, request, path, ArtifactKind::Bundle).await
}

/// Streams the website tarball, if one was attached.
///
/// The same download token as the bundle, with its own three tries, used
/// up once the whole file has been sent.
#[utoipa::path(
    get,
    operation_id = "download_website",
    path = "/internal/bootstrap/artifacts/{instance_id}/website",
    tag = "machine",
    security(("mtls" = [])),
    params(
        ("instance_id" = Uuid, Path, description = "The instance the client certificate was issued for."),
        ("x-download-token" = String, Header, pattern = "^[0-9a-f]{64}$",
            description = "`artifact_download_token` from `/internal/bootstrap/secrets`."),
    ),
    responses(
        (status = 200, description = "The website tarball, as uploaded.",
            content_type = "application/octet-stream",
            headers(
                ("content-length" = u64, description = "The file's size."),
                ("cache-control" = String, description = "`no-store`"),
            )),
        (status = 401, description = "`client_certificate_required`, `invalid_client_certificate` (not \
            ours, expired or revoked), `certificate_instance_mismatch` (issued for another instance), \
            `invalid_download_token` (missing, wrong, expired or used).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no website is attached (the try counts), or the id is \
            not a UUID.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`download_attempts_exhausted`: the token's three tries for this file \
            are spent.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Always 0: the token will not work again."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn download_website(
    state: web::Data<AppState>,
    machine: MachineCertificate,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    download(state, machine, request, path, ArtifactKind::Website).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_tokens_keys_and_secrets() {
        let secrets = MachineSecrets {
            callback_jwt: "eyJ.callback.jwt".into(),
            artifact_download_token: "d0wnl0ad".repeat(8),
            decryption_key_hex: Some("dec0de".repeat(10)),
            artifact_cipher_hash: None,
            bundle_plain_hash: None,
            agent_config: serde_json::json!({"model": "small"}),
            agent_secrets: serde_json::json!({"openai": "sk-hunter2"}),
            skill_lockfile: serde_json::json!({}),
        };
        let shown = format!("{secrets:?}");
        for secret in ["callback.jwt", "d0wnl0ad", "dec0de", "hunter2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("small"), "the rest is shown: {shown}");
        let request = CertRequest {
            bootstrap_token: "b00t".repeat(16),
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
        };
        assert!(!format!("{request:?}").contains("b00t"));
    }
}
