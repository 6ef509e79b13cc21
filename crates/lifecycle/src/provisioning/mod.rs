//! Seed 003's provisioning workflow as pure rules: the lifetimes and limits
//! ([`ProvisioningPolicy`]), one-time-token validity ([`OneTimeToken`]),
//! when an instance can be bootstrapped ([`Readiness`]), the bootstrap
//! session from `/cert` to `/secrets` ([`BootstrapSession`]) and the
//! download tokens `/secrets` hands out, one per artifact kind
//! ([`DownloadGrant`]). The callback sequence that follows is
//! [`crate::CallbackSequence`].
//!
//! The store reads the rows, asks these functions, and writes what they
//! return; the HTTP layer only translates.

mod session;
mod token;

#[cfg(test)]
mod properties;

use time::{Duration, OffsetDateTime};

pub use session::{
    BootstrapSession, Completion, OpenRefusal, Readiness, SessionRefusal, SessionStatus,
    SessionTerms,
};
pub use token::{OneTimeToken, TokenRefusal, TokenUse};

/// What an uploaded artifact is; an instance has at most one of each, and
/// each has its own download token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    Bundle,
    Website,
}

impl ArtifactKind {
    pub const ALL: [ArtifactKind; 2] = [ArtifactKind::Bundle, ArtifactKind::Website];

    pub const fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Bundle => "bundle",
            ArtifactKind::Website => "website",
        }
    }
}

/// Seed 003's lifetimes and limits in one place, so whatever issues a
/// token and whatever judges one read the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvisioningPolicy {
    /// How long a machine has between `/cert` and `/secrets`.
    pub session_lifetime: Duration,
    /// How long a machine's client certificate is valid.
    pub client_certificate_lifetime: Duration,
    /// How long the callback token lives: a whole provisioning run.
    pub callback_token_lifetime: Duration,
    /// How long download tokens live after `/secrets`.
    pub download_token_lifetime: Duration,
    /// Tries per download token (seed 003), each artifact kind apart.
    pub download_attempts: i64,
    /// The tries a bootstrap token is issued with. It is presented any
    /// number of times (no try is counted) and used up once, so one is
    /// enough for it to admit a try until then.
    pub bootstrap_token_attempts: i64,
    /// A bootstrap token's lifetime when the operator names none.
    pub default_bootstrap_token_ttl: Duration,
    pub min_bootstrap_token_ttl: Duration,
    pub max_bootstrap_token_ttl: Duration,
    /// Most lines an instance's log holds before diagnostics are refused:
    /// a machine with a valid token must not be able to fill the database.
    /// Callbacks (four at most) are logged whatever the count.
    pub max_log_lines: i64,
}

impl ProvisioningPolicy {
    pub const SEED_003: ProvisioningPolicy = ProvisioningPolicy {
        session_lifetime: Duration::minutes(15),
        client_certificate_lifetime: Duration::hours(1),
        callback_token_lifetime: Duration::hours(2),
        download_token_lifetime: Duration::hours(1),
        download_attempts: 3,
        bootstrap_token_attempts: 1,
        default_bootstrap_token_ttl: Duration::seconds(86_400),
        min_bootstrap_token_ttl: Duration::seconds(60),
        max_bootstrap_token_ttl: Duration::seconds(30 * 86_400),
        max_log_lines: 10_000,
    };

    /// When a bootstrap token issued at `now` expires, given the lifetime
    /// the operator asked for in seconds (`None` for the default).
    pub fn bootstrap_token_expiry(
        &self,
        requested_seconds: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, TtlOutOfRange> {
        let ttl = requested_seconds.map_or(self.default_bootstrap_token_ttl, Duration::seconds);
        if (self.min_bootstrap_token_ttl..=self.max_bootstrap_token_ttl).contains(&ttl) {
            Ok(now + ttl)
        } else {
            Err(TtlOutOfRange {
                min_seconds: self.min_bootstrap_token_ttl.whole_seconds(),
                max_seconds: self.max_bootstrap_token_ttl.whole_seconds(),
            })
        }
    }

    /// The download tokens `/secrets` issues at `now`: one per artifact
    /// kind, so a machine that spends its tries on one file still has all
    /// of them for the other.
    pub fn download_grants(&self, now: OffsetDateTime) -> [DownloadGrant; 2] {
        ArtifactKind::ALL.map(|kind| DownloadGrant {
            kind,
            max_attempts: self.download_attempts,
            expires_at: now + self.download_token_lifetime,
        })
    }

    /// Whether a diagnostic may add a line to a log of `lines` lines.
    pub fn admits_log_line(&self, lines: i64) -> Result<(), ProvisionLogFull> {
        if lines < self.max_log_lines {
            Ok(())
        } else {
            Err(ProvisionLogFull {
                max_lines: self.max_log_lines,
            })
        }
    }
}

impl Default for ProvisioningPolicy {
    fn default() -> Self {
        ProvisioningPolicy::SEED_003
    }
}

/// One download token to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadGrant {
    pub kind: ArtifactKind,
    pub max_attempts: i64,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be {min_seconds} to {max_seconds}")]
pub struct TtlOutOfRange {
    pub min_seconds: i64,
    pub max_seconds: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this instance's provision log holds its maximum of {max_lines} lines")]
pub struct ProvisionLogFull {
    pub max_lines: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);
    const POLICY: ProvisioningPolicy = ProvisioningPolicy::SEED_003;

    #[test]
    fn bootstrap_tokens_live_a_day_unless_asked_for_a_minute_to_thirty_days() {
        assert_eq!(
            POLICY.bootstrap_token_expiry(None, NOW),
            Ok(NOW + Duration::DAY)
        );
        assert_eq!(
            POLICY.bootstrap_token_expiry(Some(60), NOW),
            Ok(NOW + Duration::MINUTE)
        );
        assert_eq!(
            POLICY.bootstrap_token_expiry(Some(2_592_000), NOW),
            Ok(NOW + Duration::days(30))
        );
        for refused in [59, 2_592_001, 0, -60, i64::MAX, i64::MIN] {
            let error = POLICY
                .bootstrap_token_expiry(Some(refused), NOW)
                .unwrap_err();
            assert_eq!(error.to_string(), "must be 60 to 2592000");
        }
    }

    #[test]
    fn secrets_grant_one_download_token_per_artifact_kind() {
        let grants = POLICY.download_grants(NOW);
        assert_eq!(
            grants.map(|grant| grant.kind),
            [ArtifactKind::Bundle, ArtifactKind::Website]
        );
        for grant in grants {
            assert_eq!(grant.max_attempts, 3);
            assert_eq!(grant.expires_at, NOW + Duration::HOUR);
        }
    }

    #[test]
    fn the_log_takes_diagnostics_until_it_holds_ten_thousand_lines() {
        assert_eq!(POLICY.admits_log_line(0), Ok(()));
        assert_eq!(POLICY.admits_log_line(9_999), Ok(()));
        let full = POLICY.admits_log_line(10_000).unwrap_err();
        assert_eq!(
            full.to_string(),
            "this instance's provision log holds its maximum of 10000 lines"
        );
        assert!(POLICY.admits_log_line(20_000).is_err());
    }
}
