//! Secrets never reach the logs: everything this process logs while keys
//! and tokens are minted, used, refused and revoked is captured and searched.

use std::io::Write;
use std::sync::{Arc, Mutex};

use agentry_auth::ApiKeyKind;
use agentry_domain::{ApiKeyRole, LifecycleState};
use agentry_store::now;
use agentry_testkit::sqlite_db;

use actix_web::http::Method;

use crate::test_app::TestApp;
use crate::{api_key, call, get, tenant_key};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_key_or_token_appears_in_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Each test runs in its own process under nextest, so a global
    // subscriber sees only this test.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let db = sqlite_db().await;
    let t = TestApp::on(&db)
        .with_agent("worker", LifecycleState::Active)
        .start()
        .await;
    let (app, acme) = (&t.app, t.tenant);
    let worker = t.agent("worker");
    let token = t.token("worker");
    let (own_key, own_key_id) = api_key(&db.store, acme, ApiKeyKind::Agent, Some(worker)).await;
    let admin = tenant_key(&db.store, acme, ApiKeyRole::Admin).await;
    for credential in [
        token.as_str(),
        own_key.expose(),
        admin.expose(),
        "agy_admin_forged",
        "eyJhbGciOiJub25lIn0.e30.",
    ] {
        get(app, "/v1/agent/status", Some(credential)).await;
        get(app, "/test/profiles-read", Some(credential)).await;
    }
    db.store
        .revoke_api_key(acme, own_key_id, now())
        .await
        .unwrap();
    get(app, "/v1/agent/status", Some(own_key.expose())).await;
    // A full bootstrap, its token used, and a refused one.
    let provisioner = tenant_key(&db.store, acme, ApiKeyRole::Provisioner).await;
    let (status, bootstrapped) = call(
        app,
        Method::POST,
        "/v1/agent/bootstrap",
        Some(provisioner.expose()),
        serde_json::json!({ "agent_id": "logged-agent", "budget_daily_usd": 1 }),
    )
    .await;
    assert_eq!(status, 201);
    let bootstrap_jwt = bootstrapped["jwt"].as_str().unwrap().to_owned();
    get(app, "/v1/agent/status", Some(&bootstrap_jwt)).await;
    call(
        app,
        Method::POST,
        "/v1/agent/bootstrap",
        Some(&bootstrap_jwt),
        serde_json::json!({ "agent_id": "x-y-z" }),
    )
    .await;

    // A seed 002 instance bootstrap, an invite accepted, a login.
    let instance = serde_json::json!({
        "primary_agent": {
            "email": "admin@example.com",
            "password": "primary password that must not leak",
            "agent_profile": { "name": "coordinator", "display_name": "Coordinator" }
        },
        "humans": [{ "email": "human@example.com" }]
    });
    let (status, provisioned) = call(app, Method::POST, "/api/v1/bootstrap", None, instance).await;
    assert_eq!(status, 201, "{provisioned}");
    let invite = provisioned["humans"][0]["invite_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let human_password = "human password that must not leak";
    call(
        app,
        Method::POST,
        "/api/v1/invite/accept",
        None,
        serde_json::json!({ "token": invite, "password": human_password }),
    )
    .await;
    call(app, Method::POST, "/api/v1/auth/login", None, serde_json::json!({ "email": "human@example.com", "password": "wrong password, also secret" })).await;
    let primary_key = provisioned["primary_agent"]["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = db
        .store
        .user_by_email(
            db.store.instance_tenant().await.unwrap().unwrap(),
            &"human@example.com".parse().unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.password_hash.unwrap().starts_with("$argon2id$"),
        "passwords are stored as argon2id"
    );

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty(), "the capture works: something was logged");
    let signature = token.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("agent token", token.as_str()),
        ("token signature", signature),
        ("agent key", own_key.expose()),
        ("admin key", admin.expose()),
        ("provisioner key", provisioner.expose()),
        ("bootstrap token", bootstrap_jwt.as_str()),
        (
            "primary agent password",
            "primary password that must not leak",
        ),
        ("human password", human_password),
        ("failed password", "wrong password, also secret"),
        ("invite token", invite.as_str()),
        ("primary agent key", primary_key.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in the logs");
    }
}
