//! Seed 002's callers: sessions of the workspace's users, and workspace
//! agents acting in the workspace.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use agentry_auth::{ApiKey, ApiKeyKind, Audience, Claims};
use agentry_domain::{AgentId, TenantId, WorkspaceAction, WorkspaceRole};

use super::agent::agent_principal;
use super::{bearer_claims, credential_text, invalid_token, missing, state};
use crate::error::ApiError;
use crate::state::AppState;

/// A human (or the primary agent's account) holding a session token of
/// seed 002.
#[derive(Debug, Clone)]
pub struct SessionPrincipal {
    pub user_id: uuid::Uuid,
    pub tenant_id: TenantId,
}

/// A live session: the token verifies and carries its user's current
/// session epoch (logout and a password change move it on, on every
/// replica at once, since it is read from the database). Sessions are
/// human-paced, so the read costs nothing that matters.
async fn live_session(state: &AppState, claims: Claims) -> Result<SessionPrincipal, ApiError> {
    let user = live_user(state, claims).await?;
    Ok(SessionPrincipal {
        user_id: user.id,
        tenant_id: user.tenant_id,
    })
}

/// The user behind a session, if the session is live: one read that the
/// session check and the caller's role both use.
pub(super) async fn live_user(
    state: &AppState,
    claims: Claims,
) -> Result<agentry_store::UserRecord, ApiError> {
    let tenant = TenantId::from_uuid(claims.tid);
    let user_id = claims.sub;
    let user = state
        .store
        .detached(async move |store| store.user(tenant, user_id).await)
        .await?;
    match user {
        Some(user) if agentry_lifecycle::token_is_current(claims.epoch, user.session_epoch) => {
            Ok(user)
        }
        _ => Err(invalid_token()),
    }
}

async fn session_principal(request: &HttpRequest) -> Result<SessionPrincipal, ApiError> {
    let claims = bearer_claims(request, Audience::Session, missing)?;
    let state = state(request)?;
    live_session(&state, claims).await
}

impl FromRequest for SessionPrincipal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { session_principal(&request).await })
    }
}

/// A caller of seed 002's workspace API (Agent United's `/api/v1/agents`,
/// `/api/v1/channels`): a human's or the primary agent's session, or a
/// workspace agent's token or own key.
#[derive(Debug, Clone)]
pub struct WorkspacePrincipal {
    pub tenant_id: TenantId,
    /// The caller's account: a human's, or the primary agent's.
    pub user_id: Option<uuid::Uuid>,
    /// The agent calling, when it is one.
    pub agent_id: Option<AgentId>,
    pub role: WorkspaceRole,
}

impl WorkspacePrincipal {
    /// 403 `insufficient_role` unless the caller's role permits `action`.
    pub fn require(&self, action: WorkspaceAction) -> Result<(), ApiError> {
        if self.role.permits(action) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "insufficient_role",
                format!(
                    "a workspace {} may not do this (only the workspace admin manages agents and channels)",
                    self.role
                ),
            ))
        }
    }

    pub fn actor(&self) -> String {
        match (self.agent_id, self.user_id) {
            (Some(agent), _) => format!("agent:{agent}"),
            (None, Some(user)) => format!("user:{user}"),
            (None, None) => "workspace".into(),
        }
    }
}

/// Whether a request to a route both seed 002 and seed 004 serve
/// (`/api/v1/agents...`) is seed 002's: a credential is presented, it is
/// not a tenant API key, and no `X-Bulwark-Tenant` header names a tenant.
/// Everything else (a tenant key, the header, no credential) is seed 004's
/// registry, as before (docs/api.md).
pub(crate) fn is_workspace_request(request: &actix_web::dev::RequestHead) -> bool {
    if request.headers.contains_key("x-bulwark-tenant") {
        return false;
    }
    match credential_text(&request.headers) {
        None => false,
        Some(credential) if credential.starts_with("agy_") => {
            ApiKey::parse(credential).is_ok_and(|key| key.kind() == ApiKeyKind::Agent)
        }
        Some(_) => true,
    }
}

fn workspace_credentials_required() -> ApiError {
    ApiError::forbidden(
        "workspace_credentials_required",
        "this endpoint takes a workspace session, or a token or key of an agent of the workspace",
    )
}

async fn workspace_principal(request: HttpRequest) -> Result<WorkspacePrincipal, ApiError> {
    let state = state(&request)?;
    let instance = state
        .store
        .detached(async move |store| store.instance_tenant().await)
        .await?;
    let role_of = |user: &agentry_store::UserRecord| {
        user.role
            .parse::<WorkspaceRole>()
            .map_err(|error| ApiError::internal(&error))
    };
    if let Ok(claims) = bearer_claims(&request, Audience::Session, missing) {
        let user = live_user(&state, claims).await?;
        let tenant = user.tenant_id;
        if instance != Some(tenant) {
            return Err(workspace_credentials_required());
        }
        return Ok(WorkspacePrincipal {
            tenant_id: tenant,
            user_id: Some(user.id),
            agent_id: user.agent_id,
            role: role_of(&user)?,
        });
    }
    let agent = match agent_principal(request).await {
        Ok(agent) => agent,
        Err(error) if error.code == "agent_credentials_required" => {
            return Err(workspace_credentials_required());
        }
        Err(error) => return Err(error),
    };
    // The workspace issues keys and invites, which must not outlive a
    // certificate: the workspace API takes no certificate at all.
    if agent.require_issuing_credential().is_err() {
        return Err(ApiError::forbidden(
            "certificate_not_accepted",
            "the workspace API takes a session, or an agent's token or its own API key, not a certificate",
        ));
    }
    agent.require_full_access()?;
    let (tenant, id) = (agent.record().tenant_id, agent.record().id);
    if instance != Some(tenant) {
        return Err(workspace_credentials_required());
    }
    let user = state
        .store
        .detached(async move |store| store.user_of_agent(tenant, id).await)
        .await?;
    Ok(WorkspacePrincipal {
        tenant_id: tenant,
        user_id: user.as_ref().map(|user| user.id),
        agent_id: Some(id),
        role: match &user {
            Some(user) => role_of(user)?,
            None => WorkspaceRole::Member,
        },
    })
}

impl FromRequest for WorkspacePrincipal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(workspace_principal(request.clone()))
    }
}
