//! Seed 002: `provision.py` exactly as the seed prints it (indentation put
//! back, `INSTANCE_URL` pointed at the test server), then every credential
//! it saved: the primary agent's key and token, each worker's key, the
//! primary agent's password, and the human's invite URL. And the seed's
//! "desired flow" request body, answered 201 with the seed's response
//! shape, then 409 for a second bootstrap.

use std::process::Command;

use serde_json::{Value, json};

use crate::{
    Backend, Instance, expect_status, fixture, has_fields, json_fixture, on_both_backends,
    seed_python, substitute,
};

on_both_backends!(provision_py_as_printed, desired_flow_body);

/// The token an invite URL carries, after checking the URL points at this
/// server's `/invite` page.
fn invite_token<'a>(instance: &Instance, url: &'a str) -> &'a str {
    let prefix = format!("{}/invite?token=", instance.base_url());
    let token = url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{url} is not {prefix}<token>"));
    assert!(token.starts_with("inv_"), "{token}");
    token
}

/// A human follows the invite URL: the page is served, the token it
/// carries sets a password and signs in, and only once.
fn follow_invite(instance: &Instance, email: &str, url: &str) {
    let token = invite_token(instance, url);
    let page = instance.request("GET", &format!("/invite?token={token}"), &[], None);
    expect_status(&page, 200, "GET the invite URL");
    assert!(
        page.header("content-type")
            .is_some_and(|kind| kind.starts_with("text/html")),
        "{:?}",
        page.headers
    );
    assert!(
        page.text().contains("/api/v1/invite/accept"),
        "{}",
        page.text()
    );
    let password = "correct horse battery staple";
    let accept = json!({ "token": token, "password": password });
    let accepted = instance.call("POST", "/api/v1/invite/accept", None, Some(&accept));
    expect_status(
        &accepted,
        200,
        "POST /api/v1/invite/accept with the URL's token",
    );
    assert_eq!(accepted.json()["email"], email);
    let session = accepted.json()["jwt_token"]
        .as_str()
        .expect("a session")
        .to_owned();
    let login = json!({ "email": email, "password": password });
    let signed_in = instance.call("POST", "/api/v1/auth/login", None, Some(&login));
    expect_status(&signed_in, 200, "the invited human logs in");
    let logout = instance.call("POST", "/api/v1/auth/logout", Some(&session), None);
    expect_status(&logout, 204, "the accepted invite's session logs out");
    let reused = instance.call("POST", "/api/v1/invite/accept", None, Some(&accept));
    expect_status(&reused, 410, "the invite token a second time");
}

/// An agent key authenticates as its own agent, and (not being the
/// primary agent's) administers nothing.
fn worker_key_works(instance: &Instance, name: &str, key: &str) {
    for path in ["/v1/agent/status", "/v1/agent/profiles/me"] {
        let reply = instance.call("GET", path, Some(key), None);
        expect_status(&reply, 200, &format!("{name}'s key on {path}"));
        assert_eq!(reply.json()["profile"]["agentId"], name);
    }
    let admin = instance.call("GET", "/v1/agent/profiles", Some(key), None);
    expect_status(
        &admin,
        403,
        &format!("{name}'s key on the tenant's profiles"),
    );
}

