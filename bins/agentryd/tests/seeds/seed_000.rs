//! Seed 000's one example: a provisioner bootstraps `summarizer-v1` with
//! `client.agentProfiles.bootstrap({...})`, and the agent reads its own
//! status with the JWT it got (`status.limits.enforced_daily_remaining_usd`,
//! `status.governance.lifecycle_state`).

use serde_json::json;

use crate::{Backend, Instance, expect_status, has_fields, json_fixture, on_both_backends};

on_both_backends!(bootstrap_call_then_status_with_its_jwt);

fn bootstrap_call_then_status_with_its_jwt(backend: Backend) {
    let Some(instance) = Instance::start(backend, false) else {
        return;
    };
    let provisioner = instance.cli(&["admin", "create-key", "--role", "provisioner"]);
    let body = json_fixture("seed_000_bootstrap_request.json");

    // Seed 001 gives the status: 201 Created.
    let created = instance.call(
        "POST",
        "/v1/agent/bootstrap",
        Some(&provisioner),
        Some(&body),
    );
    expect_status(&created, 201, "the seed's bootstrap call");
    let created = created.json();
    has_fields(&created, &["profile", "jwt", "jwt_expires_at", "budget"]);
    assert_eq!(created["profile"]["agentId"], "summarizer-v1");
    assert_eq!(created["profile"]["displayName"], "Summarizer Agent");
    assert_eq!(created["profile"]["costCenter"], "engineering");
    assert_eq!(created["profile"]["budgetDailyUsd"], json!(5.0));
    assert_eq!(created["profile"]["lifecycleState"], "active");
    assert_eq!(created["budget"]["enforced_daily_usd"], json!(5.0));
    let jwt = created["jwt"].as_str().expect("a JWT");
    assert!(jwt.starts_with("eyJ"), "{jwt}");

    // The agent's own view, with the returned JWT.
    let status = instance.call("GET", "/v1/agent/status", Some(jwt), None);
    expect_status(&status, 200, "GET /v1/agent/status with the bootstrap JWT");
    let status = status.json();
    assert_eq!(status["limits"]["enforced_daily_remaining_usd"], json!(5.0));
    assert_eq!(status["governance"]["lifecycle_state"], "active");
    assert_eq!(status["profile"]["agentId"], "summarizer-v1");
    for path in ["/v1/agent/limits/me", "/v1/agent/anomaly/me"] {
        let reply = instance.call("GET", path, Some(jwt), None);
        expect_status(&reply, 200, path);
    }

    // The same call again is the idempotent repeat: 200, the same profile,
    // and a token that works too.
    let again = instance.call(
        "POST",
        "/v1/agent/bootstrap",
        Some(&provisioner),
        Some(&body),
    );
    expect_status(&again, 200, "the seed's bootstrap call, repeated");
    let again = again.json();
    assert_eq!(again["profile"]["id"], created["profile"]["id"]);
    let status = instance.call("GET", "/v1/agent/status", again["jwt"].as_str(), None);
    expect_status(&status, 200, "GET /v1/agent/status with the repeat's JWT");

    // The provisioner key grants provisioning authority, not runtime access.
    let refused = instance.call("GET", "/v1/agent/status", Some(&provisioner), None);
    assert!(
        matches!(refused.status, 401 | 403),
        "a provisioner key is no agent: {} {}",
        refused.status,
        refused.text()
    );
}
