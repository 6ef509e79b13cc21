//! The built-in certificate authority of seed 003: it signs a provisioning
//! machine's CSR into a short-lived client certificate bound to its
//! instance, an agent's CSR into a short-lived client certificate bound to
//! the agent (seed 001's certificate exchange), and the server certificate
//! of the mTLS listener.
//!
//! Only the CSR's public key is used: subject, names, usages and lifetime
//! are ours, so a machine or an agent cannot ask for a certificate that
//! names another instance or agent, or that could act as a server or a CA.
//!
//! An agent certificate names its credential epoch: the guard admits it
//! only while the agent's epoch is still that one, so whatever retires the
//! agent's tokens (a key rotation, a revocation) retires the certificate
//! too, without a revocation list.

use agentry_domain::{AgentId, TenantId};
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
/// Prefix of the URI name that makes a certificate an agent's.
const AGENT_URI_PREFIX: &str = "urn:agentry:agent:";
/// Prefix of the URI name of the agent's tenant.
const TENANT_URI_PREFIX: &str = "urn:agentry:tenant:";
/// Prefix of the URI name of the credential epoch it was issued in.
const EPOCH_URI_PREFIX: &str = "urn:agentry:epoch:";
/// Prefix of the URI name of the signing key behind the token a
/// certificate was bought with, as the hex of a digest of its kid.
const SIGNING_KEY_URI_PREFIX: &str = "urn:agentry:signing-key:";
/// Prefix of the URI name of the API key a certificate was bought with.
const API_KEY_URI_PREFIX: &str = "urn:agentry:api-key:";

/// The longest an agent certificate lives: short, because only the epoch
/// can take it back before it expires.
pub const AGENT_CERT_LIFETIME: Duration = Duration::hours(1);

/// Why the CA could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CSR is not PEM, not a PKCS#10 request, has a bad self-signature,
    /// or uses an algorithm or extension we do not sign.
    #[error("the certificate signing request is not acceptable: {0}")]
    InvalidCsr(String),
    /// A certificate carries an agent's name but not the rest of an
    /// agent's identity; we never issue one like that.
    #[error("the certificate's agent names are incomplete or malformed: {0}")]
    MalformedAgentNames(String),
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

/// Who an agent certificate speaks for: what its URI names bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentIdentity {
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    /// The agent's credential epoch when the certificate was issued.
    pub epoch: i64,
    /// The credential the certificate was bought with: the certificate
    /// must not outlive it.
    pub bought_with: BoughtWith,
}

/// What an agent presented to buy its certificate, as the certificate
/// names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoughtWith {
    /// A token, by a digest of the kid of the key that signed it (the
    /// first 16 bytes of the kid's SHA-256): revoking that key retires the
    /// certificate with the token.
    Token { signing_key: [u8; 16] },
    /// One of the agent's API keys, by its id: deleting the key retires
    /// the certificate.
    ApiKey(Uuid),
}

/// How long an agent certificate issued at `now` may live: an hour, and
/// never past `ends` (the earliest of the agent's own expiry and that of
/// the credential it was bought with). Whole seconds, as a certificate
/// counts them.
pub fn agent_certificate_lifetime(now: OffsetDateTime, ends: Option<OffsetDateTime>) -> Duration {
    let left = ends.map_or(AGENT_CERT_LIFETIME, |at| at - now);
    Duration::seconds(left.min(AGENT_CERT_LIFETIME).whole_seconds().max(0))
}

