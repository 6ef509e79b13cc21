//! Agents: a token, the agent's own API key, the agent's own client
//! certificate, or the certificate of the machine its instance runs on,
//! admitted by the lifecycle and the rate limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use agentry_auth::{AgentIdentity, ApiKey, ApiKeyKind, Audience, BoughtWith, Claims, JwtError};
use agentry_domain::{AgentId, TenantId};
use agentry_lifecycle::{Access, AdmissionError};
use agentry_store::{AgentRecord, KidDigest};
use time::OffsetDateTime;

use super::api_key::{ApiKeyPrincipal, api_key_principal, lookup_api_key};
use super::machine::{
    MachineCertificate, invalid_certificate, machine_certificate, peer_certificates,
};
use super::{
    Presented, audit_refusal, invalid_key, invalid_token, missing, presented, request_time, state,
};
use crate::error::ApiError;
use crate::state::{AgentSnapshot, AppState, RateStep};
use crate::tls::PeerCertificates;

/// How an agent proved who it is (`agentry-lifecycle` judges it).
pub use agentry_lifecycle::AgentCredential;

/// A caller that is an agent, admitted by its lifecycle state and its rate
/// limit. Admission covers reading its own state; anything more calls
/// [`AgentPrincipal::require_full_access`].
#[derive(Debug, Clone)]
pub struct AgentPrincipal {
    pub agent: Arc<AgentSnapshot>,
    pub credential: AgentCredential,
    pub access: Access,
    pub requests_this_minute: u32,
}

impl AgentPrincipal {
    pub fn record(&self) -> &AgentRecord {
        &self.agent.record
    }

    /// Quarantined agents may only read their own state (DESIGN.md §2),
    /// and a machine certificate only ever does; the agent's own
    /// certificate is as good as its token.
    pub fn require_full_access(&self) -> Result<(), ApiError> {
        agentry_lifecycle::full_access(self.access, self.credential).map_err(|error| match error {
            AdmissionError::Denied(denial) => ApiError::from(denial),
            other => ApiError::forbidden("certificate_not_enough", other.to_string()),
        })
    }

    /// 403 `certificate_not_accepted` unless the agent called with its
    /// token or its own API key: what a route issues (a key, a sub-agent,
    /// an invite, a certificate) must not outlive a certificate.
    pub fn require_issuing_credential(&self) -> Result<(), ApiError> {
        agentry_lifecycle::may_issue_credentials(self.credential)
            .map_err(|error| ApiError::forbidden("certificate_not_accepted", error.to_string()))
    }
}

/// The credential a request was admitted with, as a certificate bought
/// with it must name it: what bought it, and when that ends.
pub(crate) struct Purchase {
    pub bought_with: BoughtWith,
    /// When the token or the key stops working, if it ever does.
    pub expires_at: Option<OffsetDateTime>,
}

/// What bought the credential `request` carries, for a certificate the
/// route issues on it: the signing key of its token, or its API key.
/// Called after [`AgentPrincipal`] admitted that very credential. The token
/// is verified again in full, not through the cache: the cache knows a
/// token by its signature alone, so a header rewritten around a cached
/// signature would name any kid it liked. The route is rare; one signature
/// check is nothing to it.
pub(crate) async fn presented_credential_source(
    request: &HttpRequest,
    now: OffsetDateTime,
) -> Result<Purchase, ApiError> {
    let state = state(request)?;
    match presented(request).ok_or_else(missing)? {
        Presented::Jwt(token) => {
            let claims = state
                .issuer
                .verify(&token, &state.keys.ring(), Audience::Agent, now)
                .map_err(|_| invalid_token())?;
            // The signature just verified covers the header, kid included.
            let kid = agentry_auth::header_kid(&token).ok_or_else(invalid_token)?;
            Ok(Purchase {
                bought_with: BoughtWith::Token {
                    signing_key: KidDigest::of(&kid).to_bytes(),
                },
                expires_at: Some(claims.expires_at()),
            })
        }
        Presented::ApiKey(text) => {
            let key = ApiKey::parse(&text).map_err(|_| invalid_key())?;
            let record = lookup_api_key(&state, &key, now).await?;
            Ok(Purchase {
                bought_with: BoughtWith::ApiKey(record.id),
                expires_at: record.expires_at,
            })
        }
    }
}

