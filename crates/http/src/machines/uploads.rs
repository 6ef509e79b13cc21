//! Artifacts the operator attaches: streamed to a file under
//! `Settings::artifact_dir` while hashed, never held whole in memory.

use std::path::{Path, PathBuf};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use agentry_auth::{Permission, sha256_label};
use agentry_store::{ArtifactKind, ArtifactRecord, now};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::wire::{ArtifactInfo, UploadedArtifact, is_sha256_label};
use super::{audit, header, owned_instance};
use crate::error::{ApiError, Problem};
use crate::guard::ApiKeyPrincipal;
use crate::state::AppState;
use crate::validate::Problems;

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
        // When the bundle finished arriving, not when the request began: a
        // large upload takes a while.
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
pub(super) async fn upload_bundle(
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
pub(super) async fn upload_website(
    state: web::Data<AppState>,
    caller: ApiKeyPrincipal,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    upload(state, caller, request, path, payload, ArtifactKind::Website).await
}
