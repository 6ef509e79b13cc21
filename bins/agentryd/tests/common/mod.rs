//! Starting the real `agentryd` binary for end-to-end tests.

#![allow(dead_code, reason = "each test file uses a part of this")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The server, killed when the test ends however it ends.
pub(crate) struct Server {
    child: Child,
    /// What it printed before it listened (the first admin key among it).
    pub(crate) startup: Vec<String>,
}

impl Server {
    /// Stops the server as an operator's `kill` (or a service manager)
    /// would, with SIGTERM, and waits for it to exit.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM could not be sent");
        self.child.wait().expect("agentryd exits")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Starts `agentryd` on a SQLite file in `dir` with `args`, and returns once
/// it has said it listens `listeners` times: an event, not a sleep.
pub(crate) fn start(dir: &Path, port: u16, args: &[&str], listeners: usize) -> Server {
    start_with(
        env!("CARGO_BIN_EXE_agentryd"),
        dir,
        port,
        args,
        listeners,
        &[],
    )
}

/// [`start`] with another binary and extra environment (which wins over
/// the defaults, e.g. a `DATABASE_URL`).
pub(crate) fn start_with(
    binary: &str,
    dir: &Path,
    port: u16,
    args: &[&str],
    listeners: usize,
    env: &[(&str, &str)],
) -> Server {
    let mut child = Command::new(binary)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(args)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("agentry.db").display()),
        )
        .env("AGENTRY_MASTER_KEY_FILE", dir.join("agentry.key"))
        .env("AGENTRY_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        // On PostgreSQL the default is the working directory: the crate's.
        .env("AGENTRY_ARTIFACT_DIR", dir.join("artifacts"))
        .env_remove("AGENTRY_MASTER_KEY")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agentryd");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut startup = Vec::new();
    let mut heard = 0;
    for line in lines.by_ref().map_while(Result::ok) {
        heard += usize::from(line.contains("agentryd: listening on"));
        startup.push(line);
        if heard == listeners {
            break;
        }
    }
    assert_eq!(heard, listeners, "agentryd exited early: {startup:#?}");
    // Keep draining stderr so the server never blocks on a full pipe; its
    // errors go to the test's output, which is shown when a test fails.
    std::thread::spawn(move || {
        lines
            .map_while(Result::ok)
            .filter(|line| line.contains("ERROR"))
            .for_each(|line| eprintln!("agentryd: {line}"));
    });
    Server { child, startup }
}

/// The first-run admin key agentryd printed, if it did.
pub(crate) fn first_admin_key(server: &Server) -> Option<String> {
    server
        .startup
        .iter()
        .map(|line| line.trim())
        .find(|line| line.starts_with("agy_admin_"))
        .map(str::to_owned)
}

/// One HTTP/1.1 request with `Connection: close`; status and JSON body (or
/// `Null`). An error when the server cannot be reached or hangs up.
pub(crate) fn try_http(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&serde_json::Value>,
) -> std::io::Result<(u16, serde_json::Value)> {
    try_http_with(port, method, path, bearer, &[], body)
}

/// [`try_http`] with extra request headers (`name`, `value`).
pub(crate) fn try_http_with(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> std::io::Result<(u16, serde_json::Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    let payload = body.map(|body| body.to_string()).unwrap_or_default();
    let mut extra = bearer
        .map(|token| format!("authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    for (name, value) in headers {
        extra.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{payload}",
        payload.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    // Bodies here are small and not chunked (actix sends content-length).
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    Ok((
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    ))
}

/// [`try_http`] against a server that must answer.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    try_http(port, method, path, bearer, body).expect("agentryd answers")
}

/// Requests answered so far, which tests wait on instead of the clock
/// (to kill a server after so many answers, say).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    answered: Mutex<u64>,
    changed: Condvar,
}

impl Progress {
    pub(crate) fn answered(&self) {
        if let Ok(mut answered) = self.answered.lock() {
            *answered += 1;
        }
        self.changed.notify_all();
    }

    /// Blocks until `count` more requests have been answered.
    pub(crate) fn wait_for(&self, count: u64) {
        let Ok(mut answered) = self.answered.lock() else {
            return;
        };
        let target = *answered + count;
        while *answered < target {
            // A bound, not a pause: a server that never comes back fails
            // the test instead of hanging it.
            let (guard, waited) = match self
                .changed
                .wait_timeout(answered, Duration::from_secs(120))
            {
                Ok(outcome) => outcome,
                Err(_) => return,
            };
            assert!(
                !waited.timed_out(),
                "no request was answered for two minutes"
            );
            answered = guard;
        }
    }
}

/// A database of its own on the machine's PostgreSQL (or the one
/// `AGENTRY_TEST_POSTGRES_URL` names), dropped when the test ends however
/// it ends.
#[derive(Debug)]
pub(crate) struct PostgresDb {
    pub(crate) name: String,
}

impl PostgresDb {
    /// A fresh, empty database (the first server to start migrates it), or
    /// `None` when PostgreSQL is unreachable outside CI; in CI (`CI` set)
    /// that fails the test, as everywhere else.
    pub(crate) fn create() -> Option<Self> {
        block_on(async {
            let mut admin = agentry_testkit::postgres_admin().await?;
            let name = format!("agentry_e2e_{}", uuid::Uuid::now_v7().simple());
            diesel_async::SimpleAsyncConnection::batch_execute(
                &mut admin,
                &format!("CREATE DATABASE {name}"),
            )
            .await
            .expect("create the test database");
            Some(Self { name })
        })
    }

    /// Its URL on the server.
    pub(crate) fn url(&self) -> String {
        agentry_testkit::postgres_url(&agentry_testkit::postgres_server(), &self.name, "")
    }
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        block_on(agentry_testkit::drop_postgres(&self.name));
    }
}

fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the test's own database calls")
        .block_on(work)
}

/// `agentryd` as a maintenance command (`verify`, `admin ...`) on the
/// database and master key that [`start_with`] gives servers started with
/// `dir` and `env`.
pub(crate) fn command(binary: &str, dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary);
    command
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("agentry.db").display()),
        )
        .env("AGENTRY_MASTER_KEY_FILE", dir.join("agentry.key"))
        .env_remove("AGENTRY_MASTER_KEY")
        .envs(env.iter().copied());
    command
}

/// Runs `agentryd verify`; fails the test on a violation, and returns the
/// report.
pub(crate) fn verify(binary: &str, dir: &Path, env: &[(&str, &str)]) -> String {
    let output = command(binary, dir, env)
        .arg("verify")
        .output()
        .expect("agentryd verify runs");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("ok: no violation"), "{report}");
    report
}
