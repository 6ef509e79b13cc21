//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo
//! does. Kept dependency-light on purpose (matklad/cargo-xtask): it shells out
//! to cargo and friends rather than linking them.

use std::env;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

mod bench_http;
mod bench_replicas;
mod fuzz;
mod hostile;
mod layout;
mod status_coverage;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test               everything CI runs: fmt check, clippy -D warnings, nextest on the workspace,
                     the pure crates' doctests and examples, the bounded fuzz-api, the quick
                     hostile attacks
  deny               cargo deny check licenses bans sources (installs cargo-deny if missing)
  migrate [--status] apply pending migrations to DATABASE_URL, or list applied and pending ones
  seed               create a demo tenant, keys (printed once) and agents; idempotent
  openapi            write docs/openapi.json, the OpenAPI document of the HTTP API
  bench store        store throughput on SQLite and PostgreSQL (release build)
  bench http         the HTTP API under load beside a bare actix-web baseline, on SQLite and
                     PostgreSQL (release build); appends to docs/benchmarks.md (--help: options)
  bench replicas     1, 2 and 3 replicas on one PostgreSQL and the database's work per
                     request (release build); writes docs/scaling.md (--help: options)
  fuzz-api [--long]  schemathesis against agentryd's own OpenAPI document: no 5xx, every
                     response as documented (the bounded form runs in `test`)
  hostile [--pg]     issue 15's attacks by callers without a credential against the release
                     binary on SQLite (and PostgreSQL): figures, and a failure when a target
                     is missed
  chaos [ROUNDS]     kill the release agentryd under load ROUNDS times (default 10) on
                     SQLite and PostgreSQL, then check nothing was lost or broken

DATABASE_URL chooses the database for migrate and seed (default sqlite://agentry.db).
";

fn main() -> Result<()> {
    let mut args = env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("test") => test(&rest),
        Some("deny") => deny(),
        Some("migrate") => agentryd("migrate", &rest),
        Some("seed") => agentryd("seed", &rest),
        Some("openapi") => openapi(),
        Some("bench") => bench(&rest),
        Some("chaos") => chaos(&rest),
        Some("fuzz-api") => fuzz::fuzz_api(&rest),
        Some("hostile") => hostile::hostile(&rest),
        Some("help" | "--help" | "-h") | None => {
            eprint!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{USAGE}"),
    }
}

/// Runs every check CI runs, in order of cost so a cheap failure is seen
/// first. Extra arguments go to nextest (e.g. a test name filter).
fn test(nextest_args: &[String]) -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    layout::check(&workspace_root())?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    ensure_cargo_tool("nextest", "cargo-nextest")?;
    let seed_python = seed_python(&target_dir())?;
    let status_log = target_dir().join(format!("status-log-{}", std::process::id()));
    std::fs::create_dir_all(&status_log).context("cannot create the status log")?;
    let tested = run(cargo()
        .args([
            "nextest",
            "run",
            "--workspace",
            "--locked",
            "--no-fail-fast",
        ])
        .args(nextest_args)
        .env("AGENTRY_STATUS_LOG", &status_log)
        .env("AGENTRY_SEED_PYTHON", &seed_python));
    let logged = status_coverage::logged(&status_log);
    let _ = std::fs::remove_dir_all(&status_log);
    tested?;
    if !nextest_args.is_empty() {
        return Ok(());
    }
    // nextest runs no doctests, and the examples are how another service
    // learns to embed the pure crates: both must keep working.
    run(cargo().args([
        "test",
        "--doc",
        "--locked",
        "--package",
        "agentry-ledger",
        "--package",
        "agentry-lifecycle",
    ]))?;
    for (package, example) in [
        ("agentry-ledger", "budget_gate"),
        ("agentry-lifecycle", "lifecycle_tour"),
    ] {
        run(cargo().args([
            "run",
            "--quiet",
            "--locked",
            "--package",
            package,
            "--example",
            example,
        ]))?;
    }
    // Every status the OpenAPI document promises is answered by some test.
    status_coverage::require(&logged?, "the tests")?;
    // The bounded contract fuzz, against the binary the tests just built;
    // how much of the contract it reached is worth knowing, not a verdict.
    let seen = fuzz::fuzz_test_binary()?;
    status_coverage::count(&seen, "the fuzz alone")?;
    // The quick attacks of `cargo xtask hostile`, against the same binary.
    hostile::cheap()
}

/// What the seeds tests' Python imports, pinned: `requests` for seed 002's
/// `provision.py`, and the official MCP SDK that drives seed 000's MCP tools.
const SEED_PYTHON_PACKAGES: &[&str] = &["requests==2.34.2", "mcp==2.3.0"];

