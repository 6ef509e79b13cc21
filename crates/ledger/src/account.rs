use std::collections::BTreeMap;

use agentry_domain::{AgentId, Money};
use time::{Date, OffsetDateTime, UtcOffset};

use crate::entry::{Entry, EntryKind, HoldId};
use crate::limits::EnforcedLimits;
use crate::window::Window;

/// Why the ledger refused an operation, or could not replay its entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Maps to 402 at the edge.
    #[error("insufficient budget: {requested} USD requested, {available} USD available in the {} window", window_name(*window))]
    InsufficientBudget {
        window: Window,
        requested: Money,
        available: Money,
    },
    #[error("amount must be greater than zero")]
    ZeroAmount,
    #[error("hold expiry must be in the future")]
    HoldExpiryInPast,
    #[error("a hold with this id already exists")]
    DuplicateHold,
    #[error("no such hold")]
    UnknownHold,
    #[error("the hold was already captured or released")]
    HoldClosed,
    #[error("the hold expired and can no longer be captured")]
    HoldExpired,
    #[error("cannot capture {requested} USD from a hold of {held} USD")]
    CaptureExceedsHold { held: Money, requested: Money },
    #[error("this agent has already delegated to that child")]
    DuplicateChild,
    #[error("the agent was not created by delegation, so it has no parent to refund")]
    NotDelegated,
    #[error("the agent's allocation was already settled")]
    AlreadySettled,
    #[error("the agent still has {0} child agent(s) to settle first")]
    OpenDelegations(usize),
    #[error("ledger entries are inconsistent: {0}")]
    Corrupt(&'static str),
}

/// The UTC calendar day of `at`: the unit every window is made of.
fn utc_day(at: OffsetDateTime) -> Date {
    at.to_offset(UtcOffset::UTC).date()
}

fn window_name(window: Window) -> &'static str {
    match window {
        Window::Day => "daily",
        Window::Month => "monthly",
        Window::Allocation => "allocation",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldState {
    Open,
    Captured,
    Released,
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    amount: Money,
    at: OffsetDateTime,
    expires_at: OffsetDateTime,
    state: HoldState,
}

#[derive(Debug, Clone, Copy)]
struct Slice {
    at: OffsetDateTime,
    amount: Money,
    refunded: Money,
    settled: bool,
}

/// What ending a delegated agent's allocation produces: entries for the
/// child (releases of open holds, then the refund) and for the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub refunded: Money,
    pub child_entries: Vec<Entry>,
    pub parent_entry: Entry,
}

/// One agent's budget, derived from its entries.
///
/// Money is counted in the window of the moment it was committed: a spend
/// when it happens, a hold when it is authorized (its capture stays there),
/// a delegation slice when it is made (a refund reduces that slice). So a
/// window can never be charged beyond its limit by something that happens
/// later, and a refund can never create room in a window it was not taken
/// from.
#[derive(Debug, Clone, Default)]
pub struct Account {
    /// Spends and captures, in micros, summed per UTC day of the moment
    /// they count in. Every window begins at a UTC midnight, so a day's
    /// total is all any window needs: an agent that spends all year is 365
    /// figures here, not one per spend.
    charges: BTreeMap<Date, i128>,
    holds: BTreeMap<HoldId, Hold>,
    slices: BTreeMap<AgentId, Slice>,
    parent: Option<AgentId>,
    allocated: Money,
    /// What went back to the parent when the allocation was settled.
    returned: Money,
    settled: bool,
}

impl Account {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds an account from its entries, in the order they were written.
    pub fn replay<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Result<Self, LedgerError> {
        let mut account = Self::new();
        for entry in entries {
            account.record(entry)?;
        }
        Ok(account)
    }

