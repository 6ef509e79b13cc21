//! The one way the store opens a PostgreSQL connection: libpq's `sslmode`
//! and `sslrootcert` read from the URL, TLS over rustls (the workspace's
//! one TLS stack, with the `ring` provider), and the client handed to
//! diesel-async with its connection task, so LISTEN notifications still
//! arrive. diesel-async's own `establish` has no TLS at all, and
//! tokio-postgres knows neither `verify-ca`, `verify-full` nor
//! `sslrootcert`: both options are taken out of the URL before it parses
//! the rest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diesel::{ConnectionError, ConnectionResult};
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;
use crate::db::{redact_database_url, scrubbed};

/// libpq's `sslmode`, less `allow` (plaintext first, TLS only if refused),
/// which tokio-postgres cannot do and nobody should want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const NAMES: [(&'static str, SslMode); 5] = [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];

    fn parse(value: &str) -> Result<Self, StoreError> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, mode)| *mode)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::NAMES.iter().map(|(name, _)| *name).collect();
                StoreError::Config(format!(
                    "DATABASE_URL has sslmode={value:?}; use one of {}",
                    names.join(", ")
                ))
            })
    }

    /// What tokio-postgres is told: whether to ask for TLS and whether a
    /// server that refuses it is an error. Certificate checks are rustls's.
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// What the server's certificate must prove before anything is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verification {
    /// Encryption against a passive listener only, as libpq's `prefer` and
    /// `require` without a root certificate.
    Nothing,
    /// Signed by the root, for any host name.
    Chain,
    /// Signed by the root and issued for the host connected to.
    ChainAndHostName,
}

/// The TLS options of a PostgreSQL URL, and the URL without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    pub(crate) mode: SslMode,
    pub(crate) root_cert: Option<PathBuf>,
    /// Every other option is left to tokio-postgres, in its original form.
    pub(crate) url_for_driver: String,
}

impl TlsOptions {
    pub(crate) fn from_url(url: &str) -> Result<Self, StoreError> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        // libpq's default: TLS when the server offers it.
        let mut mode = SslMode::Prefer;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for option in query.split('&').filter(|option| !option.is_empty()) {
            let (name, value) = option.split_once('=').unwrap_or((option, ""));
            match percent_decoded(name)?.as_str() {
                "sslmode" => mode = SslMode::parse(&percent_decoded(value)?)?,
                "sslrootcert" => {
                    let path = percent_decoded(value)?;
                    if path == "system" {
                        return Err(StoreError::Config(
                            "DATABASE_URL has sslrootcert=system, which is not supported: \
                             name the file of the CA that signed the server's certificate"
                                .into(),
                        ));
                    }
                    // Empty is libpq's "the default", which we do not look for.
                    root_cert = (!path.is_empty()).then(|| PathBuf::from(path));
                }
                _ => kept.push(option),
            }
        }
        let mut url_for_driver = base.to_owned();
        if !kept.is_empty() {
            url_for_driver.push('?');
            url_for_driver.push_str(&kept.join("&"));
        }
        let options = Self {
            mode,
            root_cert,
            url_for_driver,
        };
        options.verification()?;
        Ok(options)
    }

    /// libpq's rules: a root certificate, once given, is checked even under
    /// `prefer` and `require`; `verify-*` without one is an error, since we
    /// do not fall back on `~/.postgresql/root.crt` as libpq does.
    pub(crate) fn verification(&self) -> Result<Verification, StoreError> {
        match (self.mode, self.root_cert.is_some()) {
            (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, false) => {
                Ok(Verification::Nothing)
            }
            (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, true) => {
                Ok(Verification::Chain)
            }
            (SslMode::VerifyFull, true) => Ok(Verification::ChainAndHostName),
            (SslMode::VerifyCa | SslMode::VerifyFull, false) => Err(StoreError::Config(
                "DATABASE_URL has sslmode=verify-ca or verify-full without sslrootcert: \
                 name the file of the CA that signed the server's certificate"
                    .into(),
            )),
        }
    }
}

