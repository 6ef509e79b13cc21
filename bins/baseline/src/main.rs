//! `baseline`: the cheapest JSON an actix-web server can answer, built with
//! the same actix-web, features and release profile as `agentryd`.
//! `cargo xtask bench http` measures it in the same run as the server, so
//! the server's figures can be read as ratios that compare across machines.
//!
//! Usage: `baseline [ADDRESS]` (default `127.0.0.1:0`); prints
//! `baseline: listening on http <address>` on stderr once bound.

use std::net::SocketAddr;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Status {
    status: &'static str,
}

// Serialised per request like the server's answers, so the yardstick pays
// for serde too.
async fn status() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let address: SocketAddr = match std::env::args().nth(1) {
        Some(text) => text.parse().map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("not an address {text:?}: {error}"),
            )
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let server = HttpServer::new(|| App::new().route("/", web::get().to(status))).bind(address)?;
    for bound in server.addrs() {
        eprintln!("baseline: listening on http {bound}");
    }
    server.run().await
}