    /// Applies an entry this account (or its counterpart) produced.
    pub fn record(&mut self, entry: &Entry) -> Result<(), LedgerError> {
        match entry.kind {
            EntryKind::Spend { amount } => self.charge(entry.at, amount),
            EntryKind::Hold {
                hold,
                amount,
                expires_at,
            } => {
                let fresh = Hold {
                    amount,
                    at: entry.at,
                    expires_at,
                    state: HoldState::Open,
                };
                if self.holds.insert(hold, fresh).is_some() {
                    return Err(LedgerError::Corrupt("hold recorded twice"));
                }
            }
            EntryKind::Capture { hold, amount } => {
                let held = self.open_hold_mut(hold)?;
                if amount > held.amount {
                    return Err(LedgerError::Corrupt("capture above its hold"));
                }
                held.state = HoldState::Captured;
                let at = held.at;
                self.charge(at, amount);
            }
            EntryKind::Release { hold } => {
                self.open_hold_mut(hold)?.state = HoldState::Released;
            }
            EntryKind::DelegationSlice { child, amount } => {
                let slice = Slice {
                    at: entry.at,
                    amount,
                    refunded: Money::ZERO,
                    settled: false,
                };
                if self.slices.insert(child, slice).is_some() {
                    return Err(LedgerError::Corrupt("child sliced twice"));
                }
            }
            EntryKind::Allocation { parent, amount } => {
                if self.parent.is_some_and(|known| known != parent) {
                    return Err(LedgerError::Corrupt("allocation from a second parent"));
                }
                self.parent = Some(parent);
                self.allocated = self
                    .allocated
                    .checked_add(amount)
                    .ok_or(LedgerError::Corrupt("allocation overflow"))?;
            }
            EntryKind::RefundToParent { amount, .. } => {
                if self.parent.is_none() || self.settled {
                    return Err(LedgerError::Corrupt("refund without an open allocation"));
                }
                self.returned = amount;
                self.settled = true;
            }
            EntryKind::RefundFromChild { child, amount } => {
                let slice = self
                    .slices
                    .get_mut(&child)
                    .filter(|slice| !slice.settled)
                    .ok_or(LedgerError::Corrupt(
                        "refund from an unknown or settled child",
                    ))?;
                slice.refunded = slice
                    .refunded
                    .checked_add(amount)
                    .filter(|refunded| *refunded <= slice.amount)
                    .ok_or(LedgerError::Corrupt("refund above the slice"))?;
                slice.settled = true;
            }
        }
        Ok(())
    }

    fn charge(&mut self, at: OffsetDateTime, amount: Money) {
        *self.charges.entry(utc_day(at)).or_default() += i128::from(amount.micros());
    }

    /// The charges that count in `window` as of `now`, in micros.
    fn charged(&self, window: Window, now: OffsetDateTime) -> i128 {
        self.charges
            .iter()
            .filter(|(day, _)| window.contains(day.midnight().assume_utc(), now))
            .map(|(_, micros)| micros)
            .sum()
    }

    fn open_hold_mut(&mut self, hold: HoldId) -> Result<&mut Hold, LedgerError> {
        self.holds
            .get_mut(&hold)
            .filter(|held| held.state == HoldState::Open)
            .ok_or(LedgerError::Corrupt(
                "capture or release of a hold that is not open",
            ))
    }

    /// Money committed in `window` as of `now`: spends and captures, open
    /// unexpired holds, and delegation slices net of refunds.
    pub fn committed(&self, window: Window, now: OffsetDateTime) -> Money {
        let in_window = |at: OffsetDateTime| window.contains(at, now);
        let holds = self
            .holds
            .values()
            .filter(|hold| {
                hold.state == HoldState::Open && hold.expires_at > now && in_window(hold.at)
            })
            .map(|hold| i128::from(hold.amount.micros()));
        let slices = self
            .slices
            .values()
            .filter(|slice| in_window(slice.at))
            .map(|slice| i128::from(slice.amount.micros() - slice.refunded.micros()));
        let total: i128 = self.charged(window, now) + holds.chain(slices).sum::<i128>();
        // A total above MAX cannot be produced through the checked operations;
        // saturating keeps a hand-edited ledger from panicking the caller.
        i64::try_from(total)
            .ok()
            .and_then(|micros| Money::from_micros(micros).ok())
            .unwrap_or(Money::MAX)
    }

