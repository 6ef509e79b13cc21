//! The built-in certificate authority of seed 003: it signs a provisioning
//! machine's CSR into a short-lived client certificate bound to its
//! instance, and the server certificate of the mTLS listener.
//!
//! Only the CSR's public key is used: subject, names, usages and lifetime
//! are ours, so a machine cannot ask for a certificate that names another
//! instance or that could act as a server or a CA.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::{hex, random_bytes, sha256_label};

/// How long the CA itself is valid.
pub const CA_LIFETIME: Duration = Duration::days(3650);

/// Prefix of the URI name that binds a machine certificate to its instance.
const INSTANCE_URI_PREFIX: &str = "urn:agentry:instance:";
/// Prefix of the URI name that binds it to the session it was issued for.
const SESSION_URI_PREFIX: &str = "urn:agentry:session:";

/// Why the CA could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CSR is not PEM, not a PKCS#10 request, has a bad self-signature,
    /// or uses an algorithm or extension we do not sign.
    #[error("the certificate signing request is not acceptable: {0}")]
    InvalidCsr(String),
    /// The stored CA certificate or key cannot be read back.
    #[error("the CA certificate or key is unreadable: {0}")]
    Unreadable(String),
    /// Signing failed for a reason that is ours, not the caller's.
    #[error("the CA could not sign: {0}")]
    Signing(String),
}

/// A certificate the CA issued, with what the store keeps about it.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub pem: String,
    pub der: CertificateDer<'static>,
    /// Hex of the serial number.
    pub serial: String,
    /// `sha256:<hex>` of the DER: how a presented certificate is found.
    pub fingerprint: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// The CA: its certificate and the key that signs with it.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("fingerprint", &fingerprint(&self.cert_der))
            .finish_non_exhaustive()
    }
}

/// `sha256:<hex>` of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    sha256_label(&Sha256::digest(der))
}

/// The URI name a machine certificate carries for its instance.
pub fn instance_uri(instance_id: Uuid) -> String {
    format!("{INSTANCE_URI_PREFIX}{instance_id}")
}

fn random_serial() -> SerialNumber {
    let mut bytes = random_bytes::<16>();
    // A positive INTEGER, and never one that DER would shorten.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn issued(cert: &rcgen::Certificate, params: &CertificateParams) -> IssuedCertificate {
    let der = cert.der().clone();
    IssuedCertificate {
        pem: cert.pem(),
        fingerprint: fingerprint(&der),
        der,
        serial: params
            .serial_number
            .as_ref()
            .map(|serial| hex(&serial.to_bytes()))
            .unwrap_or_default(),
        not_before: params.not_before,
        not_after: params.not_after,
    }
}

/// Validity starts a minute early so a machine whose clock is slightly
/// behind still accepts the certificate.
fn validity(params: &mut CertificateParams, now: OffsetDateTime, lifetime: Duration) {
    let now = now.replace_nanosecond(0).unwrap_or(now);
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + lifetime;
}

impl CertificateAuthority {
    /// A new CA with a fresh ECDSA P-256 key (what every TLS client
    /// understands). Returns the CA and its key in PEM, for sealing.
    pub fn generate(now: OffsetDateTime) -> Result<(Self, Zeroizing<String>), CaError> {
        let key = KeyPair::generate().map_err(|error| CaError::Signing(error.to_string()))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Agentry");
        name.push(DnType::CommonName, "Agentry machine CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity(&mut params, now, CA_LIFETIME);
        let cert = params
            .self_signed(&key)
            .map_err(|error| CaError::Signing(error.to_string()))?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        let cert_pem = cert.pem();
        let cert_der = cert.der().clone();
        Ok((
            Self {
                issuer: Issuer::new(params, key),
                cert_pem,
                cert_der,
            },
            key_pem,
        ))
    }

    /// The CA as stored: its certificate and its (unsealed) key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let unreadable = |error: rcgen::Error| CaError::Unreadable(error.to_string());
        let key = KeyPair::from_pem(key_pem).map_err(unreadable)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(unreadable)?;
        let cert_der = pem_to_der(cert_pem)
            .ok_or_else(|| CaError::Unreadable("the CA certificate is not PEM".into()))?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
            cert_der,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Signs `csr_pem` into a client certificate for `instance_id`, issued
    /// within `session_id`, valid from `now` for `lifetime`. The CSR's
    /// self-signature must verify: it proves the caller holds the key.
    pub fn sign_machine_csr(
        &self,
        csr_pem: &str,
        instance_id: Uuid,
        session_id: Uuid,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        let request = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|error| CaError::InvalidCsr(error.to_string()))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Agentry");
        name.push(DnType::CommonName, instance_id.to_string());
        params.distinguished_name = name;
        params.subject_alt_names = vec![
            uri(&instance_uri(instance_id))?,
            uri(&format!("{SESSION_URI_PREFIX}{session_id}"))?,
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        validity(&mut params, now, lifetime);
        let cert = params
            .signed_by(&request.public_key, &self.issuer)
            .map_err(|error| CaError::Signing(error.to_string()))?;
        Ok(issued(&cert, &params))
    }

    /// A server certificate for the mTLS listener, for `hostnames` (DNS
    /// names or IP addresses), with a fresh key returned in PEM.
    pub fn issue_server_certificate(
        &self,
        hostnames: &[String],
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<(IssuedCertificate, Zeroizing<String>), CaError> {
        let key = KeyPair::generate().map_err(|error| CaError::Signing(error.to_string()))?;
        let mut params = CertificateParams::new(hostnames.to_vec())
            .map_err(|error| CaError::Signing(format!("bad host name: {error}")))?;
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Agentry");
        name.push(
            DnType::CommonName,
            hostnames.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        validity(&mut params, now, lifetime);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|error| CaError::Signing(error.to_string()))?;
        Ok((issued(&cert, &params), Zeroizing::new(key.serialize_pem())))
    }
}

fn uri(text: &str) -> Result<SanType, CaError> {
    text.to_owned()
        .try_into()
        .map(SanType::URI)
        .map_err(|error: rcgen::Error| CaError::Signing(error.to_string()))
}

/// The DER inside the first PEM block of `pem`.
pub fn pem_to_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00:00 UTC);