/// What a verified token is remembered by: its signature segment. Hashing
/// the whole token per request cost a sixth of a `limits/me` (no SHA
/// instructions on the benchmark machine). A signature found in the cache
/// was produced by our key over the header and payload verified with it,
/// and the cache answers with those claims: a forged header or payload
/// carrying a copied signature gets the original token's claims, which
/// only the holder of that token (it is the secret part) could use anyway.
fn token_signature(token: &str) -> Option<&str> {
    token.rsplit_once('.').map(|(_, signature)| signature)
}

async fn verify_jwt(
    state: &AppState,
    token: &str,
    now: OffsetDateTime,
) -> Result<Claims, JwtError> {
    let signature = token_signature(token).unwrap_or_default();
    if let Some(claims) = state.guard.token(signature, now) {
        return Ok(claims);
    }
    let token_generation = state.guard.token_generation();
    let verified = state
        .issuer
        .verify(token, &state.keys.ring(), Audience::Agent, now);
    let claims = match verified {
        // A key we have not heard of may be a rotation whose announcement
        // has not reached us yet: reload once and try again.
        Err(JwtError::UnknownKey) if state.keys.may_reload_for_unknown_kid(now) => {
            let store = state.store.clone();
            let keys = state.keys.clone();
            let reloaded = store
                .detached(async move |store| {
                    keys.reload(&store, now)
                        .await
                        .map_err(|error| agentry_store::StoreError::Unavailable(error.to_string()))
                })
                .await;
            if reloaded.is_err() {
                return Err(JwtError::UnknownKey);
            }
            state
                .issuer
                .verify(token, &state.keys.ring(), Audience::Agent, now)?
        }
        other => other?,
    };
    state
        .guard
        .remember_token(token_generation, signature, claims.clone());
    Ok(claims)
}

/// The agent behind an id, through the cache.
pub(super) async fn load_agent(
    state: &AppState,
    tenant: TenantId,
    id: AgentId,
) -> Result<Option<Arc<AgentSnapshot>>, ApiError> {
    if let Some(snapshot) = state.guard.agent(id) {
        return Ok((snapshot.record.tenant_id == tenant).then_some(snapshot));
    }
    let generation = state.guard.generation();
    let record = state
        .store
        .detached(async move |store| store.find_agent(tenant, id).await)
        .await?;
    let Some(record) = record else {
        return Ok(None);
    };
    let snapshot = Arc::new(state.snapshot(record).await?);
    state
        .guard
        .remember_agent(generation, Arc::clone(&snapshot));
    Ok(Some(snapshot))
}

pub(super) async fn agent_principal(request: HttpRequest) -> Result<AgentPrincipal, ApiError> {
    let state = state(&request)?;
    let now = request_time(&request);
    let Some(presented) = presented(&request) else {
        let Some(certificates) = peer_certificates(&request) else {
            return Err(missing());
        };
        if let Some(identity) = agent_certificate(&state, &certificates, now)? {
            return agent_with_certificate(&state, identity, now).await;
        }
        let machine = machine_certificate(request).await?;
        return certified_agent(&state, &machine, now).await;
    };
    let (agent, credential) = match presented {
        Presented::Jwt(token) => {
            let claims = verify_jwt(&state, &token, now).await.map_err(|error| {
                tracing::debug!(%error, "agent token refused");
                invalid_token()
            })?;
            let tenant = TenantId::from_uuid(claims.tid);
            let id = AgentId::from_uuid(claims.sub);
            // An agent of another tenant (or none) looks exactly like a bad token.
            let agent = load_agent(&state, tenant, id)
                .await?
                .ok_or_else(invalid_token)?;
            (agent, AgentCredential::Jwt(claims.epoch))
        }
        Presented::ApiKey(text) => {
            let key = ApiKey::parse(&text)
                .map_err(|error| ApiError::unauthorized("invalid_api_key", error.to_string()))?;
            if key.kind() != ApiKeyKind::Agent {
                return Err(ApiError::forbidden(
                    "agent_credentials_required",
                    "this endpoint takes an agent token or an agent's own API key, not a tenant key",
                ));
            }
            let record = lookup_api_key(&state, &key, now).await?;
            let id = record.agent_id.ok_or_else(invalid_key)?;
            let agent = load_agent(&state, record.tenant_id, id)
                .await?
                .ok_or_else(invalid_key)?;
            (agent, AgentCredential::ApiKey)
        }
    };
    admit(&state, agent, credential, now).await
}

