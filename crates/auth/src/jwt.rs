//! Agent JWTs: compact JWS signed with Ed25519 (`alg: EdDSA`), the JWKS that
//! publishes the public keys, and strict verification.
//!
//! Only EdDSA exists here: there is no algorithm table to confuse, so
//! `alg: none`, HS256 with the public key as secret and the like are refused
//! by construction.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// Tokens larger than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::seconds(60);

/// What a token is for; each has its own audience, so a token minted for
/// one use is refused everywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// An agent's runtime token (seeds 000, 001): 1 h by default.
    Agent,
    /// A human's or the primary agent's session (seed 002): 24 h by default.
    Session,
    /// A provisioning machine's callback token (seed 003).
    Callback,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Agent => "agentry:agent",
            Audience::Session => "agentry:session",
            Audience::Callback => "agentry:callback",
        }
    }
}

/// The claims Agentry puts in every token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The agent (or user, or instance) the token speaks for.
    pub sub: Uuid,
    /// Its tenant.
    pub tid: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
    /// The subject's credential epoch when the token was issued. Revoking
    /// or rotating the subject's credentials bumps its epoch, and a token
    /// from an older epoch is refused from the next request on.
    pub epoch: i64,
    /// A session's user, under the names Agent United's web client decodes
    /// (`user_id` is `sub` again). Never set on agent or callback tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl Claims {
    pub fn expires_at(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.exp).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    /// Extensions a verifier must understand; we understand none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crit: Option<serde_json::Value>,
}

/// The kid a token's header names, read without verifying anything: only
/// for a token that has just been verified (to record which key signed
/// it).
pub fn header_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let header = URL_SAFE_NO_PAD.decode(header).ok()?;
    serde_json::from_slice::<Header>(&header).ok()?.kid
}

/// Why a token was refused. The HTTP layer answers 401 for every variant
/// alike; the variant goes to the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWS")]
    Malformed,
    #[error("the token's algorithm is not EdDSA")]
    Algorithm,
    #[error("the token names no key or an unknown key")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token was issued by someone else")]
    Issuer,
    #[error("the token is meant for another audience")]
    Audience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `exp - iat` is longer than any lifetime we mint: the token was not
    /// made by our minting code, whatever key signed it.
    #[error("the token claims a longer lifetime than any token this server issues")]
    Lifetime,
}

/// A private signing key with its key id.
pub struct JwtSigningKey {
    kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for JwtSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl JwtSigningKey {
    /// A new key from 32 secret bytes (from `random_bytes`).
    pub fn from_secret(kid: String, secret: [u8; 32]) -> Self {
        Self {
            kid,
            key: SigningKey::from_bytes(&secret),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The 32 secret bytes, for sealing into the store.
    pub fn secret(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.key.to_bytes())
    }

    pub fn public(&self) -> JwtPublicKey {
        JwtPublicKey {
            kid: self.kid.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `claims` into a compact JWS.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            kid: Some(self.kid.clone()),
            typ: Some("JWT".into()),
            crit: None,
        };
        let signing_input = format!("{}.{}", encode_json(&header), encode_json(claims));
        let signature = self.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// Serialising our own header and claims cannot fail: they are plain
/// structs of strings and numbers.
fn encode_json<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// A public key that verifies tokens, with its key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtPublicKey {
    kid: String,
    key: VerifyingKey,
}

impl JwtPublicKey {
    pub fn from_bytes(kid: String, bytes: &[u8; 32]) -> Option<Self> {
        VerifyingKey::from_bytes(bytes)
            .ok()
            .map(|key| Self { kid, key })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The key a JWK of ours describes (OKP, Ed25519), if it is one.
    pub fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
            return None;
        }
        let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(&jwk.x).ok()?.try_into().ok()?;
        Self::from_bytes(jwk.kid.clone(), &bytes)
    }

    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(self.key.to_bytes()),
            kid: self.kid.clone(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        }
    }
}

/// One entry of a JWKS (RFC 7517, OKP keys of RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub r#use: String,
}

