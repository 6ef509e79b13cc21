//! Three replicas of the real binary on one PostgreSQL database agree
//! (issue 18): they share one master key and one database through the
//! environment, as a deployment would, and nothing else.
//!
//! - Revocation of every kind, written through one replica (or by `agentryd
//!   admin` beside them), is refused by every replica within 1 s, each
//!   replica having served the credential from its caches just before: a
//!   tenant API key (`admin revoke-key`), a workspace agent's key (seed
//!   002's key deletion), suspension and termination through the profiles
//!   API (seed 001), the registry's revoke and key rotation (seed 004), and
//!   a JWT signing key (`admin revoke-signing-key`). The delays are
//!   printed.
//! - An agent limited to 30 requests a minute is admitted at most 30 of 90
//!   requests spread over the three, and at least 30 less the two leases
//!   the other replicas may hold unused.
//! - 300 racing one-cent spends of a $1 daily budget, spread over the
//!   three, never overspend: exactly 100 are recorded, the rest are 402.
//! - One replica is SIGKILLed under load; the other two answer every
//!   request, none with a 5xx, and still hear each other's revocations.
//! - `agentryd verify` finds no violation afterwards.
//!
//! Waits are for events (a server saying it listens, so many answers) or
//! polls bounded by a deadline, never a fixed pause.

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{PostgresDb, Progress, Server, free_port, http, start_with, try_http, try_http_with};
use serde_json::{Value, json};

const REPLICAS: usize = 3;
/// What issue 18 promises: a revocation is honoured everywhere within it.
const REVOCATION_BOUND: Duration = Duration::from_secs(1);
/// Between two rounds of probes while waiting for a revocation to arrive.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Shared by the replicas as a deployment shares it: through the
/// environment. Any 32 bytes do for a test database.
const MASTER_KEY: &str = "5a3f0c1e9b7d24688f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978";
/// An rpm no probe loop reaches, for the agents whose revocation is timed:
/// a 429 must never stand in for the refusal being waited for.
const UNLIMITED_RPM: u32 = 1_000_000;
const PACED_RPM: u32 = 30;

struct Fleet {
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    /// `None` once killed.
    servers: Vec<Option<Server>>,
    ports: Vec<u16>,
    admin: String,
    /// Declared last: dropped after the servers have gone.
    _db: PostgresDb,
}

impl Fleet {
    fn start(db: PostgresDb) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let env = vec![
            ("DATABASE_URL", db.url()),
            ("AGENTRY_MASTER_KEY", MASTER_KEY.to_owned()),
            // The address behind which they serve as one: their tokens'
            // issuer, which each checks.
            (
                "AGENTRY_PUBLIC_URL",
                "http://agentry.replicas.test".to_owned(),
            ),
        ];
        let mut fleet = Self {
            dir,
            env,
            servers: Vec::new(),
            ports: Vec::new(),
            admin: String::new(),
            _db: db,
        };
        // One after the other: the first migrates the empty database and
        // creates the first tenant, whose admin key only it prints.
        for _ in 0..REPLICAS {
            let port = free_port();
            let env = fleet.env();
            let server = start_with(
                env!("CARGO_BIN_EXE_agentryd"),
                fleet.dir.path(),
                port,
                &["--no-tls"],
                1,
                &env,
            );
            if fleet.admin.is_empty() {
                fleet.admin = common::first_admin_key(&server).expect("a first run's admin key");
            }
            fleet.servers.push(Some(server));
            fleet.ports.push(port);
        }
        fleet
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect()
    }

    /// `agentryd <args>` beside the servers, on their database and key.
    fn admin_command(&self, args: &[&str]) -> Output {
        let output = common::command(env!("CARGO_BIN_EXE_agentryd"), self.dir.path(), &self.env())
            .args(args)
            .output()
            .expect("agentryd runs");
        assert!(
            output.status.success(),
            "agentryd {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn admin_call(&self, replica: usize, method: &str, path: &str, body: &Value) -> Value {
        let (status, answer) = http(
            self.ports[replica],
            method,
            path,
            Some(&self.admin),
            Some(body),
        );
        assert!(
            (200..300).contains(&status),
            "{method} {path} on replica {replica}: {status} {answer}"
        );
        answer
    }

    /// Seed 000's bootstrap through `replica`; the agent's token.
    fn bootstrap(&self, replica: usize, slug: &str, daily_usd: f64) -> String {
        let body = json!({
            "agent_id": slug, "budget_daily_usd": daily_usd, "budget_monthly_usd": daily_usd * 31.0
        });
        let answer = self.admin_call(replica, "POST", "/v1/agent/bootstrap", &body);
        answer["jwt"].as_str().expect("a token").to_owned()
    }

    /// Seed 004's registration through `replica`; the agent's id and key.
    fn register(&self, replica: usize, name: &str) -> (String, String) {
        let body = json!({ "name": name, "trustLevel": "high" });
        let (status, answer) = try_http_with(
            self.ports[replica],
            "POST",
            "/api/v1/agents",
            Some(&self.admin),
            &[("x-bulwark-tenant", "default")],
            Some(&body),
        )
        .expect("agentryd answers");
        assert_eq!(status, 201, "{answer}");
        (
            answer["data"]["agentId"]
                .as_str()
                .expect("an id")
                .to_owned(),
            answer["data"]["apiKey"].as_str().expect("a key").to_owned(),
        )
    }
}

