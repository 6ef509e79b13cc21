//! The machine downloads its artifacts: one try counted per request, the
//! token used up once the whole file has been handed to the connection.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use agentry_auth::is_hex_token;
use agentry_store::{ArtifactKind, StoreError, TokenError, TokenPurpose, now};
use futures_util::StreamExt;
use uuid::Uuid;

use super::header;
use super::secrets::download_token_hash;
use crate::error::{ApiError, Problem};
use crate::guard::MachineCertificate;
use crate::state::AppState;

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
    let now = crate::guard::request_time(&request);
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
    let tenant = machine.certificate.tenant_id;
    let artifact = state
        .store
        .detached(async move |store| store.artifact(tenant, instance_id, kind).await)
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

    /// Spends the token once the last byte is out, at that instant rather
    /// than the request's: a large download takes a while.
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
pub(super) async fn download_bundle(
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
pub(super) async fn download_website(
    state: web::Data<AppState>,
    machine: MachineCertificate,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    download(state, machine, request, path, ArtifactKind::Website).await
}
