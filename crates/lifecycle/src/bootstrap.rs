//! Seed 000's bootstrap of an agent that already exists: who may bootstrap
//! it, and what the bootstrap does to its lifecycle.

use agentry_domain::{AgentOrigin, ApiKeyRole};
use time::OffsetDateTime;

use crate::{Lifecycle, LifecycleError, LifecycleEvent};

/// Why an existing agent is not bootstrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapRefusal {
    /// The lifecycle forbids it (suspended, terminated, expired): seed 000's
    /// 403, whoever made the agent.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// A delegated child belongs to its parent, which holds its credentials.
    #[error("the agent was created by delegation; its parent holds its credentials")]
    DelegatedChild,
    /// A provisioner's key "grants provisioning authority, not runtime
    /// access" (seed 000): it answers only for agents a bootstrap made.
    #[error("the agent came from the {0} route; a provisioner key may not take it over")]
    NotMadeByBootstrap(AgentOrigin),
}

/// What a caller with a key of `caller` role may get by bootstrapping an
/// existing agent at `now`, judged in seed 000's order (the lifecycle
/// first, then whose the agent is): the activation to record (`None` when
/// the agent is already active), or the refusal. Admin and operator keys
/// may activate agents any route made, but never a delegated child.
pub fn repeat_bootstrap(
    lifecycle: &Lifecycle,
    delegated: bool,
    origin: AgentOrigin,
    caller: ApiKeyRole,
    now: OffsetDateTime,
) -> Result<Option<(Lifecycle, LifecycleEvent)>, BootstrapRefusal> {
    let activation = lifecycle.bootstrap(now)?;
    if delegated {
        return Err(BootstrapRefusal::DelegatedChild);
    }
    may_take_over(origin, caller)?;
    Ok(activation)
}

/// Whether a key of `caller` role may answer for an agent of `origin` at
/// all (the part of [`repeat_bootstrap`] a cached, already active agent
/// still needs).
pub fn may_take_over(origin: AgentOrigin, caller: ApiKeyRole) -> Result<(), BootstrapRefusal> {
    if caller == ApiKeyRole::Provisioner && origin != AgentOrigin::Bootstrap {
        return Err(BootstrapRefusal::NotMadeByBootstrap(origin));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentry_domain::LifecycleState::{Active, Provisioned, Suspended};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-10 12:00 UTC);

    #[test]
    fn the_lifecycle_speaks_first_then_whose_the_agent_is() {
        let suspended = Lifecycle::restored(Suspended, None);
        assert!(matches!(
            repeat_bootstrap(
                &suspended,
                true,
                AgentOrigin::Api,
                ApiKeyRole::Provisioner,
                NOW
            ),
            Err(BootstrapRefusal::Lifecycle(_))
        ));
        let active = Lifecycle::restored(Active, None);
        assert_eq!(
            repeat_bootstrap(
                &active,
                true,
                AgentOrigin::Delegation,
                ApiKeyRole::Admin,
                NOW
            ),
            Err(BootstrapRefusal::DelegatedChild)
        );
        assert_eq!(
            repeat_bootstrap(
                &active,
                false,
                AgentOrigin::Registry,
                ApiKeyRole::Provisioner,
                NOW
            ),
            Err(BootstrapRefusal::NotMadeByBootstrap(AgentOrigin::Registry))
        );
    }

    #[test]
    fn an_operator_activates_what_a_provisioner_may_only_repeat() {
        let profile = Lifecycle::born(AgentOrigin::Api, None);
        assert_eq!(profile.state(), Provisioned);
        let activated =
            repeat_bootstrap(&profile, false, AgentOrigin::Api, ApiKeyRole::Operator, NOW).unwrap();
        assert_eq!(activated.map(|(next, _)| next.state()), Some(Active));
        let booted = Lifecycle::restored(Active, None);
        assert_eq!(
            repeat_bootstrap(
                &booted,
                false,
                AgentOrigin::Bootstrap,
                ApiKeyRole::Provisioner,
                NOW
            ),
            Ok(None)
        );
        for role in ApiKeyRole::ALL {
            let allowed = may_take_over(AgentOrigin::Api, role).is_ok();
            assert_eq!(allowed, role != ApiKeyRole::Provisioner, "{role}");
        }
    }
}
