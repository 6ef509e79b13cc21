//! Crashes lose nothing: a bootstrap + spend + delegation load runs against
//! the real binary, which is killed with SIGKILL at random moments and
//! restarted, on SQLite and on PostgreSQL. Seed 002 invites are accepted
//! through the crashes too: one-time tokens whose answer a kill may lose.
//! Afterwards `agentryd verify` must find no violation (no active agent
//! without its limits entry, no ledger that does not balance, no account
//! over its caps, no consumed token that did not take effect, the audit
//! chain intact), every bootstrap that was answered 201 must still be
//! there, and every invite the load used up must let its human log in,
//! whether or not its answer arrived.
//!
//! On PostgreSQL the server reaches the database through a relay that the
//! test cuts under load: every open connection drops (each transaction in
//! flight is rolled back) and new ones are refused, as when PostgreSQL
//! restarts. Meanwhile requests must be answered 503, never 500 or not at
//! all, and once the relay is back the server must recover by itself.
//!
//! This is the bounded form `cargo xtask test` runs. `cargo xtask chaos`
//! runs it against the release binary with more rounds, through
//! `AGENTRY_CHAOS_BIN` and `AGENTRY_CHAOS_ROUNDS`. Kills are timed by
//! answered requests, not by the clock, so the test never sleeps.

mod common;

use std::collections::BTreeSet;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{PostgresDb, Progress, first_admin_key, free_port, http, start_with, try_http};
use serde_json::{Value, json};

const DEFAULT_ROUNDS: usize = 3;
/// Humans invited before the load; their invites are accepted during it.
const INVITES: usize = 40;

fn binary() -> String {
    std::env::var("AGENTRY_CHAOS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_agentryd").into())
}

fn rounds() -> usize {
    std::env::var("AGENTRY_CHAOS_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS)
}

/// xorshift64*, seeded from the clock and printed, so a failing run can be
/// repeated with `AGENTRY_CHAOS_SEED`.
struct Random(u64);

impl Random {
    fn new() -> Self {
        let seed = std::env::var("AGENTRY_CHAOS_SEED")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |elapsed| elapsed.as_nanos() as u64)
                    | 1
            });
        eprintln!("chaos: seed {seed}");
        Self(seed)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// What the workers share: where the server is, whether to stop, and how
/// many requests have been answered (the kill clock).
#[derive(Default)]
struct Shared {
    port: AtomicU16,
    stop: AtomicBool,
    progress: Progress,
    /// Agents whose bootstrap was answered 201: they must survive.
    acknowledged: Mutex<BTreeSet<String>>,
    /// Answers 503: the database (or the server's hold on it) was down.
    unavailable: AtomicU64,
    /// Answers in the 5xx range other than 503: there must be none.
    server_errors: Mutex<Vec<String>>,
    /// Invites used up, as (e-mail, password, whether the acceptance was
    /// answered 200): each must log in.
    used_invites: Mutex<Vec<(String, String, bool)>>,
    /// Answers to an invite acceptance that no crash explains.
    invite_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn request(
        &self,
        method: &str,
        path: &str,
        bearer: &str,
        body: &Value,
    ) -> Option<(u16, Value)> {
        self.request_as(method, path, Some(bearer), body)
    }

