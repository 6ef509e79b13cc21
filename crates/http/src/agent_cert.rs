//! Seed 001's certificate exchange (`next_steps.cert_exchange` of a
//! bootstrap): an agent trades its token or its own API key, and a CSR, for
//! a short-lived client certificate from the built-in CA, with which it
//! then calls over the mTLS listener.
//!
//! The certificate is another form of the agent's credential, not a new
//! credential: it names the agent's credential epoch, so whatever retires
//! the tokens (a key rotation, a revocation) retires it too, and the
//! lifecycle judges it as it judges a token. For the same reason a
//! certificate cannot buy another: a stolen one could otherwise renew
//! itself for ever, outliving the token it came from.

use actix_web::{HttpRequest, HttpResponse, web};
use agentry_auth::ca::agent_certificate_lifetime;
use agentry_auth::{AgentIdentity, CaError};
use agentry_store::NewAuditEvent;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::{AgentPrincipal, RequestTime, presented_credential_source};
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{TimestampSchema, timestamp};

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.route("/v1/agent/auth/cert", web::post().to(issue));
}

#[derive(OpenApi)]
#[openapi(paths(issue))]
pub(crate) struct Api;

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = AgentCertificateRequest)]
struct CertRequest {
    /// A PKCS#10 request in PEM; only its public key is used. `csr_pem`,
    /// the name `/internal/bootstrap/cert` uses, is accepted for it.
    #[serde(alias = "csr_pem")]
    #[schema(min_length = 100, max_length = 10_000)]
    csr: String,
}

/// The agent's certificate; none of it is secret (the key never left the
/// agent).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AgentCertificate)]
struct IssuedAgentCertificate {
    /// The client certificate (PEM): CN the agent's slug, URI names
    /// `urn:agentry:agent:<id>`, `urn:agentry:tenant:<id>` and
    /// `urn:agentry:epoch:<n>`, client authentication only.
    cert_pem: String,
    /// The CA that signed it, which also signs the mTLS listener's
    /// certificate.
    ca_pem: String,
    /// `sha256:<hex>` of the certificate's DER.
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    fingerprint: String,
    /// An hour after issue, or the agent's own expiry if sooner.
    #[schema(value_type = TimestampSchema)]
    expires_at: String,
}

/// Exchanges the agent's token or own API key and a CSR for a client
/// certificate (seed 001's `cert_exchange`).
///
/// The certificate names the calling agent, whatever the CSR asks for, and
/// is valid for an hour (never past the agent's expiry). On the mTLS
/// listener it authenticates the agent wherever an agent token does, until
/// it expires or the agent's credentials are rotated or revoked; the
/// agent's lifecycle applies to it as to a token. A certificate cannot be
/// exchanged for another.
#[utoipa::path(
    post,
    operation_id = "agent_certificate",
    path = "/v1/agent/auth/cert",
    tag = "agent",
    security(("agent_jwt" = []), ("api_key" = [])),
    request_body = CertRequest,
    responses(
        (status = 201, description = "The certificate.", body = IssuedAgentCertificate),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (`csr` not 100 to 10,000 characters), `invalid_csr` (not a PEM PKCS#10 request, a bad \
            self-signature, or a key we do not sign).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`, \
            `invalid_client_certificate`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`agent_suspended`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`certificate_not_accepted` (a client certificate is the \
            credential), `agent_credentials_required` (a tenant key), `agent_quarantined`, \
            `agent_not_activated`, `agent_terminated`, `agent_expired`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: past the agent's requests per minute.",
            body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next request may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn issue(
    RequestTime(now): RequestTime,
    request: HttpRequest,
    state: web::Data<AppState>,
    caller: AgentPrincipal,
    body: Deferred<web::Json<CertRequest>>,
) -> Result<HttpResponse, ApiError> {
    caller.require_issuing_credential()?;
    caller.require_full_access()?;
    let body = body.read().await?.into_inner();
    let mut problems = Problems::default();
    problems.length("csr", Some(&body.csr), 100, 10_000);
    problems.finish()?;

    let purchase = presented_credential_source(&request, now).await?;
    let agent = caller.record();
    // The epoch the caller's credential was just admitted in: a rotation
    // after this point retires the certificate with the token.
    let identity = AgentIdentity {
        tenant_id: agent.tenant_id,
        agent_id: agent.id,
        epoch: agent.credential_epoch,
        // Revoking the key that signed the caller's token, or deleting the
        // API key it called with, retires the certificate.
        bought_with: purchase.bought_with,
    };
    // Never past the agent's expiry, nor past the token's or the key's.
    let ends = [agent.expires_at, purchase.expires_at]
        .into_iter()
        .flatten()
        .min();
    let lifetime = agent_certificate_lifetime(now, ends);
    let authority = state.keys.ca().authority();
    let issued = authority
        .sign_agent_csr(&body.csr, &identity, agent.slug.as_str(), now, lifetime)
        .map_err(|error| match error {
            CaError::InvalidCsr(reason) => ApiError::bad_request("invalid_csr", reason),
            other => ApiError::internal(&other),
        })?;
    let name = format!("agent:{}", agent.slug);
    let expires_at = timestamp(issued.not_after);
    state.audit(
        agent.tenant_id,
        NewAuditEvent {
            actor: name.clone(),
            action: "agent.cert.issued".into(),
            target: Some(name),
            outcome: "success".into(),
            detail: json!({
                "fingerprint": issued.fingerprint,
                "serial": issued.serial,
                "expires_at": expires_at,
                "epoch": identity.epoch,
            }),
        },
    );
    Ok(HttpResponse::Created().json(IssuedAgentCertificate {
        cert_pem: issued.pem,
        ca_pem: authority.cert_pem().to_owned(),
        fingerprint: issued.fingerprint,
        expires_at,
    }))
}
