//! The bootstrap session of seed 003: `/cert` opens one for a bootstrap
//! token (each call a new one), `/secrets` completes one, once per instance.
//! The instance's side of the machine is its bootstrap token: completing a
//! session uses it up, which is why, of all the sessions of an instance,
//! only one ever completes.

use time::{Duration, OffsetDateTime};

use super::ProvisioningPolicy;
use super::token::{OneTimeToken, TokenRefusal, TokenUse};

/// Whether an instance can be bootstrapped. Its secrets go out once, so
/// handing them out before the operator has attached the bundle and its
/// key would strand the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub bundle_attached: bool,
    pub decryption_key_attached: bool,
}

impl Readiness {
    pub fn is_ready(self) -> bool {
        self.bundle_attached && self.decryption_key_attached
    }
}

/// Why no session can be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenRefusal {
    #[error(transparent)]
    Token(#[from] TokenRefusal),
    #[error("the bundle and its decryption key are not attached yet")]
    NotReady,
}

/// Why a session cannot be completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefusal {
    #[error("the provisioning session has expired")]
    Expired,
    /// The session is complete, or the bootstrap token was used up by
    /// another session or expired: the instance cannot bootstrap again.
    #[error("the provisioning session is already complete")]
    AlreadyComplete,
}

/// Where a session stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Open,
    Expired,
    Completed,
}

/// A bootstrap session: open until `expires_at`, final once completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootstrapSession {
    pub expires_at: OffsetDateTime,
    pub completed_at: Option<OffsetDateTime>,
}

/// What `/cert` may issue: the session, and how long the client
/// certificate issued in it is valid from `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTerms {
    pub session: BootstrapSession,
    pub certificate_lifetime: Duration,
}

/// A completed session and the instance's bootstrap token, used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub session: BootstrapSession,
    pub bootstrap_token: OneTimeToken,
}

impl BootstrapSession {
    /// Opens a session for the instance's bootstrap token. The token is
    /// only presented here, not used up; the session never outlives it.
    pub fn open(
        policy: &ProvisioningPolicy,
        bootstrap_token: &OneTimeToken,
        readiness: Readiness,
        now: OffsetDateTime,
    ) -> Result<SessionTerms, OpenRefusal> {
        bootstrap_token.admits(TokenUse::Try, now)?;
        if !readiness.is_ready() {
            return Err(OpenRefusal::NotReady);
        }
        Ok(SessionTerms {
            session: BootstrapSession {
                expires_at: (now + policy.session_lifetime).min(bootstrap_token.expires_at),
                completed_at: None,
            },
            certificate_lifetime: policy.client_certificate_lifetime,
        })
    }

    /// A completed session stays completed, even past its expiry.
    pub fn status(&self, now: OffsetDateTime) -> SessionStatus {
        if self.completed_at.is_some() {
            SessionStatus::Completed
        } else if self.expires_at <= now {
            SessionStatus::Expired
        } else {
            SessionStatus::Open
        }
    }

