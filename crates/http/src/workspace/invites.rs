//! Seed 002's invites: reading one, accepting it (which signs the human
//! in), and the small `/invite` page humans land on.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use agentry_auth::hash_secret;
use agentry_store::{StoreError, TokenError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::sessions::{Session, session};
use super::spec::{client_address, new_password};
use crate::error::{ApiError, Problem};
use crate::guard::RequestTime;
use crate::redact::debug_redacting;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{TimestampSchema, timestamp};

/// Fields other clients send along are ignored, as Agent United does.
#[derive(Deserialize, ToSchema)]
pub(super) struct AcceptInvite {
    /// The `inv_...` token of the invite URL.
    token: String,
    /// The new password.
    #[schema(min_length = 12, format = Password)]
    password: String,
    /// The name the human goes by; absent, the one the invite was made with.
    #[schema(min_length = 1, max_length = 255)]
    display_name: Option<String>,
}

debug_redacting!(AcceptInvite { display_name; secret: token, password });

fn invite_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Token(TokenError::Unknown) => {
            ApiError::new(StatusCode::NOT_FOUND, "invite_not_found", "no such invite")
        }
        StoreError::Token(TokenError::Expired) => ApiError::new(
            StatusCode::GONE,
            "invite_expired",
            "this invite has expired; ask for a new one",
        ),
        StoreError::Token(_) => ApiError::new(
            StatusCode::GONE,
            "invite_used",
            "this invite has already been used",
        ),
        error => error.into(),
    }
}

#[derive(Deserialize)]
pub(super) struct InviteQuery {
    token: String,
}

debug_redacting!(InviteQuery { ; secret: token });

/// What an invite page shows before the human chooses a password.
#[derive(Debug, Serialize, ToSchema)]
struct InviteState {
    /// The address the invite was sent to.
    email: String,
    /// `pending` (it can be accepted), `accepted`, or `expired` (too late,
    /// or too many tries).
    #[schema(example = "pending")]
    status: &'static str,
    #[schema(value_type = TimestampSchema)]
    expires_at: String,
}

/// Reads an invite by its token, as Agent United's invite page does.
///
/// Throttled like acceptance, per token and per address.
#[utoipa::path(
    get,
    operation_id = "read_invite",
    path = "/api/v1/invite",
    tag = "instance",
    params(("token" = String, Query, description = "The `inv_...` token of the invite URL.")),
    responses(
        (status = 200, description = "The invite's address and state.", body = InviteState),
        (status = 400, description = "`invalid_query`: no `token`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`invite_not_found`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_attempts`: too many tries for this invite or from this \
            address.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next attempt may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn read_invite(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<InviteQuery>,
) -> Result<HttpResponse, ApiError> {
    let token_hash = hash_secret(&query.token).0;
    // Reads are counted apart from acceptances: opening the page spends
    // none of the password tries.
    state.logins.admit(
        &format!("invite-read:{}", agentry_auth::hex(&token_hash)),
        client_address(&request),
    )?;
    let (user, token) = state
        .store
        .detached(async move |store| store.invite(&token_hash).await)
        .await?
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "invite_not_found", "no such invite")
        })?;
    let status = match token.usable(now) {
        Ok(()) => "pending",
        Err(TokenError::Consumed) => "accepted",
        Err(_) => "expired",
    };
    Ok(HttpResponse::Ok().json(InviteState {
        email: user.email,
        status,
        expires_at: timestamp(token.expires_at),
    }))
}

/// Sets an invited human's password and signs them in.
///
/// The token is looked up before the password is judged or hashed, and the
/// password is checked before the token is spent.
#[utoipa::path(
    post,
    operation_id = "accept_invite",
    path = "/api/v1/invite/accept",
    tag = "instance",
    request_body = AcceptInvite,
    responses(
        (status = 200, description = "The invite is spent; a session for the human.", body = Session),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (`display_name` empty or longer than 255), `invalid_password` (too short, or too easy to \
            guess; the invite is not spent).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`invite_not_found`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`invite_expired`, `invite_used`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_attempts`: too many tries for this invite or from this \
            address.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next attempt may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database or the signing key is unavailable, or \
            too many passwords are being hashed at once; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn accept_invite(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<AcceptInvite>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let token_hash = hash_secret(&body.token).0;
    state.logins.admit(
        &format!("invite:{}", agentry_auth::hex(&token_hash)),
        client_address(&request),
    )?;
    let invited = state
        .store
        .detached(async move |store| store.invited_user(&token_hash, now).await)
        .await
        .map_err(invite_error)?;
    let mut problems = Problems::default();
    problems.length("display_name", body.display_name.as_deref(), 1, 255);
    problems.finish()?;
    let display_name = body.display_name;
    let password = new_password(
        body.password,
        &[
            &invited.email,
            &invited.display_name,
            display_name.as_deref().unwrap_or_default(),
        ],
    )?;
    let password_hash = state.passwords.hash(password).await?;
    let user = state
        .store
        .detached(async move |store| {
            store
                .accept_invite(&token_hash, password_hash, display_name, now)
                .await
        })
        .await
        .map_err(invite_error)?;
    session(&state, &user, now)
}

/// The page an invite URL opens.
///
/// A plain form that posts the token and the new password to
/// `/api/v1/invite/accept`.
#[utoipa::path(
    get,
    operation_id = "invite_page",
    path = "/invite",
    tag = "instance",
    params(("token" = Option<String>, Query, description = "The invite token; the page's script reads it \
        from the URL, the server does not.")),
    responses(
        (status = 200, description = "The HTML form.", body = String, content_type = "text/html; charset=utf-8",
            headers(
                ("content-security-policy" = String, description = "Only the page's own inline script and \
                    style, and requests to this origin."),
                ("referrer-policy" = String, description = "`no-referrer`, so the token does not leak."),
            )),
    ),
)]
pub(super) async fn invite_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("content-security-policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'self'"))
        .insert_header(("referrer-policy", "no-referrer"))
        .body(INVITE_PAGE)
}

const INVITE_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Accept your Agentry invite</title>
<style>body{font-family:sans-serif;max-width:28rem;margin:4rem auto}label,input,button{display:block;width:100%;margin:.5rem 0}</style></head>
<body>
<h1>Set your password</h1>
<form id="accept">
<label>Password (at least 12 characters)<input type="password" name="password" minlength="12" required autocomplete="new-password"></label>
<button type="submit">Accept invite</button>
</form>
<p id="result" role="status"></p>
<script>
document.getElementById("accept").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = new URLSearchParams(location.search).get("token") || "";
  const password = event.target.password.value;
  const response = await fetch("/api/v1/invite/accept", {
    method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({token, password})
  });
  const body = await response.json();
  document.getElementById("result").textContent = response.ok
    ? "Welcome, " + body.email + ". You are signed in."
    : (body.detail || "The invite could not be accepted.");
});
</script>
</body>
</html>
"#;
