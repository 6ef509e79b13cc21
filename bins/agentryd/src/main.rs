//! `agentryd`, the Agentry server.
//!
//! Thin by design: it reads the configuration once, opens the store and the
//! keys, and starts the listener or runs one maintenance command. Anything
//! worth testing lives in a library crate.

mod admin;
mod config;
mod jobs;
mod master_key;
mod secret_file;
mod seed;

use actix_web::HttpServer;
use agentry_auth::{ApiKey, ApiKeyKind};
use agentry_domain::ApiKeyRole;
use agentry_http::{AppState, Edge, Keys, Settings};
use agentry_store::{DatabaseUrl, NewApiKey, PoolOptions, Store, now};
use anyhow::Context;
use clap::Parser;
use time::Duration;

use crate::config::{Command, Config};

// A multi-thread runtime: the store runs its work here (see
// `Store::detached`), while actix-web's workers run their own.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(&config);
    let url = DatabaseUrl::parse(&config.database_url)?;
    let store = open_store(&config, &url).await?;
    match config.command {
        None | Some(Command::Serve) => serve(&config, &url, store).await,
        Some(Command::Migrate { status: false }) => {
            let applied = store.migrate().await.context("migration failed")?;
            eprintln!(
                "applied {} migration(s) on {}",
                applied.len(),
                store.backend().as_str()
            );
            for name in applied {
                eprintln!("  {name}");
            }
            Ok(())
        }
        Some(Command::Migrate { status: true }) => {
            for migration in store
                .migration_status()
                .await
                .context("cannot read migrations")?
            {
                let state = if migration.applied {
                    "applied"
                } else {
                    "pending"
                };
                eprintln!("{state:8} {}", migration.name);
            }
            Ok(())
        }
        Some(Command::Seed) => {
            store.migrate().await.context("migration failed")?;
            seed::run(&store).await
        }
        Some(Command::Verify) => verify(&store).await,
        Some(Command::Admin(command)) => {
            store.migrate().await.context("migration failed")?;
            let master = master_key::load(&config.master_key_file)?;
            admin::run(&store, &master, command).await
        }
    }
}

/// Checks the database's invariants; prints what was checked and every
/// violation, and fails when there is one.
async fn verify(store: &Store) -> anyhow::Result<()> {
    let report = store
        .check_integrity(now())
        .await
        .context("cannot read the database")?;
    println!(
        "checked {} tenant(s), {} agent(s), {} ledger entries, {} consumed one-time tokens, {} audit events on {}",
        report.tenants,
        report.agents,
        report.ledger_entries,
        report.consumed_tokens,
        report.audit_events,
        store.backend().as_str()
    );
    println!("  bootstrapped agents that are active have their agent-limits entry");
    println!("  every ledger replays; every parent-child transfer is written on both sides");
    println!("  no account has committed more than its enforced caps");
    println!("  every consumed one-time token took effect (invites, machine bootstrap tokens)");
    println!("  every tenant's audit hash chain is intact");
    if report.violations.is_empty() {
        println!("ok: no violation");
        Ok(())
    } else {
        for violation in &report.violations {
            println!("VIOLATION {violation}");
        }
        anyhow::bail!("{} violation(s)", report.violations.len())
    }
}

async fn open_store(config: &Config, url: &DatabaseUrl) -> anyhow::Result<Store> {
    if Store::ensure_database(url).await? {
        tracing::info!("created the database named in DATABASE_URL");
    }
    let options = PoolOptions {
        max_connections: config.db_max_connections,
        ..PoolOptions::default()
    };
    Ok(Store::connect(url, &options)?)
}

