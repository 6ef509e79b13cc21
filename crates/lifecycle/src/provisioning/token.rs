//! One-time-token validity: the one function that says whether a bootstrap,
//! download or invite token may be used. The store asks it before it
//! writes; where a single SQL statement must decide for atomicity, that
//! statement's filter is this function's twin (see the store's `tokens.rs`).

use time::OffsetDateTime;

/// What a caller is about to do with a one-time token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenUse {
    /// Begin a try (present a bootstrap token, start a download): the
    /// token must be unused, unexpired and have a try left.
    Try,
    /// Use the token up after a try that worked. The try was counted when
    /// it began, so a token on its last try can still be used up: attempts
    /// gate starting a try, not finishing one.
    Consume,
}

/// Why a one-time token cannot be used. Callers usually answer all of them
/// alike so a guesser learns nothing; the detail is for audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the token has already been used")]
    Consumed,
    #[error("the token has expired")]
    Expired,
    #[error("the token has been tried too many times")]
    TooManyAttempts,
}

/// The part of a one-time token that decides whether it may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneTimeToken {
    pub attempts: i64,
    pub max_attempts: i64,
    pub expires_at: OffsetDateTime,
    pub consumed_at: Option<OffsetDateTime>,
}

impl OneTimeToken {
    /// A token as issued: never tried, never used.
    pub fn issued(max_attempts: i64, expires_at: OffsetDateTime) -> Self {
        OneTimeToken {
            attempts: 0,
            max_attempts,
            expires_at,
            consumed_at: None,
        }
    }

    /// Whether the token admits `intent` at `now`, and if not, why. A used
    /// token reports `Consumed` even once expired: that is the state it is
    /// in for everyone.
    pub fn admits(&self, intent: TokenUse, now: OffsetDateTime) -> Result<(), TokenRefusal> {
        if self.consumed_at.is_some() {
            Err(TokenRefusal::Consumed)
        } else if self.expires_at <= now {
            Err(TokenRefusal::Expired)
        } else if intent == TokenUse::Try && self.attempts >= self.max_attempts {
            Err(TokenRefusal::TooManyAttempts)
        } else {
            Ok(())
        }
    }

    /// The token with one more try counted, if it admits one.
    pub fn tried(self, now: OffsetDateTime) -> Result<Self, TokenRefusal> {
        self.admits(TokenUse::Try, now)?;
        Ok(OneTimeToken {
            attempts: self.attempts + 1,
            ..self
        })
    }

    /// The token used up at `now`, if it may be.
    pub fn consumed(self, now: OffsetDateTime) -> Result<Self, TokenRefusal> {
        self.admits(TokenUse::Consume, now)?;
        Ok(OneTimeToken {
            consumed_at: Some(now),
            ..self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);

    fn token(attempts: i64, expires_in: Duration, consumed: bool) -> OneTimeToken {
        OneTimeToken {
            attempts,
            max_attempts: 3,
            expires_at: NOW + expires_in,
            consumed_at: consumed.then_some(NOW - Duration::minutes(1)),
        }
    }

    #[test]
    fn a_fresh_token_admits_a_try_and_its_use() {
        let fresh = token(0, Duration::hours(1), false);
        assert_eq!(fresh.admits(TokenUse::Try, NOW), Ok(()));
        assert_eq!(fresh.admits(TokenUse::Consume, NOW), Ok(()));
    }

    #[test]
    fn used_beats_expired_beats_exhausted() {
        let everything_wrong = token(3, Duration::ZERO, true);
        assert_eq!(
            everything_wrong.admits(TokenUse::Try, NOW),
            Err(TokenRefusal::Consumed)
        );
        let expired_and_exhausted = token(3, Duration::ZERO, false);
        assert_eq!(
            expired_and_exhausted.admits(TokenUse::Try, NOW),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(
            token(3, Duration::hours(1), false).admits(TokenUse::Try, NOW),
            Err(TokenRefusal::TooManyAttempts)
        );
    }

    #[test]
    fn a_token_expires_at_its_expiry_instant() {
        let expiring = token(0, Duration::ZERO, false);
        assert_eq!(
            expiring.admits(TokenUse::Consume, NOW),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(
            expiring.admits(TokenUse::Consume, NOW - Duration::microseconds(1)),
            Ok(())
        );
    }

    #[test]
    fn the_last_try_may_still_use_the_token_up() {
        let last_try = token(2, Duration::hours(1), false).tried(NOW).unwrap();
        assert_eq!(last_try.attempts, 3);
        assert_eq!(last_try.tried(NOW), Err(TokenRefusal::TooManyAttempts));
        let used = last_try.consumed(NOW).unwrap();
        assert_eq!(used.consumed_at, Some(NOW));
        assert_eq!(used.consumed(NOW), Err(TokenRefusal::Consumed));
        assert_eq!(used.tried(NOW), Err(TokenRefusal::Consumed));
    }

    #[test]
    fn an_issued_token_starts_untried() {
        let issued = OneTimeToken::issued(1, NOW + Duration::hours(1));
        assert_eq!((issued.attempts, issued.consumed_at), (0, None));
        assert_eq!(issued.admits(TokenUse::Try, NOW), Ok(()));
    }
}
