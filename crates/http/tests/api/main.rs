//! End-to-end tests of the HTTP surface: the real app, the real store (on
//! SQLite and PostgreSQL), driven as a client would.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failed unwrap is a failed test"
)]

mod bad_input;
mod bootstrap;
mod budget;
mod cert;
mod coverage;
mod discovery;
mod feed;
mod guard;
mod headers;
mod instance;
mod keys;
mod machines;
mod mcp;
mod openapi;
mod profiles;
mod registry;
mod secrets_in_logs;
mod service;
mod test_app;
mod united;
mod workspace;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::test;
use agentry_auth::{ApiKey, ApiKeyKind, MasterKey};
use agentry_domain::{AgentOrigin, AgentSlug, LifecycleState, Money, TenantId};
use agentry_http::{AppState, Keys, Settings};
use agentry_store::{AgentRecord, NewAgent, NewApiKey, Store, now};
use agentry_testkit::TestDb;
use time::Duration;

pub(crate) const PUBLIC_URL: &str = "http://agentry.test";

pub(crate) async fn state_for(db: &TestDb) -> AppState {
    state_with(db, |_| {}).await
}

/// [`state_for`] with some settings changed.
pub(crate) async fn state_with(db: &TestDb, change: impl FnOnce(&mut Settings)) -> AppState {
    let mut settings = Settings {
        public_url: PUBLIC_URL.into(),
        agent_token_ttl: Duration::hours(1),
        session_token_ttl: Duration::hours(24),
        invite_ttl: Duration::days(7),
        artifact_dir: std::env::temp_dir().join(format!("agentry-test-{}", uuid::Uuid::now_v7())),
        max_artifact_bytes: 1 << 20,
        setup_token: None,
        login_attempts_per_minute: 10,
        login_attempts_per_address_per_minute: 60,
        api_key_rpm: agentry_http::state::DEFAULT_API_KEY_RPM,
    };
    change(&mut settings);
    let keys = Keys::load(
        &db.store,
        MasterKey::generate(),
        settings.max_token_ttl(),
        now(),
    )
    .await
    .unwrap();
    AppState::new(db.store.clone(), keys, settings)
}

/// Another replica's state over `store` (a second connection to the same
/// database): keys unsealed with `first`'s master key, the same settings.
pub(crate) async fn replica_state(store: Store, first: &AppState) -> AppState {
    let keys = Keys::load(
        &store,
        first.keys.master().clone(),
        first.settings.max_token_ttl(),
        now(),
    )
    .await
    .unwrap();
    AppState::new(store, keys, (*first.settings).clone())
}

pub(crate) async fn app(
    state: &AppState,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error> + use<>
{
    test::init_service(
        agentry_http::app(state.clone())
            .configure(guard::test_routes)
            .wrap_fn(|request, service| {
                machines::present_test_certificate(&request);
                let answered = service.call(request);
                async move {
                    let response = answered.await?;
                    log_status(&response);
                    Ok(response)
                }
            }),
    )
    .await
}

/// With `AGENTRY_STATUS_LOG` set (by `cargo xtask test`) to a directory,
/// appends `METHOD route status` of every answer to a file of this process,
/// so the run can tell which documented statuses no test reached.
fn log_status(response: &ServiceResponse) {
    use std::io::Write;
    let Some(dir) = std::env::var_os("AGENTRY_STATUS_LOG") else {
        return;
    };
    let Some(route) = response.request().match_pattern() else {
        return;
    };
    let line = format!(
        "{} {route} {}\n",
        response.request().method(),
        response.status().as_u16()
    );
    let file = std::path::Path::new(&dir).join(format!("api-{}.log", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(error) = written {
        panic!("cannot log a status to {}: {error}", file.display());
    }
}

pub(crate) async fn tenant(store: &Store, name: &str) -> TenantId {
    store.create_tenant(name, now()).await.unwrap().id
}

pub(crate) async fn agent(
    store: &Store,
    tenant: TenantId,
    slug: &str,
    state: LifecycleState,
) -> AgentRecord {
    let mut new =
        NewAgent::named(AgentSlug::parse(slug).unwrap(), AgentOrigin::Api).starting_in(state);
    new.budget_daily = Some(Money::from_usd(5));
    store.create_agent(tenant, new, now()).await.unwrap()
}

pub(crate) async fn api_key(
    store: &Store,
    tenant: TenantId,
    kind: ApiKeyKind,
    agent: Option<&AgentRecord>,
) -> (ApiKey, uuid::Uuid) {
    let key = ApiKey::mint(kind);
    let role = match kind {
        ApiKeyKind::Tenant(role) => Some(role),
        ApiKeyKind::Agent => None,
    };
    let record = store
        .insert_api_key(
            tenant,
            NewApiKey {
                role,
                agent_id: agent.map(|agent| agent.id),
                key_hash: key.hash().0,
                label: None,
            },
            now(),
        )
        .await
        .unwrap();
    (key, record.id)
}

/// A tenant key with `role`, for tests that only need the key itself.
pub(crate) async fn tenant_key(
    store: &Store,
    tenant: TenantId,
    role: agentry_domain::ApiKeyRole,
) -> ApiKey {
    api_key(store, tenant, ApiKeyKind::Tenant(role), None)
        .await
        .0
}

/// GET `path` with `Authorization: Bearer <credential>`; status and JSON.
pub(crate) async fn get<S>(
    app: &S,
    path: &str,
    credential: Option<&str>,
) -> (u16, serde_json::Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    send(app, test::TestRequest::get().uri(path), path, credential).await
}

/// `method path` with a JSON body and a bearer credential; status and JSON.
pub(crate) async fn call<S>(
    app: &S,
    method: actix_web::http::Method,
    path: &str,
    credential: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let request = test::TestRequest::default()
        .method(method)
        .uri(path)
        .set_json(body);
    send(app, request, path, credential).await
}

/// Sends `request` with the credential; asserts every error is problem+json
/// with a stable code.
pub(crate) async fn send<S>(
    app: &S,
    mut request: test::TestRequest,
    path: &str,
    credential: Option<&str>,
) -> (u16, serde_json::Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    if let Some(credential) = credential {
        request = request.insert_header(("authorization", format!("Bearer {credential}")));
    }
    let response = test::call_service(app, request.to_request()).await;
    let status = response.status().as_u16();
    let is_problem = response
        .headers()
        .get("content-type")
        .is_some_and(|value| value == "application/problem+json");
    let body = test::read_body(response).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    // `/mcp` answers a bad message with a JSON-RPC error, as MCP says.
    let is_json_rpc = path.ends_with("/mcp") && json["jsonrpc"] == "2.0";
    if status >= 400 && !is_json_rpc {
        assert!(
            is_problem,
            "{path} answered {status} without problem+json: {json}"
        );
        assert!(json["code"].is_string(), "{path}: no stable code in {json}");
    }
    (status, json)
}
