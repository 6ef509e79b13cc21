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

/// How an agent proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCredential {
    /// A token, with the credential epoch it was issued in.
    Jwt(i64),
    ApiKey,
    /// A client certificate of the provisioning instance the agent is bound
    /// to: good for reading its own state only.
    MachineCertificate,
    /// The agent's own client certificate (`POST /v1/agent/auth/cert`),
    /// with the credential epoch it names. It stands for the agent as its
    /// token does, so it is judged as one: the same epoch check, the same
    /// access.
    AgentCertificate(i64),
}

impl AgentCredential {
    /// The credential epoch the credential was issued in, for the kinds
    /// that carry one; an API key is retired by deleting it instead.
    pub fn epoch(self) -> Option<i64> {
        match self {
            AgentCredential::Jwt(epoch) | AgentCredential::AgentCertificate(epoch) => Some(epoch),
            AgentCredential::ApiKey | AgentCredential::MachineCertificate => None,
        }
    }
}

/// Why an agent's credential is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The lifecycle stops the agent, whatever its credential.
    #[error(transparent)]
    Denied(#[from] Denial),
    /// A token or an agent certificate from before the agent's
    /// credentials were rotated or revoked.
    #[error("the credential was issued before the agent's credentials were last retired")]
    RetiredToken,
    /// A machine certificate asked for more than the agent's own state.
    #[error("a machine certificate only reads the agent's own state; use its token")]
    CertificateNotEnough,
    /// A certificate asked for a credential that would outlive it.
    #[error(
        "a certificate does not issue credentials (API keys, sub-agents, invites, other certificates); send the agent's token or its own API key"
    )]
    CertificateCannotIssue,
}

/// Whether a token issued in `token_epoch` still speaks for a subject
/// whose credentials are in `current_epoch`: only if nothing retired them
/// since (a rotation, a revocation, a logout moves the epoch on).
pub fn token_is_current(token_epoch: i64, current_epoch: i64) -> bool {
    token_epoch == current_epoch
}

/// Admits an agent's credential at `now`: the lifecycle speaks first (so a
/// terminated agent hears 403 and a suspended one 402 whatever its token),
/// then the epoch of a token or an agent certificate. Admission covers reading the agent's own state;
/// [`full_access`] decides anything more.
pub fn admit(
    lifecycle: &Lifecycle,
    current_epoch: i64,
    credential: AgentCredential,
    now: OffsetDateTime,
) -> Result<Access, AdmissionError> {
    let access = Access::for_agent(lifecycle, now);
    access.permits(RequestScope::OwnState)?;
    if let Some(epoch) = credential.epoch()
        && !token_is_current(epoch, current_epoch)
    {
        return Err(AdmissionError::RetiredToken);
    }
    Ok(access)
}

/// Whether an admitted agent may act beyond reading its own state: not
/// with a machine certificate, and not while its lifecycle limits it.
pub fn full_access(access: Access, credential: AgentCredential) -> Result<(), AdmissionError> {
    if credential == AgentCredential::MachineCertificate {
        return Err(AdmissionError::CertificateNotEnough);
    }
    Ok(access.permits(RequestScope::Other)?)
}

