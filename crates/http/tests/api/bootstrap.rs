//! `POST /v1/agent/bootstrap` end to end: seed 000's invariant (profile +
//! limits + token, or nothing usable), idempotency under concurrency, and
//! every refusal.

use actix_web::http::Method;
use agentry_auth::Audience;
use agentry_domain::{ApiKeyRole, LifecycleState, TenantId};
use agentry_http::AppState;
use agentry_lifecycle::{LifecycleCommand, TerminationReason};
use agentry_store::now;
use agentry_testkit::on_both_backends;
use serde_json::json;

use crate::test_app::TestApp;
use crate::{agent, call, get, tenant_key};

async fn audit_outcomes(state: &AppState, tenant: TenantId, target: &str) -> Vec<String> {
    // Audit appends do not delay answers: flush the queue, as a stopping
    // server does, before reading the trail.
    state.flush_audit().await;
    let events = state
        .store
        .audit_events_for(tenant, target, 100)
        .await
        .unwrap();
    events
        .into_iter()
        .rev()
        .map(|event| event.outcome)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_creates_a_governed_agent_then_answers_200_with_a_fresh_token() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let provisioner = tenant_key(&db.store, acme, ApiKeyRole::Provisioner).await;
        // The request of seed 001, as written.
        let request = json!({
            "agent_id": "my-agent-01",
            "display_name": "Sales Assistant",
            "cost_center": "sales-team",
            "budget_daily_usd": 5.0,
            "budget_monthly_usd": 100.0,
            "metadata": { "can_delegate": true }
        });
        let (status, body) = call(
            app,
            Method::POST,
            "/v1/agent/bootstrap",
            Some(provisioner.expose()),
            request.clone(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["profile"]["agentId"], "my-agent-01");
        assert_eq!(body["profile"]["displayName"], "Sales Assistant");
        assert_eq!(body["profile"]["costCenter"], "sales-team");
        assert_eq!(body["profile"]["lifecycleState"], "active");
        assert_eq!(body["profile"]["role"], "agent");
        assert_eq!(body["profile"]["metadata"], json!({ "can_delegate": true }));
        assert_eq!(body["profile"]["ownerId"], serde_json::Value::Null);
        assert_eq!(
            body["budget"],
            json!({
                "profile_daily_usd": 5.0,
                "profile_monthly_usd": 100.0,
                "enforced_daily_usd": 5.0,
                "enforced_rpm": 30
            })
        );
        assert_eq!(body["next_steps"]["self_status"], "GET /v1/agent/status");
        assert!(body["jwt_expires_at"].as_str().unwrap().ends_with('Z'));
        let jwt = body["jwt"].as_str().unwrap().to_owned();
        let (status, status_body) = get(app, "/v1/agent/status", Some(&jwt)).await;
        assert_eq!(status, 200, "{status_body}");
        assert_eq!(status_body["limits"]["enforced_daily_remaining_usd"], 5.0);
        // The bootstrap itself is audited, but it is no anomaly.
        assert_eq!(
            audit_outcomes(state, acme, "agent:my-agent-01").await,
            ["created"]
        );
        let (_, anomalies) = get(app, "/v1/agent/anomaly/me", Some(&jwt)).await;
        assert_eq!(anomalies, json!({ "events": [] }));

        let limits = db.store.agent_limits(acme).await.unwrap();
        let entry = limits.entries["agent:my-agent-01"];
        assert_eq!(entry.max_budget, Some(agentry_domain::Money::from_usd(5)));
        assert_eq!(entry.max_requests_per_minute, Some(30));

        let (status, again) = call(
            app,
            Method::POST,
            "/v1/agent/bootstrap",
            Some(provisioner.expose()),
            request,
        )
        .await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["profile"]["id"], body["profile"]["id"]);
        assert_ne!(again["jwt"], body["jwt"], "a fresh token each time");
        assert_eq!(
            db.store.agent_limits(acme).await.unwrap().version,
            limits.version,
            "nothing rewritten"
        );
        let outcomes = audit_outcomes(state, acme, "agent:my-agent-01").await;
        assert_eq!(outcomes, ["created", "existing"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_bootstraps_make_one_agent_one_201_and_valid_tokens() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let provisioner = tenant_key(&db.store, acme, ApiKeyRole::Provisioner).await;
        let request = json!({ "agent_id": "racer", "budget_daily_usd": 2.5 });
        let calls = (0..50).map(|_| {
            call(
                app,
                Method::POST,
                "/v1/agent/bootstrap",
                Some(provisioner.expose()),
                request.clone(),
            )
        });
        let answers = futures_util::future::join_all(calls).await;
        let created = answers.iter().filter(|(status, _)| *status == 201).count();
        let existing = answers.iter().filter(|(status, _)| *status == 200).count();
        assert_eq!(
            (created, existing),
            (1, 49),
            "{:?}",
            answers
                .iter()
                .map(|(s, b)| (s, &b["code"]))
                .collect::<Vec<_>>()
        );
        let agents = db.store.list_agents(acme).await.unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].lifecycle_state, LifecycleState::Active);
        assert_eq!(db.store.agent_limits(acme).await.unwrap().entries.len(), 1);
        let ring = state.keys.ring();
        for (_, body) in &answers {
            let claims = state
                .issuer
                .verify(body["jwt"].as_str().unwrap(), &ring, Audience::Agent, now())
                .unwrap();
            assert_eq!(claims.sub, agents[0].id.as_uuid());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_limits_write_gives_503_no_token_and_no_active_agent() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let provisioner = tenant_key(&db.store, acme, ApiKeyRole::Provisioner).await;
        let request = json!({ "agent_id": "unlucky", "budget_daily_usd": 1 });
        db.store.fail_limits_writes(true);
        let (status, body) = call(
            app,
            Method::POST,
            "/v1/agent/bootstrap",
            Some(provisioner.expose()),
            request.clone(),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("limits_unavailable"))
        );
        assert!(body.get("jwt").is_none(), "no token on failure: {body}");
        // The agent, its activation and its entry are one transaction:
        // nothing is left behind.
        assert!(db.store.list_agents(acme).await.unwrap().is_empty());
        assert!(
            db.store
                .agent_limits(acme)
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        // Audits are appended in the background, in the order they were
        // queued; flushing reads them as they stand.
        assert_eq!(
            audit_outcomes(state, acme, "agent:unlucky").await,
            ["failed"]
        );

        db.store.fail_limits_writes(false);
        let (status, body) = call(
            app,
            Method::POST,
            "/v1/agent/bootstrap",
            Some(provisioner.expose()),
            request,
        )
        .await;
        assert_eq!(status, 201, "the retry creates the agent: {body}");
        assert_eq!(body["profile"]["lifecycleState"], "active");
        assert_eq!(
            audit_outcomes(state, acme, "agent:unlucky").await,
            ["failed", "created"]
        );

        // An agent that exists without an entry (created by the profiles
        // route) stays provisioned when its entry cannot be written. Only
        // an operator may bring such an agent into service (a provisioner
        // may not take over agents no bootstrap made).
        let operator = tenant_key(&db.store, acme, ApiKeyRole::Operator).await;
        let waiting = agent(&db.store, acme, "waiting", LifecycleState::Provisioned).await;
        let request = json!({ "agent_id": "waiting" });
        db.store.fail_limits_writes(true);
        let (status, body) = call(
            app,
            Method::POST,
            "/v1/agent/bootstrap",
            Some(operator.expose()),
            request.clone(),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("limits_unavailable"))
        );
        assert!(body.get("jwt").is_none(), "no token on failure: {body}");
        let stored = db
            .store
            .find_agent(acme, waiting.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.lifecycle_state, LifecycleState::Provisioned);
        db.store.fail_limits_writes(false);
        let (status, body) = call(
            app,
            Method::POST,
            "/v1/agent/bootstrap",
            Some(operator.expose()),
            request,
        )
        .await;
        assert_eq!(status, 200, "the retry completes the same agent: {body}");
        assert_eq!(body["profile"]["lifecycleState"], "active");
        assert_eq!(body["budget"]["enforced_rpm"], 30, "the default rate");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn suspended_and_terminated_agents_cannot_bootstrap() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let provisioner = tenant_key(&db.store, acme, ApiKeyRole::Provisioner).await;
        let suspended = agent(&db.store, acme, "paused", LifecycleState::Suspended).await;
        let terminated = agent(&db.store, acme, "gone", LifecycleState::Active).await;
        db.store
            .transition(
                acme,
                terminated.id,
                LifecycleCommand::Terminate(TerminationReason::Revoked),
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        for (slug, _) in [("paused", &suspended), ("gone", &terminated)] {
            let (status, body) = call(
                app,
                Method::POST,
                "/v1/agent/bootstrap",
                Some(provisioner.expose()),
                json!({ "agent_id": slug }),
            )
            .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (403, Some("agent_not_bootstrappable")),
                "{slug}: {body}"
            );
            assert!(body.get("jwt").is_none());
            assert_eq!(
                audit_outcomes(state, acme, &format!("agent:{slug}"))
                    .await
                    .last()
                    .map(String::as_str),
                Some("denied")
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_takes_a_provisioning_key_and_a_valid_body_only() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let provisioner = tenant_key(&db.store, acme, ApiKeyRole::Provisioner).await;
        let auditor = tenant_key(&db.store, acme, ApiKeyRole::Auditor).await;
        let worker = agent(&db.store, acme, "worker", LifecycleState::Active).await;
        let (token, _) = state.mint_agent_token(&worker, now()).unwrap();
        let path = "/v1/agent/bootstrap";
        let good = json!({ "agent_id": "fine-name" });
        let (status, body) = call(app, Method::POST, path, Some(&token), good.clone()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("api_key_required"))
        );
        let (status, body) = call(
            app,
            Method::POST,
            path,
            Some(auditor.expose()),
            good.clone(),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("permission_denied"))
        );
        let (status, _) = call(app, Method::POST, path, None, good).await;
        assert_eq!(status, 401);
        let key = Some(provisioner.expose());
        for (case, body) in [
            ("bad slug", json!({ "agent_id": "Bad Name" })),
            ("short slug", json!({ "agent_id": "ab" })),
            ("missing agent_id", json!({ "display_name": "x" })),
            (
                "unknown field",
                json!({ "agent_id": "fine", "admin": true }),
            ),
            (
                "negative budget",
                json!({ "agent_id": "fine", "budget_daily_usd": -1 }),
            ),
            (
                "seven decimals",
                json!({ "agent_id": "fine", "budget_daily_usd": 0.0000001 }),
            ),
            (
                "metadata not an object",
                json!({ "agent_id": "fine", "metadata": [1] }),
            ),
            ("not an object", json!([1, 2])),
            (
                "empty display name",
                json!({ "agent_id": "fine", "display_name": "" }),
            ),
        ] {
            let (status, answer) = call(app, Method::POST, path, key, body).await;
            assert_eq!(status, 400, "{case}: {answer}");
        }
        let raw = actix_web::test::TestRequest::post()
            .uri(path)
            .insert_header(("content-type", "application/json"))
            .set_payload("{\"agent_id\": ");
        let (status, _) = crate::send(app, raw, path, key).await;
        assert_eq!(status, 400);
        assert!(
            db.store
                .list_agents(acme)
                .await
                .unwrap()
                .iter()
                .all(|agent| agent.slug.as_str() == "worker")
        );
    })
    .await;
}

