//! `cargo xtask hostile`: issue 15's attacks by callers without a
//! credential (and one by a provisioner), against the release binary, each
//! judged against its target; `cheap()` runs the quick ones in
//! `cargo xtask test` against the debug binary the tests built.
//!
//! Every attack targets a server this task started on 127.0.0.1 and stops
//! by itself. The server's settings go by environment variable, never by
//! flag, so a binary older than a defence starts all the same and the
//! attack shows the target missed rather than failing to run.
//!
//! Like the rest of xtask it links none of our crates: it speaks HTTP over
//! plain sockets, and leaves the floods that need minted API keys or many
//! connections with latencies to `loadgen`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::bench_http::{
    Database, Scratch, Server, agentryd_command, postgres_available, random_hex, start_agentryd_in,
    tail,
};
use crate::{cargo, run, target_dir};

const USAGE: &str = "\
usage: cargo xtask hostile [--pg | --quick]

Runs issue 15's attacks against the release agentryd on a fresh SQLite
database (and on PostgreSQL too with --pg), prints each figure with its
target, and fails when a target is missed. --quick runs only the part
`cargo xtask test` runs, against the debug binary it built.
";

// The server's settings during the attacks, short so the run is.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_TIMEOUT: Duration = Duration::from_secs(3);
const KEEP_ALIVE: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 100;
/// How late after its timeout a server may close a connection and still
/// count as on time: its timer fires at the timeout at the earliest, and
/// on a busy 2-core machine a little after. Less than the gap between our
/// settings and actix's 5 s defaults, so a server that ignores the
/// settings misses.
const CLOSE_LEEWAY: Duration = Duration::from_secs(2);

/// Made-up methods: the requests sent, what the server may grow by for
/// them, and how large its `/metrics` may be afterwards.
const MADE_UP_METHOD_REQUESTS: usize = 10_000;
const CHEAP_MADE_UP_METHOD_REQUESTS: usize = 1_000;
const RSS_GROWTH_LIMIT_KIB: u64 = 5_000_000 / 1024;
const METRICS_LIMIT_BYTES: usize = 256 * 1024;
/// A growth past which the flood stops early (the target is missed by
/// then) and `/metrics` is not read: the unbounded registry the issue found
/// renders gigabytes for it, on a machine others share.
const RSS_RUNAWAY_KIB: u64 = 20_000_000 / 1024;
const LONG_METHOD_BYTES: usize = 60 * 1024;
const FLOOD_THREADS: usize = 4;

/// The login flood: connections, seconds, and the budget of wrong
/// passwords judged per account per minute.
const LOGIN_CONNECTIONS: usize = 64;
const LOGIN_SECONDS: u64 = 10;
const JUDGED_PER_MINUTE: u64 = 10;
const HEALTHZ_P99_LIMIT_US: u64 = 20_000;

/// How long each unknown-API-key flood runs, and on how many connections.
const UNKNOWN_KEY_SECONDS: u64 = 3;
const UNKNOWN_KEY_CONNECTIONS: usize = 16;

/// One attack's outcome on one backend.
#[derive(Debug)]
struct Verdict {
    backend: &'static str,
    attack: &'static str,
    figure: String,
    target: String,
    met: bool,
}

impl Verdict {
    fn print(&self) {
        let mark = if self.met { "met   " } else { "MISSED" };
        eprintln!(
            "xtask: hostile: {mark} {} on {}: {} (target: {})",
            self.attack, self.backend, self.figure, self.target
        );
    }
}

/// What every attack of one run shares: the binary, the backend, where
/// databases and logs go, and the verdicts so far.
struct Run<'a> {
    agentryd: PathBuf,
    loadgen: Option<PathBuf>,
    scratch: &'a Scratch,
    backend: &'static str,
    verdicts: Vec<Verdict>,
}

/// A server started for the attacks, on its own database. Fields drop in
/// order: the server stops before its database is dropped.
struct Instance {
    server: Server,
    admin_key: String,
    database: Database,
    dir: PathBuf,
}

