//! Seed 000's one example: a provisioner bootstraps `summarizer-v1` with
//! `client.agentProfiles.bootstrap({...})`, and the agent reads its own
//! status with the JWT it got (`status.limits.enforced_daily_remaining_usd`,
//! `status.governance.lifecycle_state`).

use serde_json::json;

use crate::{
    Backend, Instance, expect_status, has_fields, json_fixture, mcp_python, on_both_backends,
};

on_both_backends!(
    bootstrap_call_then_status_with_its_jwt,
    mcp_tools_through_the_official_python_sdk
);

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

/// The seed's four MCP tools (and the rest) as an MCP client sees them:
/// the official Python SDK connects in both protocol eras, lists the
/// tools, calls each one, is refused without a good credential, and, with
/// the certificate its token buys, calls them on the mTLS listener.
fn mcp_tools_through_the_official_python_sdk(backend: Backend) {
    let Some(python) = mcp_python() else {
        return;
    };
    let Some(instance) = Instance::start(backend, true) else {
        return;
    };
    let provisioner = instance.cli(&["admin", "create-key", "--role", "provisioner"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/seeds/mcp_client.py");
    let tls_port = instance.tls_port.expect("the mTLS listener");
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(instance.base_url())
        .arg(&provisioner)
        .arg(format!("https://localhost:{tls_port}"))
        .arg(instance.dir.path())
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "mcp_client.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("mcp_client.py prints JSON");

    let provisioning = &report["provisioner"];
    assert_eq!(
        provisioning["protocol_version"], "2026-07-28",
        "the SDK's newest"
    );
    let names: Vec<&str> = provisioning["tools"]
        .as_array()
        .expect("a tool list")
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    assert_eq!(
        names[..4],
        [
            "br_bootstrap_agent",
            "br_agent_status",
            "br_agent_limits",
            "br_agent_anomaly"
        ]
    );
    let bootstrapped = &provisioning["results"][0];
    assert_eq!(bootstrapped["is_error"], false, "{bootstrapped}");
    assert_eq!(
        bootstrapped["structured"]["profile"]["agentId"],
        "mcp-agent"
    );
    let jwt = bootstrapped["structured"]["jwt"].as_str().expect("a JWT");
    assert!(jwt.starts_with("eyJ"), "{jwt}");
    // A provisioner key provisions; it is not an agent.
    let not_an_agent = &provisioning["results"][1];
    assert_eq!(not_an_agent["is_error"], true);
    assert_eq!(
        not_an_agent["structured"]["code"],
        "agent_credentials_required"
    );

    let results = report["agent"]["results"].as_array().expect("results");
    let ok = |index: usize| {
        let result = &results[index];
        assert_eq!(result["is_error"], false, "call {index}: {result}");
        &result["structured"]
    };
    let refusal = |index: usize, status: u16, code: &str| {
        let result = &results[index];
        assert_eq!(result["is_error"], true, "call {index}: {result}");
        assert_eq!(
            result["structured"]["status"], status,
            "call {index}: {result}"
        );
        assert_eq!(result["structured"]["code"], code, "call {index}: {result}");
    };
    assert_eq!(ok(0)["governance"]["lifecycle_state"], "active");
    assert_eq!(ok(0)["profile"]["displayName"], "MCP Agent");
    assert_eq!(ok(1)["limits"]["enforced_daily_usd"], json!(1.0));
    assert_eq!(ok(2)["enforced_daily_remaining_usd"], json!(0.75));
    refusal(3, 402, "insufficient_budget");
    assert_eq!(ok(4)["enforced_daily_remaining_usd"], json!(0.25), "held");
    assert_eq!(ok(5)["captured_usd"], json!(0.125));
    refusal(6, 409, "hold_closed");
    assert_eq!(ok(7)["profile"]["agentId"], "mcp-child");
    assert_eq!(ok(8)["total"], 1);
    assert_eq!(ok(9)["budget_refunded_usd"], json!(0.25));
    assert_eq!(ok(10)["events"][0]["reason"], "insufficient_budget");
    refusal(11, 400, "invalid_json");

    assert_eq!(report["legacy"]["protocol_version"], "2025-11-25");
    assert_eq!(
        report["legacy"]["results"][0]["structured"]["limits"]["enforced_daily_spent_usd"],
        json!(0.375)
    );
    // Refused before any tool: the SDK raises (it reads a 401 as an error
    // response), in both eras.
    assert!(report["refused"].is_array(), "{}", report["refused"]);
    assert!(
        report["refused_legacy"].is_array(),
        "{}",
        report["refused_legacy"]
    );

    // On the mTLS listener the agent's certificate is its credential, for
    // reading and for spending alike.
    let over_mtls = &report["mtls"];
    assert_eq!(over_mtls["protocol_version"], "2026-07-28");
    let status = &over_mtls["results"][0];
    assert_eq!(status["is_error"], false, "{status}");
    assert_eq!(status["structured"]["profile"]["agentId"], "mcp-agent");
    let spent = &over_mtls["results"][1];
    assert_eq!(spent["is_error"], false, "{spent}");
    assert_eq!(spent["structured"]["spent_usd"], json!(0.01));

    // What the tools did is what the routes see.
    let limits = instance.call("GET", "/v1/agent/limits/me", Some(jwt), None);
    expect_status(&limits, 200, "limits after the MCP session");
    assert_eq!(
        limits.json()["limits"]["enforced_daily_spent_usd"],
        json!(0.385)
    );
}
