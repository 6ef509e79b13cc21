use agentry_domain::LifecycleState::{
    self, Active, Provisioned, Quarantined, Suspended, Terminated,
};
use agentry_domain::{AgentOrigin, AgentRecord};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The transitions an operator may request (DESIGN.md §2, seed 001's table
/// plus `provisioned`). A provisioned agent may also be quarantined or
/// suspended before its first bootstrap: seed 001's table has no
/// `provisioned`, so a client that creates a profile and then quarantines
/// it (the seed's lifecycle example) must not be refused. Anything not listed is refused with
/// [`LifecycleError::InvalidTransition`], including a move to the current
/// state: a request that changes nothing is a client mistake worth telling.
const REQUESTABLE: &[(LifecycleState, &[LifecycleState])] = &[
    (Provisioned, &[Active, Quarantined, Suspended, Terminated]),
    (Active, &[Quarantined, Suspended]),
    (Quarantined, &[Active, Suspended]),
    (Suspended, &[Active, Terminated]),
    (Terminated, &[]),
];

/// The states an operator may move an agent in `from` to.
pub fn allowed_targets(from: LifecycleState) -> &'static [LifecycleState] {
    REQUESTABLE
        .iter()
        .find(|(state, _)| *state == from)
        .map_or(&[], |(_, targets)| targets)
}

/// Why an agent was terminated without an operator walking it through the
/// table. These terminations apply from any live state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminationReason {
    /// Registry revoke (seed 004): every credential dies at once.
    Revoked,
    /// A delegation TTL ran out (seed 001's `ttl_seconds`).
    Expired,
    /// The parent reclaimed it through `DELETE /v1/agent/sub-agents/...`, or
    /// an ancestor was reclaimed.
    ReclaimedByParent,
    /// An operator terminated it through the lifecycle endpoint (after the
    /// table allowed the move); its sub-agents go with it.
    Operator,
}

/// What caused a lifecycle change, for the history and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "reason")]
pub enum TransitionCause {
    /// An operator asked for it through the lifecycle endpoint.
    Requested,
    /// Bootstrap activated a provisioned agent.
    Bootstrap,
    Forced(TerminationReason),
}

/// One change of state, to be persisted as lifecycle history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub from: LifecycleState,
    pub to: LifecycleState,
    pub cause: TransitionCause,
    pub at: OffsetDateTime,
}

impl LifecycleEvent {
    /// Whether every credential issued before this change must stop
    /// working: true when the agent is terminated, whatever the cause.
    pub fn retires_credentials(&self) -> bool {
        self.to == Terminated
    }

    /// When this change revokes the agent in seed 004's terms (its
    /// `revokedAt`): at every termination, whatever the cause (a registry
    /// revoke, an operator's move, a reclaim by a parent or an ancestor, an
    /// expiry), since the registry's `status` is `revoked` exactly when the
    /// agent is terminated.
    pub fn revoked_at(&self) -> Option<OffsetDateTime> {
        (self.to == Terminated).then_some(self.at)
    }
}

/// Why a lifecycle change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("an agent cannot go from {from} to {to}; from {from} it may go to: {}", list(allowed_targets(*from)))]
    InvalidTransition {
        from: LifecycleState,
        to: LifecycleState,
    },
    #[error("the agent is already terminated")]
    AlreadyTerminated,
    /// Bootstrap refuses agents an operator has stopped (seed 000: suspended
    /// or terminated agents get 403, not a fresh JWT).
    #[error("a {0} agent cannot be bootstrapped")]
    CannotBootstrap(LifecycleState),
}

fn list(states: &[LifecycleState]) -> String {
    if states.is_empty() {
        return "nothing (terminated is final)".to_owned();
    }
    states
        .iter()
        .map(|state| state.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The state an agent starts in, by the route that made it. A bootstrap's
/// agent and a profile made through seed 001's API wait `provisioned` until
/// a bootstrap activates them (a bootstrap does so in the same call, and
/// only once the agent's limits entry is written); an agent the registry,
/// a delegation, a workspace or a machine makes acts at once, because its
/// maker answers it with working credentials.
pub const fn birth_state(origin: AgentOrigin) -> LifecycleState {
    match origin {
        AgentOrigin::Bootstrap | AgentOrigin::Api => Provisioned,
        AgentOrigin::Delegation
        | AgentOrigin::Registry
        | AgentOrigin::Workspace
        | AgentOrigin::Machine => Active,
    }
}

/// A change of lifecycle someone asks for; [`Lifecycle::apply`] judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleCommand {
    /// An operator's move, checked against the table.
    Request(LifecycleState),
    /// A bootstrap's activation of a provisioned agent.
    Bootstrap,
    /// A termination that does not walk the table (revoke, reclaim, expiry).
    Terminate(TerminationReason),
}

/// An agent's lifecycle: its state and, for delegated agents, when it expires.
///
/// Made only by [`Lifecycle::born`] (a new agent) or [`Lifecycle::restored`]
/// (one read back from storage); every later state comes from a decision
/// of this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    state: LifecycleState,
    expires_at: Option<OffsetDateTime>,
}