/// `%XX` escapes undone, as in a URL's query; anything that is not UTF-8
/// afterwards is refused rather than guessed at.
fn percent_decoded(text: &str) -> Result<String, StoreError> {
    let bad = || StoreError::Config(format!("DATABASE_URL has a bad %-escape in {text:?}"));
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// A parsed URL and its TLS configuration, made once (the root certificate
/// is read here) and used for every connection of a pool.
#[derive(Clone)]
pub(crate) struct PostgresConnector {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for PostgresConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConnector")
            .field("ssl_mode", &self.config.get_ssl_mode())
            .finish_non_exhaustive()
    }
}

impl PostgresConnector {
    pub(crate) fn from_url(url: &str) -> Result<Self, StoreError> {
        let options = TlsOptions::from_url(url)?;
        let mut config: tokio_postgres::Config =
            options.url_for_driver.parse().map_err(|error| {
                StoreError::Config(format!(
                    "DATABASE_URL {}: {}",
                    redact_database_url(url),
                    scrubbed(&described(&error), url)
                ))
            })?;
        config.ssl_mode(options.mode.negotiation());
        let tls = MakeRustlsConnect::new(client_config(&options)?);
        Ok(Self { config, tls })
    }

    pub(crate) async fn connect(&self) -> ConnectionResult<AsyncPgConnection> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|error| ConnectionError::BadConnection(described(&error)))?;
        // Not `try_from(client)`: diesel-async must drive the connection
        // itself to hear notifications (the change listener's LISTEN).
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }
}

/// One connection to the database `url` names, with its TLS options.
pub(crate) async fn connect_postgres(url: &str) -> ConnectionResult<AsyncPgConnection> {
    PostgresConnector::from_url(url)
        .map_err(|error| ConnectionError::InvalidConnectionUrl(error.to_string()))?
        .connect()
        .await
}

/// tokio-postgres's message with its causes: its own `Display` says only
/// "error performing TLS handshake", not which check failed.
fn described(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        let line = error.to_string();
        if !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = error.source();
    }
    text
}

fn client_config(options: &TlsOptions) -> Result<ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| StoreError::Config(format!("TLS to PostgreSQL: {error}")))?;
    let roots = || match &options.root_cert {
        Some(path) => load_roots(path),
        None => Err(StoreError::Config("sslrootcert is missing".into())),
    };
    let builder = match options.verification()? {
        Verification::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly { provider })),
        Verification::Chain => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly {
                roots: roots()?,
                provider,
            })),
        Verification::ChainAndHostName => builder.with_root_certificates(roots()?),
    };
    let mut config = builder.with_no_client_auth();
    // As libpq 17 does; PostgreSQL 17's direct TLS (sslnegotiation=direct)
    // requires it, and older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

fn load_roots(path: &Path) -> Result<RootCertStore, StoreError> {
    let unreadable = |error: &dyn std::fmt::Display| {
        StoreError::Config(format!(
            "sslrootcert {}: cannot read its certificates: {error}",
            path.display()
        ))
    };
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path).map_err(|error| unreadable(&error))? {
        let certificate = certificate.map_err(|error| unreadable(&error))?;
        roots.add(certificate).map_err(|error| unreadable(&error))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"it holds no PEM certificate"));
    }
    Ok(roots)
}

/// Accepts any certificate: what `sslmode=require` means without a root.
/// The handshake's signatures are still checked, so the server holds the
/// key of the certificate it showed.
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

/// Checks the chain up to the root, not the host name: `verify-ca`.
#[derive(Debug)]
struct ChainOnly {
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &certificate,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> TlsOptions {
        TlsOptions::from_url(url).unwrap()
    }