/// The Python that runs the seeds tests' scripts
/// (`bins/agentryd/tests/seeds`): a virtualenv under the target directory
/// with [`SEED_PYTHON_PACKAGES`], installed only when missing.
fn seed_python(target: &Path) -> Result<PathBuf> {
    let venv = target.join("seed-venv");
    let python = venv.join("bin").join("python");
    let pinned = venv.join(format!("pinned-{}", SEED_PYTHON_PACKAGES.join("-")));
    if python.exists() && pinned.exists() {
        return Ok(python);
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(SEED_PYTHON_PACKAGES))?;
    std::fs::write(&pinned, b"").context("cannot mark the virtualenv")?;
    Ok(python)
}

/// The whole answer to one plain `GET path` on `address`, sent with
/// `Connection: close`.
fn plain_get(address: SocketAddr, path: &str) -> std::io::Result<String> {
    plain_request(address, "GET", path, None, None)
}

/// The whole answer to one request on `address`, with an optional bearer
/// credential and JSON body, sent with `Connection: close`.
fn plain_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&str>,
) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if let Some(bearer) = bearer {
        request.push_str(&format!("Authorization: Bearer {bearer}\r\n"));
    }
    if let Some(json) = json {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// License, ban and source checks. The advisories check is configured in
/// deny.toml but needs the advisory database from the network, which the
/// build machines lack; run `cargo deny check advisories` where it is online.
fn deny() -> Result<()> {
    ensure_cargo_tool("deny", "cargo-deny")?;
    run(cargo().args(["deny", "check", "licenses", "bans", "sources"]))
}

/// Runs a maintenance command of the server binary, so the migrations and
/// the seed are exactly the ones `agentryd` embeds.
fn agentryd(command: &str, args: &[String]) -> Result<()> {
    run(cargo()
        .args(["run", "--quiet", "--package", "agentryd", "--", command])
        .args(args))
}

/// Writes the OpenAPI document to `docs/openapi.json`. agentry-http builds
/// it (its `openapi` example prints it), so xtask still links none of our
/// crates; a test fails while the committed copy differs.
fn openapi() -> Result<()> {
    let mut command = cargo();
    command
        .args([
            "run",
            "--quiet",
            "--package",
            "agentry-http",
            "--example",
            "openapi",
        ])
        .stderr(Stdio::inherit());
    eprintln!("xtask: running {command:?}");
    let output = command
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed with {}", output.status);
    }
    let target = workspace_root().join("docs").join("openapi.json");
    std::fs::write(&target, &output.stdout)
        .with_context(|| format!("cannot write {}", target.display()))?;
    eprintln!("xtask: wrote {}", target.display());
    Ok(())
}

fn bench(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("store") => run(cargo().args([
            "bench",
            "--package",
            "agentry-store",
            "--bench",
            "store_throughput",
        ])),
        Some("http") => bench_http::bench_http(&args[1..]),
        Some("replicas") => bench_replicas::bench_replicas(&args[1..]),
        other => bail!("unknown benchmark {other:?}; available: store, http, replicas"),
    }
}

/// The long form of the crash test `cargo xtask test` runs bounded
/// (bins/agentryd/tests/chaos.rs): the release binary, more kills.
fn chaos(args: &[String]) -> Result<()> {
    let rounds = args.first().map_or("10", String::as_str);
    if rounds.parse::<u32>().is_err() {
        bail!("chaos takes a number of rounds, not {rounds:?}");
    }
    run(cargo().args(["build", "--release", "--locked", "--package", "agentryd"]))?;
    let target = target_dir();
    ensure_cargo_tool("nextest", "cargo-nextest")?;
    run(cargo()
        .args([
            "nextest",
            "run",
            "--locked",
            "--package",
            "agentryd",
            "--test",
            "chaos",
            "--no-capture",
        ])
        .env("AGENTRY_CHAOS_BIN", target.join("release").join("agentryd"))
        .env("AGENTRY_CHAOS_ROUNDS", rounds)
        // Only here, never in `test`: it stops the machine's PostgreSQL.
        .env("AGENTRY_CHAOS_RESTART_POSTGRES", "1"))
}

fn ensure_cargo_tool(subcommand: &str, package: &str) -> Result<()> {
    let installed = cargo()
        .args([subcommand, "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        eprintln!("xtask: {package} is missing, installing it");
        run(cargo().args(["install", "--locked", package]))?;
    }
    Ok(())
}

fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// The workspace this xtask was run from. `cargo run` sets
/// `CARGO_MANIFEST_DIR` for the process it starts; the compile-time value is
/// only a fallback, because a build cache shared between checkouts (as
/// `.ci/run` uses) can hand one checkout the binary built in another.
/// Where cargo puts builds: `CARGO_TARGET_DIR` (relative to the workspace,
/// where `cargo()` runs), else the workspace's `target`.
fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

fn workspace_root() -> PathBuf {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(command: &mut Command) -> Result<()> {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
