//! The request guard: extractors that answer "who is calling, and may
//! they?" for every protected route.
//!
//! Credentials come from `Authorization: Bearer ...` or `X-API-Key`. A
//! string starting `agy_` is an API key; anything else is taken for a JWT.
//! On the mTLS listener a client certificate from our CA is a credential
//! too: an agent's own (`POST /v1/agent/auth/cert`, as good as its token
//! and retired with it), or a provisioning machine's (seed 003), which
//! also lets the agent its instance is bound to read its own state (seed
//! 001).
//! A repeat request does no signature check and no database read: verified
//! tokens, API keys and agent snapshots are cached, and the store's change
//! feed drops whatever a revocation, rotation or lifecycle change made wrong.

mod agent;
mod api_key;
mod machine;
mod session;

use actix_web::{HttpMessage, HttpRequest, web};
use agentry_auth::{Audience, Claims};
use agentry_store::{AgentRecord, NewAuditEvent};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::state::AppState;

pub use agent::{AgentCredential, AgentPrincipal, Principal};
pub(crate) use agent::{presented_credential_source, presents_tenant_key};
pub use api_key::ApiKeyPrincipal;
pub use machine::{CallbackPrincipal, MachineCertificate};
pub(crate) use session::is_workspace_request;
pub use session::{SessionPrincipal, WorkspacePrincipal};

/// The instant a request is judged at: read from the clock once, where the
/// request enters, so the guard and the handler agree on it (a token valid
/// for the guard is not expired for the handler a microsecond later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTime(pub OffsetDateTime);

/// The request's [`RequestTime`], read from the clock on first use.
pub fn request_time(request: &HttpRequest) -> OffsetDateTime {
    if let Some(RequestTime(now)) = request.extensions().get::<RequestTime>() {
        return *now;
    }
    let now = agentry_store::now();
    request.extensions_mut().insert(RequestTime(now));
    now
}

impl actix_web::FromRequest for RequestTime {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(RequestTime(request_time(request))))
    }
}

/// A credential as presented, before it is checked.
enum Presented {
    ApiKey(String),
    Jwt(String),
}

/// The credential text a request carries: the bearer token, else
/// `X-API-Key`; `None` when absent or empty.
fn credential_text(headers: &actix_web::http::header::HeaderMap) -> Option<&str> {
    use actix_web::http::header::{AUTHORIZATION, HeaderName};
    // Names as constants: looking one up by `&str` parses it every time.
    const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
    // `from_utf8` checks a token's few hundred bytes a word at a time where
    // `HeaderValue::to_str` goes byte by byte (a sixtieth of a `limits/me`);
    // a non-ASCII credential gets through here only to fail its own check.
    let header = |name: &HeaderName| {
        headers
            .get(name)
            .and_then(|value| std::str::from_utf8(value.as_bytes()).ok())
            .map(str::trim)
    };
    let bearer = header(&AUTHORIZATION).and_then(|value| {
        value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
    });
    bearer
        .or_else(|| header(&X_API_KEY))
        .filter(|credential| !credential.is_empty())
}

fn presented(request: &HttpRequest) -> Option<Presented> {
    let credential = credential_text(request.headers())?;
    Some(if credential.starts_with("agy_") {
        Presented::ApiKey(credential.to_owned())
    } else {
        Presented::Jwt(credential.to_owned())
    })
}

/// The app's state, by its one `Arc`: cloning the state itself costs an
/// atomic increment (and its decrement) per shared part, per request.
fn state(request: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    request
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal(&"AppState missing from the app"))
}

fn missing() -> ApiError {
    ApiError::unauthorized(
        "missing_credentials",
        "send an API key or agent token as 'Authorization: Bearer ...'",
    )
}

fn invalid_key() -> ApiError {
    ApiError::unauthorized("invalid_api_key", "the API key is invalid or revoked")
}

fn invalid_token() -> ApiError {
    ApiError::unauthorized("invalid_token", "the token is invalid, expired or revoked")
}

/// Records a refusal of `agent` in the audit trail without delaying the
/// answer; the same refusal again within the minute is not written twice.
fn audit_refusal(state: &AppState, agent: &AgentRecord, reason: &'static str, now: OffsetDateTime) {
    if !state.refusals.first_this_minute(agent.id, reason, now) {
        return;
    }
    let name = format!("agent:{}", agent.slug);
    state.audit(
        agent.tenant_id,
        NewAuditEvent {
            actor: name.clone(),
            action: "auth.refused".into(),
            target: Some(name),
            outcome: "denied".into(),
            detail: serde_json::json!({ "reason": reason }),
        },
    );
}

/// The claims of the bearer token, checked for `audience`: for tokens the
/// guard does not cache (sessions, callbacks), which need no database.
/// `absent` is the answer when no credential was sent.
fn bearer_claims(
    request: &HttpRequest,
    audience: Audience,
    absent: impl FnOnce() -> ApiError,
) -> Result<Claims, ApiError> {
    let state = state(request)?;
    let Presented::Jwt(token) = presented(request).ok_or_else(absent)? else {
        return Err(invalid_token());
    };
    state
        .issuer
        .verify(&token, &state.keys.ring(), audience, request_time(request))
        .map_err(|_| invalid_token())
}

#[cfg(test)]
mod tests {
    use actix_web::FromRequest;
    use actix_web::test::TestRequest;

    use super::*;

    #[actix_web::test]
    async fn a_request_is_judged_at_one_instant() {
        let request = TestRequest::default().to_http_request();
        let first = request_time(&request);
        assert_eq!(
            request.extensions().get::<RequestTime>(),
            Some(&RequestTime(first)),
            "the first reading is kept with the request"
        );
        // A clone is the same request (the guard's extractors clone it).
        assert_eq!(request_time(&request.clone()), first);
        let extracted = RequestTime::extract(&request).await.unwrap();
        assert_eq!(extracted, RequestTime(first));
        // Whatever instant the request carries is the one every reader gets.
        let other = TestRequest::default().to_http_request();
        let fixed = time::macros::datetime!(2026-01-01 0:00 UTC);
        other.extensions_mut().insert(RequestTime(fixed));
        assert_eq!(request_time(&other), fixed);
    }
}