    fn csr() -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "machine asks for anything");
        // A request for a name the CA must ignore.
        params.subject_alt_names = vec![SanType::DnsName("evil.example".try_into().unwrap())];
        let request = params.serialize_request(&key).unwrap();
        (request.pem().unwrap(), key)
    }

    fn parse(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).unwrap().1
    }

    #[test]
    fn signs_a_csr_for_its_instance_only() {
        let (ca, _) = CertificateAuthority::generate(NOW).unwrap();
        let (csr, key) = csr();
        let instance = Uuid::from_u128(7);
        let session = Uuid::from_u128(9);
        let cert = ca
            .sign_machine_csr(&csr, instance, session, NOW, Duration::hours(1))
            .unwrap();
        let parsed = parse(&cert.der);
        let names: Vec<String> = parsed
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|name| name.to_string())
            .collect();
        assert!(
            names
                .iter()
                .any(|name| name.contains(&instance_uri(instance))),
            "{names:?}"
        );
        assert!(!names.iter().any(|name| name.contains("evil")), "{names:?}");
        assert_eq!(parsed.public_key().raw, key.subject_public_key_info());
        assert_eq!(
            parsed.validity().not_after.timestamp(),
            (NOW + Duration::hours(1)).unix_timestamp()
        );
        assert!(!parsed.is_ca());
        assert_eq!(cert.fingerprint, fingerprint(&cert.der));
        // Signed by the CA's key.
        let ca_parsed = parse(ca.cert_der());
        parsed
            .verify_signature(Some(ca_parsed.public_key()))
            .unwrap();
    }

    #[test]
    fn refuses_bad_csrs() {
        let (ca, _) = CertificateAuthority::generate(NOW).unwrap();
        let (csr, _) = csr();
        let id = Uuid::from_u128(1);
        let sign = |text: &str| ca.sign_machine_csr(text, id, id, NOW, Duration::hours(1));
        assert!(matches!(sign("not a csr"), Err(CaError::InvalidCsr(_))));
        // One changed byte inside the signed part breaks the self-signature
        // or the structure; either way it is refused.
        let body: Vec<&str> = csr.lines().collect();
        let mut tampered = body.clone();
        let line = body[2].to_owned();
        let flipped: String = line
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i == 10 {
                    if c == 'A' { 'B' } else { 'A' }
                } else {
                    c
                }
            })
            .collect();
        tampered[2] = &flipped;
        assert!(matches!(
            sign(&tampered.join("\n")),
            Err(CaError::InvalidCsr(_))
        ));
        assert!(sign(&csr).is_ok());
    }

    #[test]
    fn survives_a_round_trip_through_pem() {
        let (ca, key_pem) = CertificateAuthority::generate(NOW).unwrap();
        let again = CertificateAuthority::from_pem(ca.cert_pem(), &key_pem).unwrap();
        assert_eq!(again.cert_der(), ca.cert_der());
        let (csr, _) = csr();
        let id = Uuid::from_u128(3);
        let cert = again
            .sign_machine_csr(&csr, id, id, NOW, Duration::hours(1))
            .unwrap();
        parse(&cert.der)
            .verify_signature(Some(parse(ca.cert_der()).public_key()))
            .unwrap();
        assert!(CertificateAuthority::from_pem(ca.cert_pem(), "garbage").is_err());
    }

    #[test]
    fn issues_server_certificates_for_names_and_addresses() {
        let (ca, _) = CertificateAuthority::generate(NOW).unwrap();
        let (cert, key) = ca
            .issue_server_certificate(
                &["localhost".into(), "127.0.0.1".into()],
                NOW,
                Duration::days(1),
            )
            .unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let parsed = parse(&cert.der);
        let names = format!(
            "{:?}",
            parsed.subject_alternative_name().unwrap().unwrap().value
        );
        assert!(
            names.contains("DNSName(\"localhost\")") && names.contains("IPAddress([127, 0, 0, 1])"),
            "{names}"
        );
    }
}
