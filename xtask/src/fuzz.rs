//! `cargo xtask fuzz-api`: schemathesis against the real binary, driven by
//! the OpenAPI document the binary serves. It checks that no request, valid
//! or not, gets a 5xx, and that every response has a documented status,
//! content type, headers and body schema. Afterwards it reads the server's
//! `/metrics`, so `cargo xtask test` can tell which documented statuses the
//! fuzz answered (see `status_coverage.rs`).
//!
//! Not checked: whether schema-valid requests are accepted
//! (`positive_data_acceptance`): many are refused by design for reasons a
//! schema cannot carry (a budget spent, a name already taken, a token not
//! yet issued).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::status_coverage::{self, Answer};
use crate::{cargo, run, target_dir};

/// Pinned so a new release cannot change what CI finds.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--long` uses the release binary and a large example budget; the
/// bounded form (what `cargo xtask test` runs) uses the test profile's
/// binary, a small budget and a fixed seed, and finishes in a minute or two.
pub(crate) fn fuzz_api(args: &[String]) -> Result<()> {
    let long = args.iter().any(|arg| arg == "--long");
    let (profile, examples) = if long {
        ("release", "200")
    } else {
        ("debug", "10")
    };
    let mut build = cargo();
    build.args(["build", "--locked", "--package", "agentryd"]);
    if long {
        build.arg("--release");
    }
    run(&mut build)?;
    let seen = fuzz_built(profile, examples)?;
    status_coverage::report(&seen, "the fuzz alone").map(drop)
}

/// The bounded form against the binary `cargo nextest` has just built for
/// the integration tests: building it again alone would resolve features
/// differently and compile the workspace a second time.
pub(crate) fn fuzz_test_binary() -> Result<BTreeSet<Answer>> {
    fuzz_built("debug", "10")
}

/// Runs the fuzz; returns the answers the server counted.
fn fuzz_built(profile: &str, examples: &str) -> Result<BTreeSet<Answer>> {
    let target = target_dir();
    let binary = target.join(profile).join("agentryd");
    let st = schemathesis(&target)?;

    let work = target.join(format!("fuzz-api-{}", std::process::id()));
    std::fs::create_dir_all(&work).context("cannot create the fuzz run's directory")?;
    let outcome = fuzz(&binary, &st, &work, examples);
    let _ = std::fs::remove_dir_all(&work);
    outcome
}

fn fuzz(binary: &Path, st: &Path, work: &Path, examples: &str) -> Result<BTreeSet<Answer>> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = Command::new(binary)
        .args(["--bind", &format!("127.0.0.1:{port}"), "--no-tls"])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", work.join("agentry.db").display()),
        )
        .env("AGENTRY_MASTER_KEY_FILE", work.join("agentry.key"))
        .env("AGENTRY_LOG", "warn")
        .env_remove("AGENTRY_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stderr = child.stderr.take().context("stderr is piped")?;
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    let mut key = None;
    for line in lines.by_ref().map_while(Result::ok) {
        let line = line.trim().to_owned();
        if line.starts_with("agy_admin_") {
            key = Some(line);
        } else if line.contains("agentryd: listening on") {
            break;
        }
    }
    let Some(key) = key else {
        bail!("agentryd did not start, or printed no first admin key");
    };
    std::thread::spawn(move || lines.for_each(drop));

    let credentials = credentials(port, &key)?;
    std::fs::write(work.join("schemathesis.toml"), AUTH_CONFIG)
        .context("cannot write schemathesis.toml")?;
    let status = Command::new(st)
        .args(["run", &format!("http://127.0.0.1:{port}/openapi.json")])
        .envs(credentials)
        .args(["--checks", CHECKS])
        .args([
            "--max-examples",
            examples,
            "--seed",
            "20261128",
            // One worker: with two, Python 3.11's `ast` (which hypothesis
            // calls to describe strategies) was once entered from both
            // threads at once and failed with "AST constructor recursion
            // depth mismatch", a failure of the tool, not of the API.
            "--workers",
            "1",
        ])
        .args(["--request-timeout", "10"])
        .current_dir(work)
        .status()
        .context("cannot run schemathesis")?;
    let metrics = get_text(port, "/metrics").context("cannot read the server's /metrics")?;
    drop(server);
    if !status.success() {
        bail!("schemathesis found failures (see above)");
    }
    Ok(status_coverage::from_metrics(&metrics))
}