    /// Money actually spent (spends and captures) in `window` as of `now`;
    /// what `enforced_daily_spent_usd` reports.
    pub fn spent(&self, window: Window, now: OffsetDateTime) -> Money {
        let total = self.charged(window, now);
        i64::try_from(total)
            .ok()
            .and_then(|micros| Money::from_micros(micros).ok())
            .unwrap_or(Money::MAX)
    }

    /// Each window and the cap on it: the enforced day and month limits,
    /// and for a delegated agent what it was allocated net of what it gave
    /// back.
    fn caps(&self, limits: &EnforcedLimits) -> [(Window, Option<Money>); 3] {
        [
            (Window::Day, limits.daily),
            (Window::Month, limits.monthly),
            (
                Window::Allocation,
                self.parent
                    .map(|_| self.allocated.saturating_sub(self.returned)),
            ),
        ]
    }

    /// The first window whose committed money is above its cap at `now`,
    /// with both amounts. The checked operations never build such a ledger;
    /// a cap lowered after the money was committed is the one honest cause.
    pub fn overshoot(
        &self,
        limits: &EnforcedLimits,
        now: OffsetDateTime,
    ) -> Option<(Window, Money, Money)> {
        self.caps(limits).into_iter().find_map(|(window, cap)| {
            let cap = cap?;
            let committed = self.committed(window, now);
            (committed > cap).then_some((window, committed, cap))
        })
    }

    /// Money the agent can still commit, and the window that binds it;
    /// `None` when no window caps it.
    pub fn remaining(
        &self,
        limits: &EnforcedLimits,
        now: OffsetDateTime,
    ) -> Option<(Money, Window)> {
        self.caps(limits)
            .into_iter()
            .filter_map(|(window, cap)| {
                cap.map(|cap| (cap.saturating_sub(self.committed(window, now)), window))
            })
            .min_by_key(|(remaining, _)| *remaining)
    }

    /// The amount `hold` reserved, whatever became of it since.
    pub fn held(&self, hold: HoldId) -> Option<Money> {
        self.holds.get(&hold).map(|held| held.amount)
    }

    /// The part of a delegated agent's allocation it has not committed: what
    /// a refund would return now (open holds included, since settling
    /// releases them).
    pub fn unspent_allocation(&self, now: OffsetDateTime) -> Money {
        if self.parent.is_none() || self.settled {
            return Money::ZERO;
        }
        let committed_without_holds = self
            .committed(Window::Allocation, now)
            .saturating_sub(self.open_held(now));
        self.allocated.saturating_sub(committed_without_holds)
    }

    fn open_held(&self, now: OffsetDateTime) -> Money {
        let total: i64 = self
            .holds
            .values()
            .filter(|hold| hold.state == HoldState::Open && hold.expires_at > now)
            .map(|hold| hold.amount.micros())
            .sum();
        Money::from_micros(total).unwrap_or(Money::MAX)
    }

    /// Checks that `amount` fits every window while leaving `keep` behind.
    fn ensure_room(
        &self,
        amount: Money,
        keep: Money,
        limits: &EnforcedLimits,
        now: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        if amount.is_zero() {
            return Err(LedgerError::ZeroAmount);
        }
        if let Some((remaining, window)) = self.remaining(limits, now) {
            let available = remaining.saturating_sub(keep);
            if amount > available {
                return Err(LedgerError::InsufficientBudget {
                    window,
                    requested: amount,
                    available,
                });
            }
        }
        Ok(())
    }

