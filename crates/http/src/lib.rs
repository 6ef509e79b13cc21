//! Agentry's HTTP surface.
//!
//! This crate owns everything that knows about HTTP and JSON: the routes of
//! the API families (`agent_self`, `bootstrap`, `profiles`, `spend`,
//! `delegation`, `workspace` of seed 002, `machines` of seed 003, `registry`
//! of seed 004), the request guard
//! (`guard`: extractors for API keys and agents, with their caches in
//! `state`), the signing keys and machine CA in use (`keys`), the mTLS
//! listener's configuration (`tls`), what every request meets whatever its
//! route (`edge`: a body deadline and the headers every answer carries),
//! the Prometheus registry (`metrics`), the wire types (`wire`), the
//! problem+json error (`error`) and the OpenAPI document built from the
//! handlers' annotations (`openapi`). Handlers translate between wire types
//! and domain types by hand and delegate every decision to the crates below;
//! store work runs through `Store::detached`.
//!
//! It must never be depended on by another library crate; only `agentryd`
//! composes it. No rule of the lifecycle or the ledger is decided here.

mod agent_cert;
mod agent_self;
mod bootstrap;
mod deferred;
mod delegation;
mod discovery;
mod edge;
pub mod error;
pub mod guard;
pub mod keys;
mod machines;
mod mcp;
pub mod metrics;
mod openapi;
pub mod passwords;
mod profiles;
mod redact;
mod registry;
mod spend;
pub mod state;
pub mod tls;
mod validate;
mod wire;
mod workspace;

use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{App, HttpResponse, ResponseError, web};
use error::Problem;
use serde::Serialize;
use utoipa::ToSchema;

pub use edge::{Edge, MIN_BODY_RATE};
pub use error::ApiError;
pub use keys::{KeyError, Keys, new_signing_key};
pub use openapi::openapi_json;
pub use state::{AppState, Settings};

/// Largest JSON body accepted; the seeds' bodies are a few hundred bytes.
const JSON_LIMIT: usize = 64 * 1024;

/// Request ids: taken from the caller when it sends a sane one, minted
/// otherwise, and returned on every response.
const REQUEST_ID: &str = "x-request-id";

/// The whole application with the default [`Edge`]: state, routes,
/// request ids, metrics, the headers every answer carries, a deadline on
/// request bodies, and problem+json for the errors actix answers itself
/// (unknown route, wrong method).
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    app_with(state, Edge::default())
}

/// [`app`] with the given [`Edge`].
pub fn app_with(
    state: AppState,
    edge: Edge,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(state))
        .configure(|config| {
            configure(config);
            if edge.metrics_on_api {
                config.route("/metrics", web::get().to(metrics_text));
            }
        })
        .wrap(
            ErrorHandlers::new()
                .handler(StatusCode::NOT_FOUND, move |response| {
                    unmatched(response, edge.metrics_on_api)
                })
                .handler(StatusCode::METHOD_NOT_ALLOWED, move |response| {
                    unmatched(response, edge.metrics_on_api)
                }),
        )
        .wrap_fn(move |mut request, service| {
            let id = request_id(&request);
            let started = std::time::Instant::now();
            let over_tls = request.conn_data::<tls::TlsConnection>().is_some();
            let body = edge::TimedBody::install(&mut request, edge.body_timeout);
            let response = service.call(request);
            async move {
                let mut response = match response.await {
                    Ok(response) => response.map_into_boxed_body(),
                    // A service that fails instead of answering: its error
                    // is answered by actix, with our headers on it too.
                    Err(error) => {
                        let mut answer = error.error_response();
                        edge::secure_headers(answer.headers_mut(), over_tls);
                        let cause = error.to_string();
                        return Err(InternalError::from_response(cause, answer).into());
                    }
                };
                if let Some(body) = body {
                    if body.timed_out() {
                        let answer = ApiError::new(
                            StatusCode::REQUEST_TIMEOUT,
                            "request_timeout",
                            "the request body did not arrive in time",
                        )
                        .error_response();
                        let (request, _) = response.into_parts();
                        response = ServiceResponse::new(request, answer);
                    }
                    body.close_unless_finished(&mut response);
                }
                if let Some(state) = response.request().app_data::<web::Data<AppState>>() {
                    let route = response
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".to_owned());
                    state.metrics.observe(
                        route,
                        response.request().method().as_str(),
                        response.status().as_u16(),
                        started.elapsed(),
                    );
                }
                if let Ok(value) = HeaderValue::from_str(&id) {
                    response
                        .headers_mut()
                        .insert(HeaderName::from_static(REQUEST_ID), value);
                }
                edge::secure_headers(response.headers_mut(), over_tls);
                Ok(response)
            }
        })
}

/// `/metrics` alone, for a listener of its own (`--metrics-bind`), with
/// the headers every answer carries.
pub fn metrics_app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(state))
        .route("/metrics", web::get().to(metrics_text))
        .wrap_fn(|request, service| {
            let response = service.call(request);
            async move {
                let mut response = response.await?.map_into_boxed_body();
                edge::secure_headers(response.headers_mut(), false);
                Ok(response)
            }
        })
}

