//! Seed 004: the register body with the seed's two headers (201, and the
//! agent's own key works), then the seed's other requests: list with its
//! query parameters, get, rotate-key and revoke (200 each, the seed's
//! fields), and what each does to the agent's keys.

use serde_json::{Value, json};

use crate::{Backend, Instance, Reply, expect_status, has_fields, json_fixture, on_both_backends};

on_both_backends!(register_body_and_the_other_requests);

/// A request with the seed's headers: `Authorization: Bearer <apiKey>` and
/// `X-Bulwark-Tenant: <tenant-id>`.
fn registry(instance: &Instance, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let auth = format!("Bearer {}", instance.admin_key);
    let body = body.map(Value::to_string);
    instance.request(
        method,
        path,
        &[
            ("authorization", &auth),
            ("x-bulwark-tenant", "default"),
            ("content-type", "application/json"),
        ],
        body.as_deref().map(str::as_bytes),
    )
}

fn register_body_and_the_other_requests(backend: Backend) {
    let Some(instance) = Instance::start(backend, false) else {
        return;
    };
    let body = json_fixture("seed_004_register_request.json");
    let registered = registry(&instance, "POST", "/api/v1/agents", Some(&body));
    expect_status(&registered, 201, "the seed's register body");
    let data = registered.json()["data"].clone();
    has_fields(
        &data,
        &[
            "agentId",
            "name",
            "apiKey",
            "scopes",
            "trustLevel",
            "createdAt",
        ],
    );
    let agent_id = data["agentId"].as_str().expect("an id").to_owned();
    assert!(agent_id.starts_with("agent_01"), "{agent_id}");
    assert_eq!(data["name"], "my-assistant");
    assert_eq!(data["scopes"], json!(["read:customers", "write:tickets"]));
    assert_eq!(data["trustLevel"], "medium");
    let key = data["apiKey"].as_str().expect("a key").to_owned();
    let me = instance.call("GET", "/v1/agent/profiles/me", Some(&key), None);
    expect_status(&me, 200, "the registered agent's own key");
    assert_eq!(me.json()["profile"]["agentId"], "my-assistant");

    let listed = registry(
        &instance,
        "GET",
        "/api/v1/agents?limit=20&trustLevel=medium&status=active",
        None,
    );
    expect_status(&listed, 200, "GET /api/v1/agents with the seed's filters");
    let listed = listed.json();
    has_fields(&listed, &["data", "pagination"]);
    assert_eq!(listed["pagination"]["hasMore"], json!(false));
    let entries = listed["data"].as_array().expect("a list");
    assert_eq!(entries.len(), 1, "{listed}");
    has_fields(
        &entries[0],
        &["agentId", "name", "trustLevel", "status", "lastSeenAt"],
    );
    assert_eq!(entries[0]["agentId"], agent_id.as_str());
    assert_eq!(entries[0]["status"], "active");

    let path = format!("/api/v1/agents/{agent_id}");
    let read = registry(&instance, "GET", &path, None);
    expect_status(&read, 200, "GET /api/v1/agents/{agentId}");
    let read = &read.json()["data"];
    has_fields(
        read,
        &[
            "agentId",
            "name",
            "description",
            "scopes",
            "trustLevel",
            "status",
            "metadata",
            "createdAt",
            "lastSeenAt",
        ],
    );
    assert_eq!(read["description"], "Customer support AI agent");
    assert_eq!(read["metadata"], body["metadata"]);
    assert_eq!(read["status"], "active");

    let rotated = registry(&instance, "POST", &format!("{path}/rotate-key"), None);
    expect_status(&rotated, 200, "POST /api/v1/agents/{agentId}/rotate-key");
    let rotated = &rotated.json()["data"];
    has_fields(rotated, &["agentId", "apiKey", "rotatedAt"]);
    let new_key = rotated["apiKey"].as_str().expect("a key").to_owned();
    let old = instance.call("GET", "/v1/agent/profiles/me", Some(&key), None);
    expect_status(&old, 401, "the key rotated away");
    let new = instance.call("GET", "/v1/agent/profiles/me", Some(&new_key), None);
    expect_status(&new, 200, "the rotated-in key");

    let revoked = registry(&instance, "DELETE", &path, None);
    expect_status(&revoked, 200, "DELETE /api/v1/agents/{agentId}");
    let revoked = &revoked.json()["data"];
    has_fields(revoked, &["agentId", "status", "revokedAt"]);
    assert_eq!(revoked["status"], "revoked");
    let dead = instance.call("GET", "/v1/agent/profiles/me", Some(&new_key), None);
    expect_status(&dead, 403, "a revoked agent's key");
    let listed = registry(&instance, "GET", "/api/v1/agents?status=revoked", None);
    expect_status(&listed, 200, "GET /api/v1/agents?status=revoked");
    assert_eq!(listed.json()["data"][0]["agentId"], agent_id.as_str());
}