    /// Completes the session, using up the instance's bootstrap token. A
    /// token another session used, or one that expired while this session
    /// was open, ends the instance's bootstrap as surely as this session
    /// completing would: both are `AlreadyComplete`.
    pub fn complete(
        &self,
        bootstrap_token: &OneTimeToken,
        now: OffsetDateTime,
    ) -> Result<Completion, SessionRefusal> {
        match self.status(now) {
            SessionStatus::Completed => return Err(SessionRefusal::AlreadyComplete),
            SessionStatus::Expired => return Err(SessionRefusal::Expired),
            SessionStatus::Open => {}
        }
        let bootstrap_token = bootstrap_token
            .consumed(now)
            .map_err(|_| SessionRefusal::AlreadyComplete)?;
        Ok(Completion {
            session: BootstrapSession {
                completed_at: Some(now),
                ..*self
            },
            bootstrap_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);
    const POLICY: ProvisioningPolicy = ProvisioningPolicy::SEED_003;
    const READY: Readiness = Readiness {
        bundle_attached: true,
        decryption_key_attached: true,
    };

    fn bootstrap_token(expires_in: Duration) -> OneTimeToken {
        OneTimeToken::issued(POLICY.bootstrap_token_attempts, NOW + expires_in)
    }

    #[test]
    fn a_session_lasts_fifteen_minutes_unless_its_token_ends_sooner() {
        let terms =
            BootstrapSession::open(&POLICY, &bootstrap_token(Duration::DAY), READY, NOW).unwrap();
        assert_eq!(terms.session.expires_at, NOW + Duration::minutes(15));
        assert_eq!(terms.session.completed_at, None);
        assert_eq!(terms.certificate_lifetime, Duration::HOUR);
        let short =
            BootstrapSession::open(&POLICY, &bootstrap_token(Duration::minutes(5)), READY, NOW)
                .unwrap();
        assert_eq!(short.session.expires_at, NOW + Duration::minutes(5));
    }

    #[test]
    fn no_session_opens_for_a_bad_token_or_an_unready_instance() {
        assert_eq!(
            BootstrapSession::open(&POLICY, &bootstrap_token(Duration::ZERO), READY, NOW),
            Err(OpenRefusal::Token(TokenRefusal::Expired))
        );
        for readiness in [
            Readiness {
                bundle_attached: false,
                decryption_key_attached: true,
            },
            Readiness {
                bundle_attached: true,
                decryption_key_attached: false,
            },
        ] {
            assert_eq!(
                BootstrapSession::open(&POLICY, &bootstrap_token(Duration::DAY), readiness, NOW),
                Err(OpenRefusal::NotReady)
            );
        }
        // The token speaks first: an unready instance with a used token is
        // told its token is bad, not to come back later.
        let used = bootstrap_token(Duration::DAY).consumed(NOW).unwrap();
        let unready = Readiness {
            bundle_attached: false,
            decryption_key_attached: false,
        };
        assert_eq!(
            BootstrapSession::open(&POLICY, &used, unready, NOW),
            Err(OpenRefusal::Token(TokenRefusal::Consumed))
        );
    }

    #[test]
    fn a_session_completes_once_and_uses_the_token_up() {
        let token = bootstrap_token(Duration::DAY);
        let session = BootstrapSession::open(&POLICY, &token, READY, NOW)
            .unwrap()
            .session;
        let done = session.complete(&token, NOW).unwrap();
        assert_eq!(done.session.completed_at, Some(NOW));
        assert_eq!(done.bootstrap_token.consumed_at, Some(NOW));
        assert_eq!(
            done.session.status(NOW + Duration::DAY),
            SessionStatus::Completed
        );
        assert_eq!(
            done.session.complete(&token, NOW),
            Err(SessionRefusal::AlreadyComplete)
        );
        // Another session of the instance finds the token used.
        let other = BootstrapSession::open(&POLICY, &token, READY, NOW)
            .unwrap()
            .session;
        assert_eq!(
            other.complete(&done.bootstrap_token, NOW),
            Err(SessionRefusal::AlreadyComplete)
        );
    }

    #[test]
    fn an_expired_session_or_token_does_not_complete() {
        let token = bootstrap_token(Duration::DAY);
        let session = BootstrapSession::open(&POLICY, &token, READY, NOW)
            .unwrap()
            .session;
        let late = NOW + Duration::minutes(15);
        assert_eq!(session.status(late), SessionStatus::Expired);
        assert_eq!(session.complete(&token, late), Err(SessionRefusal::Expired));
        // A session the store holds may outlive its token (it was opened
        // under other terms); the token's expiry still ends the bootstrap.
        let open_long = BootstrapSession {
            expires_at: NOW + Duration::HOUR,
            completed_at: None,
        };
        let expired_token = bootstrap_token(Duration::minutes(1));
        assert_eq!(
            open_long.complete(&expired_token, NOW + Duration::minutes(2)),
            Err(SessionRefusal::AlreadyComplete)
        );
    }
}
