use std::collections::HashMap;

use agentry_domain::{AgentId, Money};
use time::OffsetDateTime;
use uuid::Uuid;

/// Names a hold so it can be captured or released later. Chosen by the
/// caller (the store makes a UUID v7), since this crate has no randomness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldId(pub Uuid);

/// One movement of money on one agent's account. Entries are only ever
/// appended; every balance is a fold over them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "an entry moves no money until it is applied to the account or appended to the ledger"]
pub struct Entry {
    pub at: OffsetDateTime,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// Money spent, known at once.
    Spend { amount: Money },
    /// Money reserved for a cost learned later.
    Hold {
        hold: HoldId,
        amount: Money,
        expires_at: OffsetDateTime,
    },
    /// Part or all of a hold turned into a spend; the rest of the hold is
    /// freed by the same entry.
    Capture { hold: HoldId, amount: Money },
    /// A hold given back unused.
    Release { hold: HoldId },
    /// On the parent: budget sliced off to a delegated child.
    DelegationSlice { child: AgentId, amount: Money },
    /// On the child: the budget its parent sliced to it.
    Allocation { parent: AgentId, amount: Money },
    /// On the child: its unspent allocation returned when it ends.
    RefundToParent { parent: AgentId, amount: Money },
    /// On the parent: the counterpart of the child's `RefundToParent`.
    RefundFromChild { child: AgentId, amount: Money },
}

impl EntryKind {
    /// The amount the entry moves, zero for a release.
    pub fn amount(&self) -> Money {
        match self {
            EntryKind::Spend { amount }
            | EntryKind::Hold { amount, .. }
            | EntryKind::Capture { amount, .. }
            | EntryKind::DelegationSlice { amount, .. }
            | EntryKind::Allocation { amount, .. }
            | EntryKind::RefundToParent { amount, .. }
            | EntryKind::RefundFromChild { amount, .. } => *amount,
            EntryKind::Release { .. } => Money::ZERO,
        }
    }

    /// A stable name for storage and audit.
    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::Spend { .. } => "spend",
            EntryKind::Hold { .. } => "hold",
            EntryKind::Capture { .. } => "capture",
            EntryKind::Release { .. } => "release",
            EntryKind::DelegationSlice { .. } => "delegation_slice",
            EntryKind::Allocation { .. } => "allocation",
            EntryKind::RefundToParent { .. } => "refund_to_parent",
            EntryKind::RefundFromChild { .. } => "refund_from_child",
        }
    }
}

/// Money that left one account between a parent and a child and did not
/// arrive at the other, as found by [`verify_transfers`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "transfers between parent {parent} and child {child} do not balance: {kind} sent {sent} USD, received {received} USD"
)]
pub struct TransferImbalance {
    pub parent: AgentId,
    pub child: AgentId,
    pub kind: &'static str,
    pub sent: Money,
    pub received: Money,
}

/// Checks that every transfer between parent and child was written on both
/// sides: per pair, slices out of the parent equal allocations into the
/// child, and refunds out of the child equal refunds into the parent.
pub fn verify_transfers<'a>(
    entries: impl IntoIterator<Item = (AgentId, &'a Entry)>,
) -> Result<(), Vec<TransferImbalance>> {
    #[derive(Default)]
    struct Pair {
        sliced: i128,
        allocated: i128,
        refunded_out: i128,
        refunded_in: i128,
    }
    let mut pairs: HashMap<(AgentId, AgentId), Pair> = HashMap::new();
    for (owner, entry) in entries {
        let micros = i128::from(entry.kind.amount().micros());
        match entry.kind {
            EntryKind::DelegationSlice { child, .. } => {
                pairs.entry((owner, child)).or_default().sliced += micros;
            }
            EntryKind::Allocation { parent, .. } => {
                pairs.entry((parent, owner)).or_default().allocated += micros;
            }
            EntryKind::RefundToParent { parent, .. } => {
                pairs.entry((parent, owner)).or_default().refunded_out += micros;
            }
            EntryKind::RefundFromChild { child, .. } => {
                pairs.entry((owner, child)).or_default().refunded_in += micros;
            }
            _ => {}
        }
    }
    let as_money = |micros: i128| {
        i64::try_from(micros)
            .ok()
            .and_then(|m| Money::from_micros(m).ok())
            .unwrap_or(Money::MAX)
    };
    let mut problems = Vec::new();
    for ((parent, child), pair) in pairs {
        for (kind, sent, received) in [
            ("delegation", pair.sliced, pair.allocated),
            ("refund", pair.refunded_out, pair.refunded_in),
        ] {
            if sent != received {
                problems.push(TransferImbalance {
                    parent,
                    child,
                    kind,
                    sent: as_money(sent),
                    received: as_money(received),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
