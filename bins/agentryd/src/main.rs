//! `agentryd`, the Agentry server.
//!
//! Thin by design: it reads the configuration once, builds the pieces the
//! library crates provide, and starts the listeners. Anything worth testing
//! lives in a library crate.

mod config;

use std::net::SocketAddr;

use actix_web::{App, HttpServer};
use anyhow::Context;
use clap::Parser;

use crate::config::Config;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(&config);

    let server = HttpServer::new(|| App::new().configure(agentry_http::configure))
        .bind(config.bind)
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let bound: Vec<SocketAddr> = server.addrs();
    for address in &bound {
        tracing::info!(%address, "agentryd listening on http://{address}");
    }
    tracing::info!(database = %config.database_url, "database");
    server.run().await.context("server stopped with an error")
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}