    fn refusal(url: &str) -> String {
        match TlsOptions::from_url(url) {
            Err(StoreError::Config(message)) => message,
            other => panic!("{url}: expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn every_sslmode_is_read_and_taken_out_of_the_url() {
        let root = "&sslrootcert=/etc/ca.pem";
        let cases = [
            ("disable", "", SslMode::Disable, Verification::Nothing),
            ("prefer", "", SslMode::Prefer, Verification::Nothing),
            ("require", "", SslMode::Require, Verification::Nothing),
            ("prefer", root, SslMode::Prefer, Verification::Chain),
            ("require", root, SslMode::Require, Verification::Chain),
            ("verify-ca", root, SslMode::VerifyCa, Verification::Chain),
            (
                "verify-full",
                root,
                SslMode::VerifyFull,
                Verification::ChainAndHostName,
            ),
        ];
        for (mode, extra, expected, verification) in cases {
            let url = format!("postgres://u:pw@db:5432/agentry?sslmode={mode}{extra}");
            let parsed = options(&url);
            assert_eq!(parsed.mode, expected, "{url}");
            assert_eq!(parsed.verification().unwrap(), verification, "{url}");
            assert_eq!(parsed.url_for_driver, "postgres://u:pw@db:5432/agentry");
        }
    }

    #[test]
    fn without_sslmode_tls_is_preferred_as_libpq_does() {
        let parsed = options("postgresql://db/agentry");
        assert_eq!(parsed.mode, SslMode::Prefer);
        assert_eq!(parsed.root_cert, None);
        assert_eq!(parsed.url_for_driver, "postgresql://db/agentry");
        assert_eq!(
            parsed.mode.negotiation(),
            tokio_postgres::config::SslMode::Prefer
        );
        assert_eq!(
            SslMode::VerifyFull.negotiation(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(
            SslMode::Disable.negotiation(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn other_options_are_kept_for_the_driver_in_order() {
        let parsed = options(
            "postgres://db/agentry?application_name=agentry&sslmode=require\
             &connect_timeout=5&sslrootcert=%2Fetc%2Fmy%20ca.pem&options=-c%20statement_timeout%3D5s",
        );
        assert_eq!(parsed.mode, SslMode::Require);
        assert_eq!(parsed.root_cert, Some(PathBuf::from("/etc/my ca.pem")));
        assert_eq!(
            parsed.url_for_driver,
            "postgres://db/agentry?application_name=agentry&connect_timeout=5\
             &options=-c%20statement_timeout%3D5s"
        );
        let config: tokio_postgres::Config = parsed.url_for_driver.parse().unwrap();
        assert_eq!(config.get_application_name(), Some("agentry"));
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(5))
        );
    }

    #[test]
    fn the_last_sslmode_wins_and_an_empty_root_is_none() {
        let parsed = options("postgres://db/a?sslmode=disable&sslmode=require&sslrootcert=");
        assert_eq!(parsed.mode, SslMode::Require);
        assert_eq!(parsed.root_cert, None);
        assert_eq!(parsed.url_for_driver, "postgres://db/a");
    }

    #[test]
    fn bad_values_are_configuration_errors_that_say_what_to_do() {
        for bad in ["verify_full", "REQUIRE", "allow", "", "on"] {
            let message = refusal(&format!("postgres://db/a?sslmode={bad}"));
            assert!(message.contains("verify-full"), "{message}");
        }
        for verify in ["verify-ca", "verify-full"] {
            let message = refusal(&format!("postgres://db/a?sslmode={verify}"));
            assert!(message.contains("sslrootcert"), "{message}");
        }
        assert!(
            refusal("postgres://db/a?sslrootcert=system&sslmode=verify-full").contains("system")
        );
        assert!(refusal("postgres://db/a?sslrootcert=%zz").contains("%-escape"));
        assert!(refusal("postgres://db/a?sslrootcert=%C3").contains("%-escape"));
        assert!(refusal("postgres://db/a?sslmode=requir%").contains("%-escape"));
    }

    #[test]
    fn a_bad_sslmode_is_refused_when_the_url_is_parsed_without_its_password() {
        let refused =
            crate::DatabaseUrl::parse("postgres://u:hunter2@db/a?sslmode=verify").unwrap_err();
        assert!(matches!(refused, StoreError::Config(_)), "{refused:?}");
        assert!(!refused.to_string().contains("hunter2"), "{refused}");
        let unknown = PostgresConnector::from_url("postgres://u:hunter2@db/a?sslmod=require")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("sslmod"), "{unknown}");
        assert!(!unknown.contains("hunter2"), "{unknown}");
    }

    #[test]
    fn a_root_file_that_holds_no_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for path in [empty, dir.path().join("missing.pem")] {
            let url = format!(
                "postgres://db/a?sslmode=verify-ca&sslrootcert={}",
                path.display()
            );
            let message = PostgresConnector::from_url(&url).unwrap_err().to_string();
            assert!(message.contains("sslrootcert"), "{message}");
        }
        let url = format!(
            "postgres://db/a?sslmode=disable&sslrootcert={}",
            dir.path().join("missing.pem").display()
        );
        // libpq ignores the root when TLS is off; so do we.
        PostgresConnector::from_url(&url).unwrap();
    }
}
