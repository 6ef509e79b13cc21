//! Signing-key revocation, the lifetime bound on tokens, the negative cache
//! of unknown API keys, and the request budget of tenant API keys.

use actix_web::test;
use agentry_auth::{ApiKey, ApiKeyKind, Audience};
use agentry_domain::{ApiKeyRole, LifecycleState};
use agentry_http::{AppState, new_signing_key};
use agentry_store::{Change, PoolOptions, SigningKeyRevocation, Store, now};
use agentry_testkit::on_both_backends;
use time::Duration;

use crate::test_app::TestApp;
use crate::{agent, app, get, replica_state, send, state_for, state_with, tenant, tenant_key};

fn kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// A second process over the same database: its own store (following the
/// change feed) and keys unsealed with the same master key.
async fn replica(db: &agentry_testkit::TestDb, first: &AppState) -> AppState {
    let store = Store::connect(&db.url, &PoolOptions::default()).unwrap();
    let mut heard = store.subscribe_changes();
    store.start_change_listener(&db.url).await.unwrap();
    if db.backend() == agentry_store::Backend::Postgres {
        // Distrusted until its first heartbeat comes back; listening once
        // it announces its resync: nothing is missed after.
        assert_eq!(heard.recv().await.unwrap(), Change::Untrusted);
        assert_eq!(heard.recv().await.unwrap(), Change::Resync);
    }
    replica_state(store, first).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_signing_key_stops_its_tokens_at_once_here_and_on_a_replica() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let other = replica(&db, &state).await;
        let other_app = app(&other).await;
        let app = app(&state).await;
        let acme = tenant(&db.store, "acme").await;
        let worker = agent(&db.store, acme, "worker", LifecycleState::Active).await;
        let (token, _) = state.mint_agent_token(&worker, now()).unwrap();
        let kid = state.keys.current().unwrap().kid().to_owned();
        // Verified, and so cached, on both.
        assert_eq!(get(&app, "/v1/agent/status", Some(&token)).await.0, 200);
        assert_eq!(
            get(&other_app, "/v1/agent/status", Some(&token)).await.0,
            200
        );
        let mut other_heard = other.store.subscribe_changes();

        let revoked = db
            .store
            .revoke_signing_key(&kid, new_signing_key(state.keys.master(), now()), now())
            .await
            .unwrap();
        let SigningKeyRevocation::Revoked {
            replaced_by: Some(replacement),
        } = revoked
        else {
            panic!("the current key is replaced: {revoked:?}");
        };

        let (status, body) = get(&app, "/v1/agent/status", Some(&token)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_token"))
        );
        let (_, jwks) = get(&app, "/.well-known/jwks.json", None).await;
        assert!(!kids(&jwks).contains(&kid), "{jwks}");
        // The background task reloads on the same change; here by hand.
        state.keys.reload(&db.store, now()).await.unwrap();
        assert_eq!(state.keys.current().unwrap().kid(), replacement);
        let (fresh, _) = state.mint_agent_token(&worker, now()).unwrap();
        assert_eq!(get(&app, "/v1/agent/status", Some(&fresh)).await.0, 200);
        assert_eq!(
            get(&app, "/v1/agent/status", Some(&token)).await.0,
            401,
            "a reload does not bring the revoked key back"
        );

        // The replica hears it on the change feed (PostgreSQL: on commit;
        // SQLite: within a poll) and refuses the token from then on.
        let heard = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                if let Ok(Change::SigningKeyRevoked(digest)) = other_heard.recv().await {
                    return digest;
                }
            }
        })
        .await
        .expect("the replica hears of the revocation");
        assert_eq!(heard, agentry_store::KidDigest::of(&kid));
        let (status, _) = get(&other_app, "/v1/agent/status", Some(&token)).await;
        assert_eq!(status, 401, "the replica's cached verification is gone");
        let (_, jwks) = get(&other_app, "/.well-known/jwks.json", None).await;
        assert!(!kids(&jwks).contains(&kid), "{jwks}");
        // The new key's tokens work there after its reload.
        other.keys.reload(&other.store, now()).await.unwrap();
        assert_eq!(
            get(&other_app, "/v1/agent/status", Some(&fresh)).await.0,
            200
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_well_signed_token_living_longer_than_we_mint_is_refused() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let worker = agent(&db.store, acme, "worker", LifecycleState::Active).await;
        let key = state.keys.current().unwrap();
        let sign = |lifetime: Duration| {
            key.sign(&state.issuer.claims(
                Audience::Agent,
                worker.id.as_uuid(),
                acme.as_uuid(),
                worker.credential_epoch,
                now(),
                lifetime,
                uuid::Uuid::now_v7(),
            ))
        };
        let longest = state.settings.max_token_ttl();
        assert_eq!(
            get(app, "/v1/agent/status", Some(&sign(longest))).await.0,
            200
        );
        let (status, body) = get(
            app,
            "/v1/agent/status",
            Some(&sign(longest + Duration::seconds(1))),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_token"))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_api_key_is_refused_from_memory_after_the_first_read() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let made_up = ApiKey::mint(ApiKeyKind::Tenant(ApiKeyRole::Admin));
        let (status, body) = get(&app, "/test/profiles-read", Some(made_up.expose())).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_api_key"))
        );
        // With the keys' table gone, only a refusal from memory can still
        // be a 401; any read of the database fails.
        db.execute_raw("ALTER TABLE api_keys RENAME TO api_keys_gone")
            .await;
        let (status, body) = get(&app, "/test/profiles-read", Some(made_up.expose())).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_api_key")),
            "{body}"
        );
        let another = ApiKey::mint(ApiKeyKind::Tenant(ApiKeyRole::Admin));
        let (status, _) = get(&app, "/test/profiles-read", Some(another.expose())).await;
        assert!(status >= 500, "a key not seen before reaches the database");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_key_past_its_requests_per_minute_hears_429_with_retry_after() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_settings(|settings| settings.api_key_rpm = 2)
            .start()
            .await;
        let (app, acme) = (&t.app, t.tenant);
        let key = tenant_key(&db.store, acme, ApiKeyRole::Admin).await;
        let other = tenant_key(&db.store, acme, ApiKeyRole::Admin).await;
        for _ in 0..2 {
            assert_eq!(
                get(app, "/test/profiles-read", Some(key.expose())).await.0,
                200
            );
        }
        let request = test::TestRequest::get()
            .uri("/test/profiles-read")
            .insert_header(("authorization", format!("Bearer {}", key.expose())))
            .to_request();
        let response = test::call_service(app, request).await;
        assert_eq!(response.status().as_u16(), 429);
        let retry_after: u64 = response
            .headers()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // Two a minute: the next one in about thirty seconds.
        assert!((1..=30).contains(&retry_after), "{retry_after}");
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body["code"], "rate_limited");
        // The budget is the key's own.
        assert_eq!(
            get(app, "/test/profiles-read", Some(other.expose()))
                .await
                .0,
            200
        );
    })
    .await;
}

