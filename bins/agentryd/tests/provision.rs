//! Seed 002 end to end against the real binary: start `agentryd` on a
//! temporary SQLite file and a free port, run `examples/provision.py` with
//! python3, then accept an invite through the returned URL, log in, and use
//! one of the returned agent keys.

use std::path::Path;
use std::process::Command;

mod common;

use common::{free_port, http, start};

#[test]
fn provision_py_bootstraps_a_real_server_and_its_credentials_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let server = start(dir.path(), port, &["--no-tls"], 1);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/provision.py");
    let out = dir.path().join("instance-credentials.json");
    let provisioned = Command::new("python3")
        .arg(&script)
        .args(["--url", &format!("http://127.0.0.1:{port}"), "--out"])
        .arg(&out)
        .output()
        .expect("python3 runs (it is on every supported machine)");
    let stdout = String::from_utf8_lossy(&provisioned.stdout);
    assert!(
        provisioned.status.success(),
        "provision.py failed: {stdout}{}",
        String::from_utf8_lossy(&provisioned.stderr)
    );
    assert!(stdout.contains("Instance bootstrapped."), "{stdout}");

    let credentials: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("credentials written"))
            .expect("credentials are JSON");
    assert!(
        !stdout.contains(credentials["primary_agent"]["api_key"].as_str().unwrap()),
        "the script never prints a key"
    );

    // A human follows the invite URL's token, sets a password, logs in.
    let invite_url = credentials["humans"][0]["invite_url"].as_str().unwrap();
    let token = invite_url
        .split_once("token=")
        .map(|(_, token)| token)
        .unwrap();
    assert!(invite_url.starts_with(&format!("http://127.0.0.1:{port}/invite?token=")));
    let (status, page) = http(port, "GET", &format!("/invite?token={token}"), None, None);
    assert_eq!(
        (status, page),
        (200, serde_json::Value::Null),
        "the invite page is HTML"
    );
    let password = "correct horse battery staple";
    let (status, accepted) = http(
        port,
        "POST",
        "/api/v1/invite/accept",
        None,
        Some(&serde_json::json!({ "token": token, "password": password })),
    );
    assert_eq!(status, 200, "{accepted}");
    let (status, session) = http(
        port,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&serde_json::json!({ "email": "human@example.com", "password": password })),
    );
    assert_eq!(status, 200, "{session}");
    let channel = format!(
        "/api/v1/channels/{}",
        credentials["channel"]["channel_id"].as_str().unwrap()
    );
    let (status, read) = http(port, "GET", &channel, session["jwt_token"].as_str(), None);
    assert_eq!(
        (status, &read["name"]),
        (200, &serde_json::json!("team-chat"))
    );

    // The returned agent keys and the primary agent's token work.
    let (status, me) = http(
        port,
        "GET",
        "/v1/agent/status",
        credentials["agents"][0]["api_key"].as_str(),
        None,
    );
    assert_eq!(
        (status, &me["profile"]["agentId"]),
        (200, &serde_json::json!("worker-1"))
    );
    let (status, me) = http(
        port,
        "GET",
        "/v1/agent/profiles/me",
        credentials["primary_agent"]["jwt_token"].as_str(),
        None,
    );
    assert_eq!(
        (status, &me["profile"]["agentId"]),
        (200, &serde_json::json!("coordinator"))
    );

    // The workspace is its own tenant: the primary agent's key administers
    // it, and the operator on the machine reaches it by name.
    let (status, listed) = http(
        port,
        "GET",
        "/v1/agent/profiles",
        credentials["primary_agent"]["api_key"].as_str(),
        None,
    );
    assert_eq!(
        (status, &listed["total"]),
        (200, &serde_json::json!(3)),
        "{listed}"
    );
    let minted = Command::new(env!("CARGO_BIN_EXE_agentryd"))
        .args([
            "admin",
            "create-key",
            "--tenant",
            "workspace",
            "--role",
            "auditor",
        ])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("agentry.db").display()),
        )
        .env("AGENTRY_MASTER_KEY_FILE", dir.path().join("agentry.key"))
        .env_remove("AGENTRY_MASTER_KEY")
        .output()
        .expect("agentryd admin runs");
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let auditor = String::from_utf8_lossy(&minted.stdout).trim().to_owned();
    let (status, listed) = http(port, "GET", "/v1/agent/profiles", Some(&auditor), None);
    assert_eq!(
        (status, &listed["total"]),
        (200, &serde_json::json!(3)),
        "{listed}"
    );
    let operator = common::first_admin_key(&server).expect("the first run printed a key");
    let (status, listed) = http(port, "GET", "/v1/agent/profiles", Some(&operator), None);
    assert_eq!(
        (status, &listed["total"]),
        (200, &serde_json::json!(0)),
        "the default tenant's key sees none of it: {listed}"
    );

    // A second run is refused: the instance is bootstrapped once.
    let again = Command::new("python3")
        .arg(&script)
        .args(["--url", &format!("http://127.0.0.1:{port}"), "--out"])
        .arg(dir.path().join("again.json"))
        .output()
        .expect("python3 runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already_bootstrapped"));
    drop(server);
}