    fn request_as(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> Option<(u16, Value)> {
        let port = self.port.load(Ordering::Acquire);
        let answer = try_http(port, method, path, bearer, Some(body)).ok();
        if let Some((503, _)) = &answer {
            self.unavailable.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((status, body)) = &answer
            && *status >= 500
            && *status != 503
            && let Ok(mut errors) = self.server_errors.lock()
        {
            errors.push(format!("{method} {path}: {status} {body}"));
        }
        if answer.is_some() {
            self.progress.answered();
        } else {
            // The server is down between a kill and its restart.
            std::thread::yield_now();
        }
        answer
    }

    /// Blocks until `count` more requests have been answered.
    fn wait_for(&self, count: u64) {
        self.progress.wait_for(count);
    }
}

fn bootstrap(shared: &Shared, key: &str, agent: &str, extra: Value) -> Option<(u16, Value)> {
    let mut body = json!({ "agent_id": agent, "budget_daily_usd": 1.0, "budget_monthly_usd": 5.0 });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    shared.request("POST", "/v1/agent/bootstrap", key, &body)
}

/// Seed 002's instance bootstrap with `humans` invited humans; returns
/// each human's (e-mail, invite token).
fn invite_team(shared: &Shared, humans: usize) -> Vec<(String, String)> {
    let body = json!({
        "primary_agent": {
            "email": "primary@chaos.test",
            "password": "primary-password-1",
            "agent_profile": { "name": "primary", "display_name": "Primary" }
        },
        "humans": (0..humans)
            .map(|n| json!({ "email": format!("human-{n}@chaos.test") }))
            .collect::<Vec<_>>(),
    });
    let (status, answer) = shared
        .request_as("POST", "/api/v1/bootstrap", None, &body)
        .expect("up");
    assert_eq!(status, 201, "{answer}");
    answer["humans"]
        .as_array()
        .expect("invited humans")
        .iter()
        .map(|human| {
            (
                human["email"].as_str().expect("an e-mail").to_owned(),
                human["invite_token"].as_str().expect("a token").to_owned(),
            )
        })
        .collect()
}

/// Accepts each invite until it is used up. A kill can lose the answer of
/// an acceptance that committed; the retry then hears `invite_used`, and
/// the invite must still have taken effect (checked by logging in).
fn accept_invites(shared: &Shared, invites: Vec<(String, String)>) {
    for (email, token) in invites {
        let password = format!("{email}-password");
        let body = json!({ "token": token, "password": password });
        while !shared.stop.load(Ordering::Acquire) {
            let answered = match shared.request_as("POST", "/api/v1/invite/accept", None, &body) {
                Some((200, _)) => true,
                Some((410, answer)) if answer["code"] == "invite_used" => false,
                Some((503, _)) | None => continue,
                Some((status, answer)) => {
                    if let Ok(mut errors) = shared.invite_errors.lock() {
                        errors.push(format!("{email}: {status} {answer}"));
                    }
                    break;
                }
            };
            if let Ok(mut used) = shared.used_invites.lock() {
                used.push((email.clone(), password.clone(), answered));
            }
            break;
        }
    }
}

fn run_load(
    shared: &Arc<Shared>,
    key: &str,
    spenders: Vec<String>,
    delegator: String,
    invites: Vec<(String, String)>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut workers = Vec::new();
    let accepting = Arc::clone(shared);
    workers.push(std::thread::spawn(move || {
        accept_invites(&accepting, invites);
    }));
    // New agents, and repeats of earlier ones.
    for worker in 0..2 {
        let (shared, key) = (Arc::clone(shared), key.to_owned());
        workers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !shared.stop.load(Ordering::Acquire) {
                n += 1;
                let agent = format!("load-{worker}-{}", n / 2);
                if let Some((201, _)) = bootstrap(&shared, &key, &agent, json!({}))
                    && let Ok(mut acknowledged) = shared.acknowledged.lock()
                {
                    acknowledged.insert(agent);
                }
            }
        }));
    }
    // Spends of a few cents until the caps refuse them.
    for (worker, token) in spenders.into_iter().enumerate() {
        let shared = Arc::clone(shared);
        workers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !shared.stop.load(Ordering::Acquire) {
                n += 1;
                let body =
                    json!({ "amount_usd": 0.07, "idempotency_key": format!("spend-{worker}-{n}") });
                shared.request("POST", "/v1/agent/spend", &token, &body);
            }
        }));
    }
    // Children sliced from a parent and reclaimed.
    let shared = Arc::clone(shared);
    workers.push(std::thread::spawn(move || {
        let mut n = 0;
        while !shared.stop.load(Ordering::Acquire) {
            n += 1;
            let child = format!("child-{n}");
            let body = json!({ "agent_id": child, "budget_allocation_usd": 0.25 });
            shared.request("POST", "/v1/agent/delegate", &delegator, &body);
            shared.request(
                "DELETE",
                &format!("/v1/agent/sub-agents/{child}"),
                &delegator,
                &json!({}),
            );
        }
    }));
    workers
}

/// A TCP relay from a local port to PostgreSQL that the test can cut, so
/// the server loses its database without the machine's one PostgreSQL,
/// which other tests share, going down.
struct Relay {
    port: u16,
    /// Both ends of every relayed connection while the relay is up; `None`
    /// while it is cut (new connections are then closed at once).
    open: Arc<Mutex<Option<Vec<TcpStream>>>>,
}

