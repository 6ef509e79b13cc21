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
    status_coverage::report(&seen, "the fuzz alone")
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

    let status = Command::new(st)
        .args(["run", &format!("http://127.0.0.1:{port}/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(["--checks", CHECKS])
        .args([
            "--max-examples",
            examples,
            "--seed",
            "20261128",
            "--workers",
            "2",
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
