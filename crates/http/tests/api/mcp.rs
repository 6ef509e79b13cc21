//! The MCP endpoint as a client meets it: the handshake, the tool list,
//! every tool answering what its route answers, refusals as `isError`
//! results, and the transport's own refusals (credential, origin, media
//! type, protocol revision, malformed messages).

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::Method;
use actix_web::test;
use agentry_domain::{ApiKeyRole, LifecycleState};
use agentry_store::AgentLimitEntry;
use agentry_testkit::on_both_backends;
use serde_json::{Value, json};

use crate::get;
use crate::test_app::TestApp;

/// One answer of `/mcp`: status, the headers a test looks at, and JSON.
struct Answer {
    status: u16,
    content_type: String,
    www_authenticate: Option<String>,
    allow: Option<String>,
    body: Value,
}

async fn post<S>(
    app: &S,
    credential: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> Answer
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let mut request = test::TestRequest::post()
        .uri("/mcp")
        .insert_header(("content-type", "application/json"))
        .insert_header(("accept", "application/json, text/event-stream"));
    if let Some(credential) = credential {
        request = request.insert_header(("authorization", format!("Bearer {credential}")));
    }
    // The first of a name replaces a default above; a repeat is sent as a
    // second line.
    let mut seen = Vec::new();
    for header in headers {
        request = if seen.contains(&header.0) {
            request.append_header(*header)
        } else {
            seen.push(header.0);
            request.insert_header(*header)
        };
    }
    let response = test::call_service(app, request.set_payload(body.into()).to_request()).await;
    answer(response).await
}

async fn answer(response: ServiceResponse) -> Answer {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let status = response.status().as_u16();
    let content_type = header("content-type").unwrap_or_default();
    let www_authenticate = header("www-authenticate");
    let allow = header("allow");
    let body = test::read_body(response).await;
    Answer {
        status,
        content_type,
        www_authenticate,
        allow,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }
}

/// A JSON-RPC request's `result`, asserting the exchange itself succeeded.
async fn rpc<S>(app: &S, credential: Option<&str>, method: &str, params: Value) -> Value
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let message = json!({ "jsonrpc": "2.0", "id": 7, "method": method, "params": params });
    let answer = post(app, credential, &[], message.to_string()).await;
    assert_eq!(answer.status, 200, "{method}: {}", answer.body);
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(answer.body["jsonrpc"], "2.0");
    assert_eq!(answer.body["id"], 7, "the id comes back as sent");
    assert!(answer.body["error"].is_null(), "{method}: {}", answer.body);
    answer.body["result"].clone()
}

async fn call_tool<S>(app: &S, credential: &str, name: &str, arguments: Value) -> Value
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    rpc(
        app,
        Some(credential),
        "tools/call",
        json!({ "name": name, "arguments": arguments }),
    )
    .await
}