/// Runs the fixture in `work` against `instance`.
fn run_provision_py(
    instance: &Instance,
    python: &std::path::Path,
    work: &std::path::Path,
) -> std::process::Output {
    let script = substitute(
        &fixture("seed_002_provision.py"),
        &[(
            r#"INSTANCE_URL = "http://localhost:8080""#,
            &format!(r#"INSTANCE_URL = "{}""#, instance.base_url()),
        )],
    );
    std::fs::create_dir_all(work).expect("a working directory");
    std::fs::write(work.join("provision.py"), script).expect("write provision.py");
    Command::new(python)
        .arg("provision.py")
        .current_dir(work)
        .env("PYTHONIOENCODING", "utf-8")
        .output()
        .expect("python runs")
}

fn provision_py_as_printed(backend: Backend) {
    let Some(python) = seed_python() else {
        return;
    };
    let Some(instance) = Instance::start(backend, false) else {
        return;
    };
    let work = instance.dir.path().join("agent");
    let ran = run_provision_py(&instance, &python, &work);
    let stdout = String::from_utf8_lossy(&ran.stdout).into_owned();
    assert!(
        ran.status.success(),
        "provision.py failed:\n{stdout}{}",
        String::from_utf8_lossy(&ran.stderr)
    );

    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(work.join("instance-credentials.json"))
            .expect("provision.py saved instance-credentials.json"),
    )
    .expect("the credentials are JSON");
    assert_eq!(saved["instance_url"], instance.base_url());
    let primary = &saved["primary_agent"];
    assert_eq!(primary["email"], "admin@localhost");
    let api_key = primary["api_key"]
        .as_str()
        .expect("the primary agent's key");
    let jwt = primary["jwt_token"].as_str().expect("its token");
    let password = primary["password"].as_str().expect("its password");

    // What the seed says it prints.
    let human = &saved["humans"][0];
    let invite_url = human["invite_url"].as_str().expect("an invite URL");
    let expected = format!(
        "✅ Instance bootstrapped successfully!\n📝 Credentials saved to: \
         instance-credentials.json\n\n🔑 Primary agent API key: {api_key}\n\n📧 Human invite \
         URL:\n human@example.com: {invite_url}\n"
    );
    assert_eq!(stdout, expected);

    // The primary agent: its key and token authenticate it, its key
    // administers its workspace, its password signs it in.
    for credential in [api_key, jwt] {
        for path in ["/v1/agent/status", "/v1/agent/profiles/me"] {
            let reply = instance.call("GET", path, Some(credential), None);
            expect_status(
                &reply,
                200,
                &format!("the primary agent's credential on {path}"),
            );
            assert_eq!(reply.json()["profile"]["agentId"], "coordinator");
            assert_eq!(reply.json()["profile"]["displayName"], "Coordination Agent");
        }
    }
    let listed = instance.call("GET", "/v1/agent/profiles", Some(api_key), None);
    expect_status(&listed, 200, "the primary agent's key lists its workspace");
    assert_eq!(listed.json()["total"], json!(3));
    let login = json!({ "email": "admin@localhost", "password": password });
    let signed_in = instance.call("POST", "/api/v1/auth/login", None, Some(&login));
    expect_status(&signed_in, 200, "the primary agent's saved password");

    // Every worker's key.
    let agents = saved["agents"].as_array().expect("the agents");
    let names: Vec<&str> = agents
        .iter()
        .map(|agent| agent["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["worker-1", "worker-2"]);
    for agent in agents {
        has_fields(
            agent,
            &["agent_id", "name", "display_name", "api_key", "api_key_id"],
        );
        let name = agent["name"].as_str().expect("a name");
        worker_key_works(&instance, name, agent["api_key"].as_str().expect("a key"));
    }

    // The human's invite URL carries its token.
    let humans = saved["humans"].as_array().expect("the humans");
    assert_eq!(humans.len(), 1);
    assert_eq!(human["email"], "human@example.com");
    assert_eq!(
        human["invite_token"].as_str(),
        Some(invite_token(&instance, invite_url))
    );
    follow_invite(&instance, "human@example.com", invite_url);

    // Running it again: the seed's 409, which raise_for_status turns into
    // a failure.
    let again = run_provision_py(&instance, &python, &instance.dir.path().join("again"));
    assert!(!again.status.success(), "a second bootstrap must fail");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("409 Client Error"), "{stderr}");
}

fn desired_flow_body(backend: Backend) {
    let Some(instance) = Instance::start(backend, false) else {
        return;
    };
    let body = json_fixture("seed_002_bootstrap_request.json");
    let reply = instance.call("POST", "/api/v1/bootstrap", None, Some(&body));
    expect_status(&reply, 201, "the seed's bootstrap request body");
    let answer = reply.json();
    has_fields(
        &answer,
        &[
            "primary_agent",
            "agents",
            "humans",
            "channel",
            "instance_id",
        ],
    );
    let primary = &answer["primary_agent"];
    has_fields(
        primary,
        &[
            "user_id",
            "agent_id",
            "email",
            "jwt_token",
            "api_key",
            "api_key_id",
        ],
    );
    assert_eq!(primary["email"], "admin@localhost");
    let agents = answer["agents"].as_array().expect("agents");
    let names: Vec<&Value> = agents.iter().map(|agent| &agent["name"]).collect();
    assert_eq!(names, [&json!("data-collector"), &json!("analyst")]);
    let humans = answer["humans"].as_array().expect("humans");
    assert_eq!(humans.len(), 1);
    let human = &humans[0];
    has_fields(human, &["user_id", "email", "invite_token", "invite_url"]);
    assert_eq!(human["email"], "researcher@university.edu");
    let channel = &answer["channel"];
    has_fields(channel, &["channel_id", "name", "topic", "members"]);
    assert_eq!(channel["name"], "general");
    assert_eq!(channel["topic"], "Research team coordination");
    let mut members: Vec<&str> = channel["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|member| member.as_str().expect("an id"))
        .collect();
    members.sort_unstable();
    let mut expected = vec![
        primary["user_id"].as_str().expect("an id"),
        human["user_id"].as_str().expect("an id"),
    ];
    expected.sort_unstable();
    assert_eq!(members, expected, "the primary agent and the human");

    // The credentials work.
    let me = instance.call(
        "GET",
        "/v1/agent/profiles/me",
        primary["api_key"].as_str(),
        None,
    );
    expect_status(&me, 200, "the primary agent's key");
    assert_eq!(me.json()["profile"]["displayName"], "Research Coordinator");
    let me = instance.call(
        "GET",
        "/v1/agent/status",
        primary["jwt_token"].as_str(),
        None,
    );
    expect_status(&me, 200, "the primary agent's token");
    for agent in agents {
        worker_key_works(
            &instance,
            agent["name"].as_str().expect("a name"),
            agent["api_key"].as_str().expect("a key"),
        );
    }
    let path = format!(
        "/api/v1/channels/{}",
        channel["channel_id"].as_str().expect("an id")
    );
    let read = instance.call("GET", &path, primary["api_key"].as_str(), None);
    expect_status(&read, 200, "the primary agent reads the default channel");
    let login = json!({ "email": "admin@localhost", "password": "secure-generated-password" });
    let signed_in = instance.call("POST", "/api/v1/auth/login", None, Some(&login));
    expect_status(&signed_in, 200, "the seed's primary password signs in");
    follow_invite(
        &instance,
        "researcher@university.edu",
        human["invite_url"].as_str().expect("an invite URL"),
    );

    // "Second bootstrap call returns 409 Conflict".
    let again = instance.call("POST", "/api/v1/bootstrap", None, Some(&body));
    expect_status(&again, 409, "the seed's bootstrap request body, again");
}
