//! `loadgen`: drives one scenario against a server on loopback with a fixed
//! number of keep-alive connections, for a warm-up and then a measured
//! period, and prints one `key=value` report line on stdout (for
//! `cargo xtask bench http`) and a readable summary on stderr.
//!
//! Each scenario prepares what it needs through the API itself (agents,
//! their tokens, raised rate limits, a seed 002 workspace to guess the
//! password of), so a fresh server and its first admin key are all it takes.

mod http;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_auth::{ApiKey, ApiKeyKind};
use agentry_domain::ApiKeyRole;
use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use rand::Rng;
use serde_json::{Value, json};

use crate::http::{Connection, encode, encode_raw};
use crate::stats::{Probe, Report, Tally};

/// Load generator for `cargo xtask bench http`.
#[derive(Debug, Parser)]
#[command(name = "loadgen", about)]
struct Args {
    /// The server's address; loopback only.
    #[arg(long)]
    address: SocketAddr,
    /// What to send.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// An API key with the admin role (the server's first admin key), for
    /// the scenarios that prepare agents.
    #[arg(long, env = "LOADGEN_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds a request may take before it counts as a transport error.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Also `GET` this path every 10 ms on a connection of its own and
    /// report its latencies apart (`probe_*`): how the server answers an
    /// innocent caller while the scenario's load runs.
    #[arg(long)]
    probe: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// `GET /` of the `baseline` binary.
    Baseline,
    /// `POST /v1/agent/bootstrap` of a new agent every time.
    NewAgentBootstrap,
    /// `POST /v1/agent/bootstrap` of an agent that exists (one per connection).
    RepeatBootstrap,
    /// `GET /v1/agent/limits/me` with an agent token (one agent per connection).
    LimitsMe,
    /// `POST /v1/agent/spend` of one cent (one agent per connection).
    Spend,
    /// `GET /api/v1/agents?limit=20` with the admin key, over 120 agents.
    RegistryList,
    /// Requests the server must refuse, one kind per connection: a 10 MB
    /// JSON body, JSON nested 30,000 deep, a body that is not UTF-8, the
    /// wrong content type, a 256 KiB header, a made-up 60 KB method, a
    /// short made-up method, a wrong password for a real account, an
    /// unknown API key. Measures memory, not speed.
    HostileInput,
    /// `POST /api/v1/auth/login` with a wrong password for the account of
    /// a seed 002 workspace the scenario sets up (no admin key needed).
    LoginGuesses,
    /// `POST /v1/agent/bootstrap` with a well-formed API key never issued,
    /// a new one every time (no admin key needed).
    UnknownApiKeys,
    /// The same as `unknown-api-keys`, but each connection repeats one key.
    RepeatedUnknownApiKey,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::NewAgentBootstrap => "new-agent-bootstrap",
            Scenario::RepeatBootstrap => "repeat-bootstrap",
            Scenario::LimitsMe => "limits-me",
            Scenario::Spend => "spend",
            Scenario::RegistryList => "registry-list",
            Scenario::HostileInput => "hostile-input",
            Scenario::LoginGuesses => "login-guesses",
            Scenario::UnknownApiKeys => "unknown-api-keys",
            Scenario::RepeatedUnknownApiKey => "repeated-unknown-api-key",
        }
    }
}

/// The most requests per minute an agent-limits entry may allow; set for
/// the agents the load runs as, so the benchmark measures work, not 429s.
const UNLIMITED_RPM: u32 = 1_000_000;
/// A daily budget that one-cent spends cannot use up in a run.
const LARGE_BUDGET_USD: u32 = 1_000_000;
/// Agents listed by the registry scenario: more than a page, as the issue asks.
const LISTED_AGENTS: usize = 120;

/// The longest made-up method sent: what the issue saw actix accept.
const LONG_METHOD_BYTES: usize = 60 * 1024;
/// Characters a made-up method is drawn from: HTTP token characters, so
/// the request is well-formed and reaches the application.
const METHOD_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// What one connection sends: the same bytes every time, or a request made
/// afresh for each send.
#[derive(Debug)]
enum Source {
    Fixed(Vec<u8>),
    /// A bootstrap of an agent never seen before, with this key.
    NewAgent {
        key: String,
    },
    /// A request to a random path with a random method of this length.
    MadeUpMethod {
        length: usize,
    },
    /// A bootstrap with a well-formed API key that was never issued.
    UnknownApiKey,
    /// A login to this account with a password that is not its own.
    WrongPassword {
        email: String,
    },
}