/// The agent a certificate names, read from its URI names; `None` when it
/// names no agent (a machine's or the listener's). Only the names are read:
/// call it on a leaf that has been verified to chain to our CA, since
/// anyone can write these names into a certificate of their own.
pub fn agent_identity(der: &[u8]) -> Result<Option<AgentIdentity>, CaError> {
    use x509_parser::extensions::GeneralName;
    let malformed = |reason: &str| CaError::MalformedAgentNames(reason.to_owned());
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|error| CaError::MalformedAgentNames(error.to_string()))?;
    let names = certificate
        .subject_alternative_name()
        .map_err(|error| CaError::MalformedAgentNames(error.to_string()))?;
    let uris: Vec<&str> = names
        .map(|names| {
            names
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    // Exactly one of each: two agent names would leave the choice to us.
    let only = |prefix: &str| -> Result<Option<&str>, CaError> {
        let mut found = uris.iter().filter_map(|uri| uri.strip_prefix(prefix));
        let first = found.next();
        if found.next().is_some() {
            return Err(malformed(&format!("more than one {prefix} name")));
        }
        Ok(first)
    };
    let Some(agent) = only(AGENT_URI_PREFIX)? else {
        return Ok(None);
    };
    let tenant = only(TENANT_URI_PREFIX)?.ok_or_else(|| malformed("no tenant name"))?;
    let epoch = only(EPOCH_URI_PREFIX)?.ok_or_else(|| malformed("no epoch name"))?;
    let uuid = |text: &str, what: &str| {
        Uuid::parse_str(text).map_err(|_| malformed(&format!("the {what} name is not a UUID")))
    };
    let bought_with = match (only(SIGNING_KEY_URI_PREFIX)?, only(API_KEY_URI_PREFIX)?) {
        (Some(digest), None) => BoughtWith::Token {
            signing_key: from_hex_16(digest)
                .ok_or_else(|| malformed("the signing key name is not 32 hex digits"))?,
        },
        (None, Some(key)) => BoughtWith::ApiKey(uuid(key, "API key")?),
        _ => return Err(malformed("not exactly one name of what bought it")),
    };
    Ok(Some(AgentIdentity {
        tenant_id: TenantId::from_uuid(uuid(tenant, "tenant")?),
        agent_id: AgentId::from_uuid(uuid(agent, "agent")?),
        epoch: epoch
            .parse()
            .map_err(|_| malformed("the epoch name is not an integer"))?,
        bought_with,
    }))
}

fn from_hex_16(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut bytes = [0; 16];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(bytes)
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
        let names = vec![
            uri(&instance_uri(instance_id))?,
            uri(&format!("{SESSION_URI_PREFIX}{session_id}"))?,
        ];
        self.sign_client_csr(csr_pem, &instance_id.to_string(), names, now, lifetime)
    }

    /// Signs `csr_pem` into a client certificate for the agent `identity`
    /// names, whose slug is `slug`, valid from `now` for `lifetime` (see
    /// [`agent_certificate_lifetime`]). The CSR's self-signature must
    /// verify: it proves the caller holds the key.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        identity: &AgentIdentity,
        slug: &str,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        let mut names = vec![
            uri(&format!(
                "{AGENT_URI_PREFIX}{}",
                identity.agent_id.as_uuid()
            ))?,
            uri(&format!(
                "{TENANT_URI_PREFIX}{}",
                identity.tenant_id.as_uuid()
            ))?,
            uri(&format!("{EPOCH_URI_PREFIX}{}", identity.epoch))?,
        ];
        names.push(uri(&match identity.bought_with {
            BoughtWith::Token { signing_key } => {
                format!("{SIGNING_KEY_URI_PREFIX}{}", hex(&signing_key))
            }
            BoughtWith::ApiKey(id) => format!("{API_KEY_URI_PREFIX}{id}"),
        })?);
        self.sign_client_csr(csr_pem, slug, names, now, lifetime)
    }

    /// Signs the public key of `csr_pem` (whose self-signature must verify)
    /// into a client-authentication certificate named `common_name` and
    /// `names`, ours alone: nothing else of the CSR is used.
    fn sign_client_csr(
        &self,
        csr_pem: &str,
        common_name: &str,
        names: Vec<SanType>,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        let request = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|error| CaError::InvalidCsr(error.to_string()))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Agentry");
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.subject_alt_names = names;
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

    const AGENT: AgentIdentity = AgentIdentity {
        tenant_id: TenantId::from_uuid(Uuid::from_u128(0x71)),
        agent_id: AgentId::from_uuid(Uuid::from_u128(0xa9)),
        epoch: 3,
        bought_with: BoughtWith::ApiKey(Uuid::from_u128(0x4e)),
    };

    fn uris(parsed: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
        parsed
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|name| name.to_string())
            .collect()
    }

    #[test]
    fn signs_an_agent_csr_naming_the_agent_never_the_csr() {
        let (ca, _) = CertificateAuthority::generate(NOW).unwrap();
        let (csr, key) = csr();
        let cert = ca
            .sign_agent_csr(&csr, &AGENT, "research-bot", NOW, AGENT_CERT_LIFETIME)
            .unwrap();
        let parsed = parse(&cert.der);
        let common_names: Vec<&str> = parsed
            .subject()
            .iter_common_name()
            .map(|name| name.as_str().unwrap())
            .collect();
        assert_eq!(common_names, ["research-bot"], "not the CSR's subject");
        let names = uris(&parsed);
        for expected in [
            format!("urn:agentry:agent:{}", AGENT.agent_id.as_uuid()),
            format!("urn:agentry:tenant:{}", AGENT.tenant_id.as_uuid()),
            "urn:agentry:epoch:3".to_owned(),
        ] {
            assert!(
                names.iter().any(|name| name.contains(&expected)),
                "{names:?}"
            );
        }
        assert!(!names.iter().any(|name| name.contains("evil")), "{names:?}");
        assert_eq!(parsed.public_key().raw, key.subject_public_key_info());
        assert!(!parsed.is_ca());
        let usage = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(usage.client_auth && !usage.server_auth, "{usage:?}");
        assert_eq!(
            parsed.validity().not_after.timestamp(),
            (NOW + Duration::hours(1)).unix_timestamp()
        );
        parsed
            .verify_signature(Some(parse(ca.cert_der()).public_key()))
            .unwrap();
        assert_eq!(agent_identity(&cert.der).unwrap(), Some(AGENT));
        assert!(
            names.iter().any(
                |name| name.contains(&format!("urn:agentry:api-key:{}", Uuid::from_u128(0x4e)))
            ) && !names.iter().any(|name| name.contains("signing-key")),
            "bought with a key: {names:?}"
        );

        // Bought with a token: the certificate names its signing key.
        let with_token = AgentIdentity {
            bought_with: BoughtWith::Token {
                signing_key: [0xab; 16],
            },
            ..AGENT
        };
        let cert = ca
            .sign_agent_csr(&csr, &with_token, "research-bot", NOW, AGENT_CERT_LIFETIME)
            .unwrap();
        assert!(
            uris(&parse(&cert.der))
                .iter()
                .any(|name| name.contains(&format!("urn:agentry:signing-key:{}", "ab".repeat(16)))),
        );
        assert_eq!(agent_identity(&cert.der).unwrap(), Some(with_token));
    }

    #[test]
    fn a_machine_certificate_names_no_agent() {
        let (ca, _) = CertificateAuthority::generate(NOW).unwrap();
        let (csr, _) = csr();
        let id = Uuid::from_u128(5);
        let machine = ca
            .sign_machine_csr(&csr, id, id, NOW, Duration::hours(1))
            .unwrap();
        assert_eq!(agent_identity(&machine.der).unwrap(), None);
        let (server, _) = ca
            .issue_server_certificate(&["localhost".into()], NOW, Duration::days(1))
            .unwrap();
        assert_eq!(agent_identity(&server.der).unwrap(), None);
        assert!(agent_identity(b"not DER").is_err());
    }

    #[test]
    fn an_agent_name_without_the_rest_of_the_identity_is_refused() {
        let key = KeyPair::generate().unwrap();
        let certificate = |names: &[&str]| {
            let mut params = CertificateParams::default();
            params.subject_alt_names = names.iter().map(|name| uri(name).unwrap()).collect();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        let agent = format!("urn:agentry:agent:{}", Uuid::from_u128(1));
        let tenant = format!("urn:agentry:tenant:{}", Uuid::from_u128(2));
        let other = format!("urn:agentry:agent:{}", Uuid::from_u128(3));
        for names in [
            vec![agent.as_str()],
            vec![agent.as_str(), tenant.as_str()],
            vec![agent.as_str(), tenant.as_str(), "urn:agentry:epoch:one"],
            vec![
                "urn:agentry:agent:nope",
                tenant.as_str(),
                "urn:agentry:epoch:1",
            ],
            vec![
                agent.as_str(),
                other.as_str(),
                tenant.as_str(),
                "urn:agentry:epoch:1",
            ],
        ] {
            assert!(
                matches!(
                    agent_identity(&certificate(&names)),
                    Err(CaError::MalformedAgentNames(_))
                ),
                "{names:?}"
            );
        }
        let bought = format!("urn:agentry:api-key:{}", Uuid::from_u128(4));
        let signing_key = format!("urn:agentry:signing-key:{}", "0f".repeat(16));
        for names in [
            vec![agent.as_str(), tenant.as_str(), "urn:agentry:epoch:9"],
            vec![
                agent.as_str(),
                tenant.as_str(),
                "urn:agentry:epoch:9",
                &bought,
                &signing_key,
            ],
            vec![
                agent.as_str(),
                tenant.as_str(),
                "urn:agentry:epoch:9",
                "urn:agentry:signing-key:0f",
            ],
        ] {
            assert!(
                matches!(
                    agent_identity(&certificate(&names)),
                    Err(CaError::MalformedAgentNames(_))
                ),
                "what bought it, exactly once: {names:?}"
            );
        }
        let whole = certificate(&[&agent, &tenant, "urn:agentry:epoch:9", &bought]);
        assert_eq!(
            agent_identity(&whole)
                .unwrap()
                .map(|identity| identity.epoch),
            Some(9)
        );
    }

    #[test]
    fn an_agent_csr_must_carry_a_good_self_signature() {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        use rustls_pki_types::pem::PemObject;
        let (ca, _) = CertificateAuthority::generate(NOW).unwrap();
        let sign = |text: &str| ca.sign_agent_csr(text, &AGENT, "bot", NOW, AGENT_CERT_LIFETIME);
        assert!(matches!(sign("garbage"), Err(CaError::InvalidCsr(_))));
        assert!(matches!(sign(""), Err(CaError::InvalidCsr(_))));
        let (csr, _) = csr();
        // The last byte is the signature's: the request still parses, and
        // only its self-signature fails.
        let mut der =
            rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let encoded = STANDARD.encode(&der);
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(64)
            .map(|chunk| std::str::from_utf8(chunk).unwrap())
            .collect();
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            lines.join("\n")
        );
        let refused = sign(&tampered);
        let Err(CaError::InvalidCsr(reason)) = refused else {
            panic!("a bad self-signature was signed: {refused:?}");
        };
        assert!(reason.to_lowercase().contains("signature"), "{reason}");
        // A certificate is not a request.
        let (server, _) = ca
            .issue_server_certificate(&["localhost".into()], NOW, Duration::days(1))
            .unwrap();
        assert!(matches!(sign(&server.pem), Err(CaError::InvalidCsr(_))));
        assert!(sign(&csr).is_ok());
    }

    #[test]
    fn an_agent_certificate_lives_an_hour_and_never_past_its_agent() {
        assert_eq!(agent_certificate_lifetime(NOW, None), Duration::hours(1));
        assert_eq!(
            agent_certificate_lifetime(NOW, Some(NOW + Duration::days(1))),
            Duration::hours(1)
        );
        assert_eq!(
            agent_certificate_lifetime(NOW, Some(NOW + Duration::milliseconds(600_500))),
            Duration::seconds(600),
            "whole seconds, rounded down"
        );
        assert_eq!(
            agent_certificate_lifetime(NOW, Some(NOW - Duration::minutes(1))),
            Duration::ZERO
        );
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
