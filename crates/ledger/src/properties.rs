//! Property tests of the ledger's invariants over random sequences of
//! operations on a small family of agents: a root agent and the children
//! (and grandchildren) it delegates to.

use agentry_domain::{AgentId, Money};
use proptest::prelude::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::{Account, EnforcedLimits, Entry, HoldId, LedgerError, Window, verify_transfers};

#[derive(Debug, Clone)]
enum Op {
    Spend {
        agent: usize,
        micros: i64,
    },
    Hold {
        agent: usize,
        micros: i64,
        ttl_seconds: i64,
    },
    Capture {
        agent: usize,
        hold: usize,
        micros: i64,
    },
    Release {
        agent: usize,
        hold: usize,
    },
    Delegate {
        parent: usize,
        micros: i64,
    },
    Settle {
        agent: usize,
    },
    Advance {
        seconds: i64,
    },
}

fn any_op() -> impl Strategy<Value = Op> {
    let agent = 0usize..6;
    let micros = 1i64..3_000_000;
    prop_oneof![
        4 => (agent.clone(), micros.clone()).prop_map(|(agent, micros)| Op::Spend { agent, micros }),
        2 => (agent.clone(), micros.clone(), 1i64..200_000)
            .prop_map(|(agent, micros, ttl_seconds)| Op::Hold { agent, micros, ttl_seconds }),
        2 => (agent.clone(), 0usize..4, 0i64..3_000_000)
            .prop_map(|(agent, hold, micros)| Op::Capture { agent, hold, micros }),
        1 => (agent.clone(), 0usize..4).prop_map(|(agent, hold)| Op::Release { agent, hold }),
        2 => (agent.clone(), micros).prop_map(|(parent, micros)| Op::Delegate { parent, micros }),
        1 => agent.prop_map(|agent| Op::Settle { agent }),
        1 => (0i64..40_000).prop_map(|seconds| Op::Advance { seconds }),
    ]
}

struct Member {
    id: AgentId,
    account: Account,
    limits: EnforcedLimits,
    entries: Vec<Entry>,
    holds: Vec<HoldId>,
    delegated_at: Option<OffsetDateTime>,
}

struct Family {
    members: Vec<Member>,
    now: OffsetDateTime,
    next_id: u128,
}

impl Family {
    fn new(daily: Money, monthly: Money, now: OffsetDateTime) -> Self {
        Self {
            members: vec![Member {
                id: AgentId::from_uuid(Uuid::from_u128(1)),
                account: Account::new(),
                limits: EnforcedLimits::enforce(Some(daily), Some(monthly), None, None),
                entries: Vec::new(),
                holds: Vec::new(),
                delegated_at: None,
            }],
            now,
            next_id: 2,
        }
    }

    fn member(&self, index: usize) -> usize {
        index % self.members.len()
    }

    fn record(&mut self, index: usize, entry: Entry) {
        let member = &mut self.members[index];
        member
            .account
            .record(&entry)
            .expect("an entry the account produced replays");
        member.entries.push(entry);
    }

    fn remaining(&self, index: usize) -> Money {
        let member = &self.members[index];
        member
            .account
            .remaining(&member.limits, self.now)
            .map_or(Money::MAX, |(remaining, _)| remaining)
    }

    fn parent_index(&self, index: usize) -> Option<usize> {
        let parent = self.members[index].account.parent()?;
        self.members.iter().position(|member| member.id == parent)
    }
}

fn money(micros: i64) -> Money {
    Money::from_micros(micros).expect("strategy yields valid amounts")
}

