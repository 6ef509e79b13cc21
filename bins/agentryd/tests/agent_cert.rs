//! Seed 001's certificate exchange against the real binary, on SQLite and
//! PostgreSQL: an agent bootstrapped over plain HTTP trades its JWT and a
//! CSR for a client certificate, then calls over the real mTLS listener
//! with that certificate alone (a rustls client, no `Authorization`), and
//! is cut off there the moment it is suspended through the API.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use common::{PostgresDb, Server, first_admin_key, free_port, http, start_with};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value, json};

/// The agent's side of mTLS: our CA as the only root, its certificate and
/// key as the client identity.
fn client_config(ca_pem: &str, cert_pem: &str, key: &rcgen::KeyPair) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("the CA is PEM"))
        .expect("the CA is a certificate");
    let chain =
        vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("the certificate is PEM")];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("a client identity");
    Arc::new(config)
}

/// One GET over TLS with `Connection: close` and no credential but the
/// client certificate; status and JSON body.
fn mtls_get(port: u16, config: &Arc<rustls::ClientConfig>, path: &str) -> (u16, Value) {
    let server = ServerName::try_from("localhost").expect("a server name");
    let connection =
        rustls::ClientConnection::new(Arc::clone(config), server).expect("a TLS client");
    let socket = TcpStream::connect(("127.0.0.1", port)).expect("the mTLS listener accepts");
    let mut stream = rustls::StreamOwned::new(connection, socket);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .expect("the request is sent");
    let mut response = Vec::new();
    // The server may close without a TLS close_notify once it has answered.
    if let Err(error) = stream.read_to_end(&mut response) {
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::UnexpectedEof,
            "reading the answer: {error}"
        );
    }
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn start_server(dir: &Path, port: u16, tls_port: u16, env: &[(&str, &str)]) -> Server {
    start_with(
        env!("CARGO_BIN_EXE_agentryd"),
        dir,
        port,
        &["--tls-bind", &format!("127.0.0.1:{tls_port}")],
        2,
        env,
    )
}

fn exchange_then_call_over_mtls(env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, tls_port) = (free_port(), free_port());
    let server = start_server(dir.path(), port, tls_port, env);
    let admin = first_admin_key(&server).expect("the first run prints an admin key");

    let (status, bootstrapped) = http(
        port,
        "POST",
        "/v1/agent/bootstrap",
        Some(&admin),
        Some(&json!({ "agent_id": "cert-holder", "budget_daily_usd": 5.0 })),
    );
    assert_eq!(status, 201, "{bootstrapped}");
    let jwt = bootstrapped["jwt"].as_str().expect("a JWT");

    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "someone-else");
    let csr = params
        .serialize_request(&key)
        .and_then(|request| request.pem())
        .expect("a CSR");
    let (status, issued) = http(
        port,
        "POST",
        "/v1/agent/auth/cert",
        Some(jwt),
        Some(&json!({ "csr": csr })),
    );
    assert_eq!(status, 201, "{issued}");
    let config = client_config(
        issued["ca_pem"].as_str().expect("ca_pem"),
        issued["cert_pem"].as_str().expect("cert_pem"),
        &key,
    );

    let (status, me) = mtls_get(tls_port, &config, "/v1/agent/status");
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["profile"]["agentId"], "cert-holder");
    assert_eq!(me["governance"]["lifecycle_state"], "active");

    let (status, body) = http(
        port,
        "PATCH",
        "/v1/agent/profiles/lifecycle/cert-holder",
        Some(&admin),
        Some(&json!({ "state": "suspended" })),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = mtls_get(tls_port, &config, "/v1/agent/status");
    assert_eq!(
        (status, body["code"].as_str()),
        (402, Some("agent_suspended")),
        "{body}"
    );
}

#[test]
fn an_agent_certificate_works_over_the_mtls_listener_until_suspension_on_sqlite() {
    exchange_then_call_over_mtls(&[]);
}

#[test]
fn an_agent_certificate_works_over_the_mtls_listener_until_suspension_on_postgres() {
    let Some(db) = PostgresDb::create() else {
        return;
    };
    exchange_then_call_over_mtls(&[("DATABASE_URL", &db.url())]);
}
