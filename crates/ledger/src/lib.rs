//! Budgets, as an append-only ledger with the rules beside it.
//!
//! This crate owns every rule about money and request rates for one agent:
//! the enforced limits (the lower of the profile budget and the tenant's
//! agent-limits entry), the UTC day and month windows, direct spends, holds
//! (authorize, capture, release, expiry), delegation slices from a parent to a
//! child, refunds of a child's unspent allocation, and the requests-per-minute
//! window. Every movement of money is an [`Entry`]; balances are derived by
//! replaying entries into an [`Account`], never stored beside them.
//!
//! Operations are pure: they look at an account and `now`, and return the
//! entries to append or a typed refusal. The caller (`agentry-store`) appends
//! them in the same transaction that read the account, which is what makes the
//! limit hold under concurrent spenders.
//!
//! It must never depend on tokio, diesel, actix or anything that does I/O,
//! never reads the clock, and never does `f64` arithmetic on money.
//!
//! A spend past the daily limit is refused, and nothing is written:
//!
//! ```rust
//! use agentry_domain::Money;
//! use agentry_ledger::{Account, EnforcedLimits, LedgerError, Window};
//! use time::macros::datetime;
//!
//! let limits = EnforcedLimits::enforce(Some(Money::from_usd(5)), None, None, None);
//! let now = datetime!(2026-03-10 12:00 UTC);
//! let mut account = Account::new();
//! let spend = account.spend(Money::from_usd(4), &limits, now).unwrap();
//! account.record(&spend).unwrap();
//!
//! assert_eq!(
//!     account.spend(Money::from_usd(2), &limits, now),
//!     Err(LedgerError::InsufficientBudget {
//!         window: Window::Day,
//!         requested: Money::from_usd(2),
//!         available: Money::from_usd(1),
//!     })
//! );
//! ```

mod account;
mod entry;
mod limits;
mod movement;
mod rate;
mod window;

pub use account::{Account, LedgerError, Settlement};
pub use entry::{Entry, EntryKind, HoldId, TransferImbalance, verify_transfers};
pub use limits::{
    DEFAULT_RPM, EnforcedLimits, LimitEntry, LimitsEdit, LimitsEditError, MAX_LIMIT_KEY_LEN,
    MAX_RPM,
};
pub use movement::{
    DEFAULT_HOLD_SECONDS, HoldLifetimeError, MAX_HOLD_SECONDS, Movement, hold_expiry,
    released_by_capture,
};
pub use rate::{LeasedWindow, RateDecision, RateLimited, RateWindow, lease_from, lease_size};
pub use window::Window;

#[cfg(test)]
mod properties;