/// Which credential schemathesis sends for each security scheme of the
/// document: the admin key where an API key is asked for, and an agent's
/// token and a human's session where those are (the first scheme an
/// operation lists that has a credential here is used). Tokens come from the
/// environment, so they are written to no file. Callback tokens and client
/// certificates need a whole machine script; the HTTP tests cover those
/// routes.
const AUTH_CONFIG: &str = r#"
[auth.openapi.api_key]
bearer = "${AGENTRY_FUZZ_API_KEY}"

[auth.openapi.agent_jwt]
bearer = "${AGENTRY_FUZZ_AGENT_JWT}"

[auth.openapi.session_jwt]
bearer = "${AGENTRY_FUZZ_SESSION_JWT}"
"#;

/// Credentials for `AUTH_CONFIG`, made through the API: an agent that may
/// delegate, with a budget and a rate limit the fuzz cannot use up, and a
/// seed 002 instance whose primary human is logged in.
fn credentials(port: u16, admin_key: &str) -> Result<Vec<(&'static str, String)>> {
    let agent = send_json(
        port,
        "POST",
        "/v1/agent/bootstrap",
        Some(admin_key),
        &serde_json::json!({
            "agent_id": "fuzz-agent",
            "budget_daily_usd": 1_000_000,
            "metadata": { "can_delegate": true },
        }),
    )?;
    let unlimited = serde_json::json!({
        "agent:fuzz-agent": { "maxBudgetUsd": 1_000_000, "maxRequestsPerMinute": 1_000_000 },
    });
    send_json(
        port,
        "PATCH",
        "/v1/agent-limits",
        Some(admin_key),
        &unlimited,
    )?;
    let instance = serde_json::json!({
        "primary_agent": {
            "email": "primary@fuzz.test",
            "password": "fuzz-password-1",
            "agent_profile": { "name": "primary", "display_name": "Primary" },
        },
        "humans": [],
    });
    send_json(port, "POST", "/api/v1/bootstrap", None, &instance)?;
    let session = send_json(
        port,
        "POST",
        "/api/v1/auth/login",
        None,
        &serde_json::json!({ "email": "primary@fuzz.test", "password": "fuzz-password-1" }),
    )?;
    let text = |value: &serde_json::Value, field: &str| {
        value[field]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no {field} in {value}"))
    };
    Ok(vec![
        ("AGENTRY_FUZZ_API_KEY", admin_key.to_owned()),
        ("AGENTRY_FUZZ_AGENT_JWT", text(&agent, "jwt")?),
        ("AGENTRY_FUZZ_SESSION_JWT", text(&session, "jwt_token")?),
    ])
}

/// Sends `body` to `path` on loopback; the JSON answer, an error unless 2xx.
fn send_json(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> Result<serde_json::Value> {
    let answer = crate::plain_request(
        ([127, 0, 0, 1], port).into(),
        method,
        path,
        bearer,
        Some(&body.to_string()),
    )?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .context("an HTTP answer without a head")?;
    if !head.starts_with("HTTP/1.1 2") {
        bail!(
            "POST {path}: {} {body}",
            head.lines().next().unwrap_or_default()
        );
    }
    serde_json::from_str(body).with_context(|| format!("POST {path} answered no JSON"))
}

/// The body of `GET path` on loopback; an error unless it is a 200.
fn get_text(port: u16, path: &str) -> Result<String> {
    let answer = crate::plain_get(([127, 0, 0, 1], port).into(), path)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .context("an HTTP answer without a head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

/// schemathesis in a virtualenv under the target directory, installed on
/// first use.
fn schemathesis(target: &Path) -> Result<std::path::PathBuf> {
    let venv = target.join("fuzz-venv");
    let st = venv.join("bin").join("st");
    let pinned = venv.join(SCHEMATHESIS);
    if st.exists() && pinned.exists() {
        return Ok(st);
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin").join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        SCHEMATHESIS,
    ]))?;
    std::fs::write(&pinned, b"").context("cannot mark the virtualenv")?;
    Ok(st)
}
