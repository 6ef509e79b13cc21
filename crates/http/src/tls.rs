//! The mTLS listener of seed 003: its rustls configuration, and how a
//! client certificate presented in the handshake reaches the extractors.
//!
//! The handshake asks for a client certificate but admits every caller,
//! with or without one: the same listener serves `/internal/bootstrap/cert`
//! to machines that have no certificate yet. A presented certificate only
//! has to prove that the client holds its key (rustls checks the handshake
//! signature); whether it chains to our CA and is unexpired is checked by
//! [`MachineCa::verify`] when an extractor asks, so a wrong certificate gets
//! a 401 problem+json instead of a broken handshake.

use std::any::Any;
use std::sync::Arc;

use actix_web::dev::Extensions;
use agentry_auth::{CaError, CertificateAuthority};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use time::{Duration, OffsetDateTime};

/// How long the listener's own certificate is valid; a new one is issued at
/// every start.
pub const SERVER_CERT_LIFETIME: Duration = Duration::days(365);

/// The certificates a client presented in its TLS handshake, kept with the
/// connection (or, in tests, put on the request by the test itself).
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<[CertificateDer<'static>]>);

/// Marks a connection that came in over the TLS listener (for HSTS).
#[derive(Debug, Clone, Copy)]
pub struct TlsConnection;

/// `HttpServer::on_connect` hook for the mTLS listener: marks the
/// connection as TLS and keeps the client's certificates with it.
pub fn on_connect(connection: &dyn Any, data: &mut Extensions) {
    use actix_tls::accept::rustls_0_23::TlsStream;
    let Some(stream) = connection.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() else {
        return;
    };
    data.insert(TlsConnection);
    let (_, session) = stream.get_ref();
    if let Some(certificates) = session.peer_certificates()
        && !certificates.is_empty()
    {
        let owned: Vec<_> = certificates
            .iter()
            .map(|certificate| certificate.clone().into_owned())
            .collect();
        data.insert(PeerCertificates(owned.into()));
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why the TLS listener could not be configured; fatal at start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// The CA in use, with the verifier that checks presented certificates
/// against it.
pub struct MachineCa {
    authority: CertificateAuthority,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for MachineCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineCa")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// Why a presented certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CertificateRefused(String);

impl MachineCa {
    pub fn new(authority: CertificateAuthority) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(authority.cert_der().clone())
            .map_err(|error| TlsError::Rustls(error.to_string()))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|error| TlsError::Rustls(error.to_string()))?;
        Ok(Self {
            authority,
            verifier,
        })
    }

    pub fn authority(&self) -> &CertificateAuthority {
        &self.authority
    }

    /// Checks that `presented` (leaf first) chains to our CA and is valid
    /// at `now`, with client-auth usage.
    pub fn verify(
        &self,
        presented: &[CertificateDer<'static>],
        now: OffsetDateTime,
    ) -> Result<(), CertificateRefused> {
        let (leaf, intermediates) = presented
            .split_first()
            .ok_or_else(|| CertificateRefused("no certificate".into()))?;
        let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        self.verifier
            .verify_client_cert(
                leaf,
                intermediates,
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds)),
            )
            .map(|_| ())
            .map_err(|error| CertificateRefused(error.to_string()))
    }

    /// The listener's configuration: a fresh server certificate for
    /// `hostnames`, signed by the CA, and client certificates asked for but
    /// not required.
    pub fn server_config(
        &self,
        hostnames: &[String],
        now: OffsetDateTime,
    ) -> Result<ServerConfig, TlsError> {
        let (certificate, key_pem) =
            self.authority
                .issue_server_certificate(hostnames, now, SERVER_CERT_LIFETIME)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|error| TlsError::Rustls(error.to_string()))?;
        let chain = vec![certificate.der, self.authority.cert_der().clone()];
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Rustls(error.to_string()))?
            .with_client_cert_verifier(Arc::new(DeferredClientVerifier(Arc::clone(&self.verifier))))
            .with_single_cert(chain, key)
            .map_err(|error| TlsError::Rustls(error.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Asks for a client certificate with our CA as the hint and checks the
/// handshake signature, but leaves the chain to [`MachineCa::verify`].
#[derive(Debug)]
struct DeferredClientVerifier(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00:00 UTC);

    fn machine_certificate(
        ca: &CertificateAuthority,
        at: OffsetDateTime,
    ) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let id = uuid::Uuid::from_u128(5);
        ca.sign_machine_csr(&csr, id, id, at, Duration::hours(1))
            .unwrap()
            .der
    }

    #[test]
    fn accepts_its_own_certificates_only_while_valid() {
        let (authority, _) = CertificateAuthority::generate(NOW).unwrap();
        let (stranger, _) = CertificateAuthority::generate(NOW).unwrap();
        let ours = machine_certificate(&authority, NOW);
        let theirs = machine_certificate(&stranger, NOW);
        let ca = MachineCa::new(authority).unwrap();
        assert_eq!(ca.verify(std::slice::from_ref(&ours), NOW), Ok(()));
        assert!(ca.verify(&[theirs], NOW).is_err());
        assert!(
            ca.verify(std::slice::from_ref(&ours), NOW + Duration::hours(2))
                .is_err()
        );
        assert!(ca.verify(&[], NOW).is_err());
    }

    #[test]
    fn builds_a_listener_configuration() {
        let (authority, _) = CertificateAuthority::generate(NOW).unwrap();
        let ca = MachineCa::new(authority).unwrap();
        let config = ca
            .server_config(&["localhost".into(), "127.0.0.1".into()], NOW)
            .unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