/// A repeat bootstrap is answered from what the last one found, without
/// the database; every change to the agent, its limits or its lifecycle
/// must still show in the very next answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeat_bootstrap_hears_of_every_change_to_its_agent_at_once() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (_state, app, acme) = (&t.state, &t.app, t.tenant);
        let provisioner = tenant_key(&db.store, acme, ApiKeyRole::Provisioner).await;
        let operator = tenant_key(&db.store, acme, ApiKeyRole::Operator).await;
        let operator = Some(operator.expose());
        let bootstrap = || {
            call(
                app,
                Method::POST,
                "/v1/agent/bootstrap",
                Some(provisioner.expose()),
                json!({ "agent_id": "steady", "budget_daily_usd": 3 }),
            )
        };
        assert_eq!(bootstrap().await.0, 201);
        for _ in 0..2 {
            let (status, body) = bootstrap().await;
            assert_eq!((status, &body["budget"]["enforced_rpm"]), (200, &json!(30)));
        }

        let limits = json!({ "agent:steady": { "maxRequestsPerMinute": 7 } });
        let (status, _) = call(app, Method::PATCH, "/v1/agent-limits", operator, limits).await;
        assert_eq!(status, 200);
        for _ in 0..2 {
            let (status, body) = bootstrap().await;
            assert_eq!((status, &body["budget"]["enforced_rpm"]), (200, &json!(7)));
        }

        let rename = json!({ "displayName": "Steady Worker" });
        let (status, _) = call(
            app,
            Method::PATCH,
            "/v1/agent/profiles/steady",
            operator,
            rename,
        )
        .await;
        assert_eq!(status, 200);
        let (_, body) = bootstrap().await;
        assert_eq!(body["profile"]["displayName"], "Steady Worker");

        let suspend = json!({ "state": "suspended" });
        let lifecycle = "/v1/agent/profiles/lifecycle/steady";
        assert_eq!(
            call(app, Method::PATCH, lifecycle, operator, suspend)
                .await
                .0,
            200
        );
        let (status, body) = bootstrap().await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("agent_not_bootstrappable"))
        );
    })
    .await;
}

