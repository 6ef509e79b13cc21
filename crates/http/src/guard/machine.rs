//! Provisioning machines (seed 003): client certificates from our CA and
//! the callback token.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use agentry_auth::Audience;
use agentry_domain::TenantId;
use agentry_store::IssuedCertificateRecord;

use super::{bearer_claims, request_time, state};
use crate::error::ApiError;
use crate::state::AppState;
use crate::tls::PeerCertificates;

/// The certificates the caller presented: from the TLS connection, or put
/// on the request by in-process code (tests); never from a header.
pub(crate) fn peer_certificates(request: &HttpRequest) -> Option<PeerCertificates> {
    request
        .conn_data::<PeerCertificates>()
        .cloned()
        .or_else(|| request.extensions().get::<PeerCertificates>().cloned())
}

pub(super) fn invalid_certificate() -> ApiError {
    ApiError::unauthorized(
        "invalid_client_certificate",
        "the client certificate is not one this service issued, or it has expired or been revoked",
    )
}

/// A provisioning machine (seed 003) holding a client certificate that
/// chains to our CA, is unexpired, and is one we issued and have not
/// revoked. Which instance it may speak for is the handler's check.
#[derive(Debug, Clone)]
pub struct MachineCertificate {
    pub certificate: IssuedCertificateRecord,
}

impl MachineCertificate {
    /// Beyond `/secrets`, a certificate speaks for its machine only once
    /// its session has handed the secrets out: certificates of sessions
    /// that never completed (a `/cert` called many times) stay powerless.
    pub(crate) async fn require_completed_session(&self, state: &AppState) -> Result<(), ApiError> {
        let (tenant, session_id) = (self.certificate.tenant_id, self.certificate.session_id);
        let completed = state
            .store
            .detached(async move |store| store.machine_session(tenant, session_id).await)
            .await?
            .is_some_and(|session| session.completed_at.is_some());
        if completed {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "certificate_session_incomplete",
                "this certificate's session has not completed /internal/bootstrap/secrets",
            ))
        }
    }
}

pub(super) async fn machine_certificate(
    request: HttpRequest,
) -> Result<MachineCertificate, ApiError> {
    let state = state(&request)?;
    let presented = peer_certificates(&request).ok_or_else(|| {
        ApiError::unauthorized(
            "client_certificate_required",
            "present the client certificate from /internal/bootstrap/cert over mTLS",
        )
    })?;
    let now = request_time(&request);
    if let Err(refused) = state.keys.ca().verify(&presented.0, now) {
        tracing::info!(%refused, "refused a client certificate");
        return Err(invalid_certificate());
    }
    let fingerprint = agentry_auth::ca::fingerprint(&presented.0[0]);
    let certificate = state
        .store
        .detached(async move |store| store.certificate_by_fingerprint(&fingerprint).await)
        .await?
        .ok_or_else(invalid_certificate)?;
    if certificate.revoked_at.is_some() || certificate.not_after <= now {
        return Err(invalid_certificate());
    }
    Ok(MachineCertificate { certificate })
}

impl FromRequest for MachineCertificate {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(machine_certificate(request.clone()))
    }
}

/// A provisioning machine holding the callback token `/secrets` gave it.
#[derive(Debug, Clone)]
pub struct CallbackPrincipal {
    pub instance_id: uuid::Uuid,
    pub tenant_id: TenantId,
}

impl FromRequest for CallbackPrincipal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let claims = bearer_claims(&request, Audience::Callback, || {
                ApiError::unauthorized(
                    "missing_credentials",
                    "send the callback_jwt from /internal/bootstrap/secrets as 'Authorization: Bearer ...'",
                )
            })?;
            Ok(CallbackPrincipal {
                instance_id: claims.sub,
                tenant_id: TenantId::from_uuid(claims.tid),
            })
        })
    }
}
