//! Seed 002 end to end: one call provisions the instance, humans accept
//! invites and log in, the channel is readable by its members.

use actix_web::http::Method;
use agentry_testkit::on_both_backends;
use serde_json::{Value, json};

use crate::{app, call, get, state_for};

/// Seed 002's example request, as written.
fn seed_request() -> Value {
    json!({
        "primary_agent": {
            "email": "admin@localhost",
            "password": "secure-generated-password",
            "agent_profile": {
                "name": "research-coordinator",
                "display_name": "Research Coordinator",
                "description": "Main research coordination agent"
            }
        },
        "agents": [
            { "name": "data-collector", "display_name": "Data Collector", "description": "Scrapes and aggregates data sources" },
            { "name": "analyst", "display_name": "Analysis Agent", "description": "Performs statistical analysis" }
        ],
        "humans": [
            { "email": "researcher@university.edu", "display_name": "Dr. Smith", "role": "observer" }
        ],
        "default_channel": { "name": "general", "topic": "Research team coordination" }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn one_call_provisions_the_instance_and_humans_join_through_their_invites() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        db.store
            .create_tenant("default", agentry_store::now())
            .await
            .unwrap();
        assert_eq!(
            get(&app, "/api/v1/bootstrap/status", None).await.1["bootstrapped"],
            false
        );

        let (status, body) = call(
            &app,
            Method::POST,
            "/api/v1/bootstrap",
            None,
            seed_request(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let primary = &body["primary_agent"];
        assert_eq!(primary["email"], "admin@localhost");
        assert!(
            primary["api_key"]
                .as_str()
                .unwrap()
                .starts_with("agy_agent_")
        );
        assert!(
            primary["api_key_id"].is_string()
                && primary["user_id"].is_string()
                && body["instance_id"].is_string()
        );
        assert_eq!(body["agents"].as_array().unwrap().len(), 2);
        assert_eq!(body["agents"][1]["name"], "analyst");
        let human = &body["humans"][0];
        let invite = human["invite_token"].as_str().unwrap().to_owned();
        assert!(invite.starts_with("inv_"));
        assert_eq!(
            human["invite_url"],
            format!("{}/invite?token={invite}", crate::PUBLIC_URL)
        );
        assert_eq!(body["channel"]["name"], "general");
        assert_eq!(body["channel"]["topic"], "Research team coordination");
        assert_eq!(
            body["channel"]["members"],
            json!([primary["user_id"], human["user_id"]])
        );

        // The agents are ordinary agents: their token and keys work elsewhere.
        let (status, me) = get(&app, "/v1/agent/status", primary["jwt_token"].as_str()).await;
        assert_eq!(
            (status, &me["profile"]["agentId"]),
            (200, &json!("research-coordinator"))
        );
        let (status, me) = get(
            &app,
            "/v1/agent/profiles/me",
            body["agents"][0]["api_key"].as_str(),
        )
        .await;
        assert_eq!(
            (status, &me["profile"]["agentId"]),
            (200, &json!("data-collector"))
        );

        let (status, again) = call(
            &app,
            Method::POST,
            "/api/v1/bootstrap",
            None,
            seed_request(),
        )
        .await;
        assert_eq!(
            (status, again["code"].as_str()),
            (409, Some("already_bootstrapped"))
        );
        let (_, status_body) = get(&app, "/api/v1/bootstrap/status", None).await;
        assert_eq!(status_body["bootstrapped"], true);
        assert_eq!(status_body["instance_id"], body["instance_id"]);

        // The human accepts the invite, once, and can then log in.
        let accept = json!({ "token": invite, "password": "a long human password" });
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/invite/accept",
            None,
            json!({ "token": invite, "password": "short" }),
        )
        .await;
        assert_eq!(
            status, 400,
            "the password policy is checked before the token is spent"
        );
        let (status, session) = call(
            &app,
            Method::POST,
            "/api/v1/invite/accept",
            None,
            accept.clone(),
        )
        .await;
        assert_eq!(status, 200, "{session}");
        assert_eq!(session["email"], "researcher@university.edu");
        let (status, used) = call(&app, Method::POST, "/api/v1/invite/accept", None, accept).await;
        assert_eq!((status, used["code"].as_str()), (410, Some("invite_used")));
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/invite/accept",
            None,
            json!({ "token": "inv_nope", "password": "a long human password" }),
        )
        .await;
        assert_eq!(status, 404);
        let login = |email: &str, password: &str| json!({ "email": email, "password": password });
        let (status, logged_in) = call(
            &app,
            Method::POST,
            "/api/v1/auth/login",
            None,
            login("Researcher@University.edu", "a long human password"),
        )
        .await;
        assert_eq!(status, 200, "{logged_in}");
        let (status, primary_login) = call(
            &app,
            Method::POST,
            "/api/v1/auth/login",
            None,
            login("admin@localhost", "secure-generated-password"),
        )
        .await;
        assert_eq!(status, 200, "{primary_login}");
        let (wrong_status, wrong) = call(
            &app,
            Method::POST,
            "/api/v1/auth/login",
            None,
            login("researcher@university.edu", "not the password"),
        )
        .await;
        let (unknown_status, unknown) = call(
            &app,
            Method::POST,
            "/api/v1/auth/login",
            None,
            login("nobody@example.com", "not the password"),
        )
        .await;
        assert_eq!((wrong_status, unknown_status), (401, 401));
        assert_eq!(wrong, unknown, "no user enumeration by message");

        // The channel is readable by its members only.
        let channel = format!(
            "/api/v1/channels/{}",
            body["channel"]["channel_id"].as_str().unwrap()
        );
        let (status, read) = get(&app, &channel, logged_in["jwt_token"].as_str()).await;
        assert_eq!(
            (status, &read["members"]),
            (200, &body["channel"]["members"])
        );
        assert_eq!(
            get(&app, &channel, primary["api_key"].as_str()).await.0,
            200
        );
        assert_eq!(
            get(&app, &channel, body["agents"][0]["api_key"].as_str())
                .await
                .0,
            404,
            "not a member"
        );
        assert_eq!(get(&app, &channel, None).await.0, 401);
        // A suspended primary agent hears why, not a generic 401.
        let tenant = db.store.instance_tenant().await.unwrap().unwrap();
        let admin = crate::tenant_key(&db.store, tenant, agentry_domain::ApiKeyRole::Admin).await;
        let (status, _) = call(
            &app,
            Method::PATCH,
            "/v1/agent/profiles/lifecycle/research-coordinator",
            Some(admin.expose()),
            json!({ "state": "suspended" }),
        )
        .await;
        assert_eq!(status, 200);
        let (status, problem) = get(&app, &channel, primary["api_key"].as_str()).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (402, Some("agent_suspended"))
        );

        let (status, page) = crate::send(
            &app,
            actix_web::test::TestRequest::get().uri("/invite?token=x"),
            "/invite",
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(page, Value::Null, "an HTML page, not JSON");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_validation_problem_is_reported_at_once_and_nothing_is_written() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let request = json!({
            "primary_agent": {
                "email": "not-an-email",
                "password": "short",
                "agent_profile": { "name": "Bad Name", "display_name": "" }
            },
            "agents": [
                { "name": "twin", "display_name": "One" },
                { "name": "twin", "display_name": "Two" }
            ],
            "humans": [
                { "email": "a@example.com", "role": "admin" },
                { "email": "A@example.com" }
            ],
            "default_channel": { "name": "no_underscores!" }
        });
        let (status, body) = call(&app, Method::POST, "/api/v1/bootstrap", None, request).await;
        assert_eq!(status, 400);
        let detail = body["detail"].as_str().unwrap();
        for field in [
            "primary_agent.email",
            "primary_agent.password",
            "primary_agent.agent_profile.name",
            "primary_agent.agent_profile.display_name",
            "agents[1].name",
            "humans[0].role",
            "humans[1].email",
            "default_channel.name",
        ] {
            assert!(detail.contains(field), "{field} missing from: {detail}");
        }
        for table in ["users", "agents", "api_keys", "instance", "channels"] {
            assert_eq!(db.count(table).await, 0, "{table}");
        }
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/bootstrap",
            None,
            json!({ "primary_agent": {} }),
        )
        .await;
        assert_eq!(status, 400);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_concurrent_first_bootstraps_give_one_201_and_nine_409() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let calls = (0..10).map(|_| {
            call(
                &app,
                Method::POST,
                "/api/v1/bootstrap",
                None,
                seed_request(),
            )
        });
        let answers = futures_util::future::join_all(calls).await;
        let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
        assert_eq!(
            statuses.iter().filter(|status| **status == 201).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|status| **status == 409).count(),
            9,
            "{statuses:?}"
        );
        assert_eq!(db.count("users").await, 2);
        assert_eq!(db.count("instance").await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_after_the_channel_insert_leaves_no_row_behind() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let tenants_before = db.count("tenants").await;
        agentry_store::FAIL_BOOTSTRAP_AFTER_CHANNEL
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/bootstrap",
            None,
            seed_request(),
        )
        .await;
        agentry_store::FAIL_BOOTSTRAP_AFTER_CHANNEL
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(status, 503);
        for table in [
            "users",
            "agents",
            "api_keys",
            "one_time_tokens",
            "invites",
            "channels",
            "memberships",
            "instance",
        ] {
            assert_eq!(db.count(table).await, 0, "{table} kept a row");
        }
        assert_eq!(db.count("tenants").await, tenants_before);
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/bootstrap",
            None,
            seed_request(),
        )
        .await;
        assert_eq!(status, 201, "the instance can still be bootstrapped");
    })
    .await;
}
