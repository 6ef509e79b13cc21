//! Seed 001's request bodies, each with the status the reference gives:
//! bootstrap (201, then 200 for the repeat), delegate (201), the
//! agent-limits PUT and PATCH (200), the lifecycle move (200), the profile
//! PATCH (200), DELETE of the sub-agent and of the profile (200); and the
//! profile-create body (201, then 409 for the same agent again).

use serde_json::json;

use crate::{Backend, Instance, expect_status, has_fields, json_fixture, on_both_backends};

on_both_backends!(
    bootstrap_delegate_limits_lifecycle_and_patch_bodies,
    create_profile_body
);

fn bootstrap_delegate_limits_lifecycle_and_patch_bodies(backend: Backend) {
    let Some(instance) = Instance::start(backend, false) else {
        return;
    };
    let admin = instance.admin_key.as_str();

    let body = json_fixture("seed_001_bootstrap_request.json");
    let created = instance.call("POST", "/v1/agent/bootstrap", Some(admin), Some(&body));
    expect_status(&created, 201, "the bootstrap body");
    let created = created.json();
    has_fields(
        &created,
        &["profile", "jwt", "jwt_expires_at", "budget", "next_steps"],
    );
    assert_eq!(created["profile"]["agentId"], "my-agent-01");
    assert_eq!(created["profile"]["costCenter"], "sales-team");
    assert_eq!(created["profile"]["budgetMonthlyUsd"], json!(100.0));
    assert_eq!(
        created["profile"]["metadata"],
        json!({ "can_delegate": true })
    );
    assert_eq!(
        created["budget"],
        json!({
            "profile_daily_usd": 5.0,
            "profile_monthly_usd": 100.0,
            "enforced_daily_usd": 5.0,
            "enforced_rpm": 30
        })
    );
    let jwt = created["jwt"].as_str().expect("a JWT").to_owned();
    let again = instance.call("POST", "/v1/agent/bootstrap", Some(admin), Some(&body));
    expect_status(&again, 200, "the bootstrap body, repeated");

    for path in [
        "/v1/agent/status",
        "/v1/agent/limits/me",
        "/v1/agent/anomaly/me",
        "/v1/agent/profiles/me",
    ] {
        let reply = instance.call("GET", path, Some(&jwt), None);
        expect_status(&reply, 200, path);
    }

    // The parent (metadata.can_delegate is true) delegates the seed's child.
    let delegate = json_fixture("seed_001_delegate_request.json");
    let child = instance.call("POST", "/v1/agent/delegate", Some(&jwt), Some(&delegate));
    expect_status(&child, 201, "the delegate body");
    let child = child.json();
    assert_eq!(child["profile"]["agentId"], "child-worker-01");
    assert_eq!(child["profile"]["displayName"], "Worker 1");
    let listed = instance.call("GET", "/v1/agent/sub-agents", Some(&jwt), None);
    expect_status(&listed, 200, "GET /v1/agent/sub-agents");
    assert_eq!(listed.json()["total"], json!(1));
    assert_eq!(
        listed.json()["sub_agents"][0]["agent_id"],
        "child-worker-01"
    );
    let reclaimed = instance.call(
        "DELETE",
        "/v1/agent/sub-agents/child-worker-01",
        Some(&jwt),
        None,
    );
    expect_status(
        &reclaimed,
        200,
        "DELETE /v1/agent/sub-agents/child-worker-01",
    );
    assert_eq!(reclaimed.json()["ok"], json!(true));
    assert_eq!(reclaimed.json()["terminated_agent_id"], "child-worker-01");

    // The tenant's limits map: replace, then merge (null deletes).
    let put = json_fixture("seed_001_put_agent_limits_request.json");
    let replaced = instance.call("PUT", "/v1/agent-limits", Some(admin), Some(&put));
    expect_status(&replaced, 200, "the agent-limits PUT body");
    assert_eq!(replaced.json()["agentLimits"], put);
    let first_version = replaced.json()["version"].as_i64().expect("a version");
    let patch = json_fixture("seed_001_patch_agent_limits_request.json");
    let merged = instance.call("PATCH", "/v1/agent-limits", Some(admin), Some(&patch));
    expect_status(&merged, 200, "the agent-limits PATCH body");
    assert_eq!(
        merged.json()["agentLimits"],
        json!({ "agent:my-agent-01": { "maxBudgetUsd": 15.0, "maxRequestsPerMinute": 60 } })
    );
    assert!(merged.json()["version"].as_i64().expect("a version") > first_version);
    let read = instance.call("GET", "/v1/agent-limits", Some(admin), None);
    expect_status(&read, 200, "GET /v1/agent-limits");
    assert_eq!(read.json()["agentLimits"], merged.json()["agentLimits"]);

    // The lifecycle body, then the profile PATCH body.
    let lifecycle = json_fixture("seed_001_lifecycle_request.json");
    let moved = instance.call(
        "PATCH",
        "/v1/agent/profiles/lifecycle/my-agent-01",
        Some(admin),
        Some(&lifecycle),
    );
    expect_status(&moved, 200, "the lifecycle body");
    assert_eq!(moved.json()["profile"]["lifecycleState"], "quarantined");
    let patch = json_fixture("seed_001_patch_profile_request.json");
    let patched = instance.call(
        "PATCH",
        "/v1/agent/profiles/my-agent-01",
        Some(admin),
        Some(&patch),
    );
    expect_status(&patched, 200, "the profile PATCH body");
    let profile = &patched.json()["profile"];
    assert_eq!(profile["displayName"], "New Name");
    assert_eq!(profile["ownerId"], "user-456");
    assert_eq!(profile["costCenter"], "eng-team");
    assert_eq!(profile["budgetDailyUsd"], json!(10.0));
    assert_eq!(profile["role"], "operator");
    assert_eq!(
        profile["budgetMonthlyUsd"],
        json!(100.0),
        "absent fields stay"
    );

    let listed = instance.call("GET", "/v1/agent/profiles", Some(admin), None);
    expect_status(&listed, 200, "GET /v1/agent/profiles");
    has_fields(&listed.json(), &["profiles", "total"]);

    // The reference's hard delete answers { ok, agentId }. The terminated
    // child still exists (this server refuses to delete a parent while it
    // has any sub-agent, 409), so it goes first.
    let deleted = instance.call(
        "DELETE",
        "/v1/agent/profiles/child-worker-01",
        Some(admin),
        None,
    );
    expect_status(&deleted, 200, "DELETE /v1/agent/profiles/child-worker-01");
    assert_eq!(
        deleted.json(),
        json!({ "ok": true, "agentId": "child-worker-01" })
    );
    let deleted = instance.call(
        "DELETE",
        "/v1/agent/profiles/my-agent-01",
        Some(admin),
        None,
    );
    expect_status(&deleted, 200, "DELETE /v1/agent/profiles/my-agent-01");
    assert_eq!(
        deleted.json(),
        json!({ "ok": true, "agentId": "my-agent-01" })
    );
}

