//! The seeds' own examples as tests, against the real `agentryd` binary on
//! SQLite and on PostgreSQL (a fresh database for every test).
//!
//! Each example a seed prints in full is a fixture under `fixtures/`, kept
//! as the seed prints it: only the indentation and line breaks the seed's
//! text lost are put back, and the test substitutes nothing but the host
//! and port and the credentials (asserting that each substitution matched
//! exactly once, so a fixture that drifts from its seed fails here). Every
//! example must get the status its seed gives, and the credentials it hands
//! out must work.
//!
//! - `seed_000`: the bootstrap call (`client.agentProfiles.bootstrap`) with
//!   a provisioner key, then the agent's self-awareness with its JWT; and
//!   its MCP tools, driven by the official Python SDK (`mcp_client.py`,
//!   with `mcp` pinned in the same virtualenv).
//! - `seed_001`: every request body of the agent-management reference.
//! - `seed_002`: `provision.py` as the seed prints it, run with Python and
//!   `requests` (`AGENTRY_SEED_PYTHON`, which `cargo xtask test` points at
//!   a virtualenv it keeps under the target directory; `python3` otherwise),
//!   and the "desired flow" request body.
//! - `seed_003`: the seed's curl commands, run by `sh` as printed.
//! - `seed_004`: the registry's register body and its other requests.
//! - `agents_doc`: docs/agents.md's commands, as written.

#[path = "../common/mod.rs"]
mod common;

mod agents_doc;
mod seed_000;
mod seed_001;
mod seed_002;
mod seed_003;
mod seed_004;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, first_admin_key, free_port, start_with};

/// Where a test's server keeps its data.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// Declares, for each named function `fn name(Backend)`, a module `name`
/// with one test per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::Backend::Sqlite);
            }

            #[test]
            fn postgres() {
                super::$name($crate::Backend::Postgres);
            }
        }
    )*};
}
pub(crate) use on_both_backends;

/// True when the tests run in CI, where nothing may be skipped.
fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// A tool the test cannot run without: outside CI its absence skips the
/// test (`None`); in CI it fails it, with `why`.
fn required(found: bool, why: &str) -> Option<()> {
    if found {
        return Some(());
    }
    assert!(!in_ci(), "{why}");
    eprintln!("skipped: {why}");
    None
}

