//! `cargo xtask bench replicas`: 1, 2 and 3 `agentryd` replicas on one
//! PostgreSQL, in the same run, and the database's work per request (its
//! processes' CPU time, and with `pg_stat_statements` loaded its statements
//! and execution time), from which where one PostgreSQL saturates follows.
//! On a 2-core machine the replicas, the load generators and PostgreSQL
//! share the cores, so throughput alone cannot show scale-out; the work
//! per request can.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::bench_http::{
    Database, Options, Scratch, Server, agentryd_command, commit, machine, postgres_available,
    postgres_ticks, psql_in, start_agentryd_in, thousands,
};
use crate::{cargo, run, target_dir, workspace_root};

const USAGE: &str = "\
usage: cargo xtask bench replicas [--duration S] [--warmup S] [--concurrency N] [--no-record]

  --duration S      seconds measured per run (default 10)
  --warmup S        seconds of unmeasured load first (default 2)
  --concurrency N   keep-alive connections in all, shared by the replicas (default 64)
  --no-record       print the results only; do not write them to docs/scaling.md
";

const SCENARIOS: [(&str, &str); 2] = [("limits-me", "limits/me"), ("spend", "spend")];
const MOST_REPLICAS: usize = 3;
const SECTION: &str = "## Replicas on one PostgreSQL";

/// One run: a scenario against `replicas` replicas.
#[derive(Debug)]
struct Run {
    label: &'static str,
    replicas: usize,
    rps: f64,
    p99_us: u64,
    non_2xx: u64,
    /// PostgreSQL's CPU time per request, in microseconds.
    database_cpu_us: f64,
    /// From `pg_stat_statements`, when loaded: statements and execution
    /// time per request.
    statements: Option<(f64, f64)>,
}

pub(crate) fn bench_replicas(args: &[String]) -> Result<()> {
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        eprint!("{USAGE}");
        return Ok(());
    }
    let options = Options::parse_for(args, USAGE)?;
    ensure!(
        options.scenarios.is_empty() && options.backends.is_empty(),
        "bench replicas has one scenario on PostgreSQL: --scenario and --backend are bench http's\n\n{USAGE}"
    );
    ensure!(
        options.concurrency >= MOST_REPLICAS,
        "concurrency must give every replica a connection"
    );
    postgres_available().map_err(|reason| anyhow::anyhow!("PostgreSQL is needed: {reason}"))?;
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
    let scratch = Scratch::named("agentry-bench-replicas")?;
    let statements_loaded = pg_stat_statements_loaded();
    let mut runs = Vec::new();
    for (scenario, label) in SCENARIOS {
        for replicas in 1..=MOST_REPLICAS {
            eprintln!("xtask: {scenario}, {replicas} replica(s)");
            let database =
                Database::create("PostgreSQL", &scratch, &format!("{scenario}-{replicas}"))?;
            runs.push(measure(
                &bins,
                &scratch,
                &options,
                &database,
                (scenario, label),
                replicas,
                statements_loaded,
            )?);
        }
    }
    let section = render(&options, &runs, statements_loaded)?;
    println!("{section}");
    if options.record {
        let path = workspace_root().join("docs").join("scaling.md");
        record(&path, &section)?;
        eprintln!("xtask: wrote the results to {}", path.display());
    }
    Ok(())
}