/// Runs one operation and checks the invariants that concern that
/// operation; returns an error message on a broken invariant.
fn step(family: &mut Family, op: &Op) -> Result<(), TestCaseError> {
    let now = family.now;
    match *op {
        Op::Spend { agent, micros } => {
            let i = family.member(agent);
            let member = &family.members[i];
            if let Ok(entry) = member.account.spend(money(micros), &member.limits, now) {
                family.record(i, entry);
            }
        }
        Op::Hold {
            agent,
            micros,
            ttl_seconds,
        } => {
            let i = family.member(agent);
            let hold = HoldId(Uuid::from_u128(family.next_id));
            family.next_id += 1;
            let member = &family.members[i];
            let expires_at = now + Duration::seconds(ttl_seconds);
            if let Ok(entry) =
                member
                    .account
                    .hold(hold, money(micros), expires_at, &member.limits, now)
            {
                family.record(i, entry);
                family.members[i].holds.push(hold);
            }
        }
        Op::Capture {
            agent,
            hold,
            micros,
        } => {
            let i = family.member(agent);
            if let Some(&hold) = family.members[i].holds.get(hold)
                && let Ok(entry) = family.members[i].account.capture(hold, money(micros), now)
            {
                family.record(i, entry);
            }
        }
        Op::Release { agent, hold } => {
            let i = family.member(agent);
            if let Some(&hold) = family.members[i].holds.get(hold)
                && let Ok(entry) = family.members[i].account.release(hold, now)
            {
                family.record(i, entry);
            }
        }
        Op::Delegate { parent, micros } => {
            let p = family.member(parent);
            if family.members[p].account.is_settled() {
                return Ok(());
            }
            let child = AgentId::from_uuid(Uuid::from_u128(family.next_id));
            family.next_id += 1;
            let before = family.remaining(p);
            let parent_member = &family.members[p];
            let amount = money(micros);
            match parent_member.account.delegate(
                parent_member.id,
                child,
                amount,
                &parent_member.limits,
                now,
            ) {
                Ok((slice, allocation)) => {
                    prop_assert!(
                        before
                            .checked_sub(amount)
                            .is_some_and(|left| left >= Money::CENT),
                        "parent kept less than a cent"
                    );
                    family.record(p, slice);
                    family.members.push(Member {
                        id: child,
                        account: Account::new(),
                        limits: EnforcedLimits::enforce(Some(amount), None, None, None),
                        entries: Vec::new(),
                        holds: Vec::new(),
                        delegated_at: Some(now),
                    });
                    let c = family.members.len() - 1;
                    family.record(c, allocation);
                    // Conservation: what the parent lost, the child holds.
                    let after = family.remaining(p);
                    let child_unspent = family.members[c].account.unspent_allocation(now);
                    prop_assert_eq!(after.checked_add(child_unspent), Some(before));
                }
                Err(LedgerError::InsufficientBudget { .. }) => {
                    prop_assert!(
                        before
                            .checked_sub(amount)
                            .is_none_or(|left| left < Money::CENT)
                    );
                }
                Err(other) => prop_assert!(false, "unexpected refusal {other:?}"),
            }
        }
        Op::Settle { agent } => {
            let c = family.member(agent);
            let Some(p) = family.parent_index(c) else {
                return Ok(());
            };
            let child = &family.members[c];
            let unspent = child.account.unspent_allocation(now);
            match child.account.settle(child.id, now) {
                Ok(settlement) => {
                    prop_assert_eq!(settlement.refunded, unspent);
                    let allocated: i64 = child
                        .entries
                        .iter()
                        .filter_map(|e| match e.kind {
                            crate::EntryKind::Allocation { amount, .. } => Some(amount.micros()),
                            _ => None,
                        })
                        .sum();
                    let spent = child.account.spent(Window::Allocation, now);
                    prop_assert!(
                        settlement.refunded.micros() <= allocated - spent.micros(),
                        "refund above the unspent allocation"
                    );
                    let same_day = child
                        .delegated_at
                        .is_some_and(|at| Window::Day.contains(at, now));
                    let parent_before = family.remaining(p);
                    for entry in settlement.child_entries {
                        family.record(c, entry);
                    }
                    family.record(p, settlement.parent_entry);
                    if same_day {
                        prop_assert_eq!(
                            parent_before.checked_add(settlement.refunded),
                            Some(family.remaining(p))
                        );
                    }
                    prop_assert_eq!(
                        family.members[c].account.unspent_allocation(now),
                        Money::ZERO
                    );
                }
                Err(LedgerError::AlreadySettled | LedgerError::OpenDelegations(_)) => {}
                Err(other) => prop_assert!(false, "unexpected refusal {other:?}"),
            }
        }
        Op::Advance { seconds } => {
            let later = now + Duration::seconds(seconds);
            let new_day = Window::Day.start(later) != Window::Day.start(now);
            let new_month = Window::Month.start(later) != Window::Month.start(now);
            family.now = later;
            for member in &family.members {
                if new_day {
                    prop_assert_eq!(member.account.committed(Window::Day, later), Money::ZERO);
                }
                if new_month {
                    prop_assert_eq!(member.account.committed(Window::Month, later), Money::ZERO);
                }
            }
        }
    }
    Ok(())
}