/// An operator may write an agent's limits before the agent exists; its
/// first bootstrap then enforces them instead of writing its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_limits_entry_written_before_the_agent_wins_over_its_bootstrap() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, acme) = (&t.app, t.tenant);
        let provisioner = tenant_key(&db.store, acme, ApiKeyRole::Provisioner).await;
        let operator = tenant_key(&db.store, acme, ApiKeyRole::Operator).await;
        let preset = json!({ "agent:planned": { "maxBudgetUsd": 2, "maxRequestsPerMinute": 9 } });
        let (status, written) = call(
            app,
            Method::PUT,
            "/v1/agent-limits",
            Some(operator.expose()),
            preset,
        )
        .await;
        assert_eq!(status, 200, "{written}");
        let (status, body) = call(
            app,
            Method::POST,
            "/v1/agent/bootstrap",
            Some(provisioner.expose()),
            json!({ "agent_id": "planned", "budget_daily_usd": 5 }),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            (
                &body["budget"]["enforced_daily_usd"],
                &body["budget"]["enforced_rpm"]
            ),
            (&json!(2.0), &json!(9))
        );
        let limits = db.store.agent_limits(acme).await.unwrap();
        assert_eq!(limits.entries.len(), 1);
        assert_eq!(
            limits.entries["agent:planned"].max_requests_per_minute,
            Some(9)
        );
    })
    .await;
}
