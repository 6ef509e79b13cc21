//! Spend, holds and delegation end to end: budgets that can never be
//! overshot, and unspent budget that always finds its way back.

use actix_web::http::Method;
use agentry_domain::{ApiKeyRole, LifecycleState};
use agentry_store::now;
use agentry_testkit::on_both_backends;
use serde_json::{Value, json};
use time::Duration;

use crate::test_app::TestApp;
use crate::{call, get, tenant_key};

/// Bootstraps `slug` with a daily budget and a high rpm; returns its token.
async fn governed_agent<S>(
    app: &S,
    provisioner: &str,
    operator: &str,
    slug: &str,
    budget: f64,
    metadata: Value,
) -> String
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
        >,
{
    let (status, body) = call(
        app,
        Method::POST,
        "/v1/agent/bootstrap",
        Some(provisioner),
        json!({
            "agent_id": slug, "budget_daily_usd": budget, "metadata": metadata
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = call(
        app,
        Method::PATCH,
        "/v1/agent-limits",
        Some(operator),
        json!({
            format!("agent:{slug}"): { "maxRequestsPerMinute": 10_000 }
        }),
    )
    .await;
    assert_eq!(status, 200);
    body["jwt"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn forty_concurrent_spends_never_pass_the_limit() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_key(ApiKeyRole::Provisioner)
            .with_key(ApiKeyRole::Operator)
            .start()
            .await;
        let (app, provisioner, operator) = (
            &t.app,
            t.key(ApiKeyRole::Provisioner),
            t.key(ApiKeyRole::Operator),
        );
        let token = governed_agent(app, provisioner, operator, "spender", 5.0, json!({})).await;
        let spends = (0..40).map(|_| {
            call(
                app,
                Method::POST,
                "/v1/agent/spend",
                Some(&token),
                json!({ "amount_usd": 0.3 }),
            )
        });
        let answers = futures_util::future::join_all(spends).await;
        let accepted = answers.iter().filter(|(status, _)| *status == 201).count();
        let refused = answers
            .iter()
            .filter(|(status, body)| *status == 402 && body["code"] == "insufficient_budget")
            .count();
        // 16 x 0.30 = 4.80 fits in 5.00; a 17th would not.
        assert_eq!(
            (accepted, refused),
            (16, 24),
            "{:?}",
            answers.iter().map(|(s, _)| s).collect::<Vec<_>>()
        );
        let (_, limits) = get(app, "/v1/agent/limits/me", Some(&token)).await;
        assert_eq!(limits["limits"]["enforced_daily_spent_usd"], 4.8);
        assert_eq!(limits["limits"]["enforced_daily_remaining_usd"], 0.2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spends_are_idempotent_and_holds_capture_at_most_what_they_hold() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_key(ApiKeyRole::Provisioner)
            .with_key(ApiKeyRole::Operator)
            .start()
            .await;
        let (app, provisioner, operator) = (
            &t.app,
            t.key(ApiKeyRole::Provisioner),
            t.key(ApiKeyRole::Operator),
        );
        let token = governed_agent(app, provisioner, operator, "buyer", 5.0, json!({})).await;
        let other = governed_agent(app, provisioner, operator, "other", 5.0, json!({})).await;
        let spend = json!({ "amount_usd": 1.25, "idempotency_key": "order-7" });
        let (status, first) = call(
            app,
            Method::POST,
            "/v1/agent/spend",
            Some(&token),
            spend.clone(),
        )
        .await;
        assert_eq!(
            (status, &first["idempotent_replay"]),
            (201, &json!(false)),
            "{first}"
        );
        let (status, again) = call(app, Method::POST, "/v1/agent/spend", Some(&token), spend).await;
        assert_eq!((status, &again["idempotent_replay"]), (200, &json!(true)));
        assert_eq!(again["enforced_daily_spent_usd"], 1.25, "charged once");
        let different = json!({ "amount_usd": 2, "idempotency_key": "order-7" });
        let (status, body) = call(
            app,
            Method::POST,
            "/v1/agent/spend",
            Some(&token),
            different,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("idempotency_mismatch"))
        );
        // A retry of the spend that used the budget up is still a replay, not a 402.
        let last = json!({ "amount_usd": 5, "idempotency_key": "the-rest" });
        assert_eq!(
            call(
                app,
                Method::POST,
                "/v1/agent/spend",
                Some(&other),
                last.clone()
            )
            .await
            .0,
            201
        );
        let (status, body) = call(app, Method::POST, "/v1/agent/spend", Some(&other), last).await;
        assert_eq!(
            (status, &body["idempotent_replay"]),
            (200, &json!(true)),
            "{body}"
        );

        let (status, hold) = call(
            app,
            Method::POST,
            "/v1/agent/holds",
            Some(&token),
            json!({ "amount_usd": 2, "ttl_seconds": 600 }),
        )
        .await;
        assert_eq!(status, 201, "{hold}");
        assert_eq!(hold["enforced_daily_remaining_usd"], 1.75);
        let hold_id = hold["hold_id"].as_str().unwrap().to_owned();
        let capture_path = format!("/v1/agent/holds/{hold_id}/capture");
        let (status, _) = call(
            app,
            Method::POST,
            &capture_path,
            Some(&other),
            json!({ "amount_usd": 1 }),
        )
        .await;
        assert_eq!(status, 404, "another agent's hold does not exist for it");
        let (status, body) = call(
            app,
            Method::POST,
            &capture_path,
            Some(&token),
            json!({ "amount_usd": 2.5 }),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("capture_exceeds_hold"))
        );
        let (status, captured) = call(
            app,
            Method::POST,
            &capture_path,
            Some(&token),
            json!({ "amount_usd": 1.5 }),
        )
        .await;
        assert_eq!(status, 200, "{captured}");
        assert_eq!(
            (
                captured["captured_usd"].clone(),
                captured["released_usd"].clone()
            ),
            (json!(1.5), json!(0.5))
        );
        assert_eq!(captured["enforced_daily_spent_usd"], 2.75);
        let (status, body) = call(
            app,
            Method::POST,
            &capture_path,
            Some(&token),
            json!({ "amount_usd": 0.1 }),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (409, Some("hold_closed")));

        let (_, second) = call(
            app,
            Method::POST,
            "/v1/agent/holds",
            Some(&token),
            json!({ "amount_usd": 1 }),
        )
        .await;
        let release_path = format!("/v1/agent/holds/{}", second["hold_id"].as_str().unwrap());
        let (status, released) =
            call(app, Method::DELETE, &release_path, Some(&token), json!({})).await;
        assert_eq!(
            (status, &released["enforced_daily_remaining_usd"]),
            (200, &json!(2.25))
        );
        let (status, again) =
            call(app, Method::DELETE, &release_path, Some(&token), json!({})).await;
        assert_eq!((status, again["code"].as_str()), (409, Some("hold_closed")));
        // An idempotency key names one request: another amount under it is 409.
        let keyed = |amount: f64| json!({ "amount_usd": amount, "idempotency_key": "hold-x" });
        let holds = "/v1/agent/holds";
        assert_eq!(
            call(app, Method::POST, holds, Some(&token), keyed(0.5))
                .await
                .0,
            201
        );
        let (status, body) = call(app, Method::POST, holds, Some(&token), keyed(0.75)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("idempotency_mismatch"))
        );
        for bad in [
            json!({ "amount_usd": 1, "ttl_seconds": 0 }),
            json!({ "amount_usd": -1 }),
            json!({ "amount_usd": 1, "extra": 1 }),
        ] {
            assert_eq!(
                call(app, Method::POST, "/v1/agent/holds", Some(&token), bad)
                    .await
                    .0,
                400
            );
        }
        assert_eq!(
            call(
                app,
                Method::DELETE,
                "/v1/agent/holds/not-a-uuid",
                Some(&token),
                json!({})
            )
            .await
            .0,
            404
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_record_spends_for_named_agents_within_the_lifecycle_rules() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_key(ApiKeyRole::Provisioner)
            .with_key(ApiKeyRole::Operator)
            .start()
            .await;
        let (app, provisioner, operator) = (
            &t.app,
            t.key(ApiKeyRole::Provisioner),
            t.key(ApiKeyRole::Operator),
        );
        let token = governed_agent(app, provisioner, operator, "metered", 5.0, json!({})).await;
        let path = "/v1/agent/spend";
        let (status, body) = call(
            app,
            Method::POST,
            path,
            Some(operator),
            json!({ "agent_id": "metered", "amount_usd": 1 }),
        )
        .await;
        assert_eq!(
            (status, &body["enforced_daily_spent_usd"]),
            (201, &json!(1.0))
        );
        assert_eq!(
            call(
                app,
                Method::POST,
                path,
                Some(operator),
                json!({ "amount_usd": 1 })
            )
            .await
            .0,
            400
        );
        assert_eq!(
            call(
                app,
                Method::POST,
                path,
                Some(provisioner),
                json!({ "agent_id": "metered", "amount_usd": 1 })
            )
            .await
            .0,
            403
        );
        for path in [path, "/v1/agent/holds"] {
            let (status, body) = call(
                app,
                Method::POST,
                path,
                Some(operator),
                json!({ "agent_id": "nobody", "amount_usd": 1 }),
            )
            .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (404, Some("not_found")),
                "{path}"
            );
        }
        let lifecycle = "/v1/agent/profiles/lifecycle/metered";
        call(
            app,
            Method::PATCH,
            lifecycle,
            Some(operator),
            json!({ "state": "quarantined" }),
        )
        .await;
        let (status, body) = call(
            app,
            Method::POST,
            path,
            Some(&token),
            json!({ "amount_usd": 1 }),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("agent_quarantined"))
        );
        call(
            app,
            Method::PATCH,
            lifecycle,
            Some(operator),
            json!({ "state": "suspended" }),
        )
        .await;
        let (status, body) = call(
            app,
            Method::POST,
            path,
            Some(operator),
            json!({ "agent_id": "metered", "amount_usd": 1 }),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (402, Some("agent_suspended"))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delegation_slices_budget_and_reclaiming_returns_exactly_the_unspent_part() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_key(ApiKeyRole::Provisioner)
            .with_key(ApiKeyRole::Operator)
            .start()
            .await;
        let (app, provisioner, operator) = (&t.app, t.key(ApiKeyRole::Provisioner), t.key(ApiKeyRole::Operator));
        let parent = governed_agent(app, provisioner, operator, "parent", 5.0, json!({ "can_delegate": true })).await;
        let plain = governed_agent(app, provisioner, operator, "plain", 5.0, json!({})).await;
        let path = "/v1/agent/delegate";
        // Seed 001's delegate body, as written.
        let request = json!({
            "agent_id": "child-worker-01",
            "budget_allocation_usd": 1.0,
            "requested_role": "agent",
            "requested_name": "Worker 1",
            "ttl_seconds": 3600,
            "metadata": {}
        });
        let (status, body) = call(app, Method::POST, path, Some(&plain), request.clone()).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("delegation_not_allowed")));
        let (status, body) = call(app, Method::POST, path, Some(&parent), json!({ "agent_id": "boss", "budget_allocation_usd": 1, "requested_role": "admin" })).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("role_escalation")));
        let (status, _) = call(app, Method::POST, path, Some(&parent), json!({ "agent_id": "broke", "budget_allocation_usd": 0 })).await;
        assert_eq!(status, 400);
        let (status, body) = call(app, Method::POST, path, Some(&parent), json!({ "agent_id": "greedy", "budget_allocation_usd": 5 })).await;
        assert_eq!((status, body["code"].as_str()), (402, Some("insufficient_budget")), "the parent keeps a cent");
        assert_eq!(call(app, Method::POST, path, Some(provisioner), request.clone()).await.0, 403);

        let (status, child) = call(app, Method::POST, path, Some(&parent), request.clone()).await;
        assert_eq!(status, 201, "{child}");
        // parentAgentId is the parent's agent_id, in the profile as in the
        // metadata, on every route that shows the child's profile.
        assert_eq!(child["profile"]["parentAgentId"], "parent", "{child}");
        assert_eq!(child["profile"]["metadata"]["parentAgentId"], "parent");
        let (_, read) = get(app, "/v1/agent/profiles/child-worker-01", Some(operator)).await;
        assert_eq!(read["profile"]["parentAgentId"], "parent", "{read}");
        assert_eq!(read["profile"]["metadata"]["parentAgentId"], "parent");
        let (_, me) = get(app, "/v1/agent/profiles/me", child["jwt"].as_str()).await;
        assert_eq!(me["profile"]["parentAgentId"], "parent", "{me}");
        let (_, listed) = get(app, "/v1/agent/profiles", Some(operator)).await;
        let profiles = listed["profiles"].as_array().unwrap();
        let of = |slug: &str| profiles.iter().find(|profile| profile["agentId"] == slug).unwrap()["parentAgentId"].clone();
        assert_eq!((of("child-worker-01"), of("parent")), (json!("parent"), Value::Null));
        assert_eq!(child["budget"]["profile_daily_usd"], 1.0);
        assert!(child["profile"]["expiresAt"].is_string());
        let (status, again) = call(app, Method::POST, path, Some(&parent), request).await;
        assert_eq!((status, &again["profile"]["id"]), (200, &child["profile"]["id"]), "idempotent");
        let child_token = child["jwt"].as_str().unwrap().to_owned();
        let (status, _) = call(app, Method::POST, "/v1/agent/spend", Some(&child_token), json!({ "amount_usd": 0.25 })).await;
        assert_eq!(status, 201);
        let (status, body) = call(app, Method::POST, "/v1/agent/spend", Some(&child_token), json!({ "amount_usd": 0.8 })).await;
        assert_eq!((status, body["code"].as_str()), (402, Some("insufficient_budget")), "a child cannot pass its allocation");
        let (_, limits) = get(app, "/v1/agent/limits/me", Some(&parent)).await;
        assert_eq!(limits["limits"]["enforced_daily_remaining_usd"], 4.0);

        // Its budget must flow back before it can go: no hard delete, and a
        // provisioner cannot mint tokens for it.
        let admin = tenant_key(&db.store, t.tenant, ApiKeyRole::Admin).await;
        let (status, body) = call(app, Method::DELETE, "/v1/agent/profiles/child-worker-01", Some(admin.expose()), json!({})).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("refused")));
        let (status, body) = call(app, Method::DELETE, "/v1/agent/profiles/parent", Some(admin.expose()), json!({})).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("refused")), "a live sub-agent holds its parent");
        let (status, body) = call(app, Method::POST, "/v1/agent/bootstrap", Some(provisioner), json!({ "agent_id": "child-worker-01" })).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("agent_not_bootstrappable")));
        let (status, listed) = get(app, "/v1/agent/sub-agents", Some(&parent)).await;
        assert_eq!((status, &listed["total"]), (200, &json!(1)));
        assert_eq!(listed["sub_agents"][0]["agent_id"], "child-worker-01");
        assert_eq!(listed["sub_agents"][0]["budget_daily_usd"], 1.0);
        let reclaim = "/v1/agent/sub-agents/child-worker-01";
        assert_eq!(call(app, Method::DELETE, reclaim, Some(&plain), json!({})).await.0, 404, "only the parent");
        let (status, body) = call(app, Method::DELETE, reclaim, Some(&parent), json!({})).await;
        assert_eq!((status, body), (200, json!({ "ok": true, "terminated_agent_id": "child-worker-01", "budget_refunded_usd": 0.75 })));
        let (_, limits) = get(app, "/v1/agent/limits/me", Some(&parent)).await;
        assert_eq!(limits["limits"]["enforced_daily_remaining_usd"], 4.75);
        let (status, body) = call(app, Method::DELETE, reclaim, Some(&parent), json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(body["already_terminated"], true);
        assert_eq!(body["budget_refunded_usd"], 0.0);
        let (status, body) = get(app, "/v1/agent/status", Some(&child_token)).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("agent_terminated")));
        assert_eq!(get(app, "/v1/agent/sub-agents", Some(&parent)).await.1["total"], 0);
        // Seed 001's order: the sub-agent deleted, then the parent's
        // profile, which takes its terminated sub-agent with it.
        let (status, body) = call(app, Method::DELETE, "/v1/agent/profiles/parent", Some(admin.expose()), json!({})).await;
        assert_eq!((status, body), (200, json!({ "ok": true, "agentId": "parent" })));
        let (status, _) = get(app, "/v1/agent/profiles/child-worker-01", Some(admin.expose())).await;
        assert_eq!(status, 404, "the terminated sub-agent went with its parent");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reaper_terminates_an_expired_child_and_refunds_its_parent() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_key(ApiKeyRole::Provisioner)
            .with_key(ApiKeyRole::Operator)
            .start()
            .await;
        let (app, provisioner, operator) = (
            &t.app,
            t.key(ApiKeyRole::Provisioner),
            t.key(ApiKeyRole::Operator),
        );
        let parent = governed_agent(
            app,
            provisioner,
            operator,
            "parent",
            5.0,
            json!({ "can_delegate": true }),
        )
        .await;
        let (status, child) = call(
            app,
            Method::POST,
            "/v1/agent/delegate",
            Some(&parent),
            json!({
                "agent_id": "short-lived", "budget_allocation_usd": 2, "ttl_seconds": 60
            }),
        )
        .await;
        assert_eq!(status, 201, "{child}");
        let child_token = child["jwt"].as_str().unwrap().to_owned();
        call(
            app,
            Method::POST,
            "/v1/agent/spend",
            Some(&child_token),
            json!({ "amount_usd": 0.5 }),
        )
        .await;
        assert_eq!(t.state.reap_expired(now()).await, 0, "not expired yet");
        assert_eq!(t.state.reap_expired(now() + Duration::minutes(2)).await, 1);
        let reaped = db
            .store
            .find_agent_by_slug(t.tenant, &"short-lived".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reaped.lifecycle_state, LifecycleState::Terminated);
        let (_, limits) = get(app, "/v1/agent/limits/me", Some(&parent)).await;
        assert_eq!(
            limits["limits"]["enforced_daily_remaining_usd"], 4.5,
            "1.5 unspent came back"
        );
        let (status, _) = get(app, "/v1/agent/status", Some(&child_token)).await;
        assert_eq!(status, 403);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_termination_takes_the_sub_agents_with_it_and_settles_their_budget() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_key(ApiKeyRole::Provisioner)
            .with_key(ApiKeyRole::Operator)
            .start()
            .await;
        let (app, provisioner, operator) = (
            &t.app,
            t.key(ApiKeyRole::Provisioner),
            t.key(ApiKeyRole::Operator),
        );
        let parent = governed_agent(
            app,
            provisioner,
            operator,
            "compromised",
            5.0,
            json!({ "can_delegate": true }),
        )
        .await;
        let (status, child) = call(
            app,
            Method::POST,
            "/v1/agent/delegate",
            Some(&parent),
            json!({
                "agent_id": "its-child", "budget_allocation_usd": 2
            }),
        )
        .await;
        assert_eq!(status, 201, "{child}");
        let child_token = child["jwt"].as_str().unwrap().to_owned();
        let lifecycle = "/v1/agent/profiles/lifecycle/compromised";
        let key = Some(operator);
        let (status, _) = call(
            app,
            Method::PATCH,
            lifecycle,
            key,
            json!({ "state": "terminated" }),
        )
        .await;
        assert_eq!(status, 409, "active cannot go straight to terminated");
        assert_eq!(
            call(
                app,
                Method::PATCH,
                lifecycle,
                key,
                json!({ "state": "suspended" })
            )
            .await
            .0,
            200
        );
        let (status, body) = call(
            app,
            Method::PATCH,
            lifecycle,
            key,
            json!({ "state": "terminated" }),
        )
        .await;
        assert_eq!(
            (status, &body["profile"]["lifecycleState"]),
            (200, &json!("terminated"))
        );
        let (status, body) = get(app, "/v1/agent/status", Some(&child_token)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("agent_terminated")),
            "the child went with it"
        );
        let ledger = db.store.tenant_ledger(t.tenant).await.unwrap();
        assert!(
            agentry_ledger::verify_transfers(ledger.iter().map(|(agent, entry)| (*agent, entry)))
                .is_ok()
        );
        let child = db
            .store
            .find_agent_by_slug(t.tenant, &"its-child".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(
            db.store
                .account(t.tenant, child.id)
                .await
                .unwrap()
                .is_settled(),
            "its allocation went back"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_me_follows_every_ledger_change_at_once() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_key(ApiKeyRole::Provisioner)
            .with_key(ApiKeyRole::Operator)
            .start()
            .await;
        let (app, provisioner, operator) = (
            &t.app,
            t.key(ApiKeyRole::Provisioner),
            t.key(ApiKeyRole::Operator),
        );
        let token = governed_agent(
            app,
            provisioner,
            operator,
            "watched",
            5.0,
            json!({ "can_delegate": true }),
        )
        .await;
        // Each read after the first may come from the cache; each change in
        // between must be in it.
        let remaining = async || {
            let (status, body) = get(app, "/v1/agent/limits/me", Some(&token)).await;
            assert_eq!(status, 200, "{body}");
            body["limits"]["enforced_daily_remaining_usd"]
                .as_f64()
                .unwrap()
        };
        assert_eq!(remaining().await, 5.0);
        assert_eq!(remaining().await, 5.0);
        let spend = json!({ "amount_usd": 1.0 });
        let (status, _) = call(app, Method::POST, "/v1/agent/spend", Some(&token), spend).await;
        assert_eq!(status, 201);
        assert_eq!(remaining().await, 4.0, "a spend");
        let hold = json!({ "amount_usd": 0.5, "idempotency_key": "hold-1" });
        let (status, held) = call(
            app,
            Method::POST,
            "/v1/agent/holds",
            Some(&token),
            hold.clone(),
        )
        .await;
        assert_eq!(status, 201, "{held}");
        assert_eq!(remaining().await, 3.5, "a hold");
        // The same key again answers with the first hold and holds nothing more.
        let (status, again) = call(app, Method::POST, "/v1/agent/holds", Some(&token), hold).await;
        assert_eq!(
            (status, &again["hold_id"]),
            (200, &held["hold_id"]),
            "{again}"
        );
        assert_eq!(remaining().await, 3.5, "a replayed hold");
        // A name taken by an agent that is not its child: 409, nothing moves.
        let taken = json!({ "agent_id": "watched", "budget_allocation_usd": 1.0 });
        let (status, body) =
            call(app, Method::POST, "/v1/agent/delegate", Some(&token), taken).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("agent_exists")));
        assert_eq!(remaining().await, 3.5, "a refused delegation");
        let child = json!({ "agent_id": "watched-child", "budget_allocation_usd": 1.0 });
        let (status, _) = call(app, Method::POST, "/v1/agent/delegate", Some(&token), child).await;
        assert_eq!(status, 201);
        assert_eq!(remaining().await, 2.5, "a delegation");
        let reclaim = "/v1/agent/sub-agents/watched-child";
        let (status, _) = call(app, Method::DELETE, reclaim, Some(&token), json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(remaining().await, 3.5, "a reclaim");

        // An operator lowering the agent's limit is seen at once too.
        let (status, _) = call(
            app,
            Method::PATCH,
            "/v1/agent-limits",
            Some(operator),
            json!({ "agent:watched": { "maxBudgetUsd": 2.0 } }),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(remaining().await, 0.5, "a lowered limit");
    })
    .await;
}