fn create_profile_body(backend: Backend) {
    let Some(instance) = Instance::start(backend, false) else {
        return;
    };
    let admin = instance.admin_key.as_str();
    let body = json_fixture("seed_001_create_profile_request.json");
    let created = instance.call("POST", "/v1/agent/profiles", Some(admin), Some(&body));
    expect_status(&created, 201, "the profile-create body");
    let profile = &created.json()["profile"];
    assert_eq!(profile["agentId"], "my-agent-01");
    assert_eq!(profile["displayName"], "Sales Assistant");
    assert_eq!(profile["ownerId"], "user-123");
    assert_eq!(profile["costCenter"], "sales-team");
    assert_eq!(profile["budgetDailyUsd"], json!(5.0));
    assert_eq!(profile["budgetMonthlyUsd"], json!(100.0));
    assert_eq!(profile["role"], "agent");
    let read = instance.call("GET", "/v1/agent/profiles/my-agent-01", Some(admin), None);
    expect_status(&read, 200, "GET /v1/agent/profiles/my-agent-01");
    assert_eq!(read.json()["profile"], *profile);
    let again = instance.call("POST", "/v1/agent/profiles", Some(admin), Some(&body));
    expect_status(
        &again,
        409,
        "the profile-create body again (already exists)",
    );
}