pub(crate) fn hostile(args: &[String]) -> Result<()> {
    let mut postgres = false;
    for arg in args {
        match arg.as_str() {
            "--pg" => postgres = true,
            "--quick" => return cheap(),
            "--help" | "-h" => {
                eprint!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    run(cargo().args([
        "build",
        "--release",
        "--locked",
        "--package",
        "agentryd",
        "--package",
        "loadgen",
    ]))?;
    let bins = target_dir().join("release");
    let mut backends = vec!["SQLite"];
    if postgres {
        postgres_available().map_err(|reason| anyhow::anyhow!("--pg: {reason}"))?;
        backends.push("PostgreSQL");
    }
    let started = Instant::now();
    let scratch = Scratch::named("agentry-hostile")?;
    let mut verdicts = Vec::new();
    for backend in backends {
        let mut run = Run {
            agentryd: bins.join("agentryd"),
            loadgen: Some(bins.join("loadgen")),
            scratch: &scratch,
            backend,
            verdicts: Vec::new(),
        };
        run.all(MADE_UP_METHOD_REQUESTS)?;
        verdicts.extend(run.verdicts);
    }
    eprintln!(
        "xtask: hostile: ran for {:.0} s",
        started.elapsed().as_secs_f64()
    );
    judge(&verdicts)
}

/// The quick attacks, for `cargo xtask test`, against the debug binary
/// `cargo nextest` has just built: a shorter made-up-method flood (its
/// `/metrics` bound; memory is the release task's figure), the half-sent
/// head and the other slow clients, setup squatting and the provisioner
/// takeover.
pub(crate) fn cheap() -> Result<()> {
    let scratch = Scratch::named("agentry-hostile")?;
    let mut run = Run {
        agentryd: target_dir().join("debug").join("agentryd"),
        loadgen: None,
        scratch: &scratch,
        backend: "SQLite",
        verdicts: Vec::new(),
    };
    run.all(CHEAP_MADE_UP_METHOD_REQUESTS)?;
    judge(&run.verdicts)
}

fn judge(verdicts: &[Verdict]) -> Result<()> {
    eprintln!("xtask: hostile: summary");
    for verdict in verdicts {
        verdict.print();
    }
    let missed = verdicts.iter().filter(|verdict| !verdict.met).count();
    if missed > 0 {
        bail!("{missed} of {} hostile targets missed", verdicts.len());
    }
    eprintln!("xtask: hostile: all {} targets met", verdicts.len());
    Ok(())
}

impl Run<'_> {
    /// Every attack, on two servers: one with the timeouts and caps set
    /// short, one with a setup token. The flood attacks (`loadgen`) run only
    /// in the release task.
    fn all(&mut self, made_up_methods: usize) -> Result<()> {
        let settings = [
            ("AGENTRY_LOG", "warn".to_owned()),
            ("AGENTRY_HEAD_TIMEOUT", HEAD_TIMEOUT.as_secs().to_string()),
            ("AGENTRY_BODY_TIMEOUT", BODY_TIMEOUT.as_secs().to_string()),
            ("AGENTRY_KEEP_ALIVE", KEEP_ALIVE.as_secs().to_string()),
            ("AGENTRY_MAX_CONNECTIONS", MAX_CONNECTIONS.to_string()),
        ];
        let mut attacked = self.start("attacked", &settings)?;
        // First, while the default tenant is the only one, so
        // `admin create-key` needs no `--tenant`.
        self.provisioner_takeover(&attacked)?;
        self.made_up_methods(&mut attacked, made_up_methods)?;
        // Timing attacks before the floods: work a flood left queued (a
        // backlog of password hashes on an undefended server) would skew
        // when the server gets round to closing a connection.
        self.slow_clients(&attacked)?;
        self.connection_cap(&mut attacked)?;
        if self.loadgen.is_some() {
            self.unknown_api_keys(&attacked)?;
            self.login_flood(&attacked)?;
        }
        ensure!(
            attacked.server.is_running(),
            "the attacked server died; its log:\n{}",
            tail(&attacked.server.log)
        );
        drop(attacked);

        let token = random_hex()? + &random_hex()?;
        let setup = self.start(
            "setup",
            &[
                ("AGENTRY_LOG", "warn".to_owned()),
                ("AGENTRY_SETUP_TOKEN", token.clone()),
            ],
        )?;
        self.setup_squatting(&setup, &token)?;
        Ok(())
    }

    fn start(&self, name: &str, settings: &[(&str, String)]) -> Result<Instance> {
        eprintln!(
            "xtask: hostile: starting agentryd ({name}) on {}",
            self.backend
        );
        let database = Database::create(self.backend, self.scratch, name)?;
        let dir = self.scratch.path().join(format!("{}-{name}", self.backend));
        let log = self
            .scratch
            .path()
            .join(format!("agentryd-{}-{name}.log", self.backend));
        let (server, admin_key) =
            start_agentryd_in(&self.agentryd, &dir, &log, &database, settings)?;
        Ok(Instance {
            server,
            admin_key,
            database,
            dir,
        })
    }

    fn verdict(&mut self, attack: &'static str, figure: String, target: &str, met: bool) {
        let verdict = Verdict {
            backend: self.backend,
            attack,
            figure,
            target: target.to_owned(),
            met,
        };
        verdict.print();
        self.verdicts.push(verdict);
    }

    /// A provisioner key asks for a runtime token of an agent the registry
    /// created (seed 004), by bootstrapping its name (seed 000).
    fn provisioner_takeover(&mut self, instance: &Instance) -> Result<()> {
        let provisioner = self.mint_key(instance, "provisioner")?;
        let address = instance.server.address;
        let created = call(
            address,
            "POST",
            "/api/v1/agents",
            &[
                ("Authorization", &format!("Bearer {}", instance.admin_key)),
                ("X-Bulwark-Tenant", "default"),
            ],
            Some(SEED_004_AGENT),
        )?;
        ensure!(
            created.status == 201,
            "creating an agent through the registry answered {}: {}",
            created.status,
            created.body
        );
        let takeover = call(
            address,
            "POST",
            "/v1/agent/bootstrap",
            &[("Authorization", &format!("Bearer {provisioner}"))],
            Some(r#"{"agent_id":"my-assistant","budget_daily_usd":5.0}"#),
        )?;
        let token = takeover.body.contains("\"jwt\"");
        let refused = takeover.status == 409 && takeover.body.contains("agent_not_bootstrapped");
        let figure = format!(
            "{} {}{}",
            takeover.status,
            problem_code(&takeover.body),
            if token { ", with a token" } else { "" }
        );
        self.verdict(
            "provisioner takeover of a registry agent",
            figure,
            "409 agent_not_bootstrapped, never a token",
            refused && !token,
        );
        Ok(())
    }

    /// `agentryd admin create-key --role <role>` against the instance's
    /// database, as the operator on the machine would; the key it printed.
    fn mint_key(&self, instance: &Instance, role: &str) -> Result<String> {
        let output = agentryd_command(&self.agentryd, &instance.dir, &instance.database)
            .args(["admin", "create-key", "--role", role])
            .args(["--label", "hostile"])
            .env("AGENTRY_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .context("cannot run agentryd admin create-key")?;
        ensure!(
            output.status.success(),
            "agentryd admin create-key failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with("agy_"))
            .map(str::to_owned)
            .context("agentryd admin create-key printed no key")
    }

    /// Requests with made-up methods (half of them 60 KB long) to random
    /// paths and to `/healthz`: what the server holds afterwards, and the
    /// size of its `/metrics`.
    fn made_up_methods(&mut self, instance: &mut Instance, requests: usize) -> Result<()> {
        let address = instance.server.address;
        // The first requests of any kind grow a fresh server's memory
        // (allocator caches, buffers); ordinary ones go first so only what
        // the made-up methods add is counted.
        flood(address, 400, |_, sequence| {
            let path = if sequence % 2 == 0 {
                "/healthz"
            } else {
                "/no-such-route"
            };
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").into_bytes()
        });
        let before = instance.server.memory("VmRSS")?;
        let mut sent = 0;
        let mut statuses = Tally::default();
        let mut growth = 0;
        while sent < requests {
            let round = (requests - sent).min(1_000);
            let tally = flood(address, round, |rng, sequence| {
                let length = if sequence % 2 == 0 {
                    LONG_METHOD_BYTES
                } else {
                    1 + rng.below(16)
                };
                let method = rng.token(length);
                let path = if sequence % 4 < 2 {
                    "/healthz".to_owned()
                } else {
                    format!("/{}", rng.token(12).to_ascii_lowercase())
                };
                format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").into_bytes()
            });
            statuses.merge(tally);
            sent += round;
            growth = instance.server.memory("VmRSS")?.saturating_sub(before);
            if growth > RSS_RUNAWAY_KIB {
                break;
            }
        }
        ensure!(
            instance.server.is_running(),
            "the server died under made-up methods; its log:\n{}",
            tail(&instance.server.log)
        );
        let stopped = if sent < requests {
            format!(
                " (stopped after {sent} of {requests}: past {} KiB)",
                RSS_RUNAWAY_KIB
            )
        } else {
            String::new()
        };
        let answers = format!("answers {}", statuses.describe());
        let no_5xx = !statuses.statuses.keys().any(|status| *status >= 500);
        if requests >= MADE_UP_METHOD_REQUESTS {
            self.verdict(
                "made-up methods: memory",
                format!(
                    "RSS grew {:.1} MB over {sent} requests{stopped}; {answers}",
                    kib_to_mb(growth)
                ),
                "< 5 MB growth over 10,000 requests, no 5xx",
                growth < RSS_GROWTH_LIMIT_KIB && sent == requests && no_5xx,
            );
        } else {
            eprintln!(
                "xtask: hostile: made-up methods: RSS grew {:.1} MB over {sent} requests (not judged here); {answers}",
                kib_to_mb(growth)
            );
        }
        let (figure, met) = if growth > RSS_RUNAWAY_KIB {
            (
                format!(
                    "not read: the server already holds {:.0} MB more, and its /metrics would be far larger",
                    kib_to_mb(growth)
                ),
                false,
            )
        } else {
            let size = metrics_size(address)?;
            let figure = match size {
                MetricsSize::Exactly(bytes) => format!("{} bytes after {sent} requests", bytes),
                MetricsSize::MoreThan(bytes) => {
                    format!("more than {bytes} bytes after {sent} requests")
                }
            };
            let met = matches!(size, MetricsSize::Exactly(bytes) if bytes < METRICS_LIMIT_BYTES);
            (
                figure,
                met && (requests < MADE_UP_METHOD_REQUESTS || no_5xx),
            )
        };
        self.verdict("made-up methods: /metrics size", figure, "< 256 KB", met);
        Ok(())
    }

    /// Well-formed API keys that were never issued: a new one each time,
    /// then one repeated per connection (what a negative cache serves).
    fn unknown_api_keys(&mut self, instance: &Instance) -> Result<()> {
        for (scenario, attack) in [
            ("unknown-api-keys", "unknown API keys, each new"),
            (
                "repeated-unknown-api-key",
                "unknown API keys, each repeated",
            ),
        ] {
            let report = self.loadgen(
                instance,
                scenario,
                UNKNOWN_KEY_CONNECTIONS,
                UNKNOWN_KEY_SECONDS,
                None,
            )?;
            let answered: u64 = report.statuses.values().sum();
            let only_401 = report.statuses.keys().all(|status| *status == 401);
            self.verdict(
                attack,
                format!(
                    "{:.0} answers/s on {UNKNOWN_KEY_CONNECTIONS} connections, {}",
                    answered as f64 / report.seconds,
                    report.describe()
                ),
                "every one 401",
                only_401 && answered > 0 && report.ok == 0 && report.transport_errors == 0,
            );
        }
        Ok(())
    }

    /// 64 connections guessing one account's password for 10 s, while an
    /// innocent caller asks `/healthz` every 10 ms.
    fn login_flood(&mut self, instance: &Instance) -> Result<()> {
        let report = self.loadgen(
            instance,
            "login-guesses",
            LOGIN_CONNECTIONS,
            LOGIN_SECONDS,
            Some("/healthz"),
        )?;
        let judged = report.statuses.get(&401).copied().unwrap_or(0);
        let throttled = report.statuses.get(&429).copied().unwrap_or(0);
        // The budget may be spent at once, then refills during the run.
        let allowed = JUDGED_PER_MINUTE + JUDGED_PER_MINUTE * LOGIN_SECONDS / 60;
        let only_refusals = report.ok == 0
            && report.transport_errors == 0
            && report
                .statuses
                .keys()
                .all(|status| *status == 401 || *status == 429);
        self.verdict(
            "login flood: wrong passwords judged",
            format!(
                "{judged} judged (401) and {throttled} throttled (429) in {LOGIN_SECONDS} s on \
                 {LOGIN_CONNECTIONS} connections from one address; {}",
                report.describe()
            ),
            &format!(
                "<= {JUDGED_PER_MINUTE} per account per minute: {allowed} in a {LOGIN_SECONDS} s run, \
                 every other guess 429"
            ),
            judged <= allowed && only_refusals,
        );
        let probe = report.probe.context("loadgen reported no probe")?;
        self.verdict(
            "login flood: /healthz meanwhile",
            format!(
                "p99 {}, p50 {}, {} answered, {} failed",
                micros(probe.p99_us),
                micros(probe.p50_us),
                probe.count,
                probe.failures
            ),
            "p99 < 20 ms, none failed",
            probe.p99_us.is_some_and(|p99| p99 < HEALTHZ_P99_LIMIT_US)
                && probe.failures == 0
                && probe.count > 0,
        );
        Ok(())
    }

    /// Runs a loadgen scenario against the instance; its report.
    fn loadgen(
        &self,
        instance: &Instance,
        scenario: &str,
        connections: usize,
        seconds: u64,
        probe: Option<&str>,
    ) -> Result<LoadReport> {
        let loadgen = self.loadgen.as_ref().context("loadgen is not built")?;
        eprintln!("xtask: hostile: loadgen {scenario} for {seconds} s");
        let mut command = Command::new(loadgen);
        command
            .args(["--address", &instance.server.address.to_string()])
            .args(["--scenario", scenario])
            .args(["--concurrency", &connections.to_string()])
            .args(["--warmup", "0", "--duration", &seconds.to_string()])
            .env_remove("LOADGEN_ADMIN_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(path) = probe {
            command.args(["--probe", path]);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        // loadgen stops on its own after its seconds; this only catches a
        // hang (its preparation included).
        let deadline = Instant::now() + Duration::from_secs(seconds + 60);
        let output = wait_until(child, deadline).with_context(|| format!("loadgen {scenario}"))?;
        ensure!(
            output.status.success(),
            "loadgen {scenario} failed with {}; server log:\n{}",
            output.status,
            tail(&instance.server.log)
        );
        let line = String::from_utf8_lossy(&output.stdout);
        LoadReport::parse(line.trim())
            .with_context(|| format!("cannot read loadgen's report {line:?}"))
    }

    /// Clients that never finish: a half-sent head, a head trickled a byte
    /// at a time, a body trickled a byte a second, and an idle keep-alive
    /// connection. All four at once, each on its own connection.
    fn slow_clients(&mut self, instance: &Instance) -> Result<()> {
        let address = instance.server.address;
        let host = address.to_string();
        let half_head = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
        let trickled_head =
            format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Slow: ").into_bytes();
        let body_head = format!(
            "POST /api/v1/auth/login HTTP/1.1\r\nHost: {host}\r\n\
             Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        )
        .into_bytes();
        let idle = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
        // What each sends first, what it then drips (a byte a second), and
        // whether that opening is a whole request the server answers.
        let cases = [
            (
                "half-sent request head",
                half_head,
                None,
                false,
                HEAD_TIMEOUT,
            ),
            (
                "request head trickled",
                trickled_head,
                Some(b'a'),
                false,
                HEAD_TIMEOUT,
            ),
            (
                "body trickled at 1 byte/s",
                body_head,
                Some(b' '),
                false,
                BODY_TIMEOUT,
            ),
            ("idle keep-alive connection", idle, None, true, KEEP_ALIVE),
        ];
        let watched: Vec<_> = cases
            .into_iter()
            .map(|(attack, opening, drip, answered, timeout)| {
                let give_up = timeout * 3 + CLOSE_LEEWAY;
                let handle =
                    thread::spawn(move || hold_open(address, &opening, drip, answered, give_up));
                (attack, timeout, handle)
            })
            .collect();
        for (attack, timeout, handle) in watched {
            let held = handle
                .join()
                .map_err(|_| anyhow::anyhow!("the {attack} thread panicked"))??;
            let answered = held
                .status
                .map(|status| format!(", answered {status} first"))
                .unwrap_or_default();
            let figure = match held.closed_after {
                Some(after) => format!("closed after {:.1} s{answered}", after.as_secs_f64()),
                None => format!(
                    "still open after {:.0} s{answered}",
                    (timeout * 3 + CLOSE_LEEWAY).as_secs_f64()
                ),
            };
            let on_time = held
                .closed_after
                .is_some_and(|after| after <= timeout + CLOSE_LEEWAY);
            // An idle connection is closed without a word; one that sent
            // part of a request may get a 408 first, never anything else.
            let fitting = held.status.is_none_or(|status| status == 408);
            self.verdict(
                attack,
                figure,
                &format!(
                    "closed within the {} s timeout (+{} s leeway), a 408 at most",
                    timeout.as_secs(),
                    CLOSE_LEEWAY.as_secs()
                ),
                on_time && fitting,
            );
        }
        Ok(())
    }

    /// Three times the connection cap, opened and left silent: how many the
    /// server takes on (its open sockets, from /proc), and whether it
    /// answers once they are gone.
    fn connection_cap(&mut self, instance: &mut Instance) -> Result<()> {
        let address = instance.server.address;
        let pid = instance.server.pid();
        let before = open_sockets(pid)?;
        let opened: Vec<TcpStream> = (0..MAX_CONNECTIONS * 3)
            .map(|_| TcpStream::connect_timeout(&address, Duration::from_secs(2)))
            .collect::<io::Result<_>>()
            .context("cannot open the connections")?;
        // The server accepts them as fast as it will; the most it held
        // within a second (before the head timeout drops any) is the figure.
        let mut most = 0;
        let watch = Instant::now();
        while watch.elapsed() < Duration::from_secs(1) {
            most = most.max(open_sockets(pid)?.saturating_sub(before));
            sleep(Duration::from_millis(20));
        }
        drop(opened);
        let deadline = Instant::now() + Duration::from_secs(10);
        let answers = loop {
            if crate::plain_get(address, "/healthz")
                .is_ok_and(|answer| answer.starts_with("HTTP/1.1 200"))
            {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            sleep(Duration::from_millis(50));
        };
        self.verdict(
            "connection flood",
            format!(
                "{most} of {} silent connections held at once{}",
                MAX_CONNECTIONS * 3,
                if answers {
                    ", /healthz answered after"
                } else {
                    ", /healthz did NOT answer after"
                }
            ),
            &format!("at most {MAX_CONNECTIONS} (AGENTRY_MAX_CONNECTIONS), serving again after"),
            most <= MAX_CONNECTIONS && answers && instance.server.is_running(),
        );
        Ok(())
    }

    /// Seed 002's setup on a fresh server started with a setup token:
    /// refused without it (and with a wrong one), done with it.
    fn setup_squatting(&mut self, instance: &Instance, token: &str) -> Result<()> {
        let address = instance.server.address;
        let without = setup_workspace(address, None)?;
        let wrong = setup_workspace(address, Some("not-the-setup-token"))?;
        let refused =
            |answer: &Answer| answer.status == 401 && answer.body.contains("setup_token_required");
        self.verdict(
            "setup squatting: no or wrong setup token",
            format!(
                "without: {} {}; wrong: {} {}",
                without.status,
                problem_code(&without.body),
                wrong.status,
                problem_code(&wrong.body)
            ),
            "401 setup_token_required for both",
            refused(&without) && wrong.status == 401,
        );
        let with = setup_workspace(address, Some(token))?;
        self.verdict(
            "setup squatting: the operator's setup token",
            format!("{} {}", with.status, problem_code(&with.body)),
            "201, the seed's flow",
            with.status == 201,
        );
        Ok(())
    }
}

/// Seed 004's example agent.
const SEED_004_AGENT: &str = r#"{"name":"my-assistant","description":"Customer support AI agent","scopes":["read:customers","write:tickets"],"trustLevel":"medium","metadata":{"model":"claude-3-5-sonnet","owner":"team-support"}}"#;

/// Seed 002's example request, with `email` for its primary agent.
fn seed_002_body(email: &str) -> String {
    serde_json::json!({
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
            { "name": "data-collector", "display_name": "Data Collector",
              "description": "Scrapes and aggregates data sources" },
            { "name": "analyst", "display_name": "Analysis Agent",
              "description": "Performs statistical analysis" }
        ],
        "humans": [
            { "email": "researcher@university.edu", "display_name": "Dr. Smith", "role": "observer" }
        ],
        "default_channel": { "name": "general", "topic": "Research team coordination" }
    })
    .to_string()
}

/// Seed 002's `POST /api/v1/bootstrap`, with the seed's own body.
fn setup_workspace(address: SocketAddr, bearer: Option<&str>) -> Result<Answer> {
    let authorization = bearer.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|value| ("Authorization", value.as_str()))
        .collect();
    call(
        address,
        "POST",
        "/api/v1/bootstrap",
        &headers,
        Some(&seed_002_body("admin@localhost")),
    )
}

/// An answer's status and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

/// One request with `Connection: close`; the answer.
fn call(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&str>,
) -> Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    let body = json.unwrap_or("");
    if json.is_some() {
        request.push_str("Content-Type: application/json\r\n");
    }
    let _ = write!(request, "Content-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("{method} {path}"))?;
    let status = status_of(answer.as_bytes())
        .with_context(|| format!("{method} {path}: no HTTP status in {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok(Answer { status, body })
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.strip_prefix(b"HTTP/1.1 ")?;
    std::str::from_utf8(line.get(..3)?).ok()?.parse().ok()
}

/// A problem+json answer's `code`, or `-`.
fn problem_code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned())
}

/// How large `/metrics` is, read no further than the limit.
enum MetricsSize {
    Exactly(usize),
    MoreThan(usize),
}

fn metrics_size(address: SocketAddr) -> Result<MetricsSize> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut answer = Vec::new();
    (&mut stream)
        .take((METRICS_LIMIT_BYTES + 64 * 1024) as u64)
        .read_to_end(&mut answer)
        .context("cannot read /metrics")?;
    ensure!(
        status_of(&answer) == Some(200),
        "GET /metrics did not answer 200"
    );
    let head_end = find(&answer, b"\r\n\r\n").context("GET /metrics: no head")? + 4;
    let head = String::from_utf8_lossy(&answer[..head_end]).to_ascii_lowercase();
    let declared = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok());
    let read = answer.len() - head_end;
    Ok(match declared {
        Some(length) if length <= read => MetricsSize::Exactly(length),
        Some(length) => MetricsSize::MoreThan(length.max(read)),
        None if read < METRICS_LIMIT_BYTES => MetricsSize::Exactly(read),
        None => MetricsSize::MoreThan(read),
    })
}

/// Answers by status, and requests that got none.
#[derive(Debug, Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    unanswered: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.unanswered += other.unanswered;
    }

    fn describe(&self) -> String {
        let mut text = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}:{count}"))
            .collect::<Vec<_>>()
            .join(",");
        if self.unanswered > 0 {
            let _ = write!(text, ", {} closed unanswered", self.unanswered);
        }
        text
    }
}

/// Sends `requests` requests made by `make` on `FLOOD_THREADS` keep-alive
/// connections (reopened when the server closes one); their answers.
fn flood(
    address: SocketAddr,
    requests: usize,
    make: impl Fn(&mut Rng, usize) -> Vec<u8> + Sync,
) -> Tally {
    let make = &make;
    thread::scope(|scope| {
        let workers: Vec<_> = (0..FLOOD_THREADS)
            .map(|worker| {
                scope.spawn(move || {
                    let mut rng = Rng::seeded();
                    let mut client = Client::new(address);
                    let mut tally = Tally::default();
                    for sequence in (worker..requests).step_by(FLOOD_THREADS) {
                        match client.send(&make(&mut rng, sequence)) {
                            Ok(status) => *tally.statuses.entry(status).or_default() += 1,
                            Err(_) => tally.unanswered += 1,
                        }
                    }
                    tally
                })
            })
            .collect();
        let mut total = Tally::default();
        for worker in workers {
            if let Ok(tally) = worker.join() {
                total.merge(tally);
            }
        }
        total
    })
}

/// A keep-alive HTTP/1.1 client for answers with a `Content-Length`
/// (all of agentryd's but streamed artifacts); reconnects when needed.
struct Client {
    address: SocketAddr,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl Client {
    fn new(address: SocketAddr) -> Self {
        Client {
            address,
            stream: None,
            buffer: Vec::new(),
        }
    }

    /// Sends `request`; the answer's status. On any error the connection
    /// is dropped, and the next send opens a new one.
    fn send(&mut self, request: &[u8]) -> io::Result<u16> {
        let outcome = self.exchange(request);
        if !matches!(outcome, Ok((_, true))) {
            self.stream = None;
        }
        outcome.map(|(status, _)| status)
    }

    /// The status, and whether the connection stays open.
    fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, bool)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.address, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buffer.clear();
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("no connection"))?;
        stream.write_all(request)?;
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            fill(stream, &mut self.buffer)?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_ascii_lowercase();
        let status = status_of(&self.buffer).ok_or_else(|| io::Error::other("no HTTP status"))?;
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse::<usize>().ok())
            .ok_or_else(|| io::Error::other("an answer without a length"))?;
        let keep = !head.contains("\r\nconnection: close");
        while self.buffer.len() < head_end + length {
            fill(stream, &mut self.buffer)?;
        }
        self.buffer.drain(..head_end + length);
        Ok((status, keep))
    }
}

fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let read = stream.read(&mut chunk)?;
    if read == 0 {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "closed"));
    }
    buffer.extend_from_slice(&chunk[..read]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// What a slow client saw: when the server closed (if it did before the
/// client gave up), and the status of an answer it got first, if any.
struct Held {
    closed_after: Option<Duration>,
    status: Option<u16>,
}

/// Opens a connection, sends `opening`, then one `drip` byte a second (or
/// nothing) until the server closes it or `give_up` passes. When `opening`
/// is a whole request, its answer is not counted as a word at the close.
fn hold_open(
    address: SocketAddr,
    opening: &[u8],
    drip: Option<u8>,
    answered: bool,
    give_up: Duration,
) -> Result<Held> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(50)))?;
    let started = Instant::now();
    stream.write_all(opening)?;
    let mut received = Vec::new();
    let mut next_drip = started + Duration::from_secs(1);
    let mut chunk = [0u8; 4096];
    let mut expected_answer = answered;
    let closed = |received: &[u8], after: Duration| Held {
        closed_after: Some(after),
        status: status_of(received),
    };
    while started.elapsed() < give_up {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(closed(&received, started.elapsed())),
            Ok(read) => {
                if expected_answer {
                    expected_answer = false;
                } else {
                    received.extend_from_slice(&chunk[..read]);
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Ok(closed(&received, started.elapsed())),
        }
        if let Some(byte) = drip
            && Instant::now() >= next_drip
        {
            next_drip += Duration::from_secs(1);
            if stream.write_all(&[byte]).is_err() {
                return Ok(closed(&received, started.elapsed()));
            }
        }
    }
    Ok(Held {
        closed_after: None,
        status: status_of(&received),
    })
}

