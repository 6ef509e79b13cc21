//! `loadgen`: drives one scenario against a server on loopback with a fixed
//! number of keep-alive connections, for a warm-up and then a measured
//! period, and prints one `key=value` report line on stdout (for
//! `cargo xtask bench http`) and a readable summary on stderr.
//!
//! Each scenario prepares what it needs through the API itself (agents,
//! their tokens, raised rate limits), so a fresh server and its first admin
//! key are all it takes.

mod http;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

use crate::http::{Connection, encode, encode_raw};
use crate::stats::{Report, Tally};

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
    /// wrong content type, a 256 KiB header. Measures memory, not speed.
    HostileInput,
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

/// What each connection sends.
#[derive(Debug)]
enum Plan {
    /// The same request over and over; one per connection, by index.
    Fixed(Vec<Vec<u8>>),
    /// A bootstrap of an agent never seen before, every time.
    NewAgents { host: String, key: String },
}

impl Plan {
    fn request(&self, connection: usize, sequence: u64) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Plan::Fixed(requests) => requests[connection % requests.len()].as_slice().into(),
            Plan::NewAgents { host, key } => {
                let body =
                    format!(r#"{{"agent_id":"new-{connection}-{sequence}","budget_daily_usd":5}}"#);
                encode("POST", host, "/v1/agent/bootstrap", Some(key), Some(&body)).into()
            }
        }
    }
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
    let mut tally = Tally::default();
    let mut first_failure = None;
    for worker in workers {
        let (worker_tally, failure) = worker.await.context("a load worker panicked")?;
        tally.merge(worker_tally);
        first_failure = first_failure.or(failure);
    }
    let report = Report::new(args.scenario.name(), measured, tally);
    eprintln!(
        "loadgen: {}: {:.0} requests/s, p50 {} us, p99 {} us, {} non-2xx, {} transport errors",
        report.scenario,
        report.rps(),
        report.p50_us.unwrap_or(0),
        report.p99_us.unwrap_or(0),
        report.non_2xx(),
        report.transport_errors,
    );
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

/// Creates what the scenario needs and returns the requests to repeat.
async fn prepare(args: &Args) -> Result<Plan> {
    let host = args.address.to_string();
    if args.scenario == Scenario::Baseline {
        return Ok(Plan::Fixed(vec![encode("GET", &host, "/", None, None)]));
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
        Scenario::Baseline => unreachable!("answered above"),
        Scenario::NewAgentBootstrap => Plan::NewAgents { host, key },
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
            Plan::Fixed(requests)
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
            Plan::Fixed(requests)
        }
        Scenario::HostileInput => Plan::Fixed(hostile_requests(&host, &key)),
        Scenario::RegistryList => {
            for index in 0..LISTED_AGENTS {
                setup.bootstrap(&format!("listed-{index}")).await?;
            }
            Plan::Fixed(vec![encode(
                "GET",
                &host,
                "/api/v1/agents?limit=20",
                Some(&key),
                None,
            )])
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
