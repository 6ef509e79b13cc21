//! An in-memory budget gate built on agentry-ledger's public API alone: a
//! parent agent holds, captures and spends within its enforced daily limit, is
//! refused past it, delegates a slice to a child and gets the child's unspent
//! allocation back. Run it with `cargo run -p agentry-ledger --example budget_gate`.

use std::error::Error;

use agentry_domain::{AgentId, Money};
use agentry_ledger::{
    Account, EnforcedLimits, Entry, HoldId, LedgerError, Window, verify_transfers,
};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

/// One agent's budget as an embedder keeps it: the append-only entries (what
/// a service would persist) beside the account they fold into.
///
/// Every method takes `&mut self`, so deciding and appending cannot interleave
/// with another spender; a service with shared storage gets the same from
/// doing both in one transaction.
#[derive(Debug)]
struct Budget {
    id: AgentId,
    limits: EnforcedLimits,
    account: Account,
    entries: Vec<Entry>,
}

impl Budget {
    fn allocate(id: AgentId, limits: EnforcedLimits) -> Self {
        Self {
            id,
            limits,
            account: Account::new(),
            entries: Vec::new(),
        }
    }

    /// The ledger only decides; an entry it returns counts once it is recorded,
    /// so a forgotten `append` would let the next spend see stale room.
    fn append(&mut self, entries: impl IntoIterator<Item = Entry>) -> Result<(), LedgerError> {
        for entry in entries {
            self.account.record(&entry)?;
            self.entries.push(entry);
        }
        Ok(())
    }

    fn spend(&mut self, amount: Money, now: OffsetDateTime) -> Result<(), LedgerError> {
        let entry = self.account.spend(amount, &self.limits, now)?;
        self.append([entry])
    }

    fn hold(
        &mut self,
        hold: HoldId,
        amount: Money,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        let entry = self
            .account
            .hold(hold, amount, expires_at, &self.limits, now)?;
        self.append([entry])
    }

    fn capture(
        &mut self,
        hold: HoldId,
        amount: Money,
        now: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        let entry = self.account.capture(hold, amount, now)?;
        self.append([entry])
    }

    /// Slices `amount` off this budget into a new child budget; the child's
    /// own limits come on top of the allocation, which always caps it.
    fn delegate(
        &mut self,
        child: AgentId,
        amount: Money,
        child_limits: EnforcedLimits,
        now: OffsetDateTime,
    ) -> Result<Budget, LedgerError> {
        let (slice, allocation) =
            self.account
                .delegate(self.id, child, amount, &self.limits, now)?;
        let mut child = Budget::allocate(child, child_limits);
        child.append([allocation])?;
        self.append([slice])?;
        Ok(child)
    }

    /// Ends `child`'s allocation and returns what it did not spend to `self`.
    fn settle(&mut self, child: &mut Budget, now: OffsetDateTime) -> Result<Money, LedgerError> {
        let settlement = child.account.settle(child.id, now)?;
        child.append(settlement.child_entries)?;
        self.append([settlement.parent_entry])?;
        Ok(settlement.refunded)
    }

    /// What can still be committed at `now`, and the window that binds it;
    /// `None` when no window caps the agent.
    fn room(&self, now: OffsetDateTime) -> Option<(Money, Window)> {
        self.account.remaining(&self.limits, now)
    }
}

fn usd(amount: &str) -> Money {
    Money::parse_usd(amount).expect("amounts in this example are valid literals")
}

fn agent(n: u128) -> AgentId {
    AgentId::from_uuid(Uuid::from_u128(n))
}