/// A credential's probe: the status its request gets from a replica.
type Probe<'a> = &'a dyn Fn(u16) -> (u16, Value);

/// Waits, up to [`REVOCATION_BOUND`] after `revoke` returned, until every
/// replica in `ports` refuses `probe` with `refusal` (status and problem
/// code); each must have accepted it first, so each had it cached. Returns
/// how long each took.
fn refused_everywhere(
    kind: &str,
    ports: &[u16],
    probe: Probe<'_>,
    refusal: (u16, &str),
    revoke: impl FnOnce(),
) -> Vec<Duration> {
    answered_everywhere_then(kind, ports, probe, 200, refusal, revoke)
}

/// [`refused_everywhere`] for a credential every replica answers `before`
/// until the change (a suspended agent's 402 before its termination).
fn answered_everywhere_then(
    kind: &str,
    ports: &[u16],
    probe: Probe<'_>,
    before: u16,
    refusal: (u16, &str),
    revoke: impl FnOnce(),
) -> Vec<Duration> {
    for (replica, port) in ports.iter().enumerate() {
        let (status, body) = probe(*port);
        assert_eq!(
            status, before,
            "{kind}: not answered {before} before by replica {replica}: {body}"
        );
    }
    revoke();
    let revoked = Instant::now();
    let mut delays: Vec<Option<Duration>> = vec![None; ports.len()];
    while delays.iter().any(Option::is_none) {
        for (port, delay) in ports.iter().zip(delays.iter_mut()) {
            if delay.is_some() {
                continue;
            }
            let (status, body) = probe(*port);
            if (status, body["code"].as_str()) == (refusal.0, Some(refusal.1)) {
                *delay = Some(revoked.elapsed());
            } else {
                assert_eq!(
                    status, before,
                    "{kind}: neither answered as before nor refused: {body}"
                );
            }
        }
        assert!(
            revoked.elapsed() < REVOCATION_BOUND || delays.iter().all(Option::is_some),
            "{kind}: still accepted {REVOCATION_BOUND:?} after the revocation by replicas {:?}",
            delays
                .iter()
                .enumerate()
                .filter(|(_, delay)| delay.is_none())
                .map(|(replica, _)| replica)
                .collect::<Vec<_>>()
        );
        if delays.iter().any(Option::is_none) {
            std::thread::sleep(POLL_INTERVAL);
        }
    }
    // Refused for good, not once.
    for port in ports {
        let (status, body) = probe(*port);
        assert_eq!(status, refusal.0, "{kind}: accepted again: {body}");
    }
    let delays: Vec<Duration> = delays.into_iter().flatten().collect();
    eprintln!(
        "replicas: {kind}: refused by every replica after {:?}",
        delays
            .iter()
            .map(|delay| format!("{:.1} ms", delay.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
    );
    delays
}

fn status_probe(credential: &str) -> impl Fn(u16) -> (u16, Value) + '_ {
    move |port| http(port, "GET", "/v1/agent/status", Some(credential), None)
}

/// The `kid` in a compact JWS's header.
fn kid(token: &str) -> String {
    let header = token.split('.').next().expect("a JWS header");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url");
    let header: Value = serde_json::from_slice(&header).expect("a JSON header");
    header["kid"].as_str().expect("a kid").to_owned()
}

fn revocations(fleet: &Fleet) {
    let ports = fleet.ports.clone();
    let all = ports.as_slice();

    // A tenant API key, revoked by the operator's CLI beside the replicas.
    let created = fleet.admin_command(&["admin", "create-key", "--role", "operator"]);
    let key = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let told = String::from_utf8_lossy(&created.stderr);
    let id = told
        .split_whitespace()
        .skip_while(|word| *word != "key")
        .nth(1)
        .expect("the new key's id")
        .to_owned();
    let probe = |port| http(port, "GET", "/v1/agent-limits", Some(&key), None);
    refused_everywhere(
        "tenant API key (admin revoke-key)",
        all,
        &probe,
        (401, "invalid_api_key"),
        || {
            fleet.admin_command(&["admin", "revoke-key", &id]);
        },
    );

    // A workspace agent's key, deleted through replica 0 (seed 002).
    let setup = json!({
        "primary_agent": {
            "email": "primary@replicas.test",
            "password": "primary-password-1",
            "agent_profile": { "name": "primary", "display_name": "Primary" }
        },
        "agents": [{ "name": "worker", "display_name": "Worker" }],
    });
    let (status, workspace) = http(ports[0], "POST", "/api/v1/bootstrap", None, Some(&setup));
    assert_eq!(status, 201, "{workspace}");
    let primary = workspace["primary_agent"]["api_key"]
        .as_str()
        .expect("the primary agent's key");
    let worker = &workspace["agents"][0];
    let worker_key = worker["api_key"].as_str().expect("the worker's key");
    let delete = format!(
        "/api/v1/agents/{}/keys/{}",
        worker["agent_id"].as_str().expect("an id"),
        worker["api_key_id"].as_str().expect("a key id")
    );
    let limits = fleet.admin_command(&[
        "admin",
        "create-key",
        "--role",
        "operator",
        "--tenant",
        "workspace",
    ]);
    let workspace_operator = String::from_utf8_lossy(&limits.stdout).trim().to_owned();
    let body = json!({ "agent:worker": { "maxRequestsPerMinute": UNLIMITED_RPM } });
    let (status, answer) = http(
        ports[0],
        "PATCH",
        "/v1/agent-limits",
        Some(&workspace_operator),
        Some(&body),
    );
    assert_eq!(status, 200, "{answer}");
    refused_everywhere(
        "workspace agent key (DELETE /api/v1/agents/{id}/keys/{key} on replica 0)",
        all,
        &status_probe(worker_key),
        (401, "invalid_api_key"),
        || {
            let (status, answer) = http(ports[0], "DELETE", &delete, Some(primary), None);
            assert_eq!(status, 204, "{answer}");
        },
    );

    // Lifecycle moves through the profiles API (seed 001): suspension,
    // then termination (which only a suspended agent may be moved to).
    let token = fleet.bootstrap(0, "lifecycle-moved", 1.0);
    let probe = status_probe(&token);
    let path = "/v1/agent/profiles/lifecycle/lifecycle-moved";
    refused_everywhere(
        "lifecycle suspension (PATCH /v1/agent/profiles/lifecycle on replica 1)",
        all,
        &probe,
        (402, "agent_suspended"),
        || {
            fleet.admin_call(1, "PATCH", path, &json!({ "state": "suspended" }));
        },
    );
    answered_everywhere_then(
        "lifecycle termination (PATCH /v1/agent/profiles/lifecycle on replica 2)",
        all,
        &probe,
        402,
        (403, "agent_terminated"),
        || {
            fleet.admin_call(2, "PATCH", path, &json!({ "state": "terminated" }));
        },
    );

    // The registry (seed 004): revoke, and a key rotation.
    let (id, key) = fleet.register(2, "registry-revoked");
    refused_everywhere(
        "registry revoke (DELETE /api/v1/agents/{id} on replica 0)",
        all,
        &status_probe(&key),
        (403, "agent_terminated"),
        || {
            fleet.admin_call(0, "DELETE", &format!("/api/v1/agents/{id}"), &json!({}));
        },
    );
    let (id, old_key) = fleet.register(0, "registry-rotated");
    let mut new_key = String::new();
    refused_everywhere(
        "registry key rotation (POST /api/v1/agents/{id}/rotate-key on replica 1)",
        all,
        &status_probe(&old_key),
        (401, "invalid_api_key"),
        || {
            let answer = fleet.admin_call(
                1,
                "POST",
                &format!("/api/v1/agents/{id}/rotate-key"),
                &json!({}),
            );
            new_key = answer["data"]["apiKey"]
                .as_str()
                .expect("the new key")
                .to_owned();
        },
    );
    for port in all {
        let (status, body) = status_probe(&new_key)(*port);
        assert_eq!(status, 200, "the rotated-in key: {body}");
    }

    // A signing key, revoked by the CLI: every token it signed dies.
    let token = fleet.bootstrap(1, "signed-by-revoked-key", 1.0);
    let revoked_kid = kid(&token);
    refused_everywhere(
        "signing key (admin revoke-signing-key)",
        all,
        &status_probe(&token),
        (401, "invalid_token"),
        || {
            fleet.admin_command(&["admin", "revoke-signing-key", &revoked_kid]);
        },
    );
    // Each replica now signs with the replacement, which the others accept.
    for (replica, _) in all.iter().enumerate() {
        let token = fleet.bootstrap(replica, &format!("signed-after-{replica}"), 1.0);
        assert_ne!(
            kid(&token),
            revoked_kid,
            "replica {replica} signs with a revoked key"
        );
        for port in all {
            let (status, body) = status_probe(&token)(*port);
            assert_eq!(status, 200, "a token of replica {replica}: {body}");
        }
    }
}

fn utc_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() / 60)
}

