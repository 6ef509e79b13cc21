//! `agentryd`, the Agentry server.
//!
//! Thin by design: it reads the configuration once, opens the store, and
//! starts the listeners or runs one maintenance command. Anything worth
//! testing lives in a library crate.

mod config;
mod seed;

use actix_web::{App, HttpServer, web};
use agentry_store::{DatabaseUrl, PoolOptions, Store};
use anyhow::Context;
use clap::Parser;

use crate::config::{Command, Config};

// A multi-thread runtime: the store runs its work here (see
// `Store::detached`), while actix-web's workers run their own.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(&config);
    let store = open_store(&config).await?;
    match config.command {
        None | Some(Command::Serve) => serve(&config, store).await,
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
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let url = DatabaseUrl::parse(&config.database_url)?;
    if Store::ensure_database(&url).await? {
        tracing::info!("created the database named in DATABASE_URL");
    }
    let options = PoolOptions {
        max_connections: config.db_max_connections,
        ..PoolOptions::default()
    };
    Ok(Store::connect(&url, &options)?)
}

async fn serve(config: &Config, store: Store) -> anyhow::Result<()> {
    if config.skip_migrations {
        tracing::info!("skipping migrations at start (--skip-migrations)");
    } else {
        let applied = store
            .migrate()
            .await
            .with_context(|| format!("cannot migrate the database at {}", config.database_url))?;
        tracing::info!(
            count = applied.len(),
            backend = store.backend().as_str(),
            "migrations applied"
        );
    }
    let data = web::Data::new(store.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .configure(agentry_http::configure)
    })
    .bind(config.bind)
    .with_context(|| format!("cannot listen on {}", config.bind))?;
    for address in server.addrs() {
        tracing::info!(%address, "agentryd listening on http://{address}");
    }
    tracing::info!(backend = store.backend().as_str(), "database ready");
    server.run().await.context("server stopped with an error")
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
