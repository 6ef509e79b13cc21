//! The headers every answer carries, whoever answers: our handlers, our
//! errors, and actix's own 404 and 405.

use actix_web::http::Method;
use actix_web::test;
use agentry_domain::ApiKeyRole;
use serde_json::json;

use crate::tenant_key;
use crate::test_app::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_is_nosniff_and_uncacheable_unless_it_says_otherwise() {
    let db = agentry_testkit::sqlite_db().await;
    let t = TestApp::on(&db).start().await;
    let (app, acme) = (&t.app, t.tenant);
    let provisioner = tenant_key(&db.store, acme, ApiKeyRole::Provisioner).await;
    let bearer = format!("Bearer {}", provisioner.expose());
    let requests = [
        ("healthz", test::TestRequest::get().uri("/healthz")),
        (
            "actix's 404",
            test::TestRequest::get().uri("/no/such/route"),
        ),
        (
            "actix's 405",
            test::TestRequest::delete().uri("/v1/agent/bootstrap"),
        ),
        (
            "a made-up method",
            test::TestRequest::default()
                .method(Method::from_bytes(b"BREW").unwrap())
                .uri("/healthz"),
        ),
        (
            "a refused credential",
            test::TestRequest::get()
                .uri("/v1/agent/status")
                .insert_header(("authorization", "Bearer agy_nonsense")),
        ),
        (
            "a JSON error",
            test::TestRequest::post()
                .uri("/v1/agent/bootstrap")
                .insert_header(("authorization", bearer.as_str()))
                .insert_header(("content-type", "application/json"))
                .set_payload("{not json"),
        ),
        (
            "a bootstrap's token",
            test::TestRequest::post()
                .uri("/v1/agent/bootstrap")
                .insert_header(("authorization", bearer.as_str()))
                .set_json(json!({ "agent_id": "headers-01" })),
        ),
    ];
    for (what, request) in requests {
        let response = test::call_service(app, request.to_request()).await;
        let headers = response.headers();
        assert_eq!(
            headers.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{what} ({})",
            response.status()
        );
        assert_eq!(
            headers.get("cache-control").map(|v| v.as_bytes()),
            Some(&b"no-store"[..]),
            "{what} ({})",
            response.status()
        );
        assert!(
            headers.get("strict-transport-security").is_none(),
            "{what}: HSTS is for the TLS listener only"
        );
        if what == "a bootstrap's token" {
            assert_eq!(response.status(), 201);
        }
    }
    // The one public, cacheable answer keeps its own policy.
    let response = test::call_service(
        app,
        test::TestRequest::get()
            .uri("/.well-known/jwks.json")
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("cache-control").unwrap(),
        "public, max-age=300"
    );
    assert_eq!(
        response.headers().get("x-content-type-options").unwrap(),
        "nosniff"
    );
}
