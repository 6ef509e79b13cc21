//! The request guard end to end: who gets in, who is refused, and that a
//! revocation or rotation takes effect on the very next request.

use actix_web::{HttpResponse, web};
use agentry_auth::{ApiKeyKind, Audience, JwtIssuer, JwtSigningKey, Permission};
use agentry_domain::{ApiKeyRole, LifecycleState, Money};
use agentry_http::guard::ApiKeyPrincipal;
use agentry_http::new_signing_key;
use agentry_http::state::{RateLimiter, RateScope};
use agentry_ledger::LimitsEdit;
use agentry_lifecycle::{LifecycleCommand, TerminationReason};
use agentry_store::{AgentLimitEntry, now};
use agentry_testkit::on_both_backends;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::Duration;

use crate::test_app::TestApp;
use crate::{PUBLIC_URL, agent, api_key, app, get, state_for, tenant, tenant_key};

/// A route behind the API-key guard, to test it before any real route
/// needs it.
pub(crate) fn test_routes(config: &mut web::ServiceConfig) {
    config.route(
        "/test/profiles-read",
        web::get().to(|caller: ApiKeyPrincipal| async move {
            caller.require(Permission::AgentProfileRead)?;
            Ok::<_, agentry_http::ApiError>(
                HttpResponse::Ok().json(serde_json::json!({ "role": caller.role })),
            )
        }),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_answers_the_seed_shape_to_a_token_and_to_an_agents_own_key() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let worker = agent(&db.store, acme, "summarizer-v1", LifecycleState::Active).await;
        let (token, expires_at) = state.mint_agent_token(&worker, now()).unwrap();
        assert!(
            expires_at - now() > Duration::minutes(59),
            "tokens live one hour"
        );

        let (status, body) = get(app, "/v1/agent/status", Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["profile"]["agentId"], "summarizer-v1");
        assert_eq!(body["profile"]["tenantId"], acme.to_string());
        assert_eq!(body["profile"]["budgetDailyUsd"], 5.0);
        assert_eq!(body["profile"]["lifecycleState"], "active");
        assert_eq!(body["limits"]["enforced_daily_usd"], 5.0);
        assert_eq!(body["limits"]["enforced_daily_spent_usd"], 0.0);
        assert_eq!(body["limits"]["enforced_daily_remaining_usd"], 5.0);
        assert_eq!(body["limits"]["enforced_rpm"], 30);
        assert_eq!(body["limits"]["requests_this_minute"], 1);
        assert_eq!(body["anomaly"]["recent_events"], serde_json::json!([]));
        assert_eq!(body["governance"]["lifecycle_state"], "active");
        assert_eq!(body["governance"]["role"], "agent");

        let (status, body) = get(app, "/v1/agent/limits/me", Some(&token)).await;
        assert_eq!(
            (status, &body["limits"]["requests_this_minute"]),
            (200, &serde_json::json!(2))
        );

        let (own_key, _) = api_key(&db.store, acme, ApiKeyKind::Agent, Some(&worker)).await;
        let (status, body) = get(app, "/v1/agent/profiles/me", Some(own_key.expose())).await;
        assert_eq!(
            (status, &body["profile"]["id"]),
            (200, &serde_json::json!(worker.id.to_string()))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_credential_is_refused_with_a_clear_code() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let globex = tenant(&db.store, "globex").await;
        let worker = agent(&db.store, acme, "worker", LifecycleState::Active).await;
        let (good, _) = state.mint_agent_token(&worker, now()).unwrap();
        let current = state.keys.current().unwrap();
        let issuer = JwtIssuer::new(PUBLIC_URL, Duration::hours(24));
        let sign = |issuer: &JwtIssuer, audience, tenant: uuid::Uuid, at, key: &JwtSigningKey| {
            let claims = issuer.claims(
                audience,
                worker.id.as_uuid(),
                tenant,
                0,
                at,
                Duration::hours(1),
                uuid::Uuid::now_v7(),
            );
            key.sign(&claims)
        };
        let claims_part = good.split('.').nth(1).unwrap().to_owned();
        let forged = |header: serde_json::Value| {
            format!(
                "{}.{claims_part}.",
                URL_SAFE_NO_PAD.encode(header.to_string())
            )
        };
        let stranger = JwtSigningKey::from_secret(current.kid().to_owned(), [7; 32]);
        let unknown = JwtSigningKey::from_secret("nobody".into(), [7; 32]);
        let cases = [
            (
                "alg none",
                forged(serde_json::json!({"alg": "none", "kid": current.kid()})),
            ),
            (
                "HS256",
                forged(serde_json::json!({"alg": "HS256", "kid": current.kid()})),
            ),
            (
                "unknown kid",
                sign(&issuer, Audience::Agent, acme.as_uuid(), now(), &unknown),
            ),
            (
                "bad signature",
                sign(&issuer, Audience::Agent, acme.as_uuid(), now(), &stranger),
            ),
            (
                "wrong issuer",
                sign(
                    &JwtIssuer::new("http://evil.test", Duration::hours(24)),
                    Audience::Agent,
                    acme.as_uuid(),
                    now(),
                    &current,
                ),
            ),
            (
                "wrong audience",
                sign(&issuer, Audience::Session, acme.as_uuid(), now(), &current),
            ),
            (
                "expired",
                sign(
                    &issuer,
                    Audience::Agent,
                    acme.as_uuid(),
                    now() - Duration::hours(2),
                    &current,
                ),
            ),
            (
                "not yet valid",
                sign(
                    &issuer,
                    Audience::Agent,
                    acme.as_uuid(),
                    now() + Duration::minutes(5),
                    &current,
                ),
            ),
            (
                "other tenant",
                sign(&issuer, Audience::Agent, globex.as_uuid(), now(), &current),
            ),
            ("garbage", "not-a-token".to_owned()),
        ];
        for (case, token) in cases {
            let (status, body) = get(app, "/v1/agent/status", Some(&token)).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (401, Some("invalid_token")),
                "{case}: {body}"
            );
        }
        let (status, body) = get(app, "/v1/agent/status", None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("missing_credentials"))
        );
        let (tenant_key, _) =
            api_key(&db.store, acme, ApiKeyKind::Tenant(ApiKeyRole::Admin), None).await;
        let (status, body) = get(app, "/v1/agent/status", Some(tenant_key.expose())).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("agent_credentials_required"))
        );
        // The last character changed to another one (never to itself).
        let text = tenant_key.expose();
        let replacement = if text.ends_with('a') { 'b' } else { 'a' };
        let mistyped = format!("{}{replacement}", &text[..text.len() - 1]);
        let (status, body) = get(app, "/v1/agent/status", Some(&mistyped)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_api_key"))
        );
        // The good token still works after all that.
        assert_eq!(get(app, "/v1/agent/status", Some(&good)).await.0, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_signed_before_a_rotation_keeps_working_and_the_jwks_shows_both_keys() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_agent("worker", LifecycleState::Active)
            .start()
            .await;
        let (state, app) = (&t.state, &t.app);
        let worker = t.agent("worker");
        let before = t.token("worker");
        let old_kid = state.keys.current().unwrap().kid().to_owned();

        db.store
            .rotate_signing_key(new_signing_key(state.keys.master(), now()), now())
            .await
            .unwrap();
        // Another replica would hear of it through the change feed; this
        // one reloads now, as its background task would.
        state.keys.reload(&db.store, now()).await.unwrap();
        let new_kid = state.keys.current().unwrap().kid().to_owned();
        assert_ne!(old_kid, new_kid);

        assert_eq!(get(app, "/v1/agent/status", Some(&before)).await.0, 200);
        let (after, _) = state.mint_agent_token(worker, now()).unwrap();
        assert_eq!(get(app, "/v1/agent/status", Some(&after)).await.0, 200);
        let (status, jwks) = get(app, "/.well-known/jwks.json", None).await;
        assert_eq!(status, 200);
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key["kid"].as_str().unwrap())
            .collect();
        assert!(
            kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
            "{kids:?}"
        );

        // Past the longest token lifetime the retired key leaves the JWKS.
        state
            .keys
            .reload(&db.store, now() + Duration::hours(25))
            .await
            .unwrap();
        let (_, jwks) = get(app, "/.well-known/jwks.json", None).await;
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_takes_effect_on_the_next_request() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_agent("worker", LifecycleState::Active)
            .start()
            .await;
        let (app, acme) = (&t.app, t.tenant);
        let worker = t.agent("worker");
        let token = t.token("worker");
        let (own_key, own_key_id) = api_key(&db.store, acme, ApiKeyKind::Agent, Some(worker)).await;
        // Both credentials work, and are now cached.
        assert_eq!(get(app, "/v1/agent/status", Some(&token)).await.0, 200);
        assert_eq!(
            get(app, "/v1/agent/status", Some(own_key.expose())).await.0,
            200
        );

        db.store
            .revoke_api_key(acme, own_key_id, now())
            .await
            .unwrap();
        let (status, body) = get(app, "/v1/agent/status", Some(own_key.expose())).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_api_key"))
        );
        assert_eq!(
            get(app, "/v1/agent/status", Some(&token)).await.0,
            200,
            "the token is separate"
        );

        db.store
            .transition(
                acme,
                worker.id,
                LifecycleCommand::Terminate(TerminationReason::Revoked),
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        let (status, body) = get(app, "/v1/agent/status", Some(&token)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("agent_terminated")),
            "{body}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_lifecycle_state_gets_its_answer() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let expected = [
            (LifecycleState::Active, 200, None),
            (LifecycleState::Quarantined, 200, None),
            (LifecycleState::Suspended, 402, Some("agent_suspended")),
            (
                LifecycleState::Provisioned,
                403,
                Some("agent_not_activated"),
            ),
            (LifecycleState::Terminated, 403, Some("agent_terminated")),
        ];
        for (lifecycle, status, code) in expected {
            let worker = agent(&db.store, acme, &format!("agent-{lifecycle}"), lifecycle).await;
            let (token, _) = state.mint_agent_token(&worker, now()).unwrap();
            let (got, body) = get(app, "/v1/agent/status", Some(&token)).await;
            assert_eq!(
                (got, body["code"].as_str()),
                (status, code),
                "{lifecycle}: {body}"
            );
        }
        let (refusals, body) = get(app, "/v1/agent/anomaly/me", None).await;
        assert_eq!(refusals, 401, "{body}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_enforced_rpm_the_agent_gets_429_and_sees_it_in_its_anomalies() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let worker = agent(&db.store, acme, "chatty", LifecycleState::Active).await;
        db.store
            .edit_agent_limits(
                acme,
                &LimitsEdit::Merge(std::collections::BTreeMap::from([(
                    "agent:chatty".to_owned(),
                    Some(AgentLimitEntry {
                        max_budget: Some(Money::from_usd(3)),
                        max_requests_per_minute: Some(2),
                    }),
                )])),
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        let (token, _) = state.mint_agent_token(&worker, now()).unwrap();
        let (status, body) = get(app, "/v1/agent/limits/me", Some(&token)).await;
        assert_eq!(status, 200);
        assert_eq!(body["limits"]["enforced_rpm"], 2);
        assert_eq!(
            body["limits"]["enforced_daily_usd"], 3.0,
            "the tenant cap is lower than the profile's 5"
        );
        assert_eq!(get(app, "/v1/agent/limits/me", Some(&token)).await.0, 200);

        let request = actix_web::test::TestRequest::get()
            .uri("/v1/agent/status")
            .insert_header(("authorization", format!("Bearer {token}")))
            .to_request();
        let response = actix_web::test::call_service(app, request).await;
        assert_eq!(response.status().as_u16(), 429);
        let retry_after: u64 = response
            .headers()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after));

        // Hammering on changes nothing in the audit trail: one refusal of a
        // kind per agent and minute is written, not one per request.
        for _ in 0..3 {
            assert_eq!(get(app, "/v1/agent/status", Some(&token)).await.0, 429);
        }
        // The refusal is recorded without delaying the answer: flush the
        // audit queue, as a stopping server does, before reading it.
        state.flush_audit().await;
        let recorded = db
            .store
            .audit_events_for(acme, "agent:chatty", 10)
            .await
            .unwrap();
        assert_eq!(recorded.len(), 1, "one refusal recorded");
        assert_eq!(recorded[0].detail["reason"], "rate_limited");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_on_one_database_share_an_agents_requests_per_minute() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let acme = tenant(&db.store, "acme").await;
        let worker = agent(&db.store, acme, "fleet", LifecycleState::Active).await;
        let limit = 30;
        db.store
            .edit_agent_limits(
                acme,
                &LimitsEdit::Merge(std::collections::BTreeMap::from([(
                    "agent:fleet".to_owned(),
                    Some(AgentLimitEntry {
                        max_budget: None,
                        max_requests_per_minute: Some(limit),
                    }),
                )])),
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        // Three replicas: one database, a rate limiter each.
        let replicas: Vec<_> = (0..3)
            .map(|_| {
                let mut replica = state.clone();
                replica.rate = std::sync::Arc::new(RateLimiter::new(state.rate.scope()));
                replica
            })
            .collect();
        let mut apps = Vec::new();
        for replica in &replicas {
            apps.push(app(replica).await);
        }
        let (token, _) = state.mint_agent_token(&worker, now()).unwrap();
        let started = now();
        let answers = futures_util::future::join_all((0..3 * limit).map(|n| {
            let app = &apps[n as usize % apps.len()];
            let token = token.clone();
            async move { get(app, "/v1/agent/status", Some(&token)).await.0 }
        }))
        .await;
        let admitted =
            u32::try_from(answers.iter().filter(|status| **status == 200).count()).unwrap();
        assert!(
            answers
                .iter()
                .all(|status| *status == 200 || *status == 429),
            "{answers:?}"
        );
        // A run that crossed into the next minute may use two minutes' worth.
        let minutes = u32::from(now().unix_timestamp() / 60 != started.unix_timestamp() / 60) + 1;
        match state.rate.scope() {
            RateScope::Shared => {
                // Never past the limit; early refusals are bounded by the
                // other replicas' unused leases.
                let slack = 2 * agentry_ledger::lease_size(limit);
                assert!(admitted <= limit * minutes, "{admitted} admitted");
                assert!(admitted + slack >= limit, "{admitted} admitted");
            }
            // One SQLite file has one serving process: each counts alone.
            RateScope::Process => assert!(admitted >= limit && admitted <= 3 * limit * minutes),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_key_routes_refuse_tokens_and_agent_keys_and_check_permissions() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_agent("worker", LifecycleState::Active)
            .start()
            .await;
        let (app, acme) = (&t.app, t.tenant);
        let worker = t.agent("worker");
        let token = t.token("worker");
        let (own_key, _) = api_key(&db.store, acme, ApiKeyKind::Agent, Some(worker)).await;
        let auditor = tenant_key(&db.store, acme, ApiKeyRole::Auditor).await;
        let provisioner = tenant_key(&db.store, acme, ApiKeyRole::Provisioner).await;
        let path = "/test/profiles-read";
        for credential in [token.as_str(), own_key.expose()] {
            let (status, body) = get(app, path, Some(credential)).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (403, Some("api_key_required"))
            );
        }
        let (status, body) = get(app, path, Some(auditor.expose())).await;
        assert_eq!(
            (status, &body["role"]),
            (200, &serde_json::json!("auditor"))
        );
        let (status, body) = get(app, path, Some(provisioner.expose())).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("permission_denied"))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anomaly_me_shows_the_latest_anomalies_however_many_other_events_follow() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let worker = agent(&db.store, acme, "busy", LifecycleState::Active).await;
        let event = |outcome: &str, n: usize| agentry_store::NewAuditEvent {
            actor: "agent:busy".into(),
            action: "budget.spend".into(),
            target: Some("agent:busy".into()),
            outcome: outcome.into(),
            detail: serde_json::json!({ "reason": format!("reason-{n}") }),
        };
        // An old refusal, then far more routine events than one page holds.
        db.store
            .append_audit(acme, event("denied", 0), now())
            .await
            .unwrap();
        let routine = (0..45).map(|n| event("success", n)).collect();
        db.store
            .append_audit_batch(acme, routine, now())
            .await
            .unwrap();
        let (token, _) = state.mint_agent_token(&worker, now()).unwrap();
        let (status, body) = get(app, "/v1/agent/anomaly/me", Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        let reasons = |events: &serde_json::Value| -> Vec<String> {
            events
                .as_array()
                .unwrap()
                .iter()
                .map(|event| event["reason"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(reasons(&body["events"]), ["reason-0"], "{body}");
        let (_, status_body) = get(app, "/v1/agent/status", Some(&token)).await;
        assert_eq!(
            reasons(&status_body["anomaly"]["recent_events"]),
            ["reason-0"]
        );

        // Many anomalies: the 20 most recent, newest first.
        let failures = (1..=25)
            .map(|n| event(if n % 2 == 0 { "failed" } else { "denied" }, n))
            .chain((0..30).map(|n| event("ok", n)))
            .collect();
        db.store
            .append_audit_batch(acme, failures, now())
            .await
            .unwrap();
        let (_, body) = get(app, "/v1/agent/anomaly/me", Some(&token)).await;
        let expected: Vec<String> = (6..=25).rev().map(|n| format!("reason-{n}")).collect();
        assert_eq!(reasons(&body["events"]), expected);
    })
    .await;
}