/// A fixture's text.
pub(crate) fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/seeds/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A JSON fixture, parsed.
pub(crate) fn json_fixture(name: &str) -> serde_json::Value {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// `text` with each `(from, to)` replaced; each `from` must occur exactly
/// once, so a substitution never silently misses (or changes more than
/// the one place it names).
pub(crate) fn substitute(text: &str, substitutions: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in substitutions {
        assert_eq!(
            out.matches(from).count(),
            1,
            "{from:?} must occur exactly once in:\n{out}"
        );
        out = out.replacen(from, to, 1);
    }
    out
}

/// The Python that runs seed 002's script: `AGENTRY_SEED_PYTHON` (set by
/// `cargo xtask test` to its virtualenv's), else `python3` if it can import
/// `requests`. `None` (skip) when neither, outside CI.
pub(crate) fn seed_python() -> Option<PathBuf> {
    python_with("requests")
}

/// The Python that runs the official MCP SDK against seed 000's tools:
/// as [`seed_python`], with the `mcp` package.
pub(crate) fn mcp_python() -> Option<PathBuf> {
    python_with("mcp")
}

fn python_with(module: &str) -> Option<PathBuf> {
    let imports = |python: &Path| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if let Some(python) = std::env::var_os("AGENTRY_SEED_PYTHON") {
        let python = PathBuf::from(python);
        assert!(
            imports(&python),
            "AGENTRY_SEED_PYTHON={} cannot import {module}",
            python.display()
        );
        return Some(python);
    }
    let python3 = PathBuf::from("python3");
    required(
        imports(&python3),
        &format!(
            "this test needs Python with `{module}`: run `cargo xtask test` (it makes a \
             virtualenv), set AGENTRY_SEED_PYTHON to such a python, or pip install it for python3"
        ),
    )?;
    Some(python3)
}

/// `Some` when curl is on the PATH; the seed 003 tests run the seed's curl
/// commands and fail without it in CI.
pub(crate) fn curl_available() -> Option<()> {
    let found = Command::new("sh")
        .args(["-c", "command -v curl"])
        .output()
        .is_ok_and(|output| output.status.success());
    required(
        found,
        "seed 003's examples are curl commands: install curl (`command -v curl` found none)",
    )
}

/// One answer: status, headers (names lowercased) and the body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|pair| pair == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&body[..end])
            .ok()
            .and_then(|line| usize::from_str_radix(line.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = end + 2;
        out.extend_from_slice(&body[start..(start + size).min(body.len())]);
        body = body.get(start + size + 2..).unwrap_or_default();
    }
}

/// A running `agentryd` on a fresh database of one backend; the
/// PostgreSQL database is dropped when this is.
pub(crate) struct Instance {
    pub(crate) port: u16,
    /// The mTLS listener's port, when started with it.
    pub(crate) tls_port: Option<u16>,
    /// The first-run admin key of the `default` tenant.
    pub(crate) admin_key: String,
    pub(crate) dir: tempfile::TempDir,
    database_url: String,
    postgres_database: Option<String>,
    server: Option<Server>,
}

impl Instance {
    /// Starts the server on `backend` (with the mTLS listener when `tls`).
    /// `None` when PostgreSQL is unreachable outside CI (in CI that fails
    /// the test).
    pub(crate) fn start(backend: Backend, tls: bool) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (database_url, postgres_database) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("agentry.db").display()),
                None,
            ),
            Backend::Postgres => {
                let reachable = TcpStream::connect(("127.0.0.1", 5432)).is_ok();
                required(
                    reachable,
                    "PostgreSQL is not reachable at 127.0.0.1:5432 (CI needs it)",
                )?;
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_nanos());
                let name = format!("agentry_seeds_{}_{nanos}", std::process::id());
                // agentryd creates a database that does not exist yet.
                (
                    format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    Some(name),
                )
            }
        };
        let artifacts = dir.path().join("artifacts").display().to_string();
        let port = free_port();
        let tls_port = tls.then(free_port);
        let tls_bind = tls_port.map(|tls_port| format!("127.0.0.1:{tls_port}"));
        let args: Vec<&str> = match &tls_bind {
            Some(bind) => vec!["--tls-bind", bind],
            None => vec!["--no-tls"],
        };
        let server = start_with(
            env!("CARGO_BIN_EXE_agentryd"),
            dir.path(),
            port,
            &args,
            1 + usize::from(tls),
            &[
                ("DATABASE_URL", &database_url),
                // Never the working directory (the default on PostgreSQL).
                ("AGENTRY_ARTIFACT_DIR", &artifacts),
            ],
        );
        let admin_key = first_admin_key(&server).expect("a fresh database prints an admin key");
        Some(Self {
            port,
            tls_port,
            admin_key,
            dir,
            database_url,
            postgres_database,
            server: Some(server),
        })
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `agentryd <args>` on this instance's database; its stdout, trimmed.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_agentryd"))
            .args(args)
            .env("DATABASE_URL", &self.database_url)
            .env(
                "AGENTRY_MASTER_KEY_FILE",
                self.dir.path().join("agentry.key"),
            )
            .env_remove("AGENTRY_MASTER_KEY")
            .output()
            .expect("agentryd runs");
        assert!(
            output.status.success(),
            "agentryd {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// One HTTP/1.1 request on the plain listener with `Connection: close`.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("agentryd answers");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nconnection: close\r\n",
            self.port
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = body.unwrap_or_default();
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        stream.write_all(head.as_bytes()).expect("send the head");
        stream.write_all(body).expect("send the body");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("read the answer");
        let split = answer
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .expect("an answer with a head");
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let raw = &answer[split + 4..];
        let chunked = headers
            .iter()
            .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
        let body = if chunked { dechunk(raw) } else { raw.to_vec() };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A JSON request with an optional bearer credential.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Reply {
        let auth = bearer.map(|token| format!("Bearer {token}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        let body = body.map(serde_json::Value::to_string);
        self.request(method, path, &headers, body.as_deref().map(str::as_bytes))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(name) = &self.postgres_database {
            let dropped = Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"])
                .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .output();
            if let Err(error) = dropped {
                eprintln!("could not drop {name}: {error}");
            }
        }
    }
}

/// Asserts `reply`'s status, showing its body when it differs.
#[track_caller]
pub(crate) fn expect_status(reply: &Reply, status: u16, what: &str) {
    assert_eq!(
        reply.status,
        status,
        "{what}: expected {status}, got {} {}",
        reply.status,
        reply.text()
    );
}

/// The keys of a JSON object, sorted.
pub(crate) fn keys(value: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Asserts that `value` is an object holding at least `fields`.
#[track_caller]
pub(crate) fn has_fields(value: &serde_json::Value, fields: &[&str]) {
    let present = keys(value);
    let missing: Vec<&&str> = fields
        .iter()
        .filter(|field| !present.contains(field))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in {value}");
}
