//! The service around the routes: health, readiness, request ids, and
//! problem+json for routes and methods that do not exist.

use actix_web::http::Method;
use actix_web::test;
use agentry_http::AppState;
use agentry_store::{DatabaseUrl, PoolOptions, Store};
use agentry_testkit::on_both_backends;
use serde_json::json;

use crate::{app, call, get, state_for};

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_the_unknown_answer_as_json() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        assert_eq!(
            get(&app, "/healthz", None).await,
            (200, json!({ "status": "ok" }))
        );
        let (status, body) = get(&app, "/readyz", None).await;
        assert_eq!((status, &body["status"]), (200, &json!("ok")));
        assert_eq!(body["database"], db.backend().as_str());
        let (status, body) = get(&app, "/no/such/route", None).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
        let (status, body) =
            call(&app, Method::DELETE, "/v1/agent/bootstrap", None, json!({})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (405, Some("method_not_allowed"))
        );
        let response = test::call_service(
            &app,
            test::TestRequest::put()
                .uri("/v1/agent/profiles/me")
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), 405);
        // `/profiles/me` and `/profiles/{agent_id}` both match the path.
        assert_eq!(
            response.headers().get("allow").unwrap(),
            "GET, PATCH, DELETE"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_response_carries_a_request_id() {
    let db = agentry_testkit::sqlite_db().await;
    let state = state_for(&db).await;
    let app = app(&state).await;
    let minted =
        test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
    let id = minted
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let echoed = test::TestRequest::get()
        .uri("/nope")
        .insert_header(("x-request-id", "trace-abc-123"))
        .to_request();
    let echoed = test::call_service(&app, echoed).await;
    assert_eq!(
        echoed.headers().get("x-request-id").unwrap(),
        "trace-abc-123"
    );
    let hostile = test::TestRequest::get()
        .uri("/healthz")
        .insert_header(("x-request-id", "a b\"c"))
        .to_request();
    let hostile = test::call_service(&app, hostile).await;
    assert_ne!(
        hostile.headers().get("x-request-id").unwrap(),
        "a b\"c",
        "not echoed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_fails_while_the_database_is_unreachable() {
    let db = agentry_testkit::sqlite_db().await;
    let working = state_for(&db).await;
    // A PostgreSQL port nothing listens on.
    let url = DatabaseUrl::parse("postgres://postgres@127.0.0.1:1/agentry").unwrap();
    let options = PoolOptions {
        wait_timeout: std::time::Duration::from_secs(2),
        ..PoolOptions::default()
    };
    let unreachable = Store::connect(&url, &options).unwrap();
    let state = AppState::new(
        unreachable,
        working.keys.clone(),
        (*working.settings).clone(),
    );
    let app = app(&state).await;
    let (status, body) = get(&app, "/readyz", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("database_unavailable"))
    );
    assert!(body["detail"].as_str().unwrap().contains("postgres"));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_was_answered_by_route_pattern() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        for _ in 0..3 {
            get(&app, "/healthz", None).await;
        }
        // Two different paths of one pattern are one series.
        get(&app, "/v1/agent/profiles/one-agent", None).await;
        get(&app, "/v1/agent/profiles/another", None).await;
        get(&app, "/no/such/route", None).await;
        let response = test::call_service(
            &app,
            test::TestRequest::get().uri("/metrics").to_request(),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert!(
            response
                .headers()
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let text = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
        let value = |series: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(series))
                .map(|rest| rest.trim().to_owned())
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        };
        assert_eq!(
            value(r#"agentry_http_requests_total{route="/healthz",method="GET",status="200"}"#),
            "3"
        );
        assert_eq!(
            value(r#"agentry_http_requests_total{route="/v1/agent/profiles/{agent_id}",method="GET",status="401"}"#),
            "2"
        );
        assert_eq!(
            value(r#"agentry_http_requests_total{route="unmatched",method="GET",status="404"}"#),
            "1"
        );
        assert!(!text.contains("one-agent"), "paths never become labels");
        let backend = db.backend().as_str();
        value(&format!("agentry_db_pool_max{{backend=\"{backend}\"}}"));
    })
    .await;
}

/// A stopping server flushes the audit queue (`agentryd` does, after its
/// last request): the flush answers only once every event queued before it
/// is in the trail, however long the database takes.
#[tokio::test(flavor = "multi_thread")]
async fn a_flush_waits_until_every_audit_event_queued_before_it_is_written() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let acme = crate::tenant(&db.store, "acme").await;
        // Hold the writer back: SQLite's one write lock, or on PostgreSQL a
        // lock on the trail that its inserts must wait for.
        let hold = match db.backend() {
            agentry_store::Backend::Sqlite => "BEGIN IMMEDIATE",
            agentry_store::Backend::Postgres => {
                "BEGIN; LOCK TABLE audit_events IN SHARE ROW EXCLUSIVE MODE"
            }
        };
        let held = db.hold(hold).await;
        for n in 0..100 {
            state.audit(
                acme,
                agentry_store::NewAuditEvent {
                    actor: "test".into(),
                    action: "test.flush".into(),
                    target: Some("flush".into()),
                    outcome: n.to_string(),
                    detail: json!({}),
                },
            );
        }
        let flushing = {
            let state = state.clone();
            tokio::spawn(async move { state.flush_audit().await })
        };
        // However often the flush is given the chance, it cannot be done
        // while nothing can be written.
        for _ in 0..1_000 {
            tokio::task::yield_now().await;
        }
        assert!(
            !flushing.is_finished(),
            "the flush answered before the events were written"
        );
        held.release().await;
        flushing.await.unwrap();
        let written = db
            .store
            .audit_events_for(acme, "flush", 1_000)
            .await
            .unwrap();
        assert_eq!(written.len(), 100);
        assert_eq!(
            written[0].outcome, "99",
            "the last one queued is the newest"
        );
    })
    .await;
}
