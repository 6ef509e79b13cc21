//! Seed 001's operator routes end to end: profiles, lifecycle, agent-limits.

use actix_web::http::Method;
use agentry_auth::ApiKeyKind;
use agentry_domain::{ApiKeyRole, LifecycleState};
use agentry_store::now;
use agentry_testkit::on_both_backends;
use serde_json::json;

use crate::test_app::TestApp;
use crate::{agent, api_key, call, get, tenant_key};

#[tokio::test(flavor = "multi_thread")]
async fn profiles_are_created_listed_read_patched_and_deleted_by_role() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, acme) = (&t.app, t.tenant);
        let (admin, _) =
            api_key(&db.store, acme, ApiKeyKind::Tenant(ApiKeyRole::Admin), None).await;
        let operator = tenant_key(&db.store, acme, ApiKeyRole::Operator).await;
        let auditor = tenant_key(&db.store, acme, ApiKeyRole::Auditor).await;
        let provisioner = tenant_key(&db.store, acme, ApiKeyRole::Provisioner).await;
        // Seed 001's create body, as written.
        let create = json!({
            "agentId": "my-agent-01",
            "displayName": "Sales Assistant",
            "ownerId": "user-123",
            "costCenter": "sales-team",
            "budgetDailyUsd": 5.0,
            "budgetMonthlyUsd": 100.0,
            "role": "agent",
            "metadata": {}
        });
        let (status, body) = call(
            app,
            Method::POST,
            "/v1/agent/profiles",
            Some(operator.expose()),
            create.clone(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["profile"]["lifecycleState"], "provisioned");
        assert_eq!(body["profile"]["ownerId"], "user-123");
        let (status, body) = call(
            app,
            Method::POST,
            "/v1/agent/profiles",
            Some(operator.expose()),
            create.clone(),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (409, Some("agent_exists")));
        let (status, _) = call(
            app,
            Method::POST,
            "/v1/agent/profiles",
            Some(auditor.expose()),
            create,
        )
        .await;
        assert_eq!(status, 403);
        let (status, body) = call(
            app,
            Method::POST,
            "/v1/agent/profiles",
            Some(operator.expose()),
            json!({ "displayName": "x" }),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request")),
            "missing agentId"
        );

        let (status, body) = get(app, "/v1/agent/profiles", Some(auditor.expose())).await;
        assert_eq!((status, &body["total"]), (200, &json!(1)));
        assert_eq!(body["profiles"][0]["agentId"], "my-agent-01");
        assert_eq!(
            get(app, "/v1/agent/profiles", Some(provisioner.expose()))
                .await
                .0,
            403
        );
        let (status, body) = get(
            app,
            "/v1/agent/profiles/my-agent-01",
            Some(auditor.expose()),
        )
        .await;
        assert_eq!(
            (status, &body["profile"]["costCenter"]),
            (200, &json!("sales-team"))
        );
        assert_eq!(
            get(app, "/v1/agent/profiles/nobody-here", Some(admin.expose()))
                .await
                .0,
            404
        );
        assert_eq!(
            get(app, "/v1/agent/profiles/NOT_A_SLUG", Some(admin.expose()))
                .await
                .0,
            404
        );

        // Seed 001's PATCH body, as written.
        let patch = json!({
            "displayName": "New Name",
            "ownerId": "user-456",
            "costCenter": "eng-team",
            "budgetDailyUsd": 10.0,
            "role": "operator",
            "metadata": { "can_delegate": true }
        });
        let (status, body) = call(
            app,
            Method::PATCH,
            "/v1/agent/profiles/my-agent-01",
            Some(operator.expose()),
            patch,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["profile"]["displayName"], "New Name");
        assert_eq!(body["profile"]["budgetDailyUsd"], 10.0);
        assert_eq!(
            body["profile"]["budgetMonthlyUsd"], 100.0,
            "absent fields stay"
        );
        assert_eq!(body["profile"]["role"], "operator");
        let (status, body) = call(
            app,
            Method::PATCH,
            "/v1/agent/profiles/my-agent-01",
            Some(operator.expose()),
            json!({ "ownerId": null, "role": "root" }),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request"))
        );
        let (status, body) = call(
            app,
            Method::PATCH,
            "/v1/agent/profiles/my-agent-01",
            Some(operator.expose()),
            json!({ "ownerId": null }),
        )
        .await;
        assert_eq!(
            (status, &body["profile"]["ownerId"]),
            (200, &serde_json::Value::Null),
            "null clears"
        );
        let (status, body) = call(
            app,
            Method::PATCH,
            "/v1/agent/profiles/my-agent-01",
            Some(operator.expose()),
            json!({ "budgetDailyUsd": null }),
        )
        .await;
        assert_eq!(
            (status, &body["profile"]["budgetDailyUsd"]),
            (200, &serde_json::Value::Null)
        );
        // Cleared in the database, not only in the answer.
        let (_, stored) = get(app, "/v1/agent/profiles/my-agent-01", Some(admin.expose())).await;
        assert_eq!(stored["profile"]["ownerId"], serde_json::Value::Null);
        assert_eq!(stored["profile"]["budgetDailyUsd"], serde_json::Value::Null);
        assert_eq!(stored["profile"]["displayName"], "New Name");

        let (status, _) = call(
            app,
            Method::DELETE,
            "/v1/agent/profiles/my-agent-01",
            Some(operator.expose()),
            json!({}),
        )
        .await;
        assert_eq!(status, 403, "deletion is for admins");
        let (status, body) = call(
            app,
            Method::DELETE,
            "/v1/agent/profiles/my-agent-01",
            Some(admin.expose()),
            json!({}),
        )
        .await;
        assert_eq!(
            (status, body),
            (200, json!({ "ok": true, "agentId": "my-agent-01" }))
        );
        assert_eq!(
            get(app, "/v1/agent/profiles/my-agent-01", Some(admin.expose()))
                .await
                .0,
            404
        );
        // Gone: neither patched nor deleted again.
        for method in [Method::PATCH, Method::DELETE] {
            let (status, body) = call(
                app,
                method.clone(),
                "/v1/agent/profiles/my-agent-01",
                Some(admin.expose()),
                json!({ "displayName": "Ghost" }),
            )
            .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (404, Some("not_found")),
                "{method}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_transitions_follow_the_table_with_the_seeds_status_codes() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let operator = tenant_key(&db.store, acme, ApiKeyRole::Operator).await;
        let auditor = tenant_key(&db.store, acme, ApiKeyRole::Auditor).await;
        let worker = agent(&db.store, acme, "worker", LifecycleState::Active).await;
        let (token, _) = state.mint_agent_token(&worker, now()).unwrap();
        assert_eq!(get(app, "/v1/agent/status", Some(&token)).await.0, 200);
        let path = "/v1/agent/profiles/lifecycle/worker";
        let key = Some(operator.expose());
        let (status, body) = call(
            app,
            Method::PATCH,
            path,
            key,
            json!({ "state": "quarantined" }),
        )
        .await;
        assert_eq!(
            (status, &body["profile"]["lifecycleState"]),
            (200, &json!("quarantined"))
        );
        let (status, body) = call(
            app,
            Method::PATCH,
            path,
            key,
            json!({ "state": "terminated" }),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("invalid_transition"))
        );
        let (status, body) =
            call(app, Method::PATCH, path, key, json!({ "state": "deleted" })).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_state"))
        );
        let (status, _) = call(app, Method::PATCH, path, key, json!({})).await;
        assert_eq!(status, 400);
        let (status, _) = call(
            app,
            Method::PATCH,
            path,
            Some(auditor.expose()),
            json!({ "state": "active" }),
        )
        .await;
        assert_eq!(status, 403);
        let (status, _) = call(
            app,
            Method::PATCH,
            "/v1/agent/profiles/lifecycle/nobody",
            key,
            json!({ "state": "active" }),
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = call(
            app,
            Method::PATCH,
            path,
            key,
            json!({ "state": "suspended" }),
        )
        .await;
        assert_eq!(status, 200);
        // The agent's token feels it on its next request.
        let (status, body) = get(app, "/v1/agent/status", Some(&token)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (402, Some("agent_suspended"))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_limits_map_is_read_replaced_and_merged_with_versions() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, acme) = (&t.app, t.tenant);
        let operator = tenant_key(&db.store, acme, ApiKeyRole::Operator).await;
        let auditor = tenant_key(&db.store, acme, ApiKeyRole::Auditor).await;
        let key = Some(operator.expose());
        let (status, body) = get(app, "/v1/agent-limits", key).await;
        assert_eq!((status, body), (200, json!({ "agentLimits": {}, "version": 0 })));
        // Seed 001's bodies, as written.
        let (status, body) = call(app, Method::PUT, "/v1/agent-limits", key, json!({
            "agent:my-agent-01": { "maxBudgetUsd": 10.0, "maxRequestsPerMinute": 60 }
        })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["version"], 1);
        let (status, body) = call(app, Method::PATCH, "/v1/agent-limits", key, json!({
            "agent:my-agent-01": { "maxBudgetUsd": 15.0 },
            "agent:old-agent": null
        })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({
            "agentLimits": { "agent:my-agent-01": { "maxBudgetUsd": 15.0, "maxRequestsPerMinute": 60 } },
            "version": 2
        }));
        let (status, body) = call(app, Method::PATCH, "/v1/agent-limits", key, json!({ "agent:my-agent-01": null })).await;
        assert_eq!((status, &body["agentLimits"]), (200, &json!({})));
        for bad in [
            json!({ "agent:a": { "maxBudgetUsd": -1 } }),
            json!({ "agent:a": { "maxRequestsPerMinute": 0 } }),
            json!({ "agent:a": { "maxBudget": 1 } }),
            json!({ "agent:a": "five dollars" }),
        ] {
            for method in [Method::PUT, Method::PATCH] {
                let (status, body) = call(app, method, "/v1/agent-limits", key, bad.clone()).await;
                assert_eq!(status, 400, "{bad}: {body}");
            }
        }
        assert_eq!(get(app, "/v1/agent-limits", Some(auditor.expose())).await.0, 403);
        assert_eq!(db.store.agent_limits(acme).await.unwrap().version, 3, "refused writes wrote nothing");
        // JSON Schema's integers include 45.0, which a client computing in
        // floats sends; 45.5 is still refused.
        let (status, body) = call(app, Method::PATCH, "/v1/agent-limits", key, json!({ "agent:float": { "maxRequestsPerMinute": 45.0 } })).await;
        assert_eq!((status, &body["agentLimits"]["agent:float"]["maxRequestsPerMinute"]), (200, &json!(45)), "{body}");
        let (status, _) = call(app, Method::PATCH, "/v1/agent-limits", key, json!({ "agent:float": { "maxRequestsPerMinute": 45.5 } })).await;
        assert_eq!(status, 400);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_created_profile_takes_the_seeds_lifecycle_example_before_its_first_bootstrap() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (_state, app, acme) = (&t.state, &t.app, t.tenant);
        let admin = tenant_key(&db.store, acme, ApiKeyRole::Admin).await;
        let (status, body) = call(
            app,
            Method::POST,
            "/v1/agent/profiles",
            Some(admin.expose()),
            json!({ "agentId": "my-agent-01", "displayName": "Sales Assistant" }),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        // Seed 001's lifecycle body, as printed, on the fresh profile.
        let (status, body) = call(
            app,
            Method::PATCH,
            "/v1/agent/profiles/lifecycle/my-agent-01",
            Some(admin.expose()),
            json!({ "state": "quarantined" }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["profile"]["lifecycleState"], "quarantined");
        // Quarantine keeps it out of service: a bootstrap gives a token that
        // only reads its own state.
        let (status, body) = call(
            app,
            Method::POST,
            "/v1/agent/bootstrap",
            Some(admin.expose()),
            json!({ "agent_id": "my-agent-01" }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["profile"]["lifecycleState"], "quarantined", "{body}");
        let token = body["jwt"].as_str().unwrap();
        let (status, refused) = call(
            app,
            Method::POST,
            "/v1/agent/spend",
            Some(token),
            json!({ "amount_usd": 0.01 }),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (403, Some("agent_quarantined"))
        );
    })
    .await;
}