/// The agent a presented certificate names, once it is known to chain to
/// our CA and to be unexpired; `None` for a certificate that names no
/// agent (a machine's, which [`machine_certificate`] verifies and looks
/// up). The names are read before the chain is verified, which costs a
/// parse and spares a machine's certificate a second verification, but
/// they are trusted only after it: anyone can write them.
fn agent_certificate(
    state: &AppState,
    presented: &PeerCertificates,
    now: OffsetDateTime,
) -> Result<Option<AgentIdentity>, ApiError> {
    let refused = |reason: &dyn std::fmt::Display| {
        tracing::info!(%reason, "refused a client certificate");
        invalid_certificate()
    };
    let leaf = presented.0.first().ok_or_else(invalid_certificate)?;
    let Some(identity) = agentry_auth::ca::agent_identity(leaf).map_err(|error| refused(&error))?
    else {
        return Ok(None);
    };
    state
        .keys
        .ca()
        .verify(&presented.0, now)
        .map_err(|error| refused(&error))?;
    Ok(Some(identity))
}

/// The agent of its own certificate, through the cache like a token's: no
/// database read on a warm cache, and the epoch it names checked against
/// the agent's as a token's is.
async fn agent_with_certificate(
    state: &AppState,
    identity: AgentIdentity,
    now: OffsetDateTime,
) -> Result<AgentPrincipal, ApiError> {
    // An agent gone from its tenant looks exactly like a bad certificate.
    let agent = load_agent(state, identity.tenant_id, identity.agent_id)
        .await?
        .ok_or_else(invalid_certificate)?;
    if !bought_with_is_live(state, &agent.record, identity.bought_with, now).await? {
        audit_refusal(state, &agent.record, "revoked_certificate", now);
        return Err(invalid_certificate());
    }
    admit(
        state,
        agent,
        AgentCredential::AgentCertificate(identity.epoch),
        now,
    )
    .await
}

/// Whether what bought a certificate still stands: the signing key of the
/// token is not revoked, or the API key is the agent's and still usable
/// (not deleted, not expired). A certificate never outlives its purchase.
async fn bought_with_is_live(
    state: &AppState,
    agent: &AgentRecord,
    bought_with: BoughtWith,
    now: OffsetDateTime,
) -> Result<bool, ApiError> {
    match bought_with {
        BoughtWith::Token { signing_key } => {
            Ok(!state.keys.is_revoked(KidDigest::from_bytes(signing_key)))
        }
        BoughtWith::ApiKey(id) => {
            let key = match state.guard.api_key_by_id(id) {
                Some(key) => Some(key),
                None => {
                    let generation = state.guard.generation();
                    let key = state
                        .store
                        .detached(async move |store| store.api_key_by_id(id).await)
                        .await?;
                    if let Some(key) = &key {
                        state.guard.remember_api_key_by_id(generation, key.clone());
                    }
                    key
                }
            };
            Ok(key.is_some_and(|key| {
                key.tenant_id == agent.tenant_id
                    && key.agent_id == Some(agent.id)
                    && key.usable_at(now)
            }))
        }
    }
}

/// The agent bound to the instance of a machine certificate.
async fn certified_agent(
    state: &AppState,
    machine: &MachineCertificate,
    now: OffsetDateTime,
) -> Result<AgentPrincipal, ApiError> {
    machine.require_completed_session(state).await?;
    let instance_id = machine.certificate.instance_id;
    let tenant = machine.certificate.tenant_id;
    let agent_id = state
        .store
        .detached(async move |store| store.machine_instance(tenant, instance_id).await)
        .await?
        .and_then(|instance| instance.agent_id)
        .ok_or_else(|| {
            ApiError::forbidden(
                "certificate_not_bound",
                "this machine's instance is not bound to an agent",
            )
        })?;
    let agent = load_agent(state, tenant, agent_id)
        .await?
        .ok_or_else(invalid_certificate)?;
    admit(state, agent, AgentCredential::MachineCertificate, now).await
}