    /// A direct spend of `amount` at `now`.
    pub fn spend(
        &self,
        amount: Money,
        limits: &EnforcedLimits,
        now: OffsetDateTime,
    ) -> Result<Entry, LedgerError> {
        self.ensure_room(amount, Money::ZERO, limits, now)?;
        Ok(Entry {
            at: now,
            kind: EntryKind::Spend { amount },
        })
    }

    /// Reserves `amount` until `expires_at`, for a cost learned later.
    pub fn hold(
        &self,
        hold: HoldId,
        amount: Money,
        expires_at: OffsetDateTime,
        limits: &EnforcedLimits,
        now: OffsetDateTime,
    ) -> Result<Entry, LedgerError> {
        if expires_at <= now {
            return Err(LedgerError::HoldExpiryInPast);
        }
        if self.holds.contains_key(&hold) {
            return Err(LedgerError::DuplicateHold);
        }
        self.ensure_room(amount, Money::ZERO, limits, now)?;
        Ok(Entry {
            at: now,
            kind: EntryKind::Hold {
                hold,
                amount,
                expires_at,
            },
        })
    }

    /// Turns up to the held amount into a spend; the rest is freed.
    pub fn capture(
        &self,
        hold: HoldId,
        amount: Money,
        now: OffsetDateTime,
    ) -> Result<Entry, LedgerError> {
        let held = self.holds.get(&hold).ok_or(LedgerError::UnknownHold)?;
        if held.state != HoldState::Open {
            return Err(LedgerError::HoldClosed);
        }
        if held.expires_at <= now {
            return Err(LedgerError::HoldExpired);
        }
        if amount > held.amount {
            return Err(LedgerError::CaptureExceedsHold {
                held: held.amount,
                requested: amount,
            });
        }
        Ok(Entry {
            at: now,
            kind: EntryKind::Capture { hold, amount },
        })
    }

    /// Gives a hold back unused; an expired hold may still be released.
    pub fn release(&self, hold: HoldId, now: OffsetDateTime) -> Result<Entry, LedgerError> {
        let held = self.holds.get(&hold).ok_or(LedgerError::UnknownHold)?;
        if held.state != HoldState::Open {
            return Err(LedgerError::HoldClosed);
        }
        Ok(Entry {
            at: now,
            kind: EntryKind::Release { hold },
        })
    }

    /// Slices `amount` off this (parent) account for a new child; the parent
    /// keeps at least one cent (seed 001). Returns the parent's entry and the
    /// child's.
    pub fn delegate(
        &self,
        parent: AgentId,
        child: AgentId,
        amount: Money,
        limits: &EnforcedLimits,
        now: OffsetDateTime,
    ) -> Result<(Entry, Entry), LedgerError> {
        if self.slices.contains_key(&child) {
            return Err(LedgerError::DuplicateChild);
        }
        self.ensure_room(amount, Money::CENT, limits, now)?;
        Ok((
            Entry {
                at: now,
                kind: EntryKind::DelegationSlice { child, amount },
            },
            Entry {
                at: now,
                kind: EntryKind::Allocation { parent, amount },
            },
        ))
    }

    /// Ends this delegated account: releases its open holds and returns the
    /// unspent allocation to the parent. Children of this account must be
    /// settled first, so their refunds are part of what goes back.
    pub fn settle(&self, me: AgentId, now: OffsetDateTime) -> Result<Settlement, LedgerError> {
        let parent = self.parent.ok_or(LedgerError::NotDelegated)?;
        if self.settled {
            return Err(LedgerError::AlreadySettled);
        }
        let open_children = self.slices.values().filter(|slice| !slice.settled).count();
        if open_children > 0 {
            return Err(LedgerError::OpenDelegations(open_children));
        }
        let mut child_entries: Vec<Entry> = self
            .holds
            .iter()
            .filter(|(_, hold)| hold.state == HoldState::Open)
            .map(|(hold, _)| Entry {
                at: now,
                kind: EntryKind::Release { hold: *hold },
            })
            .collect();
        let refunded = self.unspent_allocation(now);
        child_entries.push(Entry {
            at: now,
            kind: EntryKind::RefundToParent {
                parent,
                amount: refunded,
            },
        });
        Ok(Settlement {
            refunded,
            child_entries,
            parent_entry: Entry {
                at: now,
                kind: EntryKind::RefundFromChild {
                    child: me,
                    amount: refunded,
                },
            },
        })
    }

