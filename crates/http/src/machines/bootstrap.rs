//! The machine's first steps (seed 003): the CA certificate, a client
//! certificate for its bootstrap token, and its secrets for that
//! certificate, once.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_auth::{Audience, CaError, hash_secret, is_hex_token, mint_hex_token};
use agentry_lifecycle::SessionTerms;
use agentry_store::{
    ArtifactKind, MachineInstance, NewIssuedCertificate, NewToken, OpenSessionError, SessionError,
    TokenPurpose,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::secrets::{download_token_hash, open_sealed};
use super::wire::{CertRequest, IssuedCertificate, MachineSecrets, SecretsRequest};
use super::{POLICY, audit, invalid_bootstrap_token};
use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::MachineCertificate;
use crate::guard::RequestTime;
use crate::state::AppState;
use crate::validate::Problems;

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
pub(super) async fn ca_certificate(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .body(state.keys.ca().authority().cert_pem().to_owned())
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
pub(super) async fn issue_certificate(
    RequestTime(now): RequestTime,
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

    let hash = hash_secret(&body.bootstrap_token).0;
    let keys = state.keys.clone();
    let csr_pem = body.csr_pem;
    // The certificate names the session, so it is signed once the store
    // has found the token and the instance ready, before the session is
    // written.
    let sign = move |instance: &MachineInstance, session_id: Uuid, terms: &SessionTerms| {
        let certificate = keys.ca().authority().sign_machine_csr(
            &csr_pem,
            instance.id,
            session_id,
            now,
            terms.certificate_lifetime,
        )?;
        let issued = NewIssuedCertificate {
            serial: certificate.serial,
            fingerprint: certificate.fingerprint,
            not_before: certificate.not_before,
            not_after: certificate.not_after,
        };
        Ok::<_, CaError>((issued, certificate.pem))
    };
    let opened = state
        .store
        .detached(async move |store| {
            Ok(store
                .open_bootstrap_session(&hash, &POLICY, now, sign)
                .await)
        })
        .await?;
    let opened = opened.map_err(|error| match error {
        OpenSessionError::InvalidToken(_) => invalid_bootstrap_token(),
        OpenSessionError::NotReady => ApiError::new(
            StatusCode::CONFLICT,
            "instance_not_ready",
            "the operator has not attached the artifact bundle and its decryption key yet; retry later",
        ),
        OpenSessionError::Issue(CaError::InvalidCsr(reason)) => {
            ApiError::bad_request("invalid_csr", reason)
        }
        OpenSessionError::Issue(other) => ApiError::internal(&other),
        OpenSessionError::Store(error) => error.into(),
    })?;
    audit(
        &state,
        &opened.instance,
        format!("instance:{}", opened.instance.id),
        "bootstrap.cert",
        "issued",
    );
    Ok(HttpResponse::Ok().json(IssuedCertificate {
        cert_pem: opened.issued,
        session_id: opened.session_id,
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
pub(super) async fn secrets(
    RequestTime(now): RequestTime,
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
    let tenant = machine.certificate.tenant_id;
    let (session, instance, bundle) = state
        .store
        .detached(async move |store| {
            let Some(session) = store.machine_session(tenant, session_id).await? else {
                return Ok(None);
            };
            let instance_id = session.instance_id;
            Ok(Some((
                session,
                store.machine_instance(tenant, instance_id).await?,
                store
                    .artifact(tenant, instance_id, ArtifactKind::Bundle)
                    .await?,
            )))
        })
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
    let instance = instance.ok_or_else(|| ApiError::not_found("instance"))?;
    let callback = state
        .mint(
            Audience::Callback,
            instance.id,
            instance.tenant_id,
            0,
            now,
            POLICY.callback_token_lifetime,
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
    let download_tokens = POLICY
        .download_grants(now)
        .into_iter()
        .map(|grant| NewToken {
            purpose: TokenPurpose::Download,
            token_hash: download_token_hash(&download_token, grant.kind).0,
            subject_id: session.instance_id,
            max_attempts: grant.max_attempts,
            expires_at: grant.expires_at,
        })
        .collect();
    state
        .store
        .detached(async move |store| {
            Ok(store
                .complete_machine_session(tenant, session_id, now, download_tokens)
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