impl Relay {
    fn to(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a relay port");
        let port = listener.local_addr().expect("the relay's address").port();
        let open: Arc<Mutex<Option<Vec<TcpStream>>>> = Arc::new(Mutex::new(Some(Vec::new())));
        let accepting = Arc::clone(&open);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(mut open) = accepting.lock() else {
                    return;
                };
                // Cut: the connection is closed as soon as it is accepted.
                let Some(open) = open.as_mut() else {
                    continue;
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                open.retain(|stream| stream.peer_addr().is_ok());
                open.extend(
                    [client.try_clone(), server.try_clone()]
                        .into_iter()
                        .flatten(),
                );
                pipe(client, server_copy);
                pipe(server, client_copy);
            }
        });
        Self { port, open }
    }

    /// Drops every open connection and refuses new ones.
    fn cut(&self) {
        if let Ok(mut open) = self.open.lock()
            && let Some(streams) = open.take()
        {
            for stream in streams {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    fn restore(&self) {
        if let Ok(mut open) = self.open.lock() {
            open.get_or_insert_with(Vec::new);
        }
    }
}

/// Copies `from` into `to` on a thread of its own until either closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// The database cut off under load: `/readyz` says so, the load's requests
/// are answered 503 (the check for other 5xx is the test's), and once the
/// database is back the server serves again by itself, with no restart.
fn cut_database_under_load(shared: &Shared, relay: &Relay, key: &str) {
    relay.cut();
    let port = shared.port.load(Ordering::Acquire);
    let (status, body) = http(port, "GET", "/readyz", None, None);
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("database_unavailable")),
        "{body}"
    );
    let refused_before = shared.unavailable.load(Ordering::Relaxed);
    shared.wait_for(40);
    let refused = shared.unavailable.load(Ordering::Relaxed) - refused_before;
    assert!(
        refused > 0,
        "nothing was answered 503 while the database was cut off"
    );
    relay.restore();
    // Bounded by time, not paced by it: each check is a request.
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/readyz", None, None).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "agentryd did not recover within 30 s of the database coming back"
        );
        std::thread::yield_now();
    }
    let (status, body) = bootstrap(shared, key, "after-the-outage", json!({})).expect("up");
    assert_eq!(status, 201, "{body}");
    if let Ok(mut acknowledged) = shared.acknowledged.lock() {
        acknowledged.insert("after-the-outage".into());
    }
    eprintln!(
        "chaos: database cut off under load: {refused} answers 503 while it was, then recovered"
    );
}

/// PostgreSQL stopped under load and started again: while it is down every
/// request is a 503 (never a 500 or a hang), and the server recovers by
/// itself. Restarting the machine's one PostgreSQL would break the tests
/// running beside this one, so only `cargo xtask chaos` asks for it.
fn restart_postgres_under_load(shared: &Shared) {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut entries| entries.next())
        .and_then(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .expect("a PostgreSQL cluster under /etc/postgresql");
    let cluster = |action: &str| {
        let status = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", action])
            .args(if action == "stop" {
                &["-m", "fast"][..]
            } else {
                &[][..]
            })
            .status()
            .expect("pg_ctlcluster runs");
        assert!(status.success(), "pg_ctlcluster {action} failed");
    };
    cluster("stop");
    let port = shared.port.load(Ordering::Acquire);
    for path in ["/readyz", "/v1/agent-limits"] {
        let (status, body) = http(port, "GET", path, None, None);
        // Without credentials the limits route stops at the guard (401)
        // unless the guard itself needs the database.
        assert!(
            matches!(status, 503 | 401),
            "{path} with the database down: {status} {body}"
        );
    }
    let (status, body) = http(port, "GET", "/readyz", None, None);
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("database_unavailable"))
    );
    cluster("start");
    // The server must come back by itself; PostgreSQL takes a moment to
    // accept connections, so this waits for it (outside CI only).
    let recovered = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        http(port, "GET", "/readyz", None, None).0 == 200
    });
    assert!(
        recovered,
        "agentryd did not recover within 30 s of PostgreSQL's restart"
    );
    eprintln!("chaos: PostgreSQL stopped and started under load; 503s while down, then recovered");
}

