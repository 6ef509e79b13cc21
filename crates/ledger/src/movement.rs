//! One movement of an agent's own money as a request asks for it (a spend,
//! a hold, its capture or its release), with the rules around the ledger's
//! decision: how long a hold may last, and when a retried request under the
//! same idempotency key is the same request.

use agentry_domain::Money;
use time::{Duration, OffsetDateTime};

use crate::{Account, EnforcedLimits, Entry, EntryKind, HoldId, LedgerError};

/// A hold's lifetime when the request names none.
pub const DEFAULT_HOLD_SECONDS: i64 = 300;
/// The longest a hold may reserve budget: a day, so a forgotten hold
/// cannot block an agent's budget past the next daily window.
pub const MAX_HOLD_SECONDS: i64 = 86_400;

/// A hold's requested lifetime that is out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ttl_seconds must be 1 to {MAX_HOLD_SECONDS}")]
pub struct HoldLifetimeError;

/// A movement of one agent's money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    Spend {
        amount: Money,
    },
    Hold {
        hold: HoldId,
        amount: Money,
        expires_at: OffsetDateTime,
    },
    Capture {
        hold: HoldId,
        amount: Money,
    },
    Release {
        hold: HoldId,
    },
}

/// When a hold asked for at `now` for `ttl_seconds`
/// ([`DEFAULT_HOLD_SECONDS`] when `None`) expires, if that lifetime is
/// allowed.
pub fn hold_expiry(
    ttl_seconds: Option<i64>,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, HoldLifetimeError> {
    let ttl = ttl_seconds.unwrap_or(DEFAULT_HOLD_SECONDS);
    if !(1..=MAX_HOLD_SECONDS).contains(&ttl) {
        return Err(HoldLifetimeError);
    }
    Ok(now + Duration::seconds(ttl))
}

impl Movement {
    /// The entry this movement appends to `account` under `limits` at
    /// `now`, or the ledger's refusal.
    pub fn decide(
        &self,
        account: &Account,
        limits: &EnforcedLimits,
        now: OffsetDateTime,
    ) -> Result<Entry, LedgerError> {
        match *self {
            Movement::Spend { amount } => account.spend(amount, limits, now),
            Movement::Hold {
                hold,
                amount,
                expires_at,
            } => account.hold(hold, amount, expires_at, limits, now),
            Movement::Capture { hold, amount } => account.capture(hold, amount, now),
            Movement::Release { hold } => account.release(hold, now),
        }
    }

    /// Whether `earlier`, the entry recorded under this request's
    /// idempotency key, was made by the same request: the same kind of
    /// movement of the same amount. A retried hold is the same request
    /// whatever id and expiry it was given this time; the earlier ones
    /// stand.
    pub fn is_replayed_by(&self, earlier: &Entry) -> bool {
        match (self, &earlier.kind) {
            (Movement::Spend { amount }, EntryKind::Spend { amount: recorded }) => {
                amount == recorded
            }
            (
                Movement::Hold { amount, .. },
                EntryKind::Hold {
                    amount: recorded, ..
                },
            ) => amount == recorded,
            (Movement::Capture { hold, amount }, EntryKind::Capture { hold: h, amount: a }) => {
                hold == h && amount == a
            }
            (Movement::Release { hold }, EntryKind::Release { hold: h }) => hold == h,
            _ => false,
        }
    }
}

/// What a capture gave back: the part of the hold not captured.
pub fn released_by_capture(account: &Account, hold: HoldId, captured: Money) -> Money {
    account
        .held(hold)
        .unwrap_or(Money::ZERO)
        .saturating_sub(captured)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-10 12:00 UTC);

    fn hold_id(n: u128) -> HoldId {
        HoldId(uuid::Uuid::from_u128(n))
    }

    fn hold_of(id: u128, usd: u32, ttl_seconds: Option<i64>) -> Movement {
        Movement::Hold {
            hold: hold_id(id),
            amount: Money::from_usd(usd),
            expires_at: hold_expiry(ttl_seconds, NOW).unwrap(),
        }
    }

    fn limits(daily: u32) -> EnforcedLimits {
        EnforcedLimits::enforce(Some(Money::from_usd(daily)), None, None, None)
    }

    #[test]
    fn a_hold_lasts_five_minutes_unless_told_and_at_most_a_day() {
        assert_eq!(hold_expiry(None, NOW), Ok(NOW + Duration::minutes(5)));
        assert_eq!(
            hold_expiry(Some(MAX_HOLD_SECONDS), NOW),
            Ok(NOW + Duration::days(1))
        );
        for ttl in [0, -1, MAX_HOLD_SECONDS + 1] {
            assert_eq!(hold_expiry(Some(ttl), NOW), Err(HoldLifetimeError), "{ttl}");
        }
    }

    #[test]
    fn a_capture_gives_back_what_it_did_not_take() {
        let mut account = Account::new();
        let hold = hold_of(7, 3, None);
        account
            .record(&hold.decide(&account, &limits(10), NOW).unwrap())
            .unwrap();
        let capture = Movement::Capture {
            hold: hold_id(7),
            amount: Money::from_usd(2),
        };
        account
            .record(&capture.decide(&account, &limits(10), NOW).unwrap())
            .unwrap();
        assert_eq!(
            released_by_capture(&account, hold_id(7), Money::from_usd(2)),
            Money::from_usd(1)
        );
        assert_eq!(
            Movement::Release { hold: hold_id(7) }.decide(&account, &limits(10), NOW),
            Err(LedgerError::HoldClosed)
        );
    }

    proptest! {
        /// A retry is the same request exactly when it moves the same
        /// amount the same way.
        #[test]
        fn a_replay_is_the_same_kind_and_amount(first in 1_u32..50, second in 1_u32..50) {
            let account = Account::new();
            let spend = |usd| Movement::Spend { amount: Money::from_usd(usd) };
            let recorded = spend(first).decide(&account, &limits(100), NOW).unwrap();
            prop_assert_eq!(spend(second).is_replayed_by(&recorded), first == second);
            let hold = hold_of(1, second, None);
            prop_assert!(!hold.is_replayed_by(&recorded), "a hold never replays a spend");
            let recorded_hold = hold.decide(&account, &limits(100), NOW).unwrap();
            let retried = hold_of(2, first, Some(60));
            prop_assert_eq!(retried.is_replayed_by(&recorded_hold), first == second);
        }
    }
}
