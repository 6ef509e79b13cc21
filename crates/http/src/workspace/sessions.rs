//! Seed 002's accounts and sessions: login, logout, password change, and
//! Agent United's sign-up of the first account (`/api/v1/auth/register`).

use actix_web::{HttpRequest, HttpResponse, web};
use agentry_domain::Email;
use agentry_store::{NewAuditEvent, StoreError, UserRecord};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::spec::{client_address, new_password, require_setup_token};
use time::OffsetDateTime;

use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::RequestTime;
use crate::guard::SessionPrincipal;
use crate::redact::debug_redacting;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{TimestampSchema, timestamp};

/// A signed-in user, as login and invite acceptance answer.
#[derive(Serialize, ToSchema)]
pub(super) struct Session {
    user_id: Uuid,
    email: String,
    display_name: String,
    /// Session token for the `session_jwt` scheme.
    jwt_token: String,
    /// The same token, under the name Agent United's clients read.
    token: String,
    #[schema(value_type = TimestampSchema)]
    expires_at: String,
}

debug_redacting!(Session { user_id, email, display_name, expires_at; secret: jwt_token, token });

/// A session for `user`, as login and invite acceptance answer. The token
/// carries the user's session epoch: ending the user's sessions moves the
/// epoch on and retires it.
pub(super) fn session(
    state: &AppState,
    user: &UserRecord,
    now: OffsetDateTime,
) -> Result<HttpResponse, ApiError> {
    let (jwt, expires_at) = state
        .mint_session(user, now)
        .ok_or_else(|| ApiError::unavailable("no signing key is loaded"))?;
    Ok(HttpResponse::Ok().json(Session {
        user_id: user.id,
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        token: jwt.clone(),
        jwt_token: jwt,
        expires_at: timestamp(expires_at),
    }))
}

/// Fields other clients send along are ignored, as Agent United does.
#[derive(Deserialize, ToSchema)]
pub(super) struct Login {
    email: String,
    #[schema(format = Password)]
    password: String,
}

debug_redacting!(Login { email; secret: password });

