//! Seed 001's delegation as a plan: whether a parent may delegate, what its
//! child may be given, what the child inherits, and when a repeated request
//! is the same delegation. The money (the slice of the parent's budget) is
//! the ledger's `Account::delegate`; this module decides everything else.

use agentry_domain::{AgentId, LifecycleState, Money, Role, TrustLevel};
use time::{Duration, OffsetDateTime};

/// The longest a delegated agent may live: a year, since delegated agents
/// are meant to be short-lived.
pub const MAX_DELEGATION_TTL_SECONDS: i64 = 365 * 86_400;

/// What of the parent a plan reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegatingParent {
    pub id: AgentId,
    pub role: Role,
    /// The parent's `can_delegate` (seed 001 keeps it in the metadata).
    pub can_delegate: bool,
    pub trust_level: TrustLevel,
    pub scopes: Vec<String>,
}

/// What the child is asked to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelegationAsk {
    pub role: Role,
    /// The budget sliced off the parent's; must be positive.
    pub allocation: Money,
    pub ttl_seconds: Option<i64>,
}

/// The child a delegation creates, apart from its name and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildTerms {
    pub parent: AgentId,
    pub role: Role,
    /// Its daily budget: the allocation.
    pub budget_daily: Money,
    pub expires_at: Option<OffsetDateTime>,
    /// Never more trusted than its parent.
    pub trust_level: TrustLevel,
    /// Never more scopes than its parent.
    pub scopes: Vec<String>,
}

/// Why a delegation is refused before any money moves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegationError {
    #[error("this agent's metadata does not allow delegation (can_delegate)")]
    NotAllowed,
    #[error("a {parent} may not create a {requested}")]
    RoleEscalation { parent: Role, requested: Role },
    #[error("ttl_seconds: must be 1 to {MAX_DELEGATION_TTL_SECONDS}")]
    Lifetime,
    #[error("budget_allocation_usd: a positive budget is required")]
    NoBudget,
}

impl DelegatingParent {
    /// Whether this parent may delegate at all: judged before its request
    /// is read.
    pub fn permits_delegation(&self) -> Result<(), DelegationError> {
        if self.can_delegate {
            Ok(())
        } else {
            Err(DelegationError::NotAllowed)
        }
    }

    /// The child `ask` makes of this parent at `now`.
    pub fn plan(
        &self,
        ask: &DelegationAsk,
        now: OffsetDateTime,
    ) -> Result<ChildTerms, DelegationError> {
        self.permits_delegation()?;
        let expires_at = child_expiry(ask.ttl_seconds, now)?;
        if ask.allocation.is_zero() {
            return Err(DelegationError::NoBudget);
        }
        if !self.role.may_grant(ask.role) {
            return Err(DelegationError::RoleEscalation {
                parent: self.role,
                requested: ask.role,
            });
        }
        Ok(ChildTerms {
            parent: self.id,
            role: ask.role,
            budget_daily: ask.allocation,
            expires_at,
            trust_level: self.trust_level,
            scopes: self.scopes.clone(),
        })
    }
}