/// Every operation a tenant key may call documents 429 (the OpenAPI
/// document adds it); each answers it once the key's budget is spent.
#[tokio::test(flavor = "multi_thread")]
async fn every_operation_taking_a_tenant_key_answers_429_past_the_budget() {
    let db = agentry_testkit::sqlite_db().await;
    let state = state_with(&db, |settings| settings.api_key_rpm = 1).await;
    let app = app(&state).await;
    let acme = tenant(&db.store, "acme").await;
    let document: serde_json::Value = serde_json::from_str(&agentry_http::openapi_json()).unwrap();
    let mut checked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let takes_tenant_key = operation["security"].as_array().is_some_and(|schemes| {
                schemes.iter().any(|scheme| scheme.get("api_key").is_some())
            });
            // The MCP endpoint answers a limited key's tool call with a
            // refusal result (tests/api/mcp.rs).
            if !takes_tenant_key || path == "/mcp" {
                continue;
            }
            assert!(
                operation["responses"].get("429").is_some(),
                "{method} {path} does not document 429"
            );
            let uri = path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        uuid::Uuid::now_v7().to_string()
                    } else {
                        segment.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let method: actix_web::http::Method = method.to_uppercase().parse().unwrap();
            let key = tenant_key(&db.store, acme, ApiKeyRole::Admin).await;
            let request = || {
                test::TestRequest::default()
                    .method(method.clone())
                    .uri(&uri)
                    .insert_header(("content-type", "application/json"))
            };
            // The first request spends the budget, whatever it answers.
            send(&app, request(), &uri, Some(key.expose())).await;
            let (status, body) = send(&app, request(), &uri, Some(key.expose())).await;
            // Routes for agents take an agent's own key; a tenant key is
            // refused there before any budget is counted.
            // So do seed 002's workspace routes (a session or a workspace
            // agent's credential).
            if status == 403
                && (body["code"] == "agent_credentials_required"
                    || body["code"] == "workspace_credentials_required")
            {
                continue;
            }
            assert_eq!(
                (status, body["code"].as_str()),
                (429, Some("rate_limited")),
                "{method} {uri}: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations checked");
}
