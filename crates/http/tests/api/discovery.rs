//! What an agent finds before and right after it has a credential:
//! `/.well-known/agents.json`, the playbook, and the bootstrap answer's
//! `next_steps`, each naming routes this server really serves.

use actix_web::http::Method;
use actix_web::test;
use agentry_domain::ApiKeyRole;
use agentry_testkit::on_both_backends;
use serde_json::{Value, json};

use crate::test_app::TestApp;
use crate::{PUBLIC_URL, call, get};

/// Whether `endpoint` ("METHOD /path") is an operation of the OpenAPI
/// document.
fn documented(document: &Value, endpoint: &str) -> bool {
    let Some((method, path)) = endpoint.split_once(' ') else {
        return false;
    };
    document["paths"][path][method.to_ascii_lowercase()].is_object()
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_json_names_served_routes_and_links_the_documents() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let app = &t.app;
        let (status, record) = get(app, "/.well-known/agents.json", None).await;
        assert_eq!(status, 200, "{record}");
        let (_, document) = get(app, "/openapi.json", None).await;

        assert_eq!(record["openapi"], format!("{PUBLIC_URL}/openapi.json"));
        assert_eq!(
            record["jwks"],
            format!("{PUBLIC_URL}/.well-known/jwks.json")
        );
        assert_eq!(record["mcp"]["endpoint"], format!("{PUBLIC_URL}/mcp"));
        assert_eq!(record["mcp"]["protocol_versions"][0], "2026-07-28");
        let capabilities = record["capabilities"].as_object().unwrap();
        for name in [
            "agent_bootstrap",
            "agent_self_awareness",
            "budgets",
            "delegation",
            "cert_exchange",
            "registry",
            "provisioning",
            "mcp",
        ] {
            let capability = &capabilities[name];
            let endpoints = capability["endpoints"].as_array().unwrap();
            assert!(!endpoints.is_empty(), "{name}: {capability}");
            for endpoint in endpoints {
                let endpoint = endpoint.as_str().unwrap();
                assert!(documented(&document, endpoint), "{name}: {endpoint}");
            }
            for method in capability["auth"].as_array().unwrap() {
                let method = method.as_str().unwrap();
                assert!(
                    record["auth_methods"][method]["description"].is_string(),
                    "{name} takes {method}, which auth_methods lacks"
                );
            }
        }
        assert_eq!(
            capabilities["agent_self_awareness"]["mcp_tools"],
            json!(["br_agent_status", "br_agent_limits", "br_agent_anomaly"])
        );
        assert!(
            capabilities["agent_self_awareness"]["auth"]
                .as_array()
                .unwrap()
                .contains(&json!("agent_jwt"))
        );

        // The links work: the JWKS has keys, the playbook is served.
        let (status, jwks) = get(app, "/.well-known/jwks.json", None).await;
        assert_eq!(status, 200);
        assert!(!jwks["keys"].as_array().unwrap().is_empty());
        let playbook_path = record["playbook"]
            .as_str()
            .unwrap()
            .strip_prefix(PUBLIC_URL)
            .unwrap()
            .to_owned();
        let response = test::call_service(
            app,
            test::TestRequest::get().uri(&playbook_path).to_request(),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert!(
            response
                .headers()
                .get("content-type")
                .is_some_and(|value| value.to_str().unwrap().starts_with("text/plain"))
        );
        let text = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
        assert!(
            text.contains(&format!("POST {PUBLIC_URL}/v1/agent/bootstrap")),
            "{text}"
        );
        assert!(!text.contains("{base}"), "every placeholder is filled");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn next_steps_has_the_seed_keys_each_pointing_at_a_served_route() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_key(ApiKeyRole::Provisioner)
            .start()
            .await;
        let app = &t.app;
        let (status, created) = call(
            app,
            Method::POST,
            "/v1/agent/bootstrap",
            Some(t.key(ApiKeyRole::Provisioner)),
            json!({ "agent_id": "next-steps" }),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let (_, document) = get(app, "/openapi.json", None).await;
        let steps = created["next_steps"].as_object().unwrap();
        for key in [
            "completions",
            "self_status",
            "memory",
            "delegate",
            "cert_exchange",
            "playbook",
        ] {
            assert!(steps.contains_key(key), "next_steps lacks {key}: {steps:?}");
        }
        assert_eq!(steps["self_status"], "GET /v1/agent/status");
        assert_eq!(steps["delegate"], "POST /v1/agent/delegate");
        assert_eq!(steps["cert_exchange"], "POST /v1/agent/auth/cert");
        for (key, value) in steps {
            let value = value.as_str().unwrap();
            if key == "playbook" {
                assert_eq!(value, format!("{PUBLIC_URL}/llms-agent-playbook.txt"));
            } else {
                assert!(documented(&document, value), "{key}: {value} is not served");
            }
        }
    })
    .await;
}