/// What each connection sends: `sources[connection % sources.len()]`.
#[derive(Debug)]
struct Plan {
    host: String,
    sources: Vec<Source>,
}

impl Plan {
    fn fixed(host: &str, requests: Vec<Vec<u8>>) -> Self {
        Plan {
            host: host.to_owned(),
            sources: requests.into_iter().map(Source::Fixed).collect(),
        }
    }

    fn request(&self, connection: usize, sequence: u64) -> std::borrow::Cow<'_, [u8]> {
        let host = &self.host;
        match &self.sources[connection % self.sources.len()] {
            Source::Fixed(request) => request.as_slice().into(),
            Source::NewAgent { key } => {
                let body =
                    format!(r#"{{"agent_id":"new-{connection}-{sequence}","budget_daily_usd":5}}"#);
                encode("POST", host, "/v1/agent/bootstrap", Some(key), Some(&body)).into()
            }
            Source::MadeUpMethod { length } => {
                let method = random_token(*length);
                let path = format!("/{}", random_token(12).to_ascii_lowercase());
                encode(&method, host, &path, None, None).into()
            }
            Source::UnknownApiKey => {
                let key = ApiKey::mint(ApiKeyKind::Tenant(ApiKeyRole::Provisioner));
                let body = bootstrap_body("never-issued");
                encode(
                    "POST",
                    host,
                    "/v1/agent/bootstrap",
                    Some(key.expose()),
                    Some(&body),
                )
                .into()
            }
            Source::WrongPassword { email } => {
                let body = json!({
                    "email": email,
                    "password": format!("guess-{connection}-{sequence}-{}", random_token(8)),
                })
                .to_string();
                encode("POST", host, "/api/v1/auth/login", None, Some(&body)).into()
            }
        }
    }
}

/// A random HTTP token of `length` characters.
fn random_token(length: usize) -> String {
    let mut rng = rand::rng();
    (0..length)
        .map(|_| char::from(METHOD_ALPHABET[rng.random_range(0..METHOD_ALPHABET.len())]))
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.address.ip().is_loopback(),
        "loadgen only drives servers on loopback, not {}",
        args.address
    );
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let warmup = seconds(args.warmup, "--warmup")?;
    let measured = seconds(args.duration, "--duration")?;
    let timeout = seconds(args.timeout, "--timeout")?;
    ensure!(!measured.is_zero(), "--duration must be positive");

    let plan = Arc::new(
        prepare(&args)
            .await
            .with_context(|| format!("cannot prepare scenario {}", args.scenario.name()))?,
    );
    let started = Instant::now();
    let measure_from = started + warmup;
    let stop_at = measure_from + measured;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|connection| {
            let plan = Arc::clone(&plan);
            tokio::spawn(drive(
                args.address,
                plan,
                connection,
                measure_from,
                stop_at,
                timeout,
            ))
        })
        .collect();
    let probe = args
        .probe
        .clone()
        .map(|path| tokio::spawn(probe(args.address, path, measure_from, stop_at, timeout)));
    let mut tally = Tally::default();
    let mut first_failure = None;
    for worker in workers {
        let (worker_tally, failure) = worker.await.context("a load worker panicked")?;
        tally.merge(worker_tally);
        first_failure = first_failure.or(failure);
    }
    let mut report = Report::new(args.scenario.name(), measured, tally);
    if let Some(probe) = probe {
        report.probe = Some(probe.await.context("the probe panicked")?);
    }
    eprintln!(
        "loadgen: {}: {:.0} requests/s, p50 {} us, p99 {} us, {} non-2xx, {} transport errors",
        report.scenario,
        report.rps(),
        report.p50_us.unwrap_or(0),
        report.p99_us.unwrap_or(0),
        report.non_2xx(),
        report.transport_errors,
    );
    if let Some(probe) = &report.probe {
        eprintln!(
            "loadgen: probe: {} answers, p50 {} us, p99 {} us, {} failed",
            probe.count,
            probe.p50_us.unwrap_or(0),
            probe.p99_us.unwrap_or(0),
            probe.failures,
        );
    }
    if let Some(failure) = first_failure {
        eprintln!("loadgen: first failure: {failure}");
    }
    println!("{report}");
    Ok(())
}