/// The sockets a process holds open, from /proc/<pid>/fd.
fn open_sockets(pid: u32) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    let mut sockets = 0;
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
        let Ok(entry) = entry else { continue };
        if fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        {
            sockets += 1;
        }
    }
    Ok(sockets)
}

/// Waits for `child` until `deadline`, killing it past that.
fn wait_until(mut child: std::process::Child, deadline: Instant) -> Result<std::process::Output> {
    let mut stdout = child.stdout.take();
    let reader = thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(stdout) = stdout.as_mut() {
            let _ = stdout.read_to_end(&mut text);
        }
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish in time");
        }
        sleep(Duration::from_millis(50));
    };
    let stdout = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the output reader panicked"))?;
    Ok(std::process::Output {
        status,
        stdout,
        stderr: Vec::new(),
    })
}

/// loadgen's report line, the parts the attacks judge.
#[derive(Debug)]
struct LoadReport {
    seconds: f64,
    ok: u64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    probe: Option<ProbeReport>,
}

#[derive(Debug)]
struct ProbeReport {
    count: u64,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
    failures: u64,
}

impl LoadReport {
    fn parse(line: &str) -> Result<Self> {
        let field = |name: &str| -> Option<&str> {
            line.split_whitespace()
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        };
        let number = |name: &str| -> Result<u64> {
            field(name)
                .with_context(|| format!("no {name}"))?
                .parse()
                .with_context(|| format!("{name} is not a number"))
        };
        let micros = |name: &str| -> Result<Option<u64>> {
            match field(name).with_context(|| format!("no {name}"))? {
                "-" => Ok(None),
                value => Ok(Some(value.parse()?)),
            }
        };
        let mut statuses = BTreeMap::new();
        let listed = field("statuses").context("no statuses")?;
        if listed != "-" {
            for pair in listed.split(',') {
                let (status, count) = pair.split_once(':').context("a status without a count")?;
                statuses.insert(status.parse()?, count.parse()?);
            }
        }
        let probe = if field("probe_count").is_some() {
            Some(ProbeReport {
                count: number("probe_count")?,
                p50_us: micros("probe_p50_us")?,
                p99_us: micros("probe_p99_us")?,
                failures: number("probe_failures")?,
            })
        } else {
            None
        };
        Ok(LoadReport {
            seconds: field("seconds").context("no seconds")?.parse()?,
            ok: number("ok")?,
            statuses,
            transport_errors: number("transport_errors")?,
            probe,
        })
    }