fn main() -> Result<(), Box<dyn Error>> {
    // The lower of the profile's budget and the tenant's cap is enforced.
    let limits = EnforcedLimits::enforce(Some(usd("10")), Some(usd("200")), Some(usd("8")), None);
    assert_eq!(limits.daily, Some(usd("8")));
    let mut parent = Budget::allocate(agent(1), limits);
    println!("allocated 8 USD a day: the profile asks for 10, the tenant caps the agent at 8");

    let now = datetime!(2026-03-10 09:00 UTC);
    let call = HoldId(Uuid::from_u128(100));
    parent.hold(call, usd("3"), datetime!(2026-03-10 09:15 UTC), now)?;
    assert_eq!(parent.room(now), Some((usd("5"), Window::Day)));
    println!("held 3 USD for a call whose cost is not known yet: 5 USD left");

    let now = datetime!(2026-03-10 09:05 UTC);
    parent.capture(call, usd("2.25"), now)?;
    assert_eq!(parent.room(now), Some((usd("5.75"), Window::Day)));
    println!("captured 2.25 USD of the hold, the rest is freed: 5.75 USD left");

    let now = datetime!(2026-03-10 10:00 UTC);
    parent.spend(usd("1.75"), now)?;
    assert_eq!(parent.account.spent(Window::Day, now), usd("4"));
    assert_eq!(parent.room(now), Some((usd("4"), Window::Day)));
    println!("spent 1.75 USD directly: 4 USD spent today, 4 USD left");

    let refused = parent
        .spend(usd("5"), now)
        .expect_err("5 USD is past the limit");
    assert_eq!(
        refused,
        LedgerError::InsufficientBudget {
            window: Window::Day,
            requested: usd("5"),
            available: usd("4"),
        }
    );
    assert_eq!(parent.entries.len(), 3, "a refusal appends nothing");
    println!("refused a 5 USD spend: {refused}");

    // The child has no limits of its own: its allocation is what binds it.
    let now = datetime!(2026-03-10 11:00 UTC);
    let unlimited = EnforcedLimits::enforce(None, None, None, None);
    let mut child = parent.delegate(agent(2), usd("3"), unlimited, now)?;
    assert_eq!(parent.room(now), Some((usd("1"), Window::Day)));
    assert_eq!(child.room(now), Some((usd("3"), Window::Allocation)));
    println!("delegated 3 USD to a child: the parent has 1 USD left, the child 3 USD");

    let now = datetime!(2026-03-10 11:30 UTC);
    child.spend(usd("1.2"), now)?;
    let unfinished = HoldId(Uuid::from_u128(200));
    child.hold(unfinished, usd("0.5"), datetime!(2026-03-10 13:00 UTC), now)?;
    println!("the child spent 1.2 USD and holds 0.5 USD for a call still running");

    // Settling releases the child's open hold, so its 0.5 USD goes back too.
    let now = datetime!(2026-03-10 12:00 UTC);
    let refunded = parent.settle(&mut child, now)?;
    assert_eq!(refunded, usd("1.8"));
    assert!(child.account.is_settled());
    assert_eq!(parent.room(now), Some((usd("2.8"), Window::Day)));
    println!("settled the child: {refunded} USD refunded, the parent has 2.8 USD left");

    let refused = child
        .spend(usd("0.01"), now)
        .expect_err("a settled child has no room");
    assert_eq!(
        refused,
        LedgerError::InsufficientBudget {
            window: Window::Allocation,
            requested: usd("0.01"),
            available: Money::ZERO,
        }
    );
    println!("a settled child can spend nothing more: {refused}");

    // Balances are never stored: the entries alone rebuild them, and each
    // transfer appears on both sides.
    let rebuilt = Account::replay(&parent.entries)?;
    assert_eq!(rebuilt.remaining(&limits, now), parent.room(now));
    let both_logs = (parent.entries.iter().map(|entry| (parent.id, entry)))
        .chain(child.entries.iter().map(|entry| (child.id, entry)));
    assert_eq!(verify_transfers(both_logs), Ok(()));
    println!(
        "replayed {} parent entries to the same balance; transfers balance",
        parent.entries.len()
    );

    let tomorrow = datetime!(2026-03-11 00:00 UTC);
    assert_eq!(parent.room(tomorrow), Some((usd("8"), Window::Day)));
    println!("at UTC midnight a new daily window opens: 8 USD left");
    Ok(())
}