/// On an instance with no tenant, creates the default tenant and its first
/// admin key, and shows the key this once: on stderr, or written to
/// `admin_key_file` when one is given.
async fn first_run(store: &Store, admin_key_file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let key = ApiKey::mint(ApiKeyKind::Tenant(ApiKeyRole::Admin));
    // Created before the tenant: if the file cannot be written, nothing
    // is created and the next start tries again, rather than leave a key
    // nobody was shown.
    let file = match admin_key_file {
        Some(path) if store.count_tenants().await? == 0 => Some((path, secret_file::create(path)?)),
        _ => None,
    };
    let stored = NewApiKey {
        role: Some(ApiKeyRole::Admin),
        agent_id: None,
        key_hash: key.hash().0,
        label: Some("first admin key".into()),
    };
    let created = store.create_first_tenant("default", stored, now()).await;
    match (created, file) {
        (Ok(Some(tenant)), Some((path, file))) => {
            secret_file::write(file, path, key.expose())?;
            eprintln!(
                "agentryd: first run: created tenant \"default\" ({}); its admin API key is in {} (mode 0600)",
                tenant.id,
                path.display()
            );
        }
        (Ok(Some(tenant)), None) => {
            eprintln!(
                "agentryd: first run: created tenant \"default\" ({}) and its admin API key:",
                tenant.id
            );
            eprintln!();
            eprintln!("    {}", key.expose());
            eprintln!();
            eprintln!("agentryd: this key will not be shown again; store it now.");
        }
        (created, file) => {
            // Another replica won the first run, or it failed: the empty
            // file must not look like a key.
            if let Some((path, file)) = file {
                drop(file);
                let _ = std::fs::remove_file(path);
            }
            if created?.is_none() {
                eprintln!(
                    "agentryd: admin keys: mint another with `agentryd admin create-key --role admin`"
                );
            }
        }
    }
    Ok(())
}

async fn serve(config: &Config, url: &DatabaseUrl, store: Store) -> anyhow::Result<()> {
    if config.skip_migrations {
        tracing::info!("skipping migrations at start (--skip-migrations)");
    } else {
        let applied = store
            .migrate()
            .await
            .with_context(|| format!("cannot migrate the database at {url}"))?;
        tracing::info!(
            count = applied.len(),
            backend = store.backend().as_str(),
            "migrations applied"
        );
    }
    first_run(&store, config.admin_key_file.as_deref()).await?;
    let settings = Settings {
        public_url: config.public_url.trim_end_matches('/').to_owned(),
        agent_token_ttl: Duration::seconds(i64::from(config.agent_token_ttl)),
        session_token_ttl: Duration::seconds(i64::from(config.session_token_ttl)),
        invite_ttl: Duration::seconds(i64::from(config.invite_ttl)),
        artifact_dir: artifact_dir(config, url),
        max_artifact_bytes: config.max_artifact_bytes,
        setup_token: config.setup_token.clone().filter(|token| !token.is_empty()),
        login_attempts_per_minute: config.login_attempts_per_minute,
        login_attempts_per_address_per_minute: config.login_attempts_per_address_per_minute,
        api_key_rpm: config.api_key_rpm,
    };
    secret_file::create_private_dir(&settings.artifact_dir)?;
    let master = master_key::load(&config.master_key_file)?;
    let keys = Keys::load(&store, master, settings.max_token_ttl(), now())
        .await
        .context(
            "cannot load the JWT signing keys (is this the master key they were sealed with?)",
        )?;
    let change_feed = store
        .follow_changes(url)
        .await
        .context("cannot follow the database's change feed")?;
    let tls = if config.no_tls {
        None
    } else {
        Some(
            keys.ca()
                .server_config(&config.tls_hostnames, now())
                .context("cannot configure the mTLS listener")?,
        )
    };
    warn_if_setup_is_open(&store, &settings, config.bind).await?;
    let state = AppState::new(store.clone(), keys, settings);
    jobs::spawn(&state, change_feed);
    let stopping = state.clone();
    let edge = Edge {
        body_timeout: std::time::Duration::from_secs(config.body_timeout),
        metrics_on_api: config.metrics_bind.is_none(),
    };
    let metrics = match config.metrics_bind {
        Some(address) => {
            let state = state.clone();
            let server = HttpServer::new(move || agentry_http::metrics_app(state.clone()))
                .workers(1)
                .bind(address)
                .with_context(|| format!("cannot listen on {address} (metrics)"))?;
            for address in server.addrs() {
                eprintln!("agentryd: listening on http {address} (metrics)");
            }
            Some(server.run())
        }
        None => None,
    };
    let limits = ConnectionLimits::new(config.max_connections);
    let mut server = HttpServer::new(move || agentry_http::app_with(state.clone(), edge))
        .on_connect(agentry_http::tls::on_connect)
        .workers(limits.workers)
        .max_connections(limits.per_worker)
        .client_request_timeout(std::time::Duration::from_secs(config.head_timeout))
        .keep_alive(std::time::Duration::from_secs(config.keep_alive))
        .client_disconnect_timeout(CLIENT_DISCONNECT_LIMIT)
        .bind(config.bind)
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let plain = server.addrs();
    if let Some(tls) = tls {
        server = server
            .bind_rustls_0_23(config.tls_bind, tls)
            .with_context(|| format!("cannot listen on {} (mTLS)", config.tls_bind))?;
    }
    for address in server.addrs() {
        let scheme = if plain.contains(&address) {
            "http"
        } else {
            "https (mTLS for provisioning machines)"
        };
        eprintln!(
            "agentryd: listening on {scheme} {address} ({})",
            store.backend().as_str()
        );
    }
    // The metrics listener stops with the API (both hear the signal; its
    // handle makes sure of it when the API stops for another reason).
    let metrics = metrics.map(|server| {
        let handle = server.handle();
        tokio::spawn(server);
        handle
    });
    let served = server.run().await;
    if let Some(metrics) = metrics {
        metrics.stop(true).await;
    }
    // A graceful stop (SIGTERM, SIGINT) has let requests in flight finish;
    // what they queued for the audit trail is written before the process
    // goes, within a bound so a database that is gone cannot hold it.
    if tokio::time::timeout(AUDIT_FLUSH_LIMIT, stopping.flush_audit())
        .await
        .is_err()
    {
        tracing::error!("the audit trail could not be written before stopping");
    }
    served.context("server stopped with an error")
}