/// When a child asked to live `ttl_seconds` from `now` expires (`None`:
/// it lives until reclaimed), if that lifetime is allowed.
pub fn child_expiry(
    ttl_seconds: Option<i64>,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, DelegationError> {
    match ttl_seconds {
        None => Ok(None),
        Some(ttl) if (1..=MAX_DELEGATION_TTL_SECONDS).contains(&ttl) => {
            Ok(Some(now + Duration::seconds(ttl)))
        }
        Some(_) => Err(DelegationError::Lifetime),
    }
}

/// Whether an agent that already holds the requested slug is this parent's
/// delegation asked again (answered like a repeat bootstrap, with a fresh
/// token): a live child of the same parent. Anything else is a conflict.
pub fn is_repeat_delegation(
    parent: AgentId,
    existing_parent: Option<AgentId>,
    existing_state: LifecycleState,
) -> bool {
    existing_parent == Some(parent) && existing_state != LifecycleState::Terminated
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-10 12:00 UTC);

    fn parent(role: Role, can_delegate: bool) -> DelegatingParent {
        DelegatingParent {
            id: AgentId::from_uuid(uuid::Uuid::from_u128(1)),
            role,
            can_delegate,
            trust_level: TrustLevel::Low,
            scopes: vec!["read:docs".into()],
        }
    }

    fn ask(role: Role, usd: u32, ttl_seconds: Option<i64>) -> DelegationAsk {
        DelegationAsk {
            role,
            allocation: Money::from_usd(usd),
            ttl_seconds,
        }
    }

    #[test]
    fn a_child_inherits_its_parents_trust_and_scopes_and_gets_its_slice() {
        let terms = parent(Role::Operator, true)
            .plan(&ask(Role::Agent, 3, Some(600)), NOW)
            .unwrap();
        assert_eq!(terms.budget_daily, Money::from_usd(3));
        assert_eq!(terms.expires_at, Some(NOW + Duration::minutes(10)));
        assert_eq!(terms.trust_level, TrustLevel::Low);
        assert_eq!(terms.scopes, ["read:docs"]);
    }

    #[test]
    fn refusals_name_their_reason() {
        let operator = parent(Role::Operator, true);
        assert_eq!(
            parent(Role::Admin, false).plan(&ask(Role::Agent, 1, None), NOW),
            Err(DelegationError::NotAllowed)
        );
        assert_eq!(
            operator.plan(&ask(Role::Agent, 0, None), NOW),
            Err(DelegationError::NoBudget)
        );
        assert_eq!(
            operator.plan(&ask(Role::Agent, 1, Some(0)), NOW),
            Err(DelegationError::Lifetime)
        );
        assert_eq!(
            operator.plan(
                &ask(Role::Agent, 1, Some(MAX_DELEGATION_TTL_SECONDS + 1)),
                NOW
            ),
            Err(DelegationError::Lifetime)
        );
        assert_eq!(
            operator.plan(&ask(Role::Admin, 1, None), NOW),
            Err(DelegationError::RoleEscalation {
                parent: Role::Operator,
                requested: Role::Admin
            })
        );
    }

    #[test]
    fn only_a_live_child_of_the_same_parent_is_a_repeat() {
        let me = AgentId::from_uuid(uuid::Uuid::from_u128(1));
        let other = AgentId::from_uuid(uuid::Uuid::from_u128(2));
        assert!(is_repeat_delegation(me, Some(me), LifecycleState::Active));
        assert!(is_repeat_delegation(
            me,
            Some(me),
            LifecycleState::Suspended
        ));
        assert!(!is_repeat_delegation(
            me,
            Some(me),
            LifecycleState::Terminated
        ));
        assert!(!is_repeat_delegation(
            me,
            Some(other),
            LifecycleState::Active
        ));
        assert!(!is_repeat_delegation(me, None, LifecycleState::Active));
    }

    fn any_role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::Agent), Just(Role::Operator), Just(Role::Admin)]
    }

    proptest! {
        /// No plan escalates: a child's role is at most its parent's, its
        /// trust and scopes are its parent's, and it never outlives the
        /// longest lifetime.
        #[test]
        fn no_plan_escalates(
            parent_role in any_role(),
            child_role in any_role(),
            usd in 0_u32..20,
            ttl in proptest::option::of(-10_i64..(MAX_DELEGATION_TTL_SECONDS + 10)),
        ) {
            let parent = parent(parent_role, true);
            if let Ok(terms) = parent.plan(&ask(child_role, usd, ttl), NOW) {
                prop_assert!(terms.role <= parent_role);
                prop_assert_eq!(terms.trust_level, parent.trust_level);
                prop_assert_eq!(&terms.scopes, &parent.scopes);
                prop_assert!(!terms.budget_daily.is_zero());
                prop_assert!(terms
                    .expires_at
                    .is_none_or(|at| at <= NOW + Duration::seconds(MAX_DELEGATION_TTL_SECONDS)));
            }
        }
    }
}