/// A refusal's problem, asserting the result says it is one.
fn refused(result: &Value, status: u16, code: &str) {
    assert_eq!(result["isError"], true, "{result}");
    assert_eq!(result["structuredContent"]["status"], status, "{result}");
    assert_eq!(result["structuredContent"]["code"], code, "{result}");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with(&format!("{status} {code}: ")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_handshake_and_the_tool_list() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_agent("summarizer-v1", LifecycleState::Active)
            .start()
            .await;
        let token = t.token("summarizer-v1");
        let app = &t.app;

        let initialized = rpc(
            app,
            Some(&token),
            "initialize",
            json!({ "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "test", "version": "1" } }),
        )
        .await;
        assert_eq!(initialized["protocolVersion"], "2025-06-18");
        assert_eq!(initialized["capabilities"]["tools"]["listChanged"], false);
        assert_eq!(initialized["serverInfo"]["name"], "agentry");
        // A revision we do not know: our newest, for the client to judge.
        let newer = rpc(
            app,
            Some(&token),
            "initialize",
            json!({ "protocolVersion": "1999-01-01", "capabilities": {},
                    "clientInfo": { "name": "test", "version": "1" } }),
        )
        .await;
        assert_eq!(newer["protocolVersion"], "2025-11-25");

        let notified = post(
            app,
            Some(&token),
            &[("mcp-protocol-version", "2025-06-18")],
            json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }).to_string(),
        )
        .await;
        assert_eq!(notified.status, 202);
        assert_eq!(notified.body, Value::Null, "a 202 has no body");
        // A response to a server request is acknowledged in this era; an
        // object that is neither request nor response is refused.
        let response = post(
            app,
            Some(&token),
            &[("mcp-protocol-version", "2025-06-18")],
            json!({ "jsonrpc": "2.0", "id": "s-1", "result": {} }).to_string(),
        )
        .await;
        assert_eq!(response.status, 202);
        let neither = post(
            app,
            Some(&token),
            &[],
            json!({ "jsonrpc": "2.0", "id": 1 }).to_string(),
        )
        .await;
        assert_eq!(neither.status, 400, "{}", neither.body);
        assert_eq!(neither.body["error"]["code"], -32600);
        assert_eq!(rpc(app, Some(&token), "ping", json!({})).await, json!({}));

        let listed = rpc(app, Some(&token), "tools/list", json!({})).await;
        let tools = listed["tools"].as_array().unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(
            names[..4],
            [
                "br_bootstrap_agent",
                "br_agent_status",
                "br_agent_limits",
                "br_agent_anomaly"
            ]
        );
        for name in [
            "br_spend",
            "br_hold",
            "br_capture",
            "br_release",
            "br_delegate",
            "br_list_sub_agents",
            "br_terminate_sub_agent",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let bootstrap = &tools[0];
        let schema = &bootstrap["inputSchema"];
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["agent_id"]), "{schema}");
        assert!(
            schema["properties"]["budget_daily_usd"].is_object(),
            "{schema}"
        );
        assert!(!bootstrap["description"].as_str().unwrap().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_tool_answers_what_its_route_answers() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_key(ApiKeyRole::Provisioner)
            .start()
            .await;
        let app = &t.app;
        let provisioner = t.key(ApiKeyRole::Provisioner).to_owned();

        let created = call_tool(
            app,
            &provisioner,
            "br_bootstrap_agent",
            json!({ "agent_id": "mcp-worker", "budget_daily_usd": 1.0,
                    "metadata": { "can_delegate": true } }),
        )
        .await;
        assert_eq!(created["isError"], false, "{created}");
        let body = &created["structuredContent"];
        assert_eq!(body["profile"]["agentId"], "mcp-worker");
        assert_eq!(
            body["next_steps"]["cert_exchange"],
            "POST /v1/agent/auth/cert"
        );
        let text: Value =
            serde_json::from_str(created["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(&text, body, "the text is the same JSON");
        let jwt = body["jwt"].as_str().unwrap().to_owned();

        let status = call_tool(app, &jwt, "br_agent_status", json!({})).await;
        assert_eq!(status["isError"], false, "{status}");
        let (code, route) = get(app, "/v1/agent/status", Some(&jwt)).await;
        assert_eq!(code, 200);
        assert_eq!(status["structuredContent"]["profile"], route["profile"]);
        assert_eq!(
            status["structuredContent"]["governance"],
            route["governance"]
        );
        let limits = call_tool(app, &jwt, "br_agent_limits", json!({})).await;
        assert_eq!(
            limits["structuredContent"]["limits"]["enforced_daily_usd"],
            1.0
        );

        let spent = call_tool(app, &jwt, "br_spend", json!({ "amount_usd": 0.25 })).await;
        assert_eq!(
            spent["structuredContent"]["enforced_daily_spent_usd"], 0.25,
            "{spent}"
        );
        let held = call_tool(app, &jwt, "br_hold", json!({ "amount_usd": 0.5 })).await;
        let hold_id = held["structuredContent"]["hold_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let captured = call_tool(
            app,
            &jwt,
            "br_capture",
            json!({ "hold_id": hold_id, "amount_usd": 0.125 }),
        )
        .await;
        assert_eq!(
            captured["structuredContent"]["captured_usd"], 0.125,
            "{captured}"
        );
        assert_eq!(captured["structuredContent"]["released_usd"], 0.375);
        let again = call_tool(app, &jwt, "br_release", json!({ "hold_id": hold_id })).await;
        refused(&again, 409, "hold_closed");
        let over = call_tool(app, &jwt, "br_spend", json!({ "amount_usd": 5 })).await;
        refused(&over, 402, "insufficient_budget");
        t.state.flush_audit().await;
        let anomalies = call_tool(app, &jwt, "br_agent_anomaly", json!({})).await;
        assert_eq!(
            anomalies["structuredContent"]["events"][0]["reason"], "insufficient_budget",
            "{anomalies}"
        );

        let child = call_tool(
            app,
            &jwt,
            "br_delegate",
            json!({ "agent_id": "mcp-child", "budget_allocation_usd": 0.25 }),
        )
        .await;
        assert_eq!(child["isError"], false, "{child}");
        let listed = call_tool(app, &jwt, "br_list_sub_agents", json!({})).await;
        assert_eq!(listed["structuredContent"]["total"], 1, "{listed}");
        let ended = call_tool(
            app,
            &jwt,
            "br_terminate_sub_agent",
            json!({ "child_agent_id": "mcp-child" }),
        )
        .await;
        assert_eq!(
            ended["structuredContent"]["terminated_agent_id"], "mcp-child",
            "{ended}"
        );
        assert_eq!(ended["structuredContent"]["budget_refunded_usd"], 0.25);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_tool_results() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_key(ApiKeyRole::Operator)
            .with_key(ApiKeyRole::Auditor)
            .with_agent("worker", LifecycleState::Active)
            .with_agent("paused", LifecycleState::Suspended)
            .with_agent("limited", LifecycleState::Active)
            .start()
            .await;
        let app = &t.app;
        let worker = t.token("worker");

        let suspended = call_tool(app, &t.token("paused"), "br_agent_status", json!({})).await;
        refused(&suspended, 402, "agent_suspended");
        let tenant = call_tool(
            app,
            t.key(ApiKeyRole::Operator),
            "br_agent_status",
            json!({}),
        )
        .await;
        refused(&tenant, 403, "agent_credentials_required");
        let agent_bootstraps = call_tool(
            app,
            &worker,
            "br_bootstrap_agent",
            json!({ "agent_id": "another" }),
        )
        .await;
        refused(&agent_bootstraps, 403, "api_key_required");
        let auditor_bootstraps = call_tool(
            app,
            t.key(ApiKeyRole::Auditor),
            "br_bootstrap_agent",
            json!({ "agent_id": "another" }),
        )
        .await;
        refused(&auditor_bootstraps, 403, "permission_denied");

        let not_money = call_tool(app, &worker, "br_spend", json!({ "amount_usd": "lots" })).await;
        refused(&not_money, 400, "invalid_json");
        let stray = call_tool(app, &worker, "br_agent_status", json!({ "verbose": true })).await;
        refused(&stray, 400, "invalid_request");
        let no_hold = call_tool(app, &worker, "br_release", json!({})).await;
        refused(&no_hold, 400, "invalid_request");
        let unknown_hold = call_tool(
            app,
            &worker,
            "br_release",
            json!({ "hold_id": uuid::Uuid::nil().to_string() }),
        )
        .await;
        refused(&unknown_hold, 404, "not_found");
        // Past its requests per minute, every call is refused until the
        // minute turns: one POST is one request, whatever it carries.
        let limited = t.agent("limited");
        let entry = AgentLimitEntry {
            max_budget: None,
            max_requests_per_minute: Some(1),
        };
        db.store
            .ensure_agent_limit_entry(t.tenant, limited.id, &limited.slug.limits_key(), entry)
            .await
            .unwrap();
        let limited = t.token("limited");
        let first = call_tool(app, &limited, "br_agent_limits", json!({})).await;
        assert_eq!(first["isError"], false, "{first}");
        let second = call_tool(app, &limited, "br_agent_limits", json!({})).await;
        refused(&second, 429, "rate_limited");
        assert!(second["structuredContent"]["retry_after"].as_u64().unwrap() >= 1);

        // The route's own order: may it delegate at all, before its body.
        let not_allowed = call_tool(app, &worker, "br_delegate", json!({ "agent_id": "X" })).await;
        refused(&not_allowed, 403, "delegation_not_allowed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_without_a_good_credential_is_refused_before_any_message_is_read() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let app = &t.app;
        let list = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }).to_string();

        let missing = post(app, None, &[], list.clone()).await;
        assert_eq!(missing.status, 401);
        assert_eq!(missing.content_type, "application/problem+json");
        assert_eq!(missing.body["code"], "missing_credentials");
        assert_eq!(
            missing.www_authenticate.as_deref(),
            Some("Bearer realm=\"agentry\"")
        );
        let forged = post(app, Some("eyJhbGciOiJub25lIn0.e30.x"), &[], list.clone()).await;
        assert_eq!(forged.status, 401);
        let challenge = forged.www_authenticate.unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        let unknown_key = post(app, Some("agy_admin_aaaaaaaaaaaaaaaa"), &[], list.clone()).await;
        assert_eq!(unknown_key.status, 401);
        // Not even a body that is not JSON is looked at first.
        let garbage = post(app, None, &[], "{not json").await;
        assert_eq!(garbage.status, 401);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_transport_refuses_what_it_cannot_take() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_agent("worker", LifecycleState::Active)
            .start()
            .await;
        let app = &t.app;
        let bearer = t.token("worker");
        let token = Some(bearer.as_str());
        let list = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }).to_string();

        let not_json = post(app, token, &[], "{not json").await;
        assert_eq!(not_json.status, 400);
        assert_eq!(not_json.body["error"]["code"], -32700);
        assert_eq!(not_json.body["id"], Value::Null);
        let batch = post(app, token, &[], format!("[{list}]")).await;
        assert_eq!(batch.status, 400);
        assert_eq!(batch.body["error"]["code"], -32600);
        let not_rpc = post(
            app,
            token,
            &[],
            json!({ "id": 1, "method": "ping" }).to_string(),
        )
        .await;
        assert_eq!(not_rpc.status, 400);
        assert_eq!(not_rpc.body["error"]["code"], -32600);
        let revision = post(
            app,
            token,
            &[("mcp-protocol-version", "2020-01-01")],
            list.clone(),
        )
        .await;
        assert_eq!(revision.status, 400);
        assert_eq!(revision.body["error"]["code"], -32022);
        assert_eq!(revision.body["error"]["data"]["requested"], "2020-01-01");
        let supported = &revision.body["error"]["data"]["supported"];
        assert_eq!(supported[0], "2026-07-28", "{supported}");
        assert!(supported.as_array().unwrap().contains(&json!("2025-06-18")));
        // 2025-03-26 allowed batches, which would pass the rate limit as
        // one request: not spoken.
        assert!(!supported.as_array().unwrap().contains(&json!("2025-03-26")));
        let batching = post(
            app,
            token,
            &[("mcp-protocol-version", "2025-03-26")],
            list.clone(),
        )
        .await;
        assert_eq!(batching.body["error"]["code"], -32022);
        assert_eq!(revision.body["id"], 1);

        let unknown_method = post(
            app,
            token,
            &[],
            json!({ "jsonrpc": "2.0", "id": "a", "method": "resources/list" }).to_string(),
        )
        .await;
        assert_eq!(unknown_method.status, 200);
        assert_eq!(unknown_method.body["error"]["code"], -32601);
        assert_eq!(unknown_method.body["id"], "a");
        let unknown_tool = post(
            app,
            token,
            &[],
            json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": { "name": "br_nothing", "arguments": {} } })
            .to_string(),
        )
        .await;
        assert_eq!(unknown_tool.body["error"]["code"], -32602);
        let bad_arguments = post(
            app,
            token,
            &[],
            json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call",
                    "params": { "name": "br_spend", "arguments": [1] } })
            .to_string(),
        )
        .await;
        assert_eq!(bad_arguments.body["error"]["code"], -32602);

        let elsewhere = post(
            app,
            token,
            &[("origin", "https://evil.example")],
            list.clone(),
        )
        .await;
        assert_eq!(elsewhere.status, 403);
        assert_eq!(elsewhere.body["code"], "origin_not_allowed");
        let ours = post(app, token, &[("origin", crate::PUBLIC_URL)], list.clone()).await;
        assert_eq!(ours.status, 200, "{}", ours.body);
        let html_only = post(app, token, &[("accept", "text/html")], list.clone()).await;
        assert_eq!(html_only.status, 406);
        let form = post(app, token, &[("content-type", "text/plain")], list.clone()).await;
        assert_eq!(form.status, 415);
        let huge = post(app, token, &[], vec![b' '; 70 * 1024]).await;
        assert_eq!(huge.status, 413);

        // No server-to-client stream: GET is not served, and says so.
        let request = test::TestRequest::default()
            .method(Method::GET)
            .uri("/mcp")
            .insert_header(("accept", "text/event-stream"))
            .insert_header(("authorization", format!("Bearer {bearer}")));
        let stream = answer(test::call_service(app, request.to_request()).await).await;
        assert_eq!(stream.status, 405);
        assert_eq!(stream.allow.as_deref(), Some("POST"));
    })
    .await;
}