impl Lifecycle {
    /// A new agent's lifecycle: [`birth_state`] of its origin.
    pub const fn born(origin: AgentOrigin, expires_at: Option<OffsetDateTime>) -> Self {
        Self {
            state: birth_state(origin),
            expires_at,
        }
    }

    /// The lifecycle of a stored agent, as the decisions of this type left
    /// it. Not a way to start an agent in a chosen state.
    pub const fn restored(state: LifecycleState, expires_at: Option<OffsetDateTime>) -> Self {
        Self { state, expires_at }
    }

    /// The lifecycle of `agent` as it is stored.
    pub const fn of(agent: &AgentRecord) -> Self {
        Self::restored(agent.lifecycle_state, agent.expires_at)
    }

    pub const fn state(&self) -> LifecycleState {
        self.state
    }

    pub const fn expires_at(&self) -> Option<OffsetDateTime> {
        self.expires_at
    }

    /// Past its expiry; expired agents are treated as terminated even before
    /// the reaper has written it down.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at <= now)
    }

    /// What `command` does to this lifecycle at `now`: the new lifecycle
    /// and its event, `None` when there is nothing to record (a bootstrap
    /// of an agent already active), or the refusal.
    pub fn apply(
        &self,
        command: LifecycleCommand,
        now: OffsetDateTime,
    ) -> Result<Option<(Lifecycle, LifecycleEvent)>, LifecycleError> {
        match command {
            LifecycleCommand::Request(to) => self.request(to, now).map(Some),
            LifecycleCommand::Bootstrap => self.bootstrap(now),
            LifecycleCommand::Terminate(reason) => self.terminate(reason, now).map(Some),
        }
    }

    /// An operator's request to move to `to`, checked against the table.
    pub fn request(
        &self,
        to: LifecycleState,
        now: OffsetDateTime,
    ) -> Result<(Lifecycle, LifecycleEvent), LifecycleError> {
        if !allowed_targets(self.state).contains(&to) {
            return Err(LifecycleError::InvalidTransition {
                from: self.state,
                to,
            });
        }
        Ok(self.move_to(to, TransitionCause::Requested, now))
    }

    /// Bootstrap of an agent that already has a profile: a provisioned agent
    /// becomes active, an active or quarantined one stays as it is (`None`:
    /// nothing to record), a suspended, terminated or expired one is refused.
    pub fn bootstrap(
        &self,
        now: OffsetDateTime,
    ) -> Result<Option<(Lifecycle, LifecycleEvent)>, LifecycleError> {
        if self.is_expired(now) {
            return Err(LifecycleError::CannotBootstrap(Terminated));
        }
        match self.state {
            Provisioned => Ok(Some(self.move_to(Active, TransitionCause::Bootstrap, now))),
            Active | Quarantined => Ok(None),
            Suspended | Terminated => Err(LifecycleError::CannotBootstrap(self.state)),
        }
    }

    /// Revocation, expiry or reclaim: terminates from any live state.
    pub fn terminate(
        &self,
        reason: TerminationReason,
        now: OffsetDateTime,
    ) -> Result<(Lifecycle, LifecycleEvent), LifecycleError> {
        if self.state == Terminated {
            return Err(LifecycleError::AlreadyTerminated);
        }
        Ok(self.move_to(Terminated, TransitionCause::Forced(reason), now))
    }

    /// What the reaper does with this agent at `now`: terminate it when it
    /// has expired and is still live, otherwise nothing.
    pub fn reap(&self, now: OffsetDateTime) -> Option<(Lifecycle, LifecycleEvent)> {
        if self.is_expired(now) && self.state != Terminated {
            Some(self.move_to(
                Terminated,
                TransitionCause::Forced(TerminationReason::Expired),
                now,
            ))
        } else {
            None
        }
    }

    fn move_to(
        &self,
        to: LifecycleState,
        cause: TransitionCause,
        now: OffsetDateTime,
    ) -> (Lifecycle, LifecycleEvent) {
        let event = LifecycleEvent {
            from: self.state,
            to,
            cause,
            at: now,
        };
        (Lifecycle { state: to, ..*self }, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-10 12:00 UTC);

    fn at(state: LifecycleState) -> Lifecycle {
        Lifecycle::restored(state, None)
    }

    #[test]
    fn a_command_is_the_decision_it_names() {
        let provisioned = at(Provisioned);
        assert_eq!(
            provisioned.apply(LifecycleCommand::Bootstrap, NOW),
            provisioned.bootstrap(NOW)
        );
        assert_eq!(
            provisioned.apply(LifecycleCommand::Request(Suspended), NOW),
            provisioned.request(Suspended, NOW).map(Some)
        );
        let revoke = LifecycleCommand::Terminate(TerminationReason::Revoked);
        assert_eq!(
            at(Active).apply(revoke, NOW),
            at(Active)
                .terminate(TerminationReason::Revoked, NOW)
                .map(Some)
        );
        assert_eq!(
            at(Terminated).apply(revoke, NOW),
            Err(LifecycleError::AlreadyTerminated)
        );
        assert_eq!(at(Active).apply(LifecycleCommand::Bootstrap, NOW), Ok(None));
    }

    #[test]
    fn only_agents_a_bootstrap_will_activate_are_born_provisioned() {
        for origin in AgentOrigin::ALL {
            let born = Lifecycle::born(origin, None);
            let waits = matches!(origin, AgentOrigin::Bootstrap | AgentOrigin::Api);
            assert_eq!(
                born.state(),
                if waits { Provisioned } else { Active },
                "{origin}"
            );
            // Every birth state is live, and a bootstrap may follow it.
            assert!(born.bootstrap(NOW).is_ok(), "{origin}");
        }
    }

    #[test]
    fn the_table_of_seed_001_and_design_holds() {
        let expected = [
            (
                Provisioned,
                vec![Active, Quarantined, Suspended, Terminated],
            ),
            (Active, vec![Quarantined, Suspended]),
            (Quarantined, vec![Active, Suspended]),
            (Suspended, vec![Active, Terminated]),
            (Terminated, vec![]),
        ];
        for (from, targets) in expected {
            for to in LifecycleState::ALL {
                let outcome = at(from).request(to, NOW);
                if targets.contains(&to) {
                    let (next, event) = outcome.unwrap();
                    assert_eq!(next.state, to);
                    assert_eq!((event.from, event.to), (from, to));
                    assert_eq!(event.cause, TransitionCause::Requested);
                } else {
                    assert_eq!(
                        outcome.unwrap_err(),
                        LifecycleError::InvalidTransition { from, to },
                        "{from} -> {to} must be refused"
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_transition_message_names_the_way_out() {
        let error = at(Active).request(Terminated, NOW).unwrap_err();
        assert_eq!(
            error.to_string(),
            "an agent cannot go from active to terminated; from active it may go to: quarantined, suspended"
        );
        let error = at(Terminated).request(Active, NOW).unwrap_err();
        assert!(error.to_string().contains("terminated is final"));
    }

    #[test]
    fn bootstrap_activates_provisioned_and_refuses_stopped_agents() {
        let (next, event) = at(Provisioned).bootstrap(NOW).unwrap().unwrap();
        assert_eq!(next.state, Active);
        assert_eq!(event.cause, TransitionCause::Bootstrap);
        assert_eq!(at(Active).bootstrap(NOW), Ok(None));
        assert_eq!(at(Quarantined).bootstrap(NOW), Ok(None));
        assert_eq!(
            at(Suspended).bootstrap(NOW),
            Err(LifecycleError::CannotBootstrap(Suspended))
        );
        assert_eq!(
            at(Terminated).bootstrap(NOW),
            Err(LifecycleError::CannotBootstrap(Terminated))
        );
        let expired = Lifecycle::restored(Active, Some(NOW));
        assert_eq!(
            expired.bootstrap(NOW),
            Err(LifecycleError::CannotBootstrap(Terminated))
        );
    }

    #[test]
    fn forced_termination_works_from_every_live_state_once() {
        for from in [Provisioned, Active, Quarantined, Suspended] {
            let (next, event) = at(from).terminate(TerminationReason::Revoked, NOW).unwrap();
            assert_eq!(next.state, Terminated);
            assert_eq!(
                event.cause,
                TransitionCause::Forced(TerminationReason::Revoked)
            );
            assert_eq!(
                next.terminate(TerminationReason::Revoked, NOW),
                Err(LifecycleError::AlreadyTerminated)
            );
        }
    }

    #[test]
    fn every_termination_retires_credentials_and_revokes() {
        let (_, revoked) = at(Active)
            .terminate(TerminationReason::Revoked, NOW)
            .unwrap();
        assert!(revoked.retires_credentials());
        assert_eq!(revoked.revoked_at(), Some(NOW));
        for reason in [
            TerminationReason::ReclaimedByParent,
            TerminationReason::Expired,
            TerminationReason::Operator,
        ] {
            let (_, terminated) = at(Active).terminate(reason, NOW).unwrap();
            assert!(terminated.retires_credentials(), "{reason:?}");
            assert_eq!(terminated.revoked_at(), Some(NOW), "{reason:?}");
        }
        let (_, requested) = at(Suspended).request(Terminated, NOW).unwrap();
        assert_eq!(requested.revoked_at(), Some(NOW));
        let (_, reaped) = Lifecycle::restored(Active, Some(NOW)).reap(NOW).unwrap();
        assert_eq!(reaped.revoked_at(), Some(NOW));
        let (_, suspended) = at(Active).request(Suspended, NOW).unwrap();
        assert!(!suspended.retires_credentials());
        assert_eq!(suspended.revoked_at(), None);
    }

    #[test]
    fn the_reaper_takes_expired_live_agents_only() {
        let expires_at = NOW + Duration::hours(1);
        let child = Lifecycle::born(AgentOrigin::Delegation, Some(expires_at));
        assert!(child.reap(NOW).is_none());
        assert!(child.reap(expires_at - Duration::nanoseconds(1)).is_none());
        let (next, event) = child.reap(expires_at).unwrap();
        assert_eq!(next.state, Terminated);
        assert_eq!(
            event.cause,
            TransitionCause::Forced(TerminationReason::Expired)
        );
        assert!(next.reap(expires_at).is_none());
        assert!(at(Active).reap(NOW + Duration::days(10_000)).is_none());
    }

    fn any_state() -> impl Strategy<Value = LifecycleState> {
        proptest::sample::select(LifecycleState::ALL.to_vec())
    }

    /// DESIGN.md §2 written out independently of `REQUESTABLE`.
    const REFERENCE: &[(LifecycleState, LifecycleState)] = &[
        (Provisioned, Active),
        (Provisioned, Quarantined),
        (Provisioned, Suspended),
        (Provisioned, Terminated),
        (Active, Quarantined),
        (Active, Suspended),
        (Quarantined, Active),
        (Quarantined, Suspended),
        (Suspended, Active),
        (Suspended, Terminated),
    ];

    #[derive(Debug, Clone)]
    enum Step {
        Request(LifecycleState),
        Bootstrap,
        Terminate,
        Reap(i64),
    }

    fn any_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => any_state().prop_map(Step::Request),
            1 => Just(Step::Bootstrap),
            1 => Just(Step::Terminate),
            1 => (0i64..7200).prop_map(Step::Reap),
        ]
    }

    proptest! {
        /// Random requests never leave `terminated`, every accepted move is in
        /// the table (or a forced termination), and the event always describes
        /// the move that happened.
        #[test]
        fn random_walks_respect_the_table(
            start in any_state(),
            ttl in proptest::option::of(0i64..3600),
            steps in proptest::collection::vec(any_step(), 0..40),
        ) {
            let mut lifecycle = Lifecycle::restored(start, ttl.map(|s| NOW + Duration::seconds(s)));
            for step in steps {
                let before = lifecycle;
                let outcome = match step {
                    Step::Request(to) => lifecycle.request(to, NOW).ok(),
                    Step::Bootstrap => lifecycle.bootstrap(NOW).ok().flatten(),
                    Step::Terminate => lifecycle.terminate(TerminationReason::Revoked, NOW).ok(),
                    Step::Reap(offset) => lifecycle.reap(NOW + Duration::seconds(offset)),
                };
                if let Some((next, event)) = outcome {
                    prop_assert_eq!(event.from, before.state);
                    prop_assert_eq!(event.to, next.state);
                    prop_assert_eq!(next.expires_at, before.expires_at);
                    match event.cause {
                        TransitionCause::Requested => {
                            prop_assert!(
                                REFERENCE.contains(&(before.state, next.state)),
                                "{} -> {} is not in the design's table", before.state, next.state
                            );
                        }
                        TransitionCause::Bootstrap => {
                            prop_assert_eq!((before.state, next.state), (Provisioned, Active));
                        }
                        TransitionCause::Forced(_) => {
                            prop_assert_eq!(next.state, Terminated);
                        }
                    }
                    prop_assert_ne!(before.state, Terminated, "left terminated");
                    lifecycle = next;
                }
            }
        }
    }
}