/// An independent reading of the entries, written from the rule in the
/// `Account` docs rather than from its code: money counts in the window of
/// the moment it was committed (a capture at its hold's time, a refund
/// against its slice's time).
fn reference_committed(entries: &[Entry], window: Window, now: OffsetDateTime) -> i64 {
    use crate::EntryKind::*;
    use std::collections::HashMap;
    let mut holds: HashMap<HoldId, (OffsetDateTime, i64, OffsetDateTime, bool)> = HashMap::new();
    let mut slices: HashMap<AgentId, OffsetDateTime> = HashMap::new();
    let mut total = 0i64;
    for entry in entries {
        match entry.kind {
            Spend { amount } if window.contains(entry.at, now) => total += amount.micros(),
            Hold {
                hold,
                amount,
                expires_at,
            } => {
                holds.insert(hold, (entry.at, amount.micros(), expires_at, true));
            }
            Capture { hold, amount } => {
                let held = holds.get_mut(&hold).expect("capture of a known hold");
                held.3 = false;
                if window.contains(held.0, now) {
                    total += amount.micros();
                }
            }
            Release { hold } => holds.get_mut(&hold).expect("release of a known hold").3 = false,
            DelegationSlice { child, amount } => {
                slices.insert(child, entry.at);
                if window.contains(entry.at, now) {
                    total += amount.micros();
                }
            }
            RefundFromChild { child, amount } if window.contains(slices[&child], now) => {
                total -= amount.micros();
            }
            _ => {}
        }
    }
    total
        + holds
            .values()
            .filter(|(at, _, expires_at, open)| {
                *open && *expires_at > now && window.contains(*at, now)
            })
            .map(|(_, amount, _, _)| amount)
            .sum::<i64>()
}

/// Money actually spent in `window` as of `now`, read the same way: spends
/// when they happen, captures at their hold's time.
fn reference_spent(entries: &[Entry], window: Window, now: OffsetDateTime) -> i64 {
    use crate::EntryKind::*;
    let mut held_at = std::collections::HashMap::new();
    let mut total = 0i64;
    for entry in entries {
        match entry.kind {
            Hold { hold, .. } => {
                held_at.insert(hold, entry.at);
            }
            Spend { amount } if window.contains(entry.at, now) => total += amount.micros(),
            Capture { hold, amount } if window.contains(held_at[&hold], now) => {
                total += amount.micros();
            }
            _ => {}
        }
    }
    total
}

fn check_limits(family: &Family) -> Result<(), TestCaseError> {
    let now = family.now;
    for member in &family.members {
        let account = &member.account;
        for window in [Window::Day, Window::Month, Window::Allocation] {
            prop_assert_eq!(
                account.committed(window, now).micros(),
                reference_committed(&member.entries, window, now),
                "committed money disagrees with the reference in {:?}",
                window
            );
            prop_assert_eq!(
                account.spent(window, now).micros(),
                reference_spent(&member.entries, window, now),
                "spent money disagrees with the reference in {:?}",
                window
            );
        }
        if let Some(daily) = member.limits.daily {
            prop_assert!(
                account.committed(Window::Day, now) <= daily,
                "daily limit passed"
            );
        }
        if let Some(monthly) = member.limits.monthly {
            prop_assert!(
                account.committed(Window::Month, now) <= monthly,
                "monthly limit passed"
            );
        }
        if account.parent().is_some() {
            let replayed = Account::replay(&member.entries).expect("entries replay");
            prop_assert_eq!(
                replayed.unspent_allocation(now),
                account.unspent_allocation(now)
            );
            prop_assert!(
                account.unspent_allocation(now) <= member.limits.daily.unwrap_or(Money::MAX)
            );
        }
    }
    let all = family
        .members
        .iter()
        .flat_map(|member| member.entries.iter().map(move |entry| (member.id, entry)));
    prop_assert!(verify_transfers(all).is_ok(), "transfers do not balance");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_ledger_keeps_its_invariants(
        daily in 1i64..10_000_000,
        monthly in 1i64..40_000_000,
        start_offset in 0i64..(40 * 86_400),
        ops in proptest::collection::vec(any_op(), 1..60),
    ) {
        let start = datetime!(2026-01-20 00:00 UTC) + Duration::seconds(start_offset);
        let mut family = Family::new(money(daily), money(monthly), start);
        for op in &ops {
            step(&mut family, op)?;
            check_limits(&family)?;
        }
    }
}

#[test]
fn verify_transfers_reports_a_one_sided_slice() {
    let now = datetime!(2026-03-10 12:00 UTC);
    let (parent, child) = (
        AgentId::from_uuid(Uuid::from_u128(1)),
        AgentId::from_uuid(Uuid::from_u128(2)),
    );
    let limits = EnforcedLimits::enforce(Some(Money::from_usd(5)), None, None, None);
    let (slice, allocation) = Account::new()
        .delegate(parent, child, Money::from_usd(1), &limits, now)
        .unwrap();
    assert!(verify_transfers([(parent, &slice), (child, &allocation)]).is_ok());
    let problems = verify_transfers([(parent, &slice)]).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].sent, Money::from_usd(1));
    assert_eq!(problems[0].received, Money::ZERO);
}