/// A 2026-07-28 request: the envelope in `params._meta`, the revision,
/// method and tool name again in headers.
async fn modern<S>(app: &S, credential: &str, method: &str, params: Value) -> Answer
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "test", "version": "1" },
    });
    let name = params["name"].as_str().unwrap_or_default().to_owned();
    let mut headers = vec![
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
    ];
    if !name.is_empty() {
        headers.push(("mcp-name", &name));
    }
    let message = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    post(app, Some(credential), &headers, message.to_string()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stateless_revision_discovers_lists_and_calls() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_agent("worker", LifecycleState::Active)
            .start()
            .await;
        let app = &t.app;
        let token = t.token("worker");

        let discovered = modern(app, &token, "server/discover", json!({})).await;
        assert_eq!(discovered.status, 200, "{}", discovered.body);
        let result = &discovered.body["result"];
        assert_eq!(result["supportedVersions"], json!(["2026-07-28"]));
        assert_eq!(result["capabilities"]["tools"]["listChanged"], false);
        assert_eq!(result["resultType"], "complete");
        assert_eq!(result["cacheScope"], "private");
        assert_eq!(result["ttlMs"], 0);
        assert_eq!(
            result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "agentry"
        );
        let listed = modern(app, &token, "tools/list", json!({})).await;
        let result = &listed.body["result"];
        assert_eq!(result["resultType"], "complete");
        assert_eq!(
            result["cacheScope"], "private",
            "answers depend on the credential"
        );
        assert_eq!(result["tools"][1]["name"], "br_agent_status");
        let called = modern(
            app,
            &token,
            "tools/call",
            json!({ "name": "br_agent_limits", "arguments": {} }),
        )
        .await;
        let result = &called.body["result"];
        assert_eq!(result["resultType"], "complete");
        assert_eq!(result["isError"], false);
        assert_eq!(
            result["structuredContent"]["limits"]["enforced_daily_usd"],
            5.0
        );
        // An unknown tool is the request's fault, as in the handshake era,
        // and this revision answers invalid params with 400.
        let unknown = modern(app, &token, "tools/call", json!({ "name": "br_nothing" })).await;
        assert_eq!(unknown.status, 400, "{}", unknown.body);
        assert_eq!(unknown.body["error"]["code"], -32602);
        let unnamed = modern(app, &token, "tools/call", json!({})).await;
        assert_eq!(unnamed.status, 400, "{}", unnamed.body);
        assert_eq!(unnamed.body["error"]["code"], -32602);

        // A client of this revision posts requests and notifications only.
        let headers = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ];
        for not_a_request in [
            json!({ "jsonrpc": "2.0", "id": 1, "result": {} }),
            json!({ "jsonrpc": "2.0", "id": 1 }),
            json!({ "jsonrpc": "2.0", "id": 1, "method": 7 }),
        ] {
            let answer = post(app, Some(&token), &headers, not_a_request.to_string()).await;
            assert_eq!(answer.status, 400, "{not_a_request}: {}", answer.body);
            assert_eq!(answer.body["error"]["code"], -32600, "{not_a_request}");
        }
        let notification = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let answer = post(app, Some(&token), &headers, notification.to_string()).await;
        assert_eq!(answer.status, 202);
        // No handshake in this revision; an unknown method is a 404.
        let initialize = modern(app, &token, "initialize", json!({})).await;
        assert_eq!(initialize.status, 404);
        assert_eq!(initialize.body["error"]["code"], -32601);
        assert_eq!(initialize.body["error"]["data"], "initialize");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stateless_revision_refuses_a_request_whose_headers_disagree() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_agent("worker", LifecycleState::Active)
            .start()
            .await;
        let app = &t.app;
        let token = t.token("worker");
        let envelope = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let send = |headers: Vec<(&'static str, &'static str)>, params: Value| {
            let message =
                json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params });
            let token = token.clone();
            async move { post(app, Some(&token), &headers, message.to_string()).await }
        };
        let agreeing = vec![
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "br_agent_status"),
        ];
        let call = json!({ "name": "br_agent_status", "_meta": envelope });
        let fine = send(agreeing.clone(), call.clone()).await;
        assert_eq!(fine.body["result"]["isError"], false, "{}", fine.body);

        let no_envelope = send(agreeing.clone(), json!({ "name": "br_agent_status" })).await;
        assert_eq!(no_envelope.status, 400);
        assert_eq!(no_envelope.body["error"]["code"], -32602);
        let half = json!({ "name": "br_agent_status", "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28" } });
        let half_envelope = send(agreeing.clone(), half).await;
        assert_eq!(half_envelope.body["error"]["code"], -32602);
        for (index, wrong) in [("mcp-method", "tools/list"), ("mcp-name", "br_spend")] {
            let mut headers = agreeing.clone();
            headers.retain(|(name, _)| *name != index);
            headers.push((index, wrong));
            let mismatched = send(headers, call.clone()).await;
            assert_eq!(mismatched.status, 400, "{index}");
            assert_eq!(mismatched.body["error"]["code"], -32020, "{index}");
        }
        let mut unnamed = agreeing.clone();
        unnamed.retain(|(name, _)| *name != "mcp-name");
        let missing_name = send(unnamed, call.clone()).await;
        assert_eq!(missing_name.body["error"]["code"], -32020);
        let older = json!({ "name": "br_agent_status", "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2025-11-25",
            "io.modelcontextprotocol/clientCapabilities": {} } });
        let envelope_disagrees = send(agreeing.clone(), older).await;
        assert_eq!(envelope_disagrees.body["error"]["code"], -32020);
        // Two revisions, of different eras: refused before either is read.
        let mut two_eras = vec![("mcp-protocol-version", "2025-06-18")];
        two_eras.extend(agreeing.iter().copied());
        let mixed = send(two_eras, call.clone()).await;
        assert_eq!(mixed.status, 400, "{}", mixed.body);
        assert_eq!(mixed.body["error"]["code"], -32020);
        // A routing header twice, even with the same value, is refused: a
        // proxy and this server might read different copies.
        for twice in ["mcp-method", "mcp-name", "mcp-protocol-version"] {
            let mut headers = agreeing.clone();
            let value = headers.iter().find(|(name, _)| *name == twice).unwrap().1;
            headers.push((twice, value));
            let doubled = send(headers, call.clone()).await;
            assert_eq!(doubled.status, 400, "{twice}");
            assert_eq!(doubled.body["error"]["code"], -32020, "{twice}");
        }
    })
    .await;
}
