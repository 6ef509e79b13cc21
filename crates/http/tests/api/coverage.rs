//! The statuses the guard and the body limits answer, on every operation
//! whose OpenAPI description promises them: driven by the document itself,
//! so a new route is covered the day it is documented. `cargo xtask test`
//! then checks that every documented status was answered somewhere.

use actix_web::http::Method;
use actix_web::test::TestRequest;
use agentry_auth::Audience;
use agentry_domain::{AgentOrigin, AgentSlug, ApiKeyRole, LifecycleState};
use agentry_store::{AgentLimitEntry, NewAgent, now};
use agentry_testkit::on_both_backends;
use serde_json::Value;
use time::Duration;

use crate::test_app::TestApp;
use crate::{agent, send, tenant_key};

/// Every path parameter gets this: a UUID, which is also a valid agent
/// name, so no parameter fails to parse before the guard has spoken.
const SOME_ID: &str = "0190e0a0-0000-7000-8000-000000000001";

struct Operation {
    method: Method,
    path: String,
    tag: String,
    schemes: Vec<String>,
    statuses: Vec<String>,
    json_body: bool,
}

fn operations() -> Vec<Operation> {
    let document: Value = serde_json::from_str(&agentry_http::openapi_json()).unwrap();
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        // The MCP endpoint's guard refusals are tool results, not statuses
        // (tests/api/mcp.rs).
        if path == "/mcp" {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            let schemes = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|requirement| requirement.as_object())
                .flat_map(|requirement| requirement.keys().cloned())
                .collect();
            let statuses = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            let json_body = operation["requestBody"]["content"]
                .get("application/json")
                .is_some();
            let filled: String = path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        SOME_ID
                    } else {
                        segment
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            operations.push(Operation {
                method: method.to_uppercase().parse().unwrap(),
                path: filled,
                tag: operation["tags"][0].as_str().unwrap_or_default().to_owned(),
                schemes,
                statuses,
                json_body,
            });
        }
    }
    operations
}

impl Operation {
    fn documents(&self, status: &str) -> bool {
        self.statuses.iter().any(|documented| documented == status)
    }

    fn takes(&self, scheme: &str) -> bool {
        self.schemes.iter().any(|taken| taken == scheme)
    }

    fn request(&self, body: Option<(&str, Vec<u8>)>) -> TestRequest {
        let mut request = TestRequest::default()
            .method(self.method.clone())
            .uri(&self.path);
        if let Some((content_type, payload)) = body {
            request = request
                .insert_header(("content-type", content_type))
                .set_payload(payload);
        } else if self.json_body {
            request = request
                .insert_header(("content-type", "application/json"))
                .set_payload(self.valid_body());
        }
        request
    }

    /// A body the route accepts, so that only the credential is at fault
    /// (bodies are read after the caller is judged, so this is belt and
    /// braces; `bad_input.rs` checks that order).
    fn valid_body(&self) -> &'static str {
        let path = self.path.as_str();
        if path == "/v1/agent/delegate" {
            r#"{"agent_id":"coverage-child","budget_allocation_usd":0.01}"#
        } else if path.starts_with("/v1/agent/spend") || path.starts_with("/v1/agent/holds") {
            r#"{"amount_usd":0.01}"#
        } else {
            "{}"
        }
    }
}