/// 90 requests of one agent limited to 30 a minute, a third through each
/// replica at once.
fn rpm_bound(fleet: &Fleet) {
    let token = fleet.bootstrap(0, "paced", 1.0);
    let started = utc_minute();
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let workers: Vec<_> = fleet
            .ports
            .iter()
            .map(|port| {
                let token = token.as_str();
                scope.spawn(move || {
                    (0..PACED_RPM)
                        .map(|_| http(*port, "GET", "/v1/agent/status", Some(token), None).0)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a worker ends"))
            .collect()
    });
    // A run that crossed into the next UTC minute may use two minutes' worth.
    let minutes = u32::try_from(utc_minute() - started + 1).unwrap_or(u32::MAX);
    assert!(
        answers.iter().all(|status| matches!(status, 200 | 429)),
        "{answers:?}"
    );
    let admitted =
        u32::try_from(answers.iter().filter(|status| **status == 200).count()).expect("a count");
    let slack = 2 * agentry_ledger::lease_size(PACED_RPM);
    eprintln!(
        "replicas: rpm {PACED_RPM}: {admitted} of {} requests over {REPLICAS} replicas admitted \
         ({minutes} minute(s))",
        answers.len()
    );
    assert!(
        admitted <= PACED_RPM * minutes,
        "{admitted} admitted past a limit of {PACED_RPM} a minute"
    );
    assert!(
        admitted + slack >= PACED_RPM,
        "only {admitted} admitted of a limit of {PACED_RPM}"
    );
}

fn utc_day() -> u64 {
    utc_minute() / (24 * 60)
}

/// 300 one-cent spends of a $1 daily budget, racing on six connections,
/// two through each replica.
fn spend_race(fleet: &Fleet) {
    let token = fleet.bootstrap(0, "spender", 1.0);
    let day = utc_day();
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2 * REPLICAS)
            .map(|worker| {
                let (token, port) = (token.as_str(), fleet.ports[worker % REPLICAS]);
                scope.spawn(move || {
                    (0..50)
                        .map(|n| {
                            let body = json!({
                                "amount_usd": 0.01, "idempotency_key": format!("race-{worker}-{n}")
                            });
                            http(port, "POST", "/v1/agent/spend", Some(token), Some(&body))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a worker ends"))
            .collect()
    });
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for (status, body) in &answers {
        *statuses.entry(*status).or_default() += 1;
        assert!(
            *status == 201 || (*status == 402 && body["code"] == "insufficient_budget"),
            "{status} {body}"
        );
    }
    eprintln!("replicas: 300 racing one-cent spends of $1: {statuses:?}");
    // A race across UTC midnight has two days' budgets.
    let recorded = statuses.get(&201).copied().unwrap_or(0);
    if utc_day() == day {
        assert_eq!(recorded, 100, "{statuses:?}");
        // Every replica's account cache agrees with the database.
        for (replica, port) in fleet.ports.iter().enumerate() {
            let (status, body) = status_probe(&token)(*port);
            assert_eq!(
                (
                    status,
                    body["limits"]["enforced_daily_remaining_usd"].as_f64()
                ),
                (200, Some(0.0)),
                "replica {replica}: {body}"
            );
        }
    } else {
        assert!((100..=200).contains(&recorded), "{statuses:?}");
    }
}

/// What the load saw.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    /// Answers from the replicas that stay up: the kill clock.
    survivors: Progress,
    /// Answers in the 5xx range, or no answer, from a replica that was
    /// never killed: there must be none.
    failures: Mutex<Vec<String>>,
    /// Answers from the victim before it died.
    victim_answers: Mutex<u64>,
}

/// Kills the last replica under a load of reads, spends and bootstraps on
/// all three; the other two must answer all of it, and keep hearing each
/// other's revocations.
fn kill_one_under_load(fleet: &mut Fleet) {
    let victim = REPLICAS - 1;
    let load_token = fleet.bootstrap(0, "load", 1_000.0);
    let load = Arc::new(Load::default());
    let workers: Vec<_> = (0..REPLICAS)
        .map(|worker| {
            let (load, ports) = (Arc::clone(&load), fleet.ports.clone());
            let (token, admin) = (load_token.clone(), fleet.admin.clone());
            std::thread::spawn(move || {
                let mut n = 0_usize;
                while !load.stop.load(Ordering::Acquire) {
                    n += 1;
                    let replica = (worker + n) % REPLICAS;
                    let (method, path, bearer, body) = match n % 3 {
                        0 => ("GET", "/v1/agent/status", &token, None),
                        1 => (
                            "POST",
                            "/v1/agent/spend",
                            &token,
                            Some(json!({
                                "amount_usd": 0.01, "idempotency_key": format!("load-{worker}-{n}")
                            })),
                        ),
                        _ => (
                            "POST",
                            "/v1/agent/bootstrap",
                            &admin,
                            Some(json!({
                                "agent_id": format!("load-{worker}-{n}"),
                                "budget_daily_usd": 1.0, "budget_monthly_usd": 5.0
                            })),
                        ),
                    };
                    let answer =
                        try_http(ports[replica], method, path, Some(bearer), body.as_ref());
                    if replica == victim {
                        if answer.is_ok()
                            && let Ok(mut answered) = load.victim_answers.lock()
                        {
                            *answered += 1;
                        }
                        // Refused or cut off once killed: what a dead
                        // replica does.
                        continue;
                    }
                    match answer {
                        Ok((status, _)) if status < 500 => load.survivors.answered(),
                        outcome => {
                            if let Ok(mut failures) = load.failures.lock() {
                                failures.push(format!(
                                    "{method} {path} on replica {replica}: {outcome:?}"
                                ));
                            }
                            load.survivors.answered();
                        }
                    }
                }
            })
        })
        .collect();
    load.survivors.wait_for(60);
    // SIGKILL: no graceful stop, no flush, connections in flight cut.
    drop(fleet.servers[victim].take());
    let victim_answers = load.victim_answers.lock().map_or(0, |answered| *answered);
    load.survivors.wait_for(150);

    // The survivors still follow each other's writes.
    let token = fleet.bootstrap(0, "after-the-kill", 1.0);
    let survivors = &fleet.ports[..victim];
    refused_everywhere(
        "lifecycle suspended after a replica's death (on replica 0, under load)",
        survivors,
        &status_probe(&token),
        (402, "agent_suspended"),
        || {
            fleet.admin_call(
                0,
                "PATCH",
                "/v1/agent/profiles/lifecycle/after-the-kill",
                &json!({ "state": "suspended" }),
            );
        },
    );
    load.survivors.wait_for(30);
    load.stop.store(true, Ordering::Release);
    for worker in workers {
        worker.join().expect("a worker ends");
    }
    let failures = load
        .failures
        .lock()
        .map(|failures| failures.clone())
        .unwrap_or_default();
    assert!(
        failures.is_empty(),
        "the replicas left standing failed requests: {failures:#?}"
    );
    assert!(victim_answers > 0, "the load never reached the victim");
    eprintln!(
        "replicas: replica {victim} SIGKILLed after answering {victim_answers} load requests; \
         the other two answered the rest, none with a 5xx"
    );
}

#[test]
fn three_replicas_on_one_postgres_agree() {
    let Some(db) = PostgresDb::create() else {
        return;
    };
    let started = Instant::now();
    let mut fleet = Fleet::start(db);
    eprintln!(
        "replicas: {REPLICAS} replicas listening after {:?}",
        started.elapsed()
    );
    // Written before the agents exist: an operator's entry wins over the
    // one a bootstrap writes.
    let mut limits = serde_json::Map::new();
    for slug in [
        "lifecycle-moved",
        "registry-revoked",
        "registry-rotated",
        "signed-by-revoked-key",
        "spender",
        "load",
        "after-the-kill",
    ] {
        limits.insert(
            format!("agent:{slug}"),
            json!({ "maxRequestsPerMinute": UNLIMITED_RPM }),
        );
    }
    limits.insert(
        "agent:paced".into(),
        json!({ "maxRequestsPerMinute": PACED_RPM }),
    );
    fleet.admin_call(0, "PATCH", "/v1/agent-limits", &Value::Object(limits));

    revocations(&fleet);
    rpm_bound(&fleet);
    spend_race(&fleet);
    kill_one_under_load(&mut fleet);

    for server in &mut fleet.servers {
        if let Some(server) = server.take() {
            let exit = server.terminate();
            assert!(exit.success(), "a replica stopped with {exit}");
        }
    }
    let report = common::verify(
        env!("CARGO_BIN_EXE_agentryd"),
        fleet.dir.path(),
        &fleet.env(),
    );
    eprintln!("replicas: done in {:?}\n{report}", started.elapsed());
}