    fn describe(&self) -> String {
        let mut text = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}:{count}"))
            .collect::<Vec<_>>()
            .join(",");
        if self.ok > 0 {
            let _ = write!(text, ", {} accepted", self.ok);
        }
        if self.transport_errors > 0 {
            let _ = write!(text, ", {} failed", self.transport_errors);
        }
        text
    }
}

fn micros(value: Option<u64>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |us| format!("{:.1} ms", us as f64 / 1000.0),
    )
}

fn kib_to_mb(kib: u64) -> f64 {
    (kib * 1024) as f64 / 1e6
}

/// SplitMix64, seeded from the operating system: made-up methods need
/// volume, not quality, and xtask links no random crate.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let mut seed = [0u8; 8];
        let _ = fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut seed));
        Rng(u64::from_le_bytes(seed))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    /// `length` HTTP token characters: a method actix takes as one.
    fn token(&mut self, length: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..length)
            .map(|_| char::from(ALPHABET[self.below(ALPHABET.len())]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadgen_reports_parse_with_and_without_a_probe() {
        let plain = LoadReport::parse(
            "scenario=unknown-api-keys seconds=3.000 ok=0 rps=0.0 p50_us=- p99_us=- \
             non_2xx=9000 statuses=401:9000 transport_errors=0",
        )
        .unwrap();
        assert_eq!(plain.statuses.get(&401), Some(&9000));
        assert!(plain.probe.is_none());
        let probed = LoadReport::parse(
            "scenario=login-guesses seconds=10.000 ok=0 rps=0.0 p50_us=- p99_us=- non_2xx=5 \
             statuses=401:11,429:4 transport_errors=1 probe_count=990 probe_p50_us=400 \
             probe_p99_us=- probe_failures=2",
        )
        .unwrap();
        assert_eq!(probed.describe(), "401:11,429:4, 1 failed");
        let probe = probed.probe.unwrap();
        assert_eq!(
            (probe.count, probe.p50_us, probe.p99_us),
            (990, Some(400), None)
        );
        assert!(LoadReport::parse("scenario=x").is_err());
    }

    #[test]
    fn made_up_methods_are_tokens_and_codes_are_read() {
        let mut rng = Rng::seeded();
        let token = rng.token(64);
        assert_eq!(token.len(), 64);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
        assert_ne!(rng.token(16), rng.token(16));
        assert_eq!(
            problem_code(r#"{"code":"agent_not_bootstrapped"}"#),
            "agent_not_bootstrapped"
        );
        assert_eq!(problem_code("not json"), "-");
        assert_eq!(status_of(b"HTTP/1.1 409 Conflict\r\n"), Some(409));
        assert_eq!(status_of(b"SSH-2.0"), None);
    }
}