fn chaos(dir: &Path, env: &[(&str, &str)], relay: Option<&Relay>) {
    let binary = binary();
    let mut random = Random::new();
    let port = free_port();
    // Every invite is accepted and every account signed in from 127.0.0.1,
    // and an acceptance is retried through every outage: more password
    // attempts than one address, or one invite, may make in a minute.
    let mut env = env.to_vec();
    env.push(("AGENTRY_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE", "0"));
    env.push(("AGENTRY_LOGIN_ATTEMPTS_PER_MINUTE", "0"));
    let env = env.as_slice();
    let server = start_with(&binary, dir, port, &["--no-tls"], 1, env);
    let key = first_admin_key(&server).expect("a first run prints an admin key");
    let shared = Arc::new(Shared::default());
    shared.port.store(port, Ordering::Release);

    // The agents the load spends through, set up before any crash.
    let mut spenders = Vec::new();
    for n in 0..3 {
        let (status, body) =
            bootstrap(&shared, &key, &format!("spender-{n}"), json!({})).expect("up");
        assert_eq!(status, 201, "{body}");
        spenders.push(body["jwt"].as_str().expect("a token").to_owned());
    }
    let delegator = json!({ "budget_daily_usd": 100.0, "budget_monthly_usd": 100.0, "metadata": { "can_delegate": true } });
    let (status, body) = bootstrap(&shared, &key, "delegator", delegator).expect("up");
    assert_eq!(status, 201, "{body}");
    let delegator = body["jwt"].as_str().expect("a token").to_owned();

    let invites = invite_team(&shared, INVITES);
    let workers = run_load(&shared, &key, spenders, delegator, invites);
    let mut server = Some(server);
    for round in 1..=rounds() {
        let after = 10 + random.below(60);
        shared.wait_for(after);
        drop(server.take()); // SIGKILL, then reaped.
        eprintln!("chaos: round {round}: killed after {after} more answers");
        let port = free_port();
        server = Some(start_with(&binary, dir, port, &["--no-tls"], 1, env));
        shared.port.store(port, Ordering::Release);
    }
    if let Some(relay) = relay {
        cut_database_under_load(&shared, relay, &key);
    }
    if std::env::var_os("AGENTRY_CHAOS_RESTART_POSTGRES").is_some()
        && env.iter().any(|(name, _)| *name == "DATABASE_URL")
    {
        restart_postgres_under_load(&shared);
    }
    shared.wait_for(10);
    shared.stop.store(true, Ordering::Release);
    for worker in workers {
        worker.join().expect("a worker ends");
    }

    let server_errors = shared
        .server_errors
        .lock()
        .map(|errors| errors.clone())
        .unwrap_or_default();
    assert!(
        server_errors.is_empty(),
        "answers other than 503 in the 5xx range: {server_errors:#?}"
    );
    let invite_errors = shared
        .invite_errors
        .lock()
        .map(|errors| errors.clone())
        .unwrap_or_default();
    assert!(
        invite_errors.is_empty(),
        "invite acceptances refused for no crash's sake: {invite_errors:#?}"
    );

    // Everything answered 201 survived the crashes.
    let port = shared.port.load(Ordering::Acquire);
    let acknowledged = shared
        .acknowledged
        .lock()
        .map(|set| set.clone())
        .unwrap_or_default();
    assert!(!acknowledged.is_empty(), "the load bootstrapped nothing");
    for agent in &acknowledged {
        let (status, body) = http(
            port,
            "GET",
            &format!("/v1/agent/profiles/{agent}"),
            Some(&key),
            None,
        );
        assert_eq!(status, 200, "{agent} was answered 201 and is gone: {body}");
        assert_eq!(
            body["profile"]["lifecycleState"], "active",
            "{agent}: {body}"
        );
    }
    // Every invite used up works, answered or not.
    let used = shared
        .used_invites
        .lock()
        .map(|used| used.clone())
        .unwrap_or_default();
    assert!(!used.is_empty(), "the load accepted no invite");
    for (email, password, _) in &used {
        let login = json!({ "email": email, "password": password });
        let (status, body) = http(port, "POST", "/api/v1/auth/login", None, Some(&login));
        assert_eq!(
            status, 200,
            "{email} used its invite but cannot log in: {body}"
        );
    }
    let unanswered = used.iter().filter(|(_, _, answered)| !answered).count();
    drop(server);

    eprintln!(
        "chaos: {} acknowledged bootstraps survived; {} invites used up ({unanswered} of them \
         with the answer lost to a kill), each logs in",
        acknowledged.len(),
        used.len()
    );
    let report = common::verify(&binary, dir, env);
    eprintln!("{report}");
}

#[test]
fn sqlite_survives_being_killed_under_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    chaos(dir.path(), &[], None);
}

#[test]
fn postgres_survives_being_killed_under_load() {
    let Some(db) = PostgresDb::create() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = Relay::to(5432);
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", relay.port, db.name);
    chaos(dir.path(), &[("DATABASE_URL", &url)], Some(&relay));
}