/// Signs a user in with e-mail and password.
///
/// Attempts are throttled per account and per client address before any
/// password is judged.
#[utoipa::path(
    post,
    operation_id = "login",
    path = "/api/v1/auth/login",
    tag = "instance",
    request_body = Login,
    responses(
        (status = 200, description = "A session.", body = Session),
        (status = 400, description = "`invalid_json`: not JSON, or not this shape.",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_credentials`: for every wrong e-mail or password, after the \
            same work.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_attempts`: too many tries for this account or from this \
            address; nothing was judged.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next attempt may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database or the signing key is unavailable, or \
            too many passwords are being checked at once; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn login(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let refused =
        || ApiError::unauthorized("invalid_credentials", "the e-mail or password is wrong");
    let email = Email::parse(&body.email).ok();
    // Keyed by the address as written when it is none, so a made-up
    // spelling is throttled like any other.
    let account = email
        .as_ref()
        .map_or_else(|| body.email.to_lowercase(), ToString::to_string);
    state.logins.admit(&account, client_address(&request))?;
    let user = match email {
        Some(email) => {
            state
                .store
                .detached(async move |store| match store.instance_tenant().await? {
                    Some(tenant) => store.user_by_email(tenant, &email).await,
                    None => Ok(None),
                })
                .await?
        }
        None => None,
    };
    // The same work whether or not the account exists: no enumeration by
    // timing, and one message for every failure.
    let stored = user.as_ref().and_then(|user| user.password_hash.clone());
    let matches = state.passwords.verify(stored, body.password).await?;
    match user {
        Some(user) if matches => session(&state, &user, now),
        _ => Err(refused()),
    }
}

/// Signs the caller out: this session and every other session of the user
/// minted before it stop working at once.
#[utoipa::path(
    post,
    operation_id = "logout",
    path = "/api/v1/auth/logout",
    tag = "instance",
    security(("session_jwt" = [])),
    responses(
        (status = 204, description = "Every session of the user so far has ended."),
        (status = 401, description = "`missing_credentials`, `invalid_token`: no session, or one that has \
            ended or expired.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn logout(
    state: web::Data<AppState>,
    caller: SessionPrincipal,
) -> Result<HttpResponse, ApiError> {
    let (tenant, user) = (caller.tenant_id, caller.user_id);
    state
        .store
        .detached(async move |store| store.end_sessions(tenant, user, None).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangePassword {
    #[schema(format = Password)]
    current_password: String,
    #[schema(min_length = 12, format = Password)]
    new_password: String,
}

debug_redacting!(ChangePassword { ; secret: current_password, new_password });

/// Changes the caller's password. Every session of the user, this one
/// included, ends; sign in again with the new password.
#[utoipa::path(
    post,
    operation_id = "change_password",
    path = "/api/v1/auth/password",
    tag = "instance",
    security(("session_jwt" = [])),
    request_body = ChangePassword,
    responses(
        (status = 204, description = "The password is changed and every session so far has ended."),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_password` (the \
            new one is too short or too easy to guess).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token`: no live session; \
            `invalid_credentials`: the current password is wrong.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_attempts`: too many tries for this account or from this \
            address.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next attempt may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable, or too many passwords are \
            being hashed at once; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn change_password(
    state: web::Data<AppState>,
    request: HttpRequest,
    caller: SessionPrincipal,
    body: Deferred<web::Json<ChangePassword>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.read().await?.into_inner();
    let (tenant, user_id) = (caller.tenant_id, caller.user_id);
    let user = state
        .store
        .detached(async move |store| store.user(tenant, user_id).await)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid_token", "the session's user is gone"))?;
    state.logins.admit(&user.email, client_address(&request))?;
    let matches = state
        .passwords
        .verify(user.password_hash.clone(), body.current_password)
        .await?;
    if !matches {
        return Err(ApiError::unauthorized(
            "invalid_credentials",
            "the current password is wrong",
        ));
    }
    let password = new_password(body.new_password, &[&user.email, &user.display_name])?;
    let hash = state.passwords.hash(password).await?;
    state
        .store
        .detached(async move |store| store.end_sessions(tenant, user_id, Some(hash)).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Agent United's sign-up. Fields other clients send along are ignored.
#[derive(Deserialize, ToSchema)]
pub(super) struct Register {
    email: String,
    /// At least 12 characters, and not too easy to guess.
    #[schema(min_length = 12, format = Password)]
    password: String,
    /// Defaults to the e-mail's local part.
    #[schema(min_length = 1, max_length = 255)]
    display_name: Option<String>,
}

debug_redacting!(Register { email, display_name; secret: password });

#[derive(Debug, Serialize, ToSchema)]
struct RegisteredUser {
    id: Uuid,
    email: String,
    display_name: String,
    /// `admin`: the first account administers the workspace.
    role: String,
    #[schema(value_type = TimestampSchema)]
    created_at: String,
    #[schema(value_type = TimestampSchema)]
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
struct Registered {
    user: RegisteredUser,
    /// A session token for the `session_jwt` scheme.
    token: String,
    /// The same token, under the name login and invite acceptance use.
    jwt_token: String,
    user_id: Uuid,
    email: String,
    #[schema(value_type = TimestampSchema)]
    expires_at: String,
}

debug_redacting!(Registered { user, user_id, email, expires_at; secret: token, jwt_token });

/// Creates the first account of a fresh instance: its workspace's admin.
///
/// Under the rules of the first-run workspace setup (`/api/v1/bootstrap`):
/// the account gets a workspace tenant of its own, and with `--setup-token`
/// set the call must carry it as its bearer credential. Once the instance
/// has any user, registration is closed: further people join by invite.
#[utoipa::path(
    post,
    operation_id = "register",
    path = "/api/v1/auth/register",
    tag = "instance",
    request_body = Register,
    responses(
        (status = 201, description = "The account, with a session.", body = Registered),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` (an \
            invalid e-mail or display name), `invalid_password` (too short or too easy to guess).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`setup_token_required`: the server was started with a setup token \
            and the call did not carry it.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`registration_closed`: the instance has users already; ask its admin \
            for an invite.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database or the signing key is unavailable, or too \
            many passwords are being checked at once; nothing was created.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn register(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    request: HttpRequest,
    body: Deferred<web::Json<Register>>,
) -> Result<HttpResponse, ApiError> {
    require_setup_token(&state, &request)?;
    let body = body.read().await?.into_inner();
    let closed = || {
        ApiError::forbidden(
            "registration_closed",
            "this instance has users already; ask its admin for an invite",
        )
    };
    // Closed before anything is judged or hashed.
    if state
        .store
        .detached(async |store| store.instance().await)
        .await?
        .is_some()
    {
        return Err(closed());
    }
    let mut problems = Problems::default();
    let email = problems.check(Email::parse(&body.email), "email");
    problems.length("display_name", body.display_name.as_deref(), 1, 255);
    problems.finish()?;
    let Some(email) = email else {
        return Err(ApiError::bad_request("invalid_request", "invalid e-mail"));
    };
    let password = new_password(body.password, &[email.as_str()])?;
    let display_name = body.display_name.unwrap_or_else(|| {
        email
            .as_str()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    let password_hash = state.passwords.hash(password).await?;
    let created_at = now;
    let user = state
        .store
        .detached(async move |store| {
            store
                .register_first_user(&email, &display_name, password_hash, created_at)
                .await
        })
        .await
        .map_err(|error| match error {
            StoreError::Conflict(_) => closed(),
            other => other.into(),
        })?;
    state.audit(
        user.tenant_id,
        NewAuditEvent {
            actor: format!("user:{}", user.id),
            action: "workspace.register".into(),
            target: Some(format!("user:{}", user.id)),
            outcome: "success".into(),
            detail: json!({ "role": user.role }),
        },
    );
    let (jwt, expires_at) = state
        .mint_session(&user, created_at)
        .ok_or_else(|| ApiError::unavailable("no signing key is loaded"))?;
    Ok(HttpResponse::Created().json(Registered {
        user: RegisteredUser {
            id: user.id,
            email: user.email.clone(),
            display_name: user.display_name,
            role: user.role,
            created_at: timestamp(created_at),
            updated_at: timestamp(created_at),
        },
        token: jwt.clone(),
        jwt_token: jwt,
        user_id: user.id,
        email: user.email,
        expires_at: timestamp(expires_at),
    }))
}
