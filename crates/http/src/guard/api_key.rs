//! Tenant API keys: looked up through the cache, judged by role and by
//! the key's own rate.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use agentry_auth::{ApiKey, Permission, role_has};
use agentry_domain::{ApiKeyRole, TenantId};
use agentry_lifecycle::{Access, RequestScope};
use agentry_store::ApiKeyRecord;
use time::OffsetDateTime;

use super::agent::load_agent;
use super::machine::peer_certificates;
use super::{Presented, invalid_key, missing, presented, request_time, state};
use crate::error::ApiError;
use crate::state::AppState;

/// Looks an API key up, through the cache; a key the database did not know
/// a moment ago is refused without asking it again.
pub(super) async fn lookup_api_key(
    state: &AppState,
    key: &ApiKey,
    now: OffsetDateTime,
) -> Result<ApiKeyRecord, ApiError> {
    let hash = key.hash().0;
    if let Some(record) = state.guard.api_key(&hash) {
        return usable_key(record, now);
    }
    if state.guard.is_unknown_api_key(&hash, now) {
        return Err(invalid_key());
    }
    let generation = state.guard.generation();
    let record = state
        .store
        .detached(async move |store| store.find_api_key(&hash).await)
        .await?
        .ok_or_else(|| {
            state.guard.remember_unknown_api_key(hash, now);
            // No tenant to audit it under; the key itself is never logged.
            tracing::info!(kind = ?key.kind(), "refused an API key that does not exist");
            invalid_key()
        })?;
    state
        .guard
        .remember_api_key(generation, hash, record.clone());
    usable_key(record, now)
}

/// A revoked or expired key reads exactly like an unknown one. Expiry is
/// judged per request, so a cached key stops at its `expires_at`.
fn usable_key(record: ApiKeyRecord, now: OffsetDateTime) -> Result<ApiKeyRecord, ApiError> {
    if record.usable_at(now) {
        Ok(record)
    } else {
        Err(invalid_key())
    }
}

/// A caller holding a tenant API key.
#[derive(Debug, Clone)]
pub struct ApiKeyPrincipal {
    pub key_id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub role: ApiKeyRole,
}

impl ApiKeyPrincipal {
    /// 403 unless the key's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if role_has(self.role, permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "permission_denied",
                format!(
                    "a {} key may not do this (needs {})",
                    self.role,
                    permission.as_str()
                ),
            ))
        }
    }

    pub fn actor(&self) -> String {
        format!("api_key:{}", self.key_id)
    }
}

pub(super) async fn api_key_principal(request: HttpRequest) -> Result<ApiKeyPrincipal, ApiError> {
    let state = state(&request)?;
    let now = request_time(&request);
    let Some(credential) = presented(&request) else {
        return Err(if peer_certificates(&request).is_some() {
            ApiError::forbidden(
                "api_key_required",
                "this endpoint takes a tenant API key, not a client certificate",
            )
        } else {
            missing()
        });
    };
    let key = match credential {
        Presented::Jwt(_) => {
            return Err(ApiError::forbidden(
                "api_key_required",
                "this endpoint takes a tenant API key, not an agent token",
            ));
        }
        Presented::ApiKey(text) => ApiKey::parse(&text)
            .map_err(|error| ApiError::unauthorized("invalid_api_key", error.to_string()))?,
    };
    let record = lookup_api_key(&state, &key, now).await?;
    let Some(role) = record.role else {
        return Err(ApiError::forbidden(
            "api_key_required",
            "this endpoint takes a tenant API key, not an agent's own key",
        ));
    };
    // A workspace's primary agent holds its tenant's admin role in its own
    // key (docs/api.md), for as long as the agent itself may act.
    if let Some(agent) = record.agent_id {
        let agent = load_agent(&state, record.tenant_id, agent)
            .await?
            .ok_or_else(invalid_key)?;
        Access::for_agent(&agentry_lifecycle::Lifecycle::of(&agent.record), now)
            .permits(RequestScope::Other)
            .map_err(ApiError::from)?;
    }
    // After the lookup: only keys that exist get a budget, so made-up keys
    // cannot grow the limiter's map.
    state.api_key_rate.admit(record.id).map_err(|retry_after| {
        ApiError::too_many_requests(
            format!(
                "this API key has used its {} requests a minute (--api-key-rpm)",
                state.settings.api_key_rpm
            ),
            retry_after,
        )
    })?;
    Ok(ApiKeyPrincipal {
        key_id: record.id,
        tenant_id: record.tenant_id,
        role,
    })
}

impl FromRequest for ApiKeyPrincipal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(api_key_principal(request.clone()))
    }
}