fn seconds(value: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} must be seconds, >= 0"))
}

/// One connection's loop: send, wait, count; reconnect when the server
/// closes or a request fails. Counts only what completes in the measured
/// window, and stops sending at `stop_at` on its own.
async fn drive(
    address: SocketAddr,
    plan: Arc<Plan>,
    index: usize,
    measure_from: Instant,
    stop_at: Instant,
    timeout: Duration,
) -> (Tally, Option<String>) {
    let mut tally = Tally::default();
    let mut first_failure = None;
    let mut connection: Option<Connection> = None;
    let mut sequence = 0u64;
    while Instant::now() < stop_at {
        let request = plan.request(index, sequence);
        sequence += 1;
        let sent = Instant::now();
        let outcome = tokio::time::timeout(timeout, async {
            let open = match connection.take() {
                Some(open) if !open.is_closed() => open,
                _ => Connection::open(address).await?,
            };
            let mut open = open;
            let response = open.send(&request).await?;
            connection = Some(open);
            std::io::Result::Ok(response)
        })
        .await;
        let done = Instant::now();
        let counted = done >= measure_from && done <= stop_at;
        match outcome {
            Ok(Ok(response)) if response.is_success() => {
                if counted {
                    tally.success(done - sent);
                }
            }
            Ok(Ok(response)) => {
                if counted {
                    tally.failure(response.status);
                    first_failure.get_or_insert_with(|| {
                        format!("{} {}", response.status, response.body_excerpt())
                    });
                }
            }
            Ok(Err(error)) => {
                if counted {
                    tally.transport_errors += 1;
                    first_failure.get_or_insert_with(|| error.to_string());
                }
                // A server that refuses connections would otherwise be
                // asked again in a tight loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                connection = None;
                if counted {
                    tally.transport_errors += 1;
                    first_failure.get_or_insert_with(|| format!("no response within {timeout:?}"));
                }
            }
        }
    }
    (tally, first_failure)
}

/// The innocent caller: one `GET path` every 10 ms on its own keep-alive
/// connection; latencies of its 2xx answers in the measured window, and how
/// many got anything else or nothing.
async fn probe(
    address: SocketAddr,
    path: String,
    measure_from: Instant,
    stop_at: Instant,
    timeout: Duration,
) -> Probe {
    let request = encode("GET", &address.to_string(), &path, None, None);
    let mut tally = Tally::default();
    let mut failures = 0;
    let mut connection: Option<Connection> = None;
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < stop_at {
        ticks.tick().await;
        let sent = Instant::now();
        let outcome = tokio::time::timeout(timeout, async {
            let mut open = match connection.take() {
                Some(open) if !open.is_closed() => open,
                _ => Connection::open(address).await?,
            };
            let response = open.send(&request).await?;
            connection = Some(open);
            std::io::Result::Ok(response)
        })
        .await;
        let done = Instant::now();
        if done < measure_from || done > stop_at {
            continue;
        }
        match outcome {
            Ok(Ok(response)) if response.is_success() => tally.success(done - sent),
            _ => failures += 1,
        }
    }
    Probe::new(tally, failures)
}

