//! Hostile and broken bodies: each a clear 4xx in problem+json, none read
//! past its limit.

use actix_web::test;
use agentry_domain::{ApiKeyRole, LifecycleState};
use agentry_store::now;
use agentry_testkit::on_both_backends;

use crate::test_app::TestApp;
use crate::{agent, send, tenant_key};

#[tokio::test(flavor = "multi_thread")]
async fn oversized_nested_broken_and_mislabelled_bodies_get_clear_4xx() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, tenant) = (&t.state, &t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Admin).await;
        let key = key.expose();
        let json = |body: Vec<u8>| {
            test::TestRequest::post()
                .uri("/v1/agent/bootstrap")
                .insert_header(("content-type", "application/json"))
                .set_payload(body)
        };
        let ten_megabytes = {
            let mut body = br#"{"agent_id":""#.to_vec();
            body.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
            body.extend(br#""}"#);
            body
        };
        let cases: Vec<(&str, test::TestRequest, u16, &str)> = vec![
            (
                "10 MB",
                json(ten_megabytes.clone()),
                413,
                "payload_too_large",
            ),
            (
                "nested",
                json([b"[".repeat(20_000), b"]".repeat(20_000)].concat()),
                400,
                "invalid_json",
            ),
            (
                "not UTF-8",
                json(b"{\"agent_id\": \"\xff\xfe\"}".to_vec()),
                400,
                "invalid_json",
            ),
            (
                "truncated",
                json(b"{\"agent_id\": ".to_vec()),
                400,
                "invalid_json",
            ),
            (
                "text/plain",
                test::TestRequest::post()
                    .uri("/v1/agent/bootstrap")
                    .insert_header(("content-type", "text/plain"))
                    .set_payload(r#"{"agent_id":"worker-1"}"#),
                415,
                "unsupported_media_type",
            ),
            (
                "no content type",
                test::TestRequest::post()
                    .uri("/v1/agent/bootstrap")
                    .set_payload(r#"{"agent_id":"worker-1"}"#),
                415,
                "unsupported_media_type",
            ),
        ];
        for (name, request, status, code) in cases {
            let (answered, problem) = send(app, request, name, Some(key)).await;
            assert_eq!(
                (answered, problem["code"].as_str()),
                (status, Some(code)),
                "{name}: {problem}"
            );
        }
        // The same without credentials on a public route: the limit holds
        // before anything else is read.
        let public = test::TestRequest::post()
            .uri("/api/v1/bootstrap")
            .insert_header(("content-type", "application/json"))
            .set_payload(ten_megabytes.clone());
        assert_eq!(send(app, public, "public 10 MB", None).await.0, 413);

        // A streamed upload past its limit: 413, and no file is left.
        let (status, created) = crate::call(
            app,
            actix_web::http::Method::POST,
            "/v1/provisioning/instances",
            Some(key),
            serde_json::json!({ "name": "big" }),
        )
        .await;
        assert_eq!(status, 201);
        let id = created["instance_id"].as_str().unwrap();
        let upload = test::TestRequest::put()
            .uri(&format!("/v1/provisioning/instances/{id}/website"))
            .insert_header(("content-type", "application/octet-stream"))
            .set_payload(ten_megabytes);
        let (status, problem) = send(app, upload, "upload", Some(key)).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (413, Some("artifact_too_large"))
        );
        let dir = state.settings.artifact_dir.join(id);
        let left = std::fs::read_dir(&dir)
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "nothing left in {}", dir.display());
    })
    .await;
}

/// The credential is judged before the body: a caller that is refused
/// hears why (401, 402, 403) whatever it sent, and learns nothing about
/// what the route would have made of its body.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_credential_is_answered_before_a_bad_body() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, tenant) = (&t.state, &t.app, t.tenant);
        let auditor = tenant_key(&db.store, tenant, ApiKeyRole::Auditor).await;
        let suspended = agent(&db.store, tenant, "paused", LifecycleState::Suspended).await;
        let suspended = state.mint_agent_token(&suspended, now()).unwrap().0;
        // Active, but its metadata does not let it delegate.
        let plain = agent(&db.store, tenant, "plain", LifecycleState::Active).await;
        let plain = state.mint_agent_token(&plain, now()).unwrap().0;
        // Well-formed, but no such key: only the database can say so.
        let unknown =
            agentry_auth::ApiKey::mint(agentry_auth::ApiKeyKind::Tenant(ApiKeyRole::Admin));
        let broken = |path: &str, credential: &str| {
            test::TestRequest::post()
                .uri(path)
                .insert_header(("content-type", "application/json"))
                .insert_header(("authorization", format!("Bearer {credential}")))
                .set_payload("{ not json")
        };
        let cases = [
            (
                "/v1/agent/bootstrap",
                unknown.expose(),
                401,
                "invalid_api_key",
            ),
            (
                "/v1/agent/bootstrap",
                auditor.expose(),
                403,
                "permission_denied",
            ),
            (
                "/v1/agent/spend",
                suspended.as_str(),
                402,
                "agent_suspended",
            ),
            (
                "/v1/agent/delegate",
                suspended.as_str(),
                402,
                "agent_suspended",
            ),
            (
                "/v1/agent/spend",
                auditor.expose(),
                403,
                "permission_denied",
            ),
            (
                "/v1/agent/holds",
                auditor.expose(),
                403,
                "permission_denied",
            ),
            (
                "/v1/agent/delegate",
                plain.as_str(),
                403,
                "delegation_not_allowed",
            ),
        ];
        for (path, credential, status, code) in cases {
            let (answered, problem) = send(app, broken(path, credential), path, None).await;
            assert_eq!(
                (answered, problem["code"].as_str()),
                (status, Some(code)),
                "{path}"
            );
        }
    })
    .await;
}
