//! The one error type at the HTTP edge: RFC 9457 problem details with a
//! stable `code`. The cause of a 5xx is logged, never sent.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use agentry_ledger::LedgerError;
use agentry_lifecycle::Denial;
use agentry_store::{StoreError, TokenError};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable and machine-readable; clients branch on it.
    pub code: &'static str,
    pub detail: String,
    pub retry_after_seconds: Option<u64>,
}

/// An RFC 9457 problem, as every error is sent
/// (`application/problem+json`).
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({
    "type": "urn:agentry:problem:insufficient_budget",
    "title": "Payment Required",
    "status": 402,
    "detail": "insufficient budget: 0.5 USD requested, 0.25 USD available in the daily window",
    "code": "insufficient_budget",
    "error": "insufficient budget: 0.5 USD requested, 0.25 USD available in the daily window"
})))]
pub(crate) struct Problem<'a> {
    /// `urn:agentry:problem:` followed by `code`.
    #[schema(value_type = String, format = "uri")]
    r#type: String,
    /// The reason phrase of `status`.
    #[schema(value_type = String)]
    title: &'a str,
    /// The HTTP status, repeated for clients that only see the body.
    status: u16,
    /// For people: what went wrong and, where it helps, what to do.
    #[schema(value_type = String)]
    detail: &'a str,
    /// Stable and machine-readable: clients branch on this, never on
    /// `detail`.
    #[schema(value_type = String)]
    code: &'a str,
    /// `detail` again, under the name Agent United's clients read an
    /// error's message from (`{"error": "..."}`).
    #[schema(value_type = String)]
    error: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after_seconds: None,
        }
    }

    /// The same error with a more specific stable code.
    pub fn with_code(self, code: &'static str) -> Self {
        Self { code, ..self }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    pub fn too_many_requests(detail: impl Into<String>, retry_after_seconds: u64) -> Self {
        Self {
            retry_after_seconds: Some(retry_after_seconds),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
        }
    }

    /// A failure that is our fault: the cause is logged here and the client
    /// gets a generic 500.
    pub fn internal(cause: &dyn fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it has been logged",
        )
    }
}

impl ApiError {
    fn problem(&self) -> Problem<'_> {
        Problem {
            r#type: format!("urn:agentry:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            error: &self.detail,
        }
    }

    /// The problem as a JSON value, for answers that carry it inside
    /// another document (an MCP tool result).
    pub(crate) fn problem_json(&self) -> serde_json::Value {
        serde_json::to_value(self.problem()).unwrap_or_default()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let problem = self.problem();
        let mut response = HttpResponse::build(self.status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if let Some(seconds) = self.retry_after_seconds {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.body(serde_json::to_vec(&problem).unwrap_or_default())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Refused(why) => ApiError::new(StatusCode::CONFLICT, "refused", why),
            StoreError::Denied(denial) => denial.into(),
            StoreError::Replayed(_) => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_mismatch",
                "this idempotency_key was already used",
            ),
            StoreError::Conflict(what) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            StoreError::Ledger(LedgerError::InsufficientBudget { .. }) => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_budget",
                error.to_string(),
            ),
            StoreError::Ledger(ledger) => ledger_error(ledger),
            StoreError::Token(TokenError::Unknown | TokenError::Expired | TokenError::Consumed) => {
                ApiError::unauthorized("invalid_token", "the token is invalid, expired or used")
            }
            StoreError::Token(TokenError::TooManyAttempts) => {
                ApiError::too_many_requests("the token has been tried too many times", 60)
            }
            ref unavailable if unavailable.is_unavailable() => {
                tracing::warn!(error = %unavailable, "store unavailable");
                ApiError::unavailable("the database is unavailable; retry shortly")
            }
            other => ApiError::internal(&other),
        }
    }
}

/// The ledger's refusals other than insufficient budget (which is 402).
fn ledger_error(ledger: LedgerError) -> ApiError {
    let (status, code) = match ledger {
        LedgerError::UnknownHold => (StatusCode::NOT_FOUND, "hold_not_found"),
        LedgerError::HoldClosed => (StatusCode::CONFLICT, "hold_closed"),
        LedgerError::HoldExpired => (StatusCode::CONFLICT, "hold_expired"),
        LedgerError::CaptureExceedsHold { .. } => (StatusCode::BAD_REQUEST, "capture_exceeds_hold"),
        LedgerError::ZeroAmount | LedgerError::HoldExpiryInPast => {
            (StatusCode::BAD_REQUEST, "invalid_amount")
        }
        LedgerError::DuplicateHold
        | LedgerError::DuplicateChild
        | LedgerError::NotDelegated
        | LedgerError::AlreadySettled
        | LedgerError::OpenDelegations(_)
        | LedgerError::InsufficientBudget { .. } => (StatusCode::CONFLICT, "ledger_refused"),
        LedgerError::Corrupt(_) => return ApiError::internal(&ledger),
    };
    ApiError::new(status, code, ledger.to_string())
}

/// A JSON body actix could not take: too large is 413, not JSON at all
/// (by its content type) is 415, anything else about it is 400.
pub fn json_error(error: actix_web::error::JsonPayloadError) -> actix_web::Error {
    use actix_web::error::JsonPayloadError;
    match &error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                error.to_string(),
            )
            .into()
        }
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as 'content-type: application/json'",
        )
        .into(),
        _ => extractor_error(error, "invalid_json"),
    }
}

/// Turns actix's own extractor failures (bad JSON, bad query, bad path)
/// into problem+json 400s instead of its plain-text defaults.
pub fn extractor_error(error: impl fmt::Display, code: &'static str) -> actix_web::Error {
    ApiError::bad_request(code, error.to_string()).into()
}

/// An agent its lifecycle stops: 402 while suspended (seed 000: the budget
/// owner must act), 403 otherwise, with a code per state.
impl From<Denial> for ApiError {
    fn from(denial: Denial) -> Self {
        let status = if denial.is_payment_required() {
            StatusCode::PAYMENT_REQUIRED
        } else {
            StatusCode::FORBIDDEN
        };
        let code = match denial {
            Denial::NotActivated => "agent_not_activated",
            Denial::Quarantined => "agent_quarantined",
            Denial::Suspended => "agent_suspended",
            Denial::Terminated => "agent_terminated",
            Denial::Expired => "agent_expired",
        };
        ApiError::new(status, code, denial.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn the_body_is_problem_json_with_a_stable_code() {
        let response = ApiError::forbidden("api_key_required", "use an API key").error_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
        let body = response.into_body().try_into_bytes().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "urn:agentry:problem:api_key_required",
                "title": "Forbidden",
                "status": 403,
                "detail": "use an API key",
                "code": "api_key_required",
                "error": "use an API key"
            })
        );
    }

    #[test]
    fn rate_limits_say_when_to_retry_and_internals_stay_hidden() {
        let response = ApiError::too_many_requests("slow down", 17).error_response();
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "17");
        let internal = ApiError::internal(&"password=hunter2 leaked in a cause");
        assert!(!internal.detail.contains("hunter2"));
        let store: ApiError = StoreError::Unavailable("pool timed out".into()).into();
        assert_eq!(store.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