/// A session of the admin of a fresh workspace (seed 002's bootstrap).
async fn workspace_admin_session<S>(app: &S) -> String
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
        >,
{
    let setup = serde_json::json!({
        "primary_agent": {
            "email": "admin@localhost",
            "password": "secure-generated-password",
            "agent_profile": { "name": "coordinator", "display_name": "Coordination Agent" }
        },
        "agents": [],
        "humans": [],
        "default_channel": { "name": "team-chat" }
    });
    let (status, body) = crate::call(app, Method::POST, "/api/v1/bootstrap", None, setup).await;
    assert_eq!(status, 201, "{body}");
    let login =
        serde_json::json!({ "email": "admin@localhost", "password": "secure-generated-password" });
    let (status, session) = crate::call(app, Method::POST, "/api/v1/auth/login", None, login).await;
    assert_eq!(status, 200, "{session}");
    session["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_guard_and_body_status_is_answered() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let admin = tenant_key(&db.store, acme, ApiKeyRole::Admin).await;
        let workspace_session = workspace_admin_session(app).await;
        let mut checked = 0;
        for (n, operation) in operations().iter().enumerate() {
            let name = format!("{} {}", operation.method, operation.path);
            let agent_in = |state: LifecycleState, role: &str| {
                let slug = format!("{role}-{n}");
                let store = db.store.clone();
                async move { agent(&store, acme, &slug, state).await }
            };
            let token_of = |record: &agentry_store::AgentRecord| {
                state.mint_agent_token(record, now()).unwrap().0
            };
            let expect = async |request: TestRequest, credential: Option<&str>, status: u16| {
                let (answered, body) = send(app, request, &name, credential).await;
                assert_eq!(answered, status, "{name}: {body}");
            };

            if operation.takes("agent_jwt") {
                // The lifecycle speaks first: suspended is 402, terminated 403.
                if operation.documents("402") {
                    let suspended = agent_in(LifecycleState::Suspended, "suspended").await;
                    expect(operation.request(None), Some(&token_of(&suspended)), 402).await;
                    checked += 1;
                }
                if operation.documents("403") {
                    let ended = agent_in(LifecycleState::Terminated, "terminated").await;
                    expect(operation.request(None), Some(&token_of(&ended)), 403).await;
                    checked += 1;
                }
                // One request a minute, then 429.
                if operation.documents("429") {
                    let limited = agent_in(LifecycleState::Active, "limited").await;
                    let entry = AgentLimitEntry {
                        max_budget: None,
                        max_requests_per_minute: Some(1),
                    };
                    db.store
                        .ensure_agent_limit_entry(
                            acme,
                            limited.id,
                            &limited.slug.limits_key(),
                            entry,
                        )
                        .await
                        .unwrap();
                    let token = token_of(&limited);
                    send(app, operation.request(None), &name, Some(&token)).await;
                    expect(operation.request(None), Some(&token), 429).await;
                    checked += 1;
                }
            } else if operation.takes("api_key") && operation.documents("403") {
                // A tenant key's route refuses an agent's token.
                let active = agent_in(LifecycleState::Active, "caller").await;
                expect(operation.request(None), Some(&token_of(&active)), 403).await;
                checked += 1;
            }

            // Bodies: past the JSON limit 413, not labelled JSON 415, with a
            // credential the guard lets through.
            if operation.json_body && (operation.documents("413") || operation.documents("415")) {
                // Routes that take an agent token take the agent's own key
                // as `api_key` too; tenant keys are for the others.
                let credential = if operation.takes("session_jwt") && operation.tag != "registry" {
                    // Seed 002's workspace routes: its admin's session.
                    Some(workspace_session.clone())
                } else if operation.takes("agent_jwt") && operation.tag != "registry" {
                    // One that may delegate, so the delegate route gets as
                    // far as its body.
                    let mut sender = NewAgent::named(
                        AgentSlug::parse(&format!("sender-{n}")).unwrap(),
                        AgentOrigin::Api,
                    )
                    .starting_in(LifecycleState::Active);
                    sender.metadata = serde_json::json!({ "can_delegate": true });
                    let sender = db.store.create_agent(acme, sender, now()).await.unwrap();
                    Some(token_of(&sender))
                } else if operation.takes("api_key") {
                    Some(admin.expose().to_owned())
                } else if operation.takes("callback_jwt") {
                    let (token, _) = state
                        .mint(
                            Audience::Callback,
                            uuid::Uuid::now_v7(),
                            acme,
                            0,
                            now(),
                            Duration::hours(1),
                        )
                        .unwrap();
                    Some(token)
                } else if operation.schemes.is_empty() {
                    None
                } else {
                    // A client certificate: `machines.rs` covers its bodies.
                    continue;
                };
                // The registry's routes name the caller's tenant too (seed
                // 004), and check it before the body.
                let with_tenant = |request: TestRequest| {
                    if operation.path.starts_with("/api/v1/agents") {
                        request.insert_header(("x-bulwark-tenant", acme.to_string()))
                    } else {
                        request
                    }
                };
                if operation.documents("413") {
                    let large = format!("{{\"padding\":\"{}\"}}", "x".repeat(70 * 1024));
                    let request = operation.request(Some(("application/json", large.into_bytes())));
                    expect(with_tenant(request), credential.as_deref(), 413).await;
                    checked += 1;
                }
                if operation.documents("415") {
                    let request = operation.request(Some(("text/plain", b"{}".to_vec())));
                    expect(with_tenant(request), credential.as_deref(), 415).await;
                    checked += 1;
                }
            }
        }
        assert!(
            checked > 50,
            "only {checked} statuses checked: is the document empty?"
        );
    })
    .await;
}
