//! Seed 002's workspace against a caller without credentials: it lives in a
//! tenant of its own, its primary agent administers it, setup can be
//! closed with a token, password guesses are throttled, sessions can be
//! ended, and a provisioner cannot take over agents a bootstrap did not make.

use std::sync::Arc;

use actix_web::http::Method;
use agentry_domain::ApiKeyRole;
use agentry_http::passwords::PasswordWork;
use agentry_testkit::on_both_backends;
use serde_json::{Value, json};

use crate::{app, call, get, state_for, state_with, tenant, tenant_key};

fn setup_request() -> Value {
    json!({
        "primary_agent": {
            "email": "admin@localhost",
            "password": "secure-generated-password",
            "agent_profile": { "name": "coordinator", "display_name": "Coordination Agent" }
        },
        "agents": [{ "name": "worker-1", "display_name": "Worker Agent 1" }],
        "humans": [{ "email": "human@example.com", "display_name": "Human Observer", "role": "observer" }],
        "default_channel": { "name": "team-chat" }
    })
}

fn login(email: &str, password: &str) -> Value {
    json!({ "email": email, "password": password })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workspace_is_a_tenant_of_its_own_administered_by_its_primary_agent() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let operator_tenant = tenant(&db.store, "default").await;
        let operator = tenant_key(&db.store, operator_tenant, ApiKeyRole::Admin).await;
        let (status, body) = call(
            &app,
            Method::POST,
            "/api/v1/bootstrap",
            None,
            setup_request(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let workspace = db.store.instance_tenant().await.unwrap().unwrap();
        assert_ne!(workspace, operator_tenant, "never the operator's tenant");
        let named = db
            .store
            .find_tenant_by_name("workspace")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(named.id, workspace);

        // The operator's keys do not see into the workspace...
        let (_, listed) = get(&app, "/v1/agent/profiles", Some(operator.expose())).await;
        assert_eq!(listed["total"], 0, "{listed}");
        let (status, _) = get(&app, "/v1/agent/profiles/worker-1", Some(operator.expose())).await;
        assert_eq!(status, 404);

        // ...and the primary agent's key administers it: it lists, limits
        // and suspends its agents.
        let primary_key = body["primary_agent"]["api_key"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, listed) = get(&app, "/v1/agent/profiles", Some(&primary_key)).await;
        assert_eq!((status, &listed["total"]), (200, &json!(2)), "{listed}");
        let (status, limits) = call(
            &app,
            Method::PATCH,
            "/v1/agent-limits",
            Some(&primary_key),
            json!({ "worker-1": { "maxBudgetUsd": 2.5, "maxRequestsPerMinute": 10 } }),
        )
        .await;
        assert_eq!(status, 200, "{limits}");
        let (status, _) = call(
            &app,
            Method::PATCH,
            "/v1/agent/profiles/lifecycle/worker-1",
            Some(&primary_key),
            json!({ "state": "suspended" }),
        )
        .await;
        assert_eq!(status, 200);
        let worker_key = body["agents"][0]["api_key"].as_str().unwrap();
        assert_eq!(get(&app, "/v1/agent/status", Some(worker_key)).await.0, 402);
        // A worker's own key is no admin key.
        let (status, refused) = get(&app, "/v1/agent/profiles", Some(worker_key)).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (403, Some("api_key_required"))
        );

        // A suspended primary agent's key administers nothing until it is
        // reactivated.
        let workspace_admin = tenant_key(&db.store, workspace, ApiKeyRole::Admin).await;
        let (status, _) = call(
            &app,
            Method::PATCH,
            "/v1/agent/profiles/lifecycle/coordinator",
            Some(workspace_admin.expose()),
            json!({ "state": "suspended" }),
        )
        .await;
        assert_eq!(status, 200);
        let (status, refused) = get(&app, "/v1/agent/profiles", Some(&primary_key)).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (402, Some("agent_suspended"))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_setup_token_closes_the_first_run_door() {
    on_both_backends(|db| async move {
        let state = state_with(&db, |settings| {
            settings.setup_token = Some("operator-chosen-setup-token".into());
        })
        .await;
        let app = app(&state).await;
        for credential in [None, Some("a-wrong-token")] {
            let (status, refused) = call(
                &app,
                Method::POST,
                "/api/v1/bootstrap",
                credential,
                setup_request(),
            )
            .await;
            assert_eq!(
                (status, refused["code"].as_str()),
                (401, Some("setup_token_required"))
            );
        }
        assert_eq!(db.count("users").await, 0, "nothing was written");
        let (status, body) = call(
            &app,
            Method::POST,
            "/api/v1/bootstrap",
            Some("operator-chosen-setup-token"),
            setup_request(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn common_passwords_are_refused_everywhere_a_password_is_set() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let mut request = setup_request();
        request["primary_agent"]["password"] = json!("password1234");
        let (status, refused) = call(&app, Method::POST, "/api/v1/bootstrap", None, request).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (400, Some("invalid_request"))
        );
        assert!(
            refused["detail"]
                .as_str()
                .unwrap()
                .contains("too easy to guess"),
            "{refused}"
        );
        let (_, body) = call(
            &app,
            Method::POST,
            "/api/v1/bootstrap",
            None,
            setup_request(),
        )
        .await;
        let invite = body["humans"][0]["invite_token"].as_str().unwrap();
        let (status, refused) = call(
            &app,
            Method::POST,
            "/api/v1/invite/accept",
            None,
            json!({ "token": invite, "password": "qwertyuiopasdf" }),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (400, Some("invalid_password"))
        );
        // The invite was not spent by the refusal.
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/invite/accept",
            None,
            json!({ "token": invite, "password": "a long human password" }),
        )
        .await;
        assert_eq!(status, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn guesses_at_one_account_are_throttled_before_they_are_judged() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let (_, _) = call(
            &app,
            Method::POST,
            "/api/v1/bootstrap",
            None,
            setup_request(),
        )
        .await;
        let mut judged = 0;
        let mut throttled = None;
        for _ in 0..20 {
            let (status, body) = call(
                &app,
                Method::POST,
                "/api/v1/auth/login",
                None,
                login("admin@localhost", "a wrong guess at it"),
            )
            .await;
            match status {
                401 => judged += 1,
                429 => {
                    throttled = Some(body);
                    break;
                }
                other => panic!("{other}: {body}"),
            }
        }
        assert_eq!(judged, 5, "half the minute's 10 attempts at once");
        assert_eq!(throttled.unwrap()["code"], "too_many_attempts");
        // The right password is throttled too: nothing is judged.
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/auth/login",
            None,
            login("admin@localhost", "secure-generated-password"),
        )
        .await;
        assert_eq!(status, 429);
        // Another account is not.
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/auth/login",
            None,
            login("human@example.com", "a wrong guess at it"),
        )
        .await;
        assert_eq!(status, 401);

        // Invite acceptance is throttled per invite the same way.
        let mut statuses = Vec::new();
        for _ in 0..7 {
            let (status, _) = call(
                &app,
                Method::POST,
                "/api/v1/invite/accept",
                None,
                json!({ "token": "inv_guessed", "password": "a long human password" }),
            )
            .await;
            statuses.push(status);
        }
        assert_eq!(statuses, [404, 404, 404, 404, 404, 429, 429]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retry_after_of_a_throttled_login_is_sent() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let request = || {
            actix_web::test::TestRequest::post()
                .uri("/api/v1/auth/login")
                .set_json(login("nobody@example.com", "a wrong guess at it"))
                .to_request()
        };
        let mut response = None;
        for _ in 0..6 {
            response = Some(actix_web::test::call_service(&app, request()).await);
        }
        let response = response.unwrap();
        assert_eq!(response.status().as_u16(), 429);
        let retry_after: u64 = response
            .headers()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=12).contains(&retry_after), "{retry_after}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invite_is_looked_up_before_any_hashing_and_hashing_is_bounded() {
    on_both_backends(|db| async move {
        let mut state = state_for(&db).await;
        // No hashing slot at all: any caller that reaches argon2 hears 503.
        state.passwords = Arc::new(PasswordWork::with_queue(1, 0));
        let app = app(&state).await;
        let (status, problem) = call(
            &app,
            Method::POST,
            "/api/v1/invite/accept",
            None,
            json!({ "token": "inv_unknown", "password": "a long human password" }),
        )
        .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (404, Some("invite_not_found")),
            "an unknown token is refused without hashing"
        );
        let (status, problem) = call(
            &app,
            Method::POST,
            "/api/v1/auth/login",
            None,
            login("nobody@example.com", "a wrong guess at it"),
        )
        .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (503, Some("unavailable")),
            "a login past the queue is turned away at once"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_and_a_password_change_end_every_older_session() {
    on_both_backends(|db| async move {
        // More sign-ins than one account's throttle lets through a minute.
        let state = state_with(&db, |settings| settings.login_attempts_per_minute = 0).await;
        let app = app(&state).await;
        let (_, body) = call(
            &app,
            Method::POST,
            "/api/v1/bootstrap",
            None,
            setup_request(),
        )
        .await;
        let channel = format!(
            "/api/v1/channels/{}",
            body["channel"]["channel_id"].as_str().unwrap()
        );
        let email = "admin@localhost";
        let sign_in = async |password: &str| {
            let (status, session) = call(
                &app,
                Method::POST,
                "/api/v1/auth/login",
                None,
                login(email, password),
            )
            .await;
            assert_eq!(status, 200, "{session}");
            session["jwt_token"].as_str().unwrap().to_owned()
        };
        let first = sign_in("secure-generated-password").await;
        let second = sign_in("secure-generated-password").await;
        assert_eq!(get(&app, &channel, Some(&first)).await.0, 200);
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/auth/logout",
            Some(&second),
            json!({}),
        )
        .await;
        assert_eq!(status, 204);
        for ended in [&first, &second] {
            let (status, problem) = get(&app, &channel, Some(ended)).await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (401, Some("invalid_token"))
            );
        }
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/auth/logout",
            Some(&first),
            json!({}),
        )
        .await;
        assert_eq!(status, 401);

        let third = sign_in("secure-generated-password").await;
        let change =
            |current: &str, new: &str| json!({ "current_password": current, "new_password": new });
        let (status, problem) = call(
            &app,
            Method::POST,
            "/api/v1/auth/password",
            Some(&third),
            change("not the password", "another long passphrase here"),
        )
        .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (401, Some("invalid_credentials"))
        );
        let (status, problem) = call(
            &app,
            Method::POST,
            "/api/v1/auth/password",
            Some(&third),
            change("secure-generated-password", "password1234"),
        )
        .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some("invalid_password"))
        );
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/auth/password",
            Some(&third),
            change("secure-generated-password", "another long passphrase here"),
        )
        .await;
        assert_eq!(status, 204);
        assert_eq!(get(&app, &channel, Some(&third)).await.0, 401);
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/auth/login",
            None,
            login(email, "secure-generated-password"),
        )
        .await;
        assert_eq!(status, 401, "the old password is gone");
        let fourth = sign_in("another long passphrase here").await;
        assert_eq!(get(&app, &channel, Some(&fourth)).await.0, 200);
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/auth/password",
            None,
            change(
                "another long passphrase here",
                "yet another long passphrase",
            ),
        )
        .await;
        assert_eq!(status, 401);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provisioner_cannot_take_over_an_agent_no_bootstrap_made() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let tenant = tenant(&db.store, "fleet").await;
        let admin = tenant_key(&db.store, tenant, ApiKeyRole::Admin).await;
        let provisioner = tenant_key(&db.store, tenant, ApiKeyRole::Provisioner).await;
        let bootstrap = |name: &str| json!({ "agent_id": name, "budget_daily_usd": 5.0 });

        // A registered agent (seed 004) and a profile (seed 001).
        let register = actix_web::test::TestRequest::post()
            .uri("/api/v1/agents")
            .insert_header(("authorization", format!("Bearer {}", admin.expose())))
            .insert_header(("x-bulwark-tenant", tenant.to_string()))
            .set_json(json!({ "name": "registered-agent", "scopes": ["read:customers"], "trustLevel": "medium" }));
        let registered = actix_web::test::call_service(&app, register.to_request()).await;
        assert_eq!(registered.status().as_u16(), 201);
        let (status, _) = call(
            &app,
            Method::POST,
            "/v1/agent/profiles",
            Some(admin.expose()),
            json!({ "agentId": "profiled-agent" }),
        )
        .await;
        assert_eq!(status, 201);

        for name in ["registered-agent", "profiled-agent"] {
            let (status, refused) = call(
                &app,
                Method::POST,
                "/v1/agent/bootstrap",
                Some(provisioner.expose()),
                bootstrap(name),
            )
            .await;
            assert_eq!(
                (status, refused["code"].as_str()),
                (409, Some("agent_not_bootstrapped")),
                "{name}: {refused}"
            );
            assert!(refused.get("jwt").is_none());
        }
        // An admin may still activate the profile it made.
        let (status, activated) = call(
            &app,
            Method::POST,
            "/v1/agent/bootstrap",
            Some(admin.expose()),
            bootstrap("profiled-agent"),
        )
        .await;
        assert_eq!(status, 200, "{activated}");
        // And the provisioner's own agents repeat as seed 000 says, also
        // from the cache of ready agents.
        for expected in [201, 200, 200] {
            let (status, answer) = call(
                &app,
                Method::POST,
                "/v1/agent/bootstrap",
                Some(provisioner.expose()),
                bootstrap("bootstrapped-agent"),
            )
            .await;
            assert_eq!(status, expected, "{answer}");
        }
        // The admin's activation filed the profiled agent as ready; the
        // provisioner still may not have it.
        let (status, _) = call(
            &app,
            Method::POST,
            "/v1/agent/bootstrap",
            Some(provisioner.expose()),
            bootstrap("profiled-agent"),
        )
        .await;
        assert_eq!(status, 409);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_change_is_judged_like_any_json_route_and_throttled_like_a_login() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let (_, _) = call(&app, Method::POST, "/api/v1/bootstrap", None, setup_request()).await;
        let (_, session) = call(
            &app,
            Method::POST,
            "/api/v1/auth/login",
            None,
            login("admin@localhost", "secure-generated-password"),
        )
        .await;
        let session = session["jwt_token"].as_str().unwrap().to_owned();
        let path = "/api/v1/auth/password";
        let raw = |content_type: &str, body: Vec<u8>| {
            actix_web::test::TestRequest::post()
                .uri(path)
                .insert_header(("content-type", content_type.to_owned()))
                .set_payload(body)
        };
        let (status, problem) = crate::send(
            &app,
            raw("text/plain", b"current_password=x".to_vec()),
            path,
            Some(&session),
        )
        .await;
        assert_eq!((status, problem["code"].as_str()), (415, Some("unsupported_media_type")));
        let huge = format!(r#"{{"current_password":"{}","new_password":"x"}}"#, "a".repeat(70_000));
        let (status, problem) =
            crate::send(&app, raw("application/json", huge.into_bytes()), path, Some(&session)).await;
        assert_eq!((status, problem["code"].as_str()), (413, Some("payload_too_large")));
        // Wrong current passwords spend the account's budget (one went to
        // the login above).
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let (status, _) = call(
                &app,
                Method::POST,
                path,
                Some(&session),
                json!({ "current_password": "a wrong guess at it", "new_password": "another long passphrase here" }),
            )
            .await;
            statuses.push(status);
        }
        assert_eq!(statuses, [401, 401, 401, 401, 429]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workspace_names_keep_their_case_and_cannot_repeat_in_another_case() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let mut request = setup_request();
        request["agents"] = json!([
            { "name": "Worker-1", "display_name": "Worker Agent 1" },
            { "name": "worker-1", "display_name": "Worker Agent 1 again" }
        ]);
        let (status, refused) = call(
            &app,
            Method::POST,
            "/api/v1/bootstrap",
            None,
            request.clone(),
        )
        .await;
        assert_eq!(status, 400, "{refused}");
        assert!(
            refused["detail"]
                .as_str()
                .unwrap()
                .contains("ignoring case"),
            "{refused}"
        );
        assert_eq!(db.count("agents").await, 0, "nothing was written");

        request["primary_agent"]["agent_profile"]["name"] = json!("Coordinator");
        request["agents"] = json!([{ "name": "Research-Bot-7", "display_name": "Research" }]);
        let (status, body) = call(&app, Method::POST, "/api/v1/bootstrap", None, request).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["agents"][0]["name"], "Research-Bot-7", "{body}");
        let primary_key = body["primary_agent"]["api_key"].as_str().unwrap();
        // Seeds 000/001 reach the same agent by the name lowercased.
        let (status, profile) =
            get(&app, "/v1/agent/profiles/research-bot-7", Some(primary_key)).await;
        assert_eq!(
            (status, &profile["profile"]["agentId"]),
            (200, &json!("research-bot-7")),
            "{profile}"
        );
        let (status, _) = get(&app, "/v1/agent/profiles/coordinator", Some(primary_key)).await;
        assert_eq!(status, 200);
    })
    .await;
}