fn measure(
    bins: &Path,
    scratch: &Scratch,
    options: &Options,
    database: &Database,
    (scenario, label): (&'static str, &'static str),
    replicas: usize,
    statements_loaded: bool,
) -> Result<Run> {
    let dir = scratch.path().join(format!("{scenario}-{replicas}"));
    let settings = [("AGENTRY_API_KEY_RPM", "0".to_owned())];
    let log = |n: usize| {
        scratch
            .path()
            .join(format!("{scenario}-{replicas}-{n}.log"))
    };
    // The first replica creates the database and prints the admin key; the
    // others share its master key file and database.
    let (first, admin_key) =
        start_agentryd_in(&bins.join("agentryd"), &dir, &log(0), database, &settings)?;
    let mut servers = vec![first];
    for n in 1..replicas {
        let mut command = agentryd_command(&bins.join("agentryd"), &dir, database);
        command
            .args(["--bind", "127.0.0.1:0", "--no-tls"])
            .envs(settings.iter().map(|(name, value)| (name, value)));
        servers.push(Server::start(
            &mut command,
            &log(n),
            "agentryd: listening on http ",
            "/healthz",
        )?);
    }
    // One short run prepares the scenario's agent, so the measured load
    // generators only repeat what exists and never race to create it.
    wait(
        loadgen(bins, &servers[0], scenario, &admin_key, 1, 0.0, 0.2)?,
        "setup",
    )?;
    if statements_loaded {
        psql_in(
            &database.name(),
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        )?;
    }
    let per_replica = options.concurrency / replicas;
    let generators = servers
        .iter()
        .map(|server| {
            loadgen(
                bins,
                server,
                scenario,
                &admin_key,
                per_replica,
                options.warmup,
                options.duration,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    // The database's work is read over the measured seconds only.
    sleep(Duration::from_secs_f64(options.warmup));
    if statements_loaded {
        psql_in(&database.name(), "SELECT pg_stat_statements_reset()")?;
    }
    let (ticks_before, started) = (postgres_ticks(), Instant::now());
    let mut reports = Vec::new();
    for generator in generators {
        reports.push(wait(generator, scenario)?);
    }
    let measured = started.elapsed().as_secs_f64().min(options.duration);
    let database_cpu_seconds = (postgres_ticks() - ticks_before) / 100.0;
    let statements = if statements_loaded {
        Some(statement_totals(&database.name())?)
    } else {
        None
    };
    for server in &mut servers {
        ensure!(server.is_running(), "a replica died during {scenario}");
    }
    let field = |report: &str, name: &str| -> f64 {
        report
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    };
    let rps: f64 = reports.iter().map(|report| field(report, "rps")).sum();
    let requests = (rps * measured).max(1.0);
    Ok(Run {
        label,
        replicas,
        rps,
        p99_us: reports
            .iter()
            .map(|report| field(report, "p99_us") as u64)
            .max()
            .unwrap_or(0),
        non_2xx: reports
            .iter()
            .map(|report| field(report, "non_2xx") as u64)
            .sum(),
        database_cpu_us: database_cpu_seconds * 1e6 / requests,
        statements: statements.map(|(calls, millis)| (calls / requests, millis * 1e3 / requests)),
    })
}

fn loadgen(
    bins: &Path,
    server: &Server,
    scenario: &str,
    admin_key: &str,
    concurrency: usize,
    warmup: f64,
    duration: f64,
) -> Result<Child> {
    Command::new(bins.join("loadgen"))
        .args(["--address", &server.address.to_string()])
        .args(["--scenario", scenario])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--warmup", &warmup.to_string()])
        .args(["--duration", &duration.to_string()])
        // The key goes by environment, not on a command line others can read.
        .env("LOADGEN_ADMIN_KEY", admin_key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start loadgen")
}

fn wait(child: Child, what: &str) -> Result<String> {
    let output = child.wait_with_output()?;
    ensure!(output.status.success(), "loadgen {what} failed");
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn pg_stat_statements_loaded() -> bool {
    Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-Atc"])
        .arg("SHOW shared_preload_libraries")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("pg_stat_statements"))
}

/// Statements executed and their execution time in milliseconds, in the
/// database `name` since the last reset.
fn statement_totals(name: &str) -> Result<(f64, f64)> {
    let output = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", name, "-Atc"])
        .arg(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0) \
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = current_database() \
             AND s.query NOT LIKE '%pg_stat_statements%'",
        )
        .output()
        .context("cannot run psql")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (calls, millis) = text
        .trim()
        .split_once('|')
        .context("pg_stat_statements answered nothing")?;
    Ok((calls.parse()?, millis.parse()?))
}

fn render(options: &Options, runs: &[Run], statements_loaded: bool) -> Result<String> {
    let mut text = String::new();
    writeln!(
        text,
        "### {} at {}\n\n{}; {} s measured after {} s of warm-up, {} connections in all \
         shared by the replicas; every replica, every load generator and PostgreSQL on \
         the same cores.\n",
        time_of_day()?,
        commit()?,
        machine()?,
        options.duration,
        options.warmup,
        options.concurrency,
    )?;
    text.push_str(
        "| scenario | replicas | requests/s | vs 1 replica | p99 | non-2xx | PostgreSQL CPU / request |",
    );
    if statements_loaded {
        text.push_str(" statements / request | execution / request |");
    }
    text.push('\n');
    text.push_str("|---|---|---|---|---|---|---|");
    if statements_loaded {
        text.push_str("---|---|");
    }
    text.push('\n');
    for run in runs {
        let single = runs
            .iter()
            .find(|other| other.label == run.label && other.replicas == 1)
            .map_or(run.rps, |single| single.rps);
        write!(
            text,
            "| {} | {} | {}/s | {:.2} x | {:.1} ms | {} | {:.0} us |",
            run.label,
            run.replicas,
            thousands(run.rps),
            run.rps / single.max(1.0),
            run.p99_us as f64 / 1000.0,
            run.non_2xx,
            run.database_cpu_us,
        )?;
        if let Some((calls, micros)) = run.statements {
            write!(text, " {calls:.1} | {micros:.0} us |")?;
        }
        text.push('\n');
    }
    text.push('\n');
    for (_, label) in SCENARIOS {
        let cpu: Vec<f64> = runs
            .iter()
            .filter(|run| run.label == label)
            .map(|run| run.database_cpu_us)
            .collect();
        let mean = cpu.iter().sum::<f64>() / cpu.len().max(1) as f64;
        // Below ten microseconds it is the odd background query, not work
        // the requests cause.
        if mean < 10.0 {
            writeln!(
                text,
                "- {label}: PostgreSQL does next to no work per request (the replicas answer \
                 from what they cached), so replicas scale it out until their own cores are \
                 spent."
            )?;
        } else {
            writeln!(
                text,
                "- {label}: PostgreSQL spends about {mean:.0} us of CPU per request, so one \
                 PostgreSQL core serves at most about {:.0} requests/s of it; replicas scale \
                 it out only until the database's cores are spent.",
                1e6 / mean
            )?;
        }
    }
    if !statements_loaded {
        text.push_str(
            "- `pg_stat_statements` was not loaded (add it to `shared_preload_libraries` \
             for statements and execution time per request).\n",
        );
    }
    Ok(text)
}

fn time_of_day() -> Result<String> {
    let output = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Writes the run into the section of docs/scaling.md, replacing the runs
/// before it (the document describes one measured state).
fn record(path: &Path, run: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| "# Scaling\n".to_owned());
    std::fs::write(path, replace_section(&text, run))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn replace_section(text: &str, run: &str) -> String {
    let intro = "Measured by `cargo xtask bench replicas`: the same scenarios against 1, 2 \
                 and 3 replicas on one fresh PostgreSQL database each.";
    let body = format!("{SECTION}\n\n{intro}\n\n{run}");
    let Some(start) = text.find(SECTION) else {
        return format!("{}\n\n{body}", text.trim_end())
            .trim_end()
            .to_owned()
            + "\n";
    };
    let after = start + SECTION.len();
    let end = text[after..]
        .find("\n## ")
        .map_or(text.len(), |offset| after + offset + 1);
    format!("{}{body}\n{}", &text[..start], &text[end..])
        .trim_end()
        .to_owned()
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_replaces_the_section_and_keeps_the_rest() {
        let fresh = replace_section("# Scaling\n\nintro\n", "### run 1\n");
        assert!(fresh.starts_with("# Scaling\n\nintro\n\n## Replicas on one PostgreSQL\n"));
        assert!(fresh.ends_with("### run 1\n"));
        let again = replace_section(
            &format!("{fresh}\n## Past one PostgreSQL\n\nroad\n"),
            "### run 2\n",
        );
        assert!(!again.contains("run 1"));
        assert!(again.contains("### run 2\n\n## Past one PostgreSQL\n\nroad\n"));
    }
}