/// What `/.well-known/jwks.json` serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// The public keys tokens may be verified with, by key id.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<String, JwtPublicKey>,
}

impl KeyRing {
    pub fn new(keys: impl IntoIterator<Item = JwtPublicKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|key| (key.kid.clone(), key)).collect(),
        }
    }

    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.keys.values().map(JwtPublicKey::to_jwk).collect(),
        }
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The key ids in the ring.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// This ring less the key `kid`: a revoked key verifies nothing.
    pub fn without(&self, kid: &str) -> Self {
        let mut keys = self.keys.clone();
        keys.remove(kid);
        Self { keys }
    }
}

/// Issues and checks tokens for one deployment (`iss`).
#[derive(Debug, Clone)]
pub struct JwtIssuer {
    pub issuer: String,
    /// The longest lifetime (`exp - iat`) of any token this deployment
    /// mints. A longer one is refused even with a good signature: a leaked
    /// signing key (or a bug) could otherwise mint tokens that outlive every
    /// revocation and rotation window the server reasons with.
    pub max_lifetime: Duration,
}

impl JwtIssuer {
    pub fn new(issuer: impl Into<String>, max_lifetime: Duration) -> Self {
        Self {
            issuer: issuer.into(),
            max_lifetime,
        }
    }

    /// Claims for `subject` of `tenant`, valid from `now` for `lifetime`.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one claim; a builder would only rename them"
    )]
    pub fn claims(
        &self,
        audience: Audience,
        subject: Uuid,
        tenant: Uuid,
        epoch: i64,
        now: OffsetDateTime,
        lifetime: Duration,
        jti: Uuid,
    ) -> Claims {
        let iat = now.unix_timestamp();
        Claims {
            iss: self.issuer.clone(),
            aud: audience.as_str().into(),
            sub: subject,
            tid: tenant,
            iat,
            nbf: iat,
            exp: (now + lifetime).unix_timestamp(),
            jti,
            epoch,
            user_id: None,
            email: None,
        }
    }

    /// Verifies `token` for `audience` at `now`: shape, algorithm, key,
    /// signature, issuer, audience, lifetime (at most `max_lifetime`), then
    /// time with [`LEEWAY`]. The caller
    /// still checks that `sub` exists in tenant `tid`.
    pub fn verify(
        &self,
        token: &str,
        ring: &KeyRing,
        audience: Audience,
        now: OffsetDateTime,
    ) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| JwtError::Malformed)
        };
        let header: Header =
            serde_json::from_slice(&decode(header)?).map_err(|_| JwtError::Malformed)?;
        if header.alg != "EdDSA" {
            return Err(JwtError::Algorithm);
        }
        if header.crit.is_some() {
            return Err(JwtError::Malformed);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| ring.keys.get(kid))
            .ok_or(JwtError::UnknownKey)?;
        let signature: [u8; 64] = decode(signature)?
            .try_into()
            .map_err(|_| JwtError::Signature)?;
        let signing_input_len = token.len() - token.rsplit('.').next().map_or(0, str::len) - 1;
        key.key
            .verify_strict(
                &token.as_bytes()[..signing_input_len],
                &Signature::from_bytes(&signature),
            )
            .map_err(|_| JwtError::Signature)?;
        let claims: Claims =
            serde_json::from_slice(&decode(payload)?).map_err(|_| JwtError::Malformed)?;
        if claims.iss != self.issuer {
            return Err(JwtError::Issuer);
        }
        if claims.aud != audience.as_str() {
            return Err(JwtError::Audience);
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime.whole_seconds() {
            return Err(JwtError::Lifetime);
        }
        let now = now.unix_timestamp();
        let leeway = LEEWAY.whole_seconds();
        if now > claims.exp.saturating_add(leeway) {
            return Err(JwtError::Expired);
        }
        if now < claims.nbf.saturating_sub(leeway) {
            return Err(JwtError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-10 00:00 UTC);

    fn key(kid: &str, seed: u8) -> JwtSigningKey {
        JwtSigningKey::from_secret(kid.into(), [seed; 32])
    }

    fn issuer() -> JwtIssuer {
        JwtIssuer::new("https://agentry.test", Duration::hours(24))
    }

    fn token_for(signer: &JwtSigningKey, audience: Audience, lifetime: Duration) -> String {
        let claims = issuer().claims(
            audience,
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            0,
            NOW,
            lifetime,
            Uuid::from_u128(3),
        );
        signer.sign(&claims)
    }

    fn forge(header: &serde_json::Value, claims: &serde_json::Value, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    #[test]
    fn a_minted_token_verifies_with_its_claims() {
        let signer = key("k1", 1);
        let ring = KeyRing::new([signer.public()]);
        let token = token_for(&signer, Audience::Agent, Duration::hours(1));
        let claims = issuer()
            .verify(&token, &ring, Audience::Agent, NOW)
            .unwrap();
        assert_eq!(claims.sub, Uuid::from_u128(1));
        assert_eq!(claims.tid, Uuid::from_u128(2));
        assert_eq!(claims.exp - claims.iat, 3600);
        assert_eq!(claims.expires_at(), NOW + Duration::hours(1));
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "EdDSA", "kid": "k1", "typ": "JWT"})
        );
    }

    #[test]
    fn refuses_alg_none_and_every_other_algorithm() {
        let signer = key("k1", 1);
        let ring = KeyRing::new([signer.public()]);
        let token = token_for(&signer, Audience::Agent, Duration::hours(1));
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        for alg in ["none", "HS256", "RS256", "ES256", "eddsa"] {
            let forged = forge(&serde_json::json!({"alg": alg, "kid": "k1"}), &claims, b"");
            assert_eq!(
                issuer().verify(&forged, &ring, Audience::Agent, NOW),
                Err(JwtError::Algorithm),
                "{alg}"
            );
        }
        let unsigned = format!("{}.", token.rsplit_once('.').unwrap().0);
        assert_eq!(
            issuer().verify(&unsigned, &ring, Audience::Agent, NOW),
            Err(JwtError::Signature)
        );
    }

    #[test]
    fn refuses_unknown_keys_and_bad_signatures() {
        let signer = key("k1", 1);
        let stranger = key("k1", 2);
        let ring = KeyRing::new([signer.public()]);
        let forged = token_for(&stranger, Audience::Agent, Duration::hours(1));
        assert_eq!(
            issuer().verify(&forged, &ring, Audience::Agent, NOW),
            Err(JwtError::Signature)
        );
        let other_kid = token_for(&key("k9", 1), Audience::Agent, Duration::hours(1));
        assert_eq!(
            issuer().verify(&other_kid, &ring, Audience::Agent, NOW),
            Err(JwtError::UnknownKey)
        );
        let claims = serde_json::json!({});
        let no_kid = forge(&serde_json::json!({"alg": "EdDSA"}), &claims, &[0; 64]);
        assert_eq!(
            issuer().verify(&no_kid, &ring, Audience::Agent, NOW),
            Err(JwtError::UnknownKey)
        );
        for malformed in ["", "a.b", "a.b.c.d", "!!.??.**", &"a".repeat(9000)] {
            assert_eq!(
                issuer().verify(malformed, &ring, Audience::Agent, NOW),
                Err(JwtError::Malformed)
            );
        }
    }

    #[test]
    fn refuses_wrong_issuer_and_audience() {
        let signer = key("k1", 1);
        let ring = KeyRing::new([signer.public()]);
        let token = token_for(&signer, Audience::Session, Duration::hours(1));
        assert_eq!(
            issuer().verify(&token, &ring, Audience::Agent, NOW),
            Err(JwtError::Audience)
        );
        let elsewhere = JwtIssuer::new("https://evil.test", Duration::hours(24));
        assert_eq!(
            elsewhere.verify(&token, &ring, Audience::Session, NOW),
            Err(JwtError::Issuer)
        );
    }

    #[test]
    fn time_checks_allow_sixty_seconds_of_skew_and_no_more() {
        let signer = key("k1", 1);
        let ring = KeyRing::new([signer.public()]);
        let token = token_for(&signer, Audience::Agent, Duration::hours(1));
        let verify = |at: OffsetDateTime| issuer().verify(&token, &ring, Audience::Agent, at);
        let expiry = NOW + Duration::hours(1);
        assert!(verify(expiry + Duration::seconds(60)).is_ok());
        assert_eq!(
            verify(expiry + Duration::seconds(61)),
            Err(JwtError::Expired)
        );
        assert!(verify(NOW - Duration::seconds(60)).is_ok());
        assert_eq!(
            verify(NOW - Duration::seconds(61)),
            Err(JwtError::NotYetValid)
        );
    }

    #[test]
    fn a_well_signed_token_living_longer_than_we_mint_is_refused() {
        let signer = key("k1", 1);
        let ring = KeyRing::new([signer.public()]);
        let longest = token_for(&signer, Audience::Session, Duration::hours(24));
        assert!(
            issuer()
                .verify(&longest, &ring, Audience::Session, NOW)
                .is_ok()
        );
        let longer = token_for(
            &signer,
            Audience::Session,
            Duration::hours(24) + Duration::seconds(1),
        );
        assert_eq!(
            issuer().verify(&longer, &ring, Audience::Session, NOW),
            Err(JwtError::Lifetime)
        );
        // A backdated `iat` does not hide a far `exp`.
        let mut claims = issuer().claims(
            Audience::Agent,
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            0,
            NOW,
            Duration::days(365),
            Uuid::from_u128(3),
        );
        claims.iat = i64::MIN;
        assert_eq!(
            issuer().verify(&signer.sign(&claims), &ring, Audience::Agent, NOW),
            Err(JwtError::Lifetime)
        );
    }

    #[test]
    fn a_published_jwk_reads_back_as_the_same_key() {
        let public = key("k1", 1).public();
        assert_eq!(
            JwtPublicKey::from_jwk(&public.to_jwk()),
            Some(public.clone())
        );
        let mut other = public.to_jwk();
        other.crv = "P-256".into();
        assert_eq!(JwtPublicKey::from_jwk(&other), None);
        other = public.to_jwk();
        other.x = "not base64!".into();
        assert_eq!(JwtPublicKey::from_jwk(&other), None);
    }

    #[test]
    fn jwks_publishes_rfc_8037_okp_keys() {
        let signer = key("k1", 1);
        let jwks = KeyRing::new([signer.public()]).jwks();
        let json = serde_json::to_value(&jwks).unwrap();
        assert_eq!(json["keys"][0]["kty"], "OKP");
        assert_eq!(json["keys"][0]["crv"], "Ed25519");
        assert_eq!(json["keys"][0]["use"], "sig");
        assert_eq!(json["keys"][0]["kid"], "k1");
        let x = URL_SAFE_NO_PAD
            .decode(json["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        assert_eq!(x, signer.public().to_bytes());
    }

    proptest! {
        /// Any single-byte change to a minted token is refused.
        #[test]
        fn any_single_byte_change_is_rejected(position in 0usize..400, byte in any::<u8>()) {
            let signer = key("k1", 1);
            let ring = KeyRing::new([signer.public()]);
            let token = token_for(&signer, Audience::Agent, Duration::hours(1));
            let mut bytes = token.clone().into_bytes();
            let position = position % bytes.len();
            prop_assume!(bytes[position] != byte);
            bytes[position] = byte;
            let changed = String::from_utf8_lossy(&bytes).into_owned();
            prop_assume!(changed != token);
            prop_assert!(issuer().verify(&changed, &ring, Audience::Agent, NOW).is_err());
        }
    }
}