/// The caller's request id when it sent a sane one, else a new one.
fn request_id(request: &ServiceRequest) -> String {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| {
            !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Replaces actix's empty 404 and 405 with problem+json, leaving our own
/// (problem+json, or the JSON-RPC errors of `/mcp`) alone.
fn unmatched<B>(
    response: ServiceResponse<B>,
    metrics_on_api: bool,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let ours = response
        .headers()
        .get("content-type")
        .is_some_and(|value| value == "application/problem+json" || value == "application/json");
    if ours {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    }
    // Routes are mounted one per method, so actix answers a known path
    // with a wrong method as 404; the document knows the path's methods.
    let path = response.request().path();
    // `/metrics` is in the document but may live on a listener of its own.
    let allowed = if path == "/metrics" && !metrics_on_api {
        None
    } else {
        openapi::allowed_methods(path)
    };
    let (request, _) = response.into_parts();
    let mut answer = match &allowed {
        Some(_) => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        ),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route"),
    }
    .error_response();
    if let Some(allow) = allowed.and_then(|allow| HeaderValue::from_str(&allow).ok()) {
        answer
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, allow);
    }
    let response = ServiceResponse::new(request, answer).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(response))
}

/// Mounts every route Agentry serves but `/metrics`. The app must carry a
/// `web::Data<AppState>`.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .app_data(
            web::JsonConfig::default()
                .limit(JSON_LIMIT)
                .error_handler(|error, _| error::json_error(error)),
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
        .route("/openapi.json", web::get().to(openapi::openapi_document))
        .configure(discovery::configure)
        .configure(agent_self::configure)
        .configure(agent_cert::configure)
        .configure(bootstrap::configure)
        .configure(profiles::configure)
        .configure(spend::configure)
        .configure(delegation::configure)
        .configure(machines::configure)
        .configure(mcp::configure)
        // Before the registry: seed 002's requests to the paths both serve
        // are taken here, the rest fall through (workspace/mod.rs).
        .configure(workspace::configure)
        .configure(registry::configure);
}

/// The body of `/healthz`.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    #[schema(value_type = String, examples("ok"))]
    status: &'static str,
}

/// The body of a ready `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
struct Readiness {
    #[schema(value_type = String, examples("ok"))]
    status: &'static str,
    /// The backend in use: `sqlite` or `postgres`.
    #[schema(value_type = String, examples("postgres"))]
    database: &'static str,
    /// Whether this replica hears other replicas' changes: `live`
    /// (PostgreSQL, heartbeats come back in time), `broken` (they do not:
    /// every request reads the database until they do, so answers stay
    /// correct, only slower), `polling` (SQLite's change log) or `local`
    /// (no feed started).
    #[schema(value_type = String, examples("live"))]
    change_feed: &'static str,
}

/// Liveness: the process is up and serving.
#[utoipa::path(
    get,
    operation_id = "healthz",
    path = "/healthz",
    tag = "service",
    responses((status = 200, description = "The process is up.", body = Health)),
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Request counts and latencies per route and status, bootstrap and spend
/// outcomes, and the connection pool, in the Prometheus text format.
///
/// Unauthenticated, like `/healthz`: it names routes and counts, never a
/// tenant, an agent or a credential. Keep it off the public internet.
#[utoipa::path(
    get,
    operation_id = "metrics",
    path = "/metrics",
    tag = "service",
    responses((status = 200, description = "Prometheus text format 0.0.4.",
        content_type = "text/plain; version=0.0.4", body = String)),
)]
async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    let text = state
        .metrics
        .render(state.store.pool_status(), state.store.backend().as_str());
    HttpResponse::Ok()
        .content_type(metrics::CONTENT_TYPE)
        .body(text)
}

/// Readiness: the database answers.
///
/// Load balancers stop sending traffic while this fails.
#[utoipa::path(
    get,
    operation_id = "readyz",
    path = "/readyz",
    tag = "service",
    responses(
        (status = 200, description = "The database answers; `status` is `degraded` while the \
            change feed is `broken`.", body = Readiness),
        (status = 503, description = "`database_unavailable`: the database does not answer.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let backend = state.store.backend().as_str();
    match state.store.detached(async |store| store.ping().await).await {
        Ok(()) => {
            let feed = state.store.change_feed();
            HttpResponse::Ok().json(Readiness {
                // Degraded, not unready: a broken feed is failed safe, and
                // taking every replica out when the database's
                // notifications stall would turn a slowdown into an outage.
                status: if feed == agentry_store::FeedHealth::Broken {
                    "degraded"
                } else {
                    "ok"
                },
                database: backend,
                change_feed: feed.as_str(),
            })
        }
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            ApiError::unavailable(format!("the {backend} database does not answer"))
                .with_code("database_unavailable")
                .error_response()
        }
    }
}

/// The public keys that verify Agentry's tokens (RFC 7517).
///
/// For offline verification by other services.
#[utoipa::path(
    get,
    operation_id = "jwks",
    path = "/.well-known/jwks.json",
    tag = "service",
    responses(
        (status = 200, description = "The Ed25519 public keys (RFC 8037) of every key that may \
            have signed a token still valid.", body = wire::Jwks,
            headers(("cache-control" = String, description = "`public, max-age=300`"))),
    ),
)]
async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=300"))
        .json(wire::Jwks::from(state.keys.ring().jwks()))
}
