//! What a machine reports while it provisions: callbacks, judged by the
//! store with `agentry-lifecycle`'s sequence, and diagnostics, before and
//! after it has a certificate.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use agentry_auth::{SecretHash, hash_secret};
use agentry_lifecycle::CallbackStage;
use agentry_store::MachineInstance;
use uuid::Uuid;

use super::wire::{
    Acknowledgement, CallbackRequest, DiagnosticRequest, EarlyDiagnosticRequest, LogLevel, level,
};
use super::{POLICY, invalid_bootstrap_token};
use time::OffsetDateTime;

use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::CallbackPrincipal;
use crate::guard::RequestTime;
use crate::state::AppState;
use crate::validate::Problems;

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
pub(super) async fn callback(
    RequestTime(now): RequestTime,
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
    let (tenant, instance_id) = (machine.tenant_id, machine.instance_id);
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
                .record_callback(tenant, instance_id, now, seq, stage, message, level)
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
    now: OffsetDateTime,
) -> Result<HttpResponse, ApiError> {
    let (tenant, id) = (instance.tenant_id, instance.id);
    state
        .store
        .detached(async move |store| {
            store
                .append_provision_log(tenant, id, &label, level, &message, now, &POLICY)
                .await
        })
        .await?
        .map_err(|full| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "provision_log_full",
                full.to_string(),
            )
        })?;
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
pub(super) async fn diagnostic(
    RequestTime(now): RequestTime,
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
    let (tenant, instance_id) = (machine.tenant_id, machine.instance_id);
    let instance = state
        .store
        .detached(async move |store| store.machine_instance(tenant, instance_id).await)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    append_log(&state, &instance, body.label, level, body.message, now).await
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
pub(super) async fn early_diagnostic(
    RequestTime(now): RequestTime,
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
    // The machine names only the instance: its bootstrap token's record
    // says whose it is.
    let (instance, token) = state
        .store
        .detached(async move |store| {
            let Some(token) = store.bootstrap_token_of(instance_id).await? else {
                return Ok((None, None));
            };
            let instance = store
                .machine_instance(token.0.tenant_id, instance_id)
                .await?;
            Ok((instance, Some(token)))
        })
        .await?;
    let presented = hash_secret(&body.bootstrap_token);
    let (Some(instance), Some((token, stored))) = (instance, token) else {
        return Err(invalid_bootstrap_token());
    };
    if !presented.matches(&SecretHash(stored)) || token.usable(now).is_err() {
        return Err(invalid_bootstrap_token());
    }
    append_log(&state, &instance, body.label, level, body.message, now).await
}
