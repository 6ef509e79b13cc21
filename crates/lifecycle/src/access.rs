use agentry_domain::LifecycleState;
use time::OffsetDateTime;

use crate::Lifecycle;

/// What an agent-authenticated request wants to do, as far as the lifecycle
/// cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestScope {
    /// Reading the caller's own profile, limits, status or anomalies.
    OwnState,
    /// Anything else: spending, delegating, acting on other objects.
    Other,
}

/// What an agent in a given state may do (DESIGN.md §2, enforcement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Full,
    /// Quarantined: may look at itself, nothing more.
    OwnStateOnly,
    Denied(Denial),
}

/// Why an agent's request is refused. `Suspended` maps to 402 Payment
/// Required (seed 000); every other denial to 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("the agent has not been activated yet; bootstrap it first")]
    NotActivated,
    #[error("the agent is quarantined and may only read its own state")]
    Quarantined,
    #[error("the agent is suspended")]
    Suspended,
    #[error("the agent is terminated")]
    Terminated,
    #[error("the agent has expired")]
    Expired,
}

impl Denial {
    pub fn is_payment_required(self) -> bool {
        self == Denial::Suspended
    }
}

impl Access {
    /// The decision for an agent with this lifecycle at `now`. Expiry wins
    /// over the stored state, so an agent past its TTL is cut off before the
    /// reaper has run.
    pub fn for_agent(lifecycle: &Lifecycle, now: OffsetDateTime) -> Access {
        if lifecycle.is_expired(now) && lifecycle.state() != LifecycleState::Terminated {
            return Access::Denied(Denial::Expired);
        }
        match lifecycle.state() {
            LifecycleState::Active => Access::Full,
            LifecycleState::Quarantined => Access::OwnStateOnly,
            LifecycleState::Suspended => Access::Denied(Denial::Suspended),
            LifecycleState::Terminated => Access::Denied(Denial::Terminated),
            LifecycleState::Provisioned => Access::Denied(Denial::NotActivated),
        }
    }

    pub fn permits(self, scope: RequestScope) -> Result<(), Denial> {
        match (self, scope) {
            (Access::Full, _) | (Access::OwnStateOnly, RequestScope::OwnState) => Ok(()),
            (Access::OwnStateOnly, RequestScope::Other) => Err(Denial::Quarantined),
            (Access::Denied(denial), _) => Err(denial),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleState::*;
    use agentry_domain::AgentOrigin;
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-10 12:00 UTC);

    fn decide(state: LifecycleState, scope: RequestScope) -> Result<(), Denial> {
        Access::for_agent(&Lifecycle::restored(state, None), NOW).permits(scope)
    }

    #[test]
    fn each_state_gets_the_decision_of_the_design() {
        use RequestScope::{Other, OwnState};
        assert_eq!(decide(Active, Other), Ok(()));
        assert_eq!(decide(Active, OwnState), Ok(()));
        assert_eq!(decide(Quarantined, OwnState), Ok(()));
        assert_eq!(decide(Quarantined, Other), Err(Denial::Quarantined));
        for scope in [Other, OwnState] {
            assert_eq!(decide(Suspended, scope), Err(Denial::Suspended));
            assert_eq!(decide(Terminated, scope), Err(Denial::Terminated));
            assert_eq!(decide(Provisioned, scope), Err(Denial::NotActivated));
        }
    }

    #[test]
    fn only_suspension_is_payment_required() {
        assert!(Denial::Suspended.is_payment_required());
        for denial in [
            Denial::NotActivated,
            Denial::Quarantined,
            Denial::Terminated,
            Denial::Expired,
        ] {
            assert!(!denial.is_payment_required());
        }
    }

    #[test]
    fn expiry_cuts_off_an_active_agent_at_its_deadline() {
        let expires_at = NOW + Duration::minutes(5);
        let child = Lifecycle::born(AgentOrigin::Delegation, Some(expires_at));
        assert_eq!(Access::for_agent(&child, NOW), Access::Full);
        assert_eq!(
            Access::for_agent(&child, expires_at),
            Access::Denied(Denial::Expired)
        );
        let reaped = Lifecycle::restored(Terminated, Some(expires_at));
        assert_eq!(
            Access::for_agent(&reaped, expires_at),
            Access::Denied(Denial::Terminated)
        );
    }
}