/// Seed 002's first-run setup takes no credential: whoever calls it first
/// owns the workspace. Fine on a loopback address; on one the network
/// reaches, say so loudly unless a setup token closes the door.
async fn warn_if_setup_is_open(
    store: &Store,
    settings: &Settings,
    bind: std::net::SocketAddr,
) -> anyhow::Result<()> {
    if settings.setup_token.is_some() || bind.ip().is_loopback() {
        return Ok(());
    }
    if store.instance().await?.is_none() {
        tracing::warn!(
            %bind,
            "the first-run workspace setup (POST /api/v1/bootstrap) is open to anyone who reaches \
             this address; set --setup-token (AGENTRY_SETUP_TOKEN) or run the setup before exposing it"
        );
    }
    Ok(())
}

/// How long a connection being closed may take to shut down cleanly.
const CLIENT_DISCONNECT_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `--max-connections` spread over the workers: actix caps connections
/// per worker, so the total is divided, and never more workers than
/// connections, so a small cap is exact rather than rounded up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnectionLimits {
    workers: usize,
    per_worker: usize,
}

impl ConnectionLimits {
    fn new(total: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::spread(usize::try_from(total).unwrap_or(usize::MAX), cores)
    }

    fn spread(total: usize, cores: usize) -> Self {
        let workers = cores.min(total).max(1);
        Self {
            workers,
            per_worker: (total / workers).max(1),
        }
    }
}

/// How long a stopping server waits for its queued audit events.
const AUDIT_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The artifact directory: as configured, else `artifacts` beside the
/// SQLite file, else in the working directory.
fn artifact_dir(config: &Config, url: &DatabaseUrl) -> std::path::PathBuf {
    if let Some(dir) = &config.artifact_dir {
        return dir.clone();
    }
    match url {
        DatabaseUrl::Sqlite(path) => std::path::Path::new(path)
            .parent()
            .map(|parent| parent.join("artifacts"))
            .unwrap_or_else(|| "artifacts".into()),
        _ => "artifacts".into(),
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if config.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectionLimits;

    #[test]
    fn the_connection_cap_is_a_total_over_the_workers() {
        let spread = |total, cores| {
            let limits = ConnectionLimits::spread(total, cores);
            (limits.workers, limits.per_worker)
        };
        assert_eq!(spread(10_000, 2), (2, 5_000));
        assert_eq!(spread(10_001, 2), (2, 5_000), "never above the cap");
        assert_eq!(spread(1, 4), (1, 1), "a small cap is exact");
        assert_eq!(spread(3, 4), (3, 1));
        assert_eq!(spread(5, 1), (1, 5));
    }
}