/// Admits a known agent: lifecycle first, then the epoch of its token or
/// certificate, then the rate limit.
async fn admit(
    state: &AppState,
    agent: Arc<AgentSnapshot>,
    credential: AgentCredential,
    now: OffsetDateTime,
) -> Result<AgentPrincipal, ApiError> {
    let record = &agent.record;
    let access = match agentry_lifecycle::admit(
        &agentry_lifecycle::Lifecycle::of(record),
        record.credential_epoch,
        credential,
        now,
    ) {
        Ok(access) => access,
        Err(AdmissionError::Denied(denial)) => {
            let refusal = ApiError::from(denial);
            audit_refusal(state, record, refusal.code, now);
            return Err(refusal);
        }
        Err(_) => {
            // A retired credential: the epoch moved on since it was issued.
            if let AgentCredential::AgentCertificate(_) = credential {
                audit_refusal(state, record, "revoked_certificate", now);
                return Err(invalid_certificate());
            }
            audit_refusal(state, record, "revoked_token", now);
            return Err(invalid_token());
        }
    };
    let requests_this_minute = match admit_rate(state, record, agent.enforced.rpm, now).await {
        Ok(count) => count,
        Err(limited) => {
            audit_refusal(state, record, "rate_limited", now);
            return Err(ApiError::too_many_requests(
                limited.to_string(),
                limited.retry_after.whole_seconds().unsigned_abs(),
            ));
        }
    };
    state.sightings.saw(record.tenant_id, record.id, now);
    Ok(AgentPrincipal {
        agent,
        credential,
        access,
        requests_this_minute,
    })
}

/// Counts the request against the agent's requests per minute. A lease
/// from the shared count is one database round trip per block of requests
/// (see `agentry_ledger::lease_size`); if the database cannot answer, this
/// replica grants the block itself rather than refuse every agent, and the
/// limit holds per replica until it can.
async fn admit_rate(
    state: &AppState,
    agent: &AgentRecord,
    limit: u32,
    now: OffsetDateTime,
) -> Result<u32, agentry_ledger::RateLimited> {
    let mut step = state.rate.admit(agent.id, limit, now);
    // A lease adds at least one request unless the minute is spent, and the
    // minute turns at most once while one is out; a third lease would mean
    // neither held.
    for _ in 0..3 {
        let RateStep::Lease { minute, ask } = step else {
            break;
        };
        let (tenant, id) = (agent.tenant_id, agent.id);
        let lease = state
            .store
            .detached(async move |store| store.lease_rate(tenant, id, minute, ask, limit).await)
            .await;
        let lease = match lease {
            Ok(lease) => (minute, lease.granted, lease.spent(limit)),
            Err(error) => {
                tracing::warn!(%error, "cannot lease from the shared rate count; this replica counts alone");
                (minute, ask, false)
            }
        };
        step = state.rate.leased(id, lease, limit, now);
    }
    match step {
        RateStep::Decided(decided) => decided,
        RateStep::Lease { .. } => Err(agentry_ledger::RateLimited {
            limit,
            retry_after: time::Duration::SECOND,
        }),
    }
}

impl FromRequest for AgentPrincipal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(agent_principal(request.clone()))
    }
}

/// Whether the request's credential is a tenant API key (not an agent's
/// own): [`Principal`] judges those as [`ApiKeyPrincipal`]s, the rest as
/// [`AgentPrincipal`]s.
pub(crate) fn presents_tenant_key(request: &HttpRequest) -> bool {
    matches!(
        presented(request),
        Some(Presented::ApiKey(ref text))
            if ApiKey::parse(text).is_ok_and(|key| key.kind() != ApiKeyKind::Agent)
    )
}

/// Either kind of caller, for routes both may use.
#[derive(Debug, Clone)]
pub enum Principal {
    ApiKey(ApiKeyPrincipal),
    Agent(AgentPrincipal),
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            if presents_tenant_key(&request) {
                api_key_principal(request).await.map(Principal::ApiKey)
            } else {
                agent_principal(request).await.map(Principal::Agent)
            }
        })
    }
}