    pub fn parent(&self) -> Option<AgentId> {
        self.parent
    }

    pub fn is_settled(&self) -> bool {
        self.settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;
    use uuid::Uuid;

    const NOW: OffsetDateTime = datetime!(2026-03-10 12:00 UTC);

    fn usd(text: &str) -> Money {
        Money::parse_usd(text).unwrap()
    }

    fn daily(cap: &str) -> EnforcedLimits {
        EnforcedLimits::enforce(Some(usd(cap)), None, None, None)
    }

    fn agent(n: u128) -> AgentId {
        AgentId::from_uuid(Uuid::from_u128(n))
    }

    fn apply(account: &mut Account, entry: Entry) {
        account.record(&entry).unwrap();
    }

    fn apply_with(account: &mut Account, operation: impl FnOnce(&Account) -> Entry) {
        let entry = operation(account);
        apply(account, entry);
    }

    #[test]
    fn spends_up_to_the_daily_limit_and_no_further() {
        let limits = daily("5");
        let mut account = Account::new();
        apply_with(&mut account, |account| {
            account.spend(usd("4.99"), &limits, NOW).unwrap()
        });
        assert_eq!(
            account.spend(usd("0.02"), &limits, NOW),
            Err(LedgerError::InsufficientBudget {
                window: Window::Day,
                requested: usd("0.02"),
                available: usd("0.01"),
            })
        );
        apply_with(&mut account, |account| {
            account.spend(usd("0.01"), &limits, NOW).unwrap()
        });
        assert_eq!(
            account.remaining(&limits, NOW),
            Some((Money::ZERO, Window::Day))
        );
        assert_eq!(account.spent(Window::Day, NOW), usd("5"));
        // Tomorrow is a new window.
        let tomorrow = datetime!(2026-03-11 00:00 UTC);
        assert_eq!(account.spent(Window::Day, tomorrow), Money::ZERO);
        assert!(account.spend(usd("5"), &limits, tomorrow).is_ok());
        assert_eq!(
            account.spend(Money::ZERO, &limits, NOW),
            Err(LedgerError::ZeroAmount)
        );
    }

    #[test]
    fn overshoot_is_seen_only_past_a_cap() {
        let mut account = Account::new();
        apply_with(&mut account, |account| {
            account.spend(usd("5"), &daily("5"), NOW).unwrap()
        });
        assert_eq!(account.overshoot(&daily("5"), NOW), None);
        // The cap lowered afterwards: the committed money is now over it.
        assert_eq!(
            account.overshoot(&daily("4"), NOW),
            Some((Window::Day, usd("5"), usd("4")))
        );
        assert_eq!(
            account.overshoot(&EnforcedLimits::enforce(None, None, None, None), NOW),
            None
        );
        assert_eq!(
            account.overshoot(&daily("4"), NOW + Duration::days(1)),
            None
        );
    }

    #[test]
    fn the_monthly_limit_binds_across_days() {
        let limits = EnforcedLimits::enforce(Some(usd("5")), Some(usd("8")), None, None);
        let mut account = Account::new();
        apply_with(&mut account, |account| {
            account.spend(usd("5"), &limits, NOW).unwrap()
        });
        let tomorrow = NOW + Duration::days(1);
        let refused = account.spend(usd("4"), &limits, tomorrow).unwrap_err();
        assert_eq!(
            refused,
            LedgerError::InsufficientBudget {
                window: Window::Month,
                requested: usd("4"),
                available: usd("3"),
            }
        );
        assert!(refused.to_string().contains("monthly"));
    }

    #[test]
    fn holds_reserve_then_capture_at_most_the_held_amount() {
        let limits = daily("5");
        let mut account = Account::new();
        let hold = HoldId(Uuid::from_u128(7));
        let expires_at = NOW + Duration::minutes(10);
        apply_with(&mut account, |account| {
            account
                .hold(hold, usd("3"), expires_at, &limits, NOW)
                .unwrap()
        });
        assert_eq!(account.committed(Window::Day, NOW), usd("3"));
        assert_eq!(account.spent(Window::Day, NOW), Money::ZERO);
        assert!(matches!(
            account.spend(usd("2.5"), &limits, NOW),
            Err(LedgerError::InsufficientBudget { .. })
        ));
        assert_eq!(
            account.capture(hold, usd("3.01"), NOW),
            Err(LedgerError::CaptureExceedsHold {
                held: usd("3"),
                requested: usd("3.01")
            })
        );
        apply_with(&mut account, |account| {
            account.capture(hold, usd("1.25"), NOW).unwrap()
        });
        assert_eq!(account.spent(Window::Day, NOW), usd("1.25"));
        assert_eq!(account.committed(Window::Day, NOW), usd("1.25"));
        assert_eq!(
            account.held(hold),
            Some(usd("3")),
            "what it reserved, captured or not"
        );
        assert_eq!(account.held(HoldId(Uuid::from_u128(8))), None);
        assert_eq!(
            account.capture(hold, usd("1"), NOW),
            Err(LedgerError::HoldClosed)
        );
        assert_eq!(account.release(hold, NOW), Err(LedgerError::HoldClosed));
        assert_eq!(
            account.hold(hold, usd("1"), expires_at, &limits, NOW),
            Err(LedgerError::DuplicateHold)
        );
    }

    #[test]
    fn expired_holds_free_their_money_and_cannot_be_captured() {
        let limits = daily("5");
        let mut account = Account::new();
        let hold = HoldId(Uuid::from_u128(8));
        let expires_at = NOW + Duration::minutes(1);
        assert_eq!(
            account.hold(hold, usd("1"), NOW, &limits, NOW),
            Err(LedgerError::HoldExpiryInPast)
        );
        apply_with(&mut account, |account| {
            account
                .hold(hold, usd("5"), expires_at, &limits, NOW)
                .unwrap()
        });
        assert_eq!(
            account.remaining(&limits, NOW),
            Some((Money::ZERO, Window::Day))
        );
        assert_eq!(
            account.remaining(&limits, expires_at),
            Some((usd("5"), Window::Day))
        );
        assert_eq!(
            account.capture(hold, usd("1"), expires_at),
            Err(LedgerError::HoldExpired)
        );
        apply_with(&mut account, |account| {
            account.release(hold, expires_at).unwrap()
        });
        assert_eq!(
            account.release(HoldId(Uuid::nil()), NOW),
            Err(LedgerError::UnknownHold)
        );
    }

    #[test]
    fn delegation_keeps_a_cent_with_the_parent_and_refunds_the_unspent() {
        let limits = daily("5");
        let (parent_id, child_id) = (agent(1), agent(2));
        let mut parent = Account::new();
        assert!(matches!(
            parent.delegate(parent_id, child_id, usd("5"), &limits, NOW),
            Err(LedgerError::InsufficientBudget { available, .. }) if available == usd("4.99")
        ));
        let (slice, allocation) = parent
            .delegate(parent_id, child_id, usd("4.99"), &limits, NOW)
            .unwrap();
        apply(&mut parent, slice);
        let mut child = Account::new();
        apply(&mut child, allocation);
        assert_eq!(
            parent.delegate(parent_id, child_id, usd("0.01"), &limits, NOW),
            Err(LedgerError::DuplicateChild)
        );

        let child_limits = daily("4.99");
        apply_with(&mut child, |child| {
            child.spend(usd("1.5"), &child_limits, NOW).unwrap()
        });
        let hold = HoldId(Uuid::from_u128(9));
        let held = child
            .hold(hold, usd("1"), NOW + Duration::hours(1), &child_limits, NOW)
            .unwrap();
        apply(&mut child, held);
        assert_eq!(child.unspent_allocation(NOW), usd("3.49"));

        let settlement = child.settle(child_id, NOW).unwrap();
        assert_eq!(settlement.refunded, usd("3.49"));
        assert_eq!(
            settlement.child_entries.len(),
            2,
            "release of the hold, then refund"
        );
        for entry in &settlement.child_entries {
            apply(&mut child, entry.clone());
        }
        apply(&mut parent, settlement.parent_entry.clone());
        assert_eq!(
            parent.remaining(&limits, NOW),
            Some((usd("3.5"), Window::Day))
        );
        assert_eq!(
            child.remaining(&child_limits, NOW),
            Some((Money::ZERO, Window::Allocation))
        );
        assert_eq!(
            child.settle(child_id, NOW),
            Err(LedgerError::AlreadySettled)
        );
        assert_eq!(
            parent.settle(parent_id, NOW),
            Err(LedgerError::NotDelegated)
        );
    }

    #[test]
    fn a_child_with_open_delegations_cannot_settle() {
        let limits = daily("5");
        let mut child = Account::new();
        apply(
            &mut child,
            Entry {
                at: NOW,
                kind: EntryKind::Allocation {
                    parent: agent(1),
                    amount: usd("2"),
                },
            },
        );
        let (slice, _) = child
            .delegate(agent(2), agent(3), usd("1"), &limits, NOW)
            .unwrap();
        apply(&mut child, slice);
        assert_eq!(
            child.settle(agent(2), NOW),
            Err(LedgerError::OpenDelegations(1))
        );
    }

    #[test]
    fn a_refund_credits_the_window_the_slice_was_taken_from() {
        let limits = daily("5");
        let (parent_id, child_id) = (agent(1), agent(2));
        let mut parent = Account::new();
        let (slice, allocation) = parent
            .delegate(parent_id, child_id, usd("4"), &limits, NOW)
            .unwrap();
        apply(&mut parent, slice);
        let child = Account::replay([&allocation]).unwrap();
        let tomorrow = NOW + Duration::days(1);
        let settlement = child.settle(child_id, tomorrow).unwrap();
        assert_eq!(settlement.refunded, usd("4"));
        apply(&mut parent, settlement.parent_entry);
        // Yesterday's slice is fully refunded; today's room is still 5, not 9.
        assert_eq!(
            parent.remaining(&limits, tomorrow),
            Some((usd("5"), Window::Day))
        );
        assert_eq!(parent.committed(Window::Day, NOW), Money::ZERO);
    }

    #[test]
    fn replay_refuses_inconsistent_entries() {
        let hold = HoldId(Uuid::from_u128(1));
        let capture = Entry {
            at: NOW,
            kind: EntryKind::Capture {
                hold,
                amount: usd("1"),
            },
        };
        assert!(matches!(
            Account::replay([&capture]),
            Err(LedgerError::Corrupt(_))
        ));
        let refund = Entry {
            at: NOW,
            kind: EntryKind::RefundFromChild {
                child: agent(2),
                amount: usd("1"),
            },
        };
        assert!(matches!(
            Account::replay([&refund]),
            Err(LedgerError::Corrupt(_))
        ));
    }

    #[test]
    fn no_limits_means_no_cap() {
        let limits = EnforcedLimits::enforce(None, None, None, None);
        let account = Account::new();
        assert_eq!(account.remaining(&limits, NOW), None);
        assert!(account.spend(usd("1000"), &limits, NOW).is_ok());
    }
}