/// Creates what the scenario needs and returns the requests to repeat.
async fn prepare(args: &Args) -> Result<Plan> {
    let host = args.address.to_string();
    match args.scenario {
        Scenario::Baseline => {
            return Ok(Plan::fixed(
                &host,
                vec![encode("GET", &host, "/", None, None)],
            ));
        }
        Scenario::LoginGuesses => {
            let email = create_workspace(args.address).await?;
            return Ok(Plan {
                host,
                sources: vec![Source::WrongPassword { email }],
            });
        }
        Scenario::UnknownApiKeys => {
            return Ok(Plan {
                host,
                sources: vec![Source::UnknownApiKey],
            });
        }
        Scenario::RepeatedUnknownApiKey => {
            let requests = (0..args.concurrency)
                .map(|_| {
                    let key = ApiKey::mint(ApiKeyKind::Tenant(ApiKeyRole::Provisioner));
                    let body = bootstrap_body("never-issued");
                    encode(
                        "POST",
                        &host,
                        "/v1/agent/bootstrap",
                        Some(key.expose()),
                        Some(&body),
                    )
                })
                .collect();
            return Ok(Plan::fixed(&host, requests));
        }
        _ => {}
    }
    let key = args
        .admin_key
        .clone()
        .context("this scenario needs --admin-key (or LOADGEN_ADMIN_KEY)")?;
    let mut setup = Setup {
        connection: Connection::open(args.address)
            .await
            .with_context(|| format!("cannot connect to {}", args.address))?,
        host: host.clone(),
        key: key.clone(),
    };
    let per_connection = |prefix: &str| -> Vec<String> {
        (0..args.concurrency)
            .map(|index| format!("{prefix}-{index}"))
            .collect()
    };
    let plan = match args.scenario {
        Scenario::Baseline
        | Scenario::LoginGuesses
        | Scenario::UnknownApiKeys
        | Scenario::RepeatedUnknownApiKey => unreachable!("answered above"),
        Scenario::NewAgentBootstrap => Plan {
            host,
            sources: vec![Source::NewAgent { key }],
        },
        Scenario::RepeatBootstrap => {
            let agents = per_connection("repeat");
            let mut requests = Vec::new();
            for agent in &agents {
                setup.bootstrap(agent).await?;
                requests.push(encode(
                    "POST",
                    &host,
                    "/v1/agent/bootstrap",
                    Some(&key),
                    Some(&bootstrap_body(agent)),
                ));
            }
            setup.unlimit(&agents).await?;
            Plan::fixed(&host, requests)
        }
        Scenario::LimitsMe | Scenario::Spend => {
            let agents = per_connection(if args.scenario == Scenario::Spend {
                "spender"
            } else {
                "reader"
            });
            let mut tokens = Vec::new();
            for agent in &agents {
                tokens.push(setup.bootstrap(agent).await?);
            }
            setup.unlimit(&agents).await?;
            let requests = tokens
                .iter()
                .map(|token| {
                    if args.scenario == Scenario::Spend {
                        encode(
                            "POST",
                            &host,
                            "/v1/agent/spend",
                            Some(token),
                            Some(r#"{"amount_usd":0.01}"#),
                        )
                    } else {
                        encode("GET", &host, "/v1/agent/limits/me", Some(token), None)
                    }
                })
                .collect();
            Plan::fixed(&host, requests)
        }
        Scenario::HostileInput => {
            let email = create_workspace(args.address).await?;
            let mut sources: Vec<Source> = hostile_requests(&host, &key)
                .into_iter()
                .map(Source::Fixed)
                .collect();
            sources.extend([
                Source::MadeUpMethod {
                    length: LONG_METHOD_BYTES,
                },
                Source::MadeUpMethod { length: 8 },
                Source::WrongPassword { email },
                Source::UnknownApiKey,
            ]);
            Plan { host, sources }
        }
        Scenario::RegistryList => {
            for index in 0..LISTED_AGENTS {
                setup.bootstrap(&format!("listed-{index}")).await?;
            }
            Plan::fixed(
                &host,
                vec![encode(
                    "GET",
                    &host,
                    "/api/v1/agents?limit=20",
                    Some(&key),
                    None,
                )],
            )
        }
    };
    Ok(plan)
}

/// A header's name and value.
type Header<'a> = (&'a str, &'a str);

/// One request of each kind the server must refuse without holding on to
/// it: each is a bootstrap with the admin key, so only the input is wrong.
fn hostile_requests(host: &str, key: &str) -> Vec<Vec<u8>> {
    const PATH: &str = "/v1/agent/bootstrap";
    const JSON: &str = "application/json";
    let huge = format!(r#"{{"agent_id":"{}"}}"#, "a".repeat(10_000_000));
    let nested = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let not_utf8 = b"{\"agent_id\":\"\xff\xfe\xfd\"}".to_vec();
    let valid = bootstrap_body("hostile");
    let padding = "p".repeat(256 * 1024);
    let json = [("Content-Type", JSON)];
    let plain = [("Content-Type", "text/plain")];
    let padded = [("Content-Type", JSON), ("X-Padding", padding.as_str())];
    let cases: [(&[Header], &[u8]); 5] = [
        (&json, huge.as_bytes()),
        (&json, nested.as_bytes()),
        (&json, &not_utf8),
        (&plain, valid.as_bytes()),
        (&padded, valid.as_bytes()),
    ];
    cases
        .iter()
        .map(|(headers, body)| encode_raw("POST", host, PATH, Some(key), headers, body))
        .collect()
}

/// Sets up a workspace with seed 002's `POST /api/v1/bootstrap` (no
/// credential, on a fresh instance), as the seed prints it, and returns its
/// account's e-mail.
async fn create_workspace(address: SocketAddr) -> Result<String> {
    const EMAIL: &str = "admin@localhost";
    let host = address.to_string();
    let mut connection = Connection::open(address)
        .await
        .with_context(|| format!("cannot connect to {address}"))?;
    let body = workspace_body(EMAIL);
    let request = encode("POST", &host, "/api/v1/bootstrap", None, Some(&body));
    let response = connection
        .send(&request)
        .await
        .context("POST /api/v1/bootstrap")?;
    if !response.is_success() {
        bail!(
            "cannot set up a workspace to guess the password of: POST /api/v1/bootstrap answered {} {}",
            response.status,
            response.body_excerpt()
        );
    }
    Ok(EMAIL.to_owned())
}

/// Seed 002's example request, with `email` for its primary agent.
fn workspace_body(email: &str) -> String {
    json!({
        "primary_agent": {
            "email": email,
            "password": "secure-generated-password",
            "agent_profile": {
                "name": "research-coordinator",
                "display_name": "Research Coordinator",
                "description": "Main research coordination agent"
            }
        },
        "agents": [
            {
                "name": "data-collector",
                "display_name": "Data Collector",
                "description": "Scrapes and aggregates data sources"
            },
            {
                "name": "analyst",
                "display_name": "Analysis Agent",
                "description": "Performs statistical analysis"
            }
        ],
        "humans": [
            {
                "email": "researcher@university.edu",
                "display_name": "Dr. Smith",
                "role": "observer"
            }
        ],
        "default_channel": {
            "name": "general",
            "topic": "Research team coordination"
        }
    })
    .to_string()
}

fn bootstrap_body(agent: &str) -> String {
    json!({ "agent_id": agent, "budget_daily_usd": LARGE_BUDGET_USD }).to_string()
}

/// The scenario's preparation, one request at a time as the admin.
#[derive(Debug)]
struct Setup {
    connection: Connection,
    host: String,
    key: String,
}

impl Setup {
    async fn call(&mut self, method: &str, path: &str, body: &str) -> Result<Value> {
        if self.connection.is_closed() {
            self.connection = Connection::open(self.host.parse()?).await?;
        }
        let request = encode(method, &self.host, path, Some(&self.key), Some(body));
        let response = self
            .connection
            .send(&request)
            .await
            .with_context(|| format!("{method} {path}"))?;
        if !response.is_success() {
            bail!(
                "{method} {path} answered {}: {}",
                response.status,
                response.body_excerpt()
            );
        }
        serde_json::from_slice(&response.body)
            .with_context(|| format!("{method} {path} answered something other than JSON"))
    }

    /// Bootstraps `agent` and returns its token.
    async fn bootstrap(&mut self, agent: &str) -> Result<String> {
        let answer = self
            .call("POST", "/v1/agent/bootstrap", &bootstrap_body(agent))
            .await?;
        answer["jwt"]
            .as_str()
            .map(str::to_owned)
            .context("the bootstrap answer has no jwt")
    }

    /// Lifts the agents' requests-per-minute limit (30 by default) out of
    /// the way, in one write of the tenant's agent-limits map.
    async fn unlimit(&mut self, agents: &[String]) -> Result<()> {
        let entries: serde_json::Map<String, Value> = agents
            .iter()
            .map(|agent| {
                (
                    format!("agent:{agent}"),
                    json!({
                        "maxRequestsPerMinute": UNLIMITED_RPM,
                        "maxBudgetUsd": LARGE_BUDGET_USD,
                    }),
                )
            })
            .collect();
        self.call(
            "PATCH",
            "/v1/agent-limits",
            &Value::Object(entries).to_string(),
        )
        .await?;
        Ok(())
    }
}