/// Whether an admitted agent's credential may issue new credentials: an
/// API key, a sub-agent with a token of its own, an invite, another
/// certificate. Only its token or its own API key may. A certificate is
/// bought with one of those and lives a few hours; what it issued would
/// outlive it and the credential behind it, so a leaked certificate could
/// mint a permanent foothold. It acts, spends and reads; it does not
/// mint.
pub fn may_issue_credentials(credential: AgentCredential) -> Result<(), AdmissionError> {
    match credential {
        AgentCredential::Jwt(_) | AgentCredential::ApiKey => Ok(()),
        AgentCredential::AgentCertificate(_) | AgentCredential::MachineCertificate => {
            Err(AdmissionError::CertificateCannotIssue)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleState::*;
    use agentry_domain::AgentOrigin;
    use proptest::prelude::*;
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
    fn the_lifecycle_speaks_before_the_token_and_a_retired_token_is_refused() {
        let active = Lifecycle::restored(Active, None);
        assert_eq!(
            admit(&active, 3, AgentCredential::Jwt(3), NOW),
            Ok(Access::Full)
        );
        assert_eq!(
            admit(&active, 3, AgentCredential::Jwt(2), NOW),
            Err(AdmissionError::RetiredToken)
        );
        let suspended = Lifecycle::restored(Suspended, None);
        assert_eq!(
            admit(&suspended, 3, AgentCredential::Jwt(2), NOW),
            Err(AdmissionError::Denied(Denial::Suspended)),
            "402 before the stale token"
        );
        assert_eq!(
            admit(&active, 3, AgentCredential::ApiKey, NOW),
            Ok(Access::Full)
        );
    }

    #[test]
    fn a_certificate_reads_its_agent_and_does_nothing_more() {
        let quarantined = Lifecycle::restored(Quarantined, None);
        let access = admit(&quarantined, 0, AgentCredential::MachineCertificate, NOW).unwrap();
        assert_eq!(access, Access::OwnStateOnly);
        assert_eq!(
            full_access(Access::Full, AgentCredential::MachineCertificate),
            Err(AdmissionError::CertificateNotEnough)
        );
        assert_eq!(
            full_access(access, AgentCredential::ApiKey),
            Err(AdmissionError::Denied(Denial::Quarantined))
        );
        assert_eq!(full_access(Access::Full, AgentCredential::Jwt(0)), Ok(()));
    }

    #[test]
    fn an_agent_certificate_is_judged_as_a_token_of_its_epoch() {
        let active = Lifecycle::restored(Active, None);
        assert_eq!(
            admit(&active, 4, AgentCredential::AgentCertificate(4), NOW),
            Ok(Access::Full)
        );
        assert_eq!(
            admit(&active, 5, AgentCredential::AgentCertificate(4), NOW),
            Err(AdmissionError::RetiredToken),
            "a rotation or revocation retires the certificate with the tokens"
        );
        for (state, denial) in [
            (Suspended, Denial::Suspended),
            (Terminated, Denial::Terminated),
            (Provisioned, Denial::NotActivated),
        ] {
            assert_eq!(
                admit(
                    &Lifecycle::restored(state, None),
                    5,
                    AgentCredential::AgentCertificate(4),
                    NOW
                ),
                Err(AdmissionError::Denied(denial)),
                "the lifecycle speaks first for {state:?}"
            );
        }
        assert_eq!(
            full_access(Access::Full, AgentCredential::AgentCertificate(0)),
            Ok(())
        );
        assert_eq!(
            full_access(Access::OwnStateOnly, AgentCredential::AgentCertificate(0)),
            Err(AdmissionError::Denied(Denial::Quarantined))
        );
        assert_eq!(AgentCredential::AgentCertificate(7).epoch(), Some(7));
        assert_eq!(AgentCredential::MachineCertificate.epoch(), None);
        assert_eq!(AgentCredential::ApiKey.epoch(), None);
        assert_eq!(may_issue_credentials(AgentCredential::ApiKey), Ok(()));
    }

    fn any_state() -> impl Strategy<Value = LifecycleState> {
        prop_oneof![
            Just(Provisioned),
            Just(Active),
            Just(Quarantined),
            Just(Suspended),
            Just(Terminated),
        ]
    }

    proptest! {
        /// Whatever the state, the epochs and the expiry, an agent's
        /// certificate gets exactly the answers its token would for
        /// admission and full access; only issuing credentials differs.
        #[test]
        fn an_agent_certificate_answers_as_a_token(
            state in any_state(),
            current in 0_i64..4,
            presented in 0_i64..4,
            expires_in in proptest::option::of(-120_i64..120),
        ) {
            let lifecycle = Lifecycle::restored(
                state,
                expires_in.map(|seconds| NOW + Duration::seconds(seconds)),
            );
            let token = admit(&lifecycle, current, AgentCredential::Jwt(presented), NOW);
            let certificate =
                admit(&lifecycle, current, AgentCredential::AgentCertificate(presented), NOW);
            prop_assert_eq!(token, certificate);
            if let Ok(access) = token {
                prop_assert_eq!(
                    full_access(access, AgentCredential::Jwt(presented)),
                    full_access(access, AgentCredential::AgentCertificate(presented))
                );
            }
            // Neither certificate ever issues a credential; a token does.
            prop_assert_eq!(
                may_issue_credentials(AgentCredential::AgentCertificate(presented)),
                Err(AdmissionError::CertificateCannotIssue)
            );
            prop_assert_eq!(
                may_issue_credentials(AgentCredential::MachineCertificate),
                Err(AdmissionError::CertificateCannotIssue)
            );
            prop_assert_eq!(may_issue_credentials(AgentCredential::Jwt(presented)), Ok(()));
            // A machine certificate never acts beyond reading.
            if let Ok(access) = admit(&lifecycle, current, AgentCredential::MachineCertificate, NOW) {
                prop_assert_eq!(
                    full_access(access, AgentCredential::MachineCertificate),
                    Err(AdmissionError::CertificateNotEnough)
                );
            }
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
