//! Agentry's HTTP surface.
//!
//! This crate owns everything that knows about HTTP and JSON: the routes of
//! the API families (`agent_self`, more to come), the request guard
//! (`guard`: extractors for API keys and agents, with their caches in
//! `state`), the signing keys in use (`keys`), the wire types (`wire`) and
//! the problem+json error (`error`). Handlers translate between wire types
//! and domain types by hand and delegate every decision to the crates below;
//! store work runs through `Store::detached`.
//!
//! It must never be depended on by another library crate; only `agentryd`
//! composes it. No rule of the lifecycle or the ledger is decided here.

mod agent_self;
mod bootstrap;
mod delegation;
pub mod error;
pub mod guard;
pub mod keys;
mod profiles;
mod spend;
pub mod state;
mod validate;
mod wire;

use actix_web::{HttpResponse, web};

pub use error::ApiError;
pub use keys::{KeyError, Keys, new_signing_key};
pub use state::{AppState, Settings};

/// Largest JSON body accepted; the seeds' bodies are a few hundred bytes.
const JSON_LIMIT: usize = 64 * 1024;

/// Mounts every route Agentry serves. The app must carry a
/// `web::Data<AppState>`.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .app_data(
            web::JsonConfig::default()
                .limit(JSON_LIMIT)
                .error_handler(|error, _| error::extractor_error(error, "invalid_json")),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|error, _| error::extractor_error(error, "invalid_query")),
        )
        .app_data(
            web::PathConfig::default()
                .error_handler(|error, _| error::extractor_error(error, "invalid_path")),
        )
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/.well-known/jwks.json", web::get().to(jwks))
        .configure(agent_self::configure)
        .configure(bootstrap::configure)
        .configure(profiles::configure)
        .configure(spend::configure)
        .configure(delegation::configure);
}

/// Liveness: the process is up and serving.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the database answers. Load balancers stop sending traffic
/// while this fails.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let backend = state.store.backend().as_str();
    match state.store.detached(async |store| store.ping().await).await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({
            "status": "ok",
            "database": backend,
        })),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(serde_json::json!({
                "status": "unavailable",
                "database": backend,
            }))
        }
    }
}

/// The public keys that verify Agentry's tokens, for offline verification
/// by other services (RFC 7517).
async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=300"))
        .json(state.keys.ring().jwks())
}
