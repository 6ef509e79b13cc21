//! A tour of agentry-lifecycle's rules as an embedding service meets them:
//! operator transitions allowed and refused, forced terminations, what an agent
//! in each state may do, and a provisioning machine's callback sequence.
//! Run it with `cargo run -p agentry-lifecycle --example lifecycle_tour`.

use std::error::Error;

use agentry_domain::AgentOrigin;
use agentry_domain::LifecycleState::{
    self, Active, Provisioned, Quarantined, Suspended, Terminated,
};
use agentry_lifecycle::{
    Access, CallbackError, CallbackSequence, CallbackStage, Denial, Lifecycle, LifecycleError,
    RequestScope, TerminationReason, TransitionCause, allowed_targets,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// An agent as an embedder's storage holds it, in `state`. A new agent is
/// never made this way: its state comes from its origin (`Lifecycle::born`).
fn lifecycle(state: LifecycleState, expires_at: Option<OffsetDateTime>) -> Lifecycle {
    Lifecycle::restored(state, expires_at)
}

fn main() -> Result<(), Box<dyn Error>> {
    transitions()?;
    forced_terminations()?;
    access_per_state();
    provisioning_callbacks()?;
    Ok(())
}

/// An operator walks an agent through the table; moves not in it are refused
/// with an error that names the moves that are.
fn transitions() -> Result<(), Box<dyn Error>> {
    let now = datetime!(2026-03-10 09:00 UTC);
    // A profile made through the API waits for its first bootstrap.
    let agent = Lifecycle::born(AgentOrigin::Api, None);
    assert_eq!(agent.state(), Provisioned);

    let (agent, event) = agent
        .bootstrap(now)?
        .expect("a provisioned agent is activated by its first bootstrap");
    assert_eq!((event.from, event.to), (Provisioned, Active));
    assert_eq!(event.cause, TransitionCause::Bootstrap);
    println!("bootstrap: {} -> {}", event.from, event.to);

    let (agent, event) = agent.request(Quarantined, now)?;
    assert_eq!(event.cause, TransitionCause::Requested);
    println!("requested: {} -> {}", event.from, event.to);

    let refused = agent
        .request(Terminated, now)
        .expect_err("quarantined may not go straight to terminated");
    assert_eq!(
        refused,
        LifecycleError::InvalidTransition {
            from: Quarantined,
            to: Terminated,
        }
    );
    assert_eq!(allowed_targets(Quarantined), [Active, Suspended]);
    println!("refused: {refused}");

    let (agent, _) = agent.request(Suspended, now)?;
    let (agent, event) = agent.request(Terminated, now)?;
    assert!(event.retires_credentials());
    assert_eq!(event.revoked_at(), Some(now));
    println!("requested: suspended -> terminated, which retires every credential");

    let refused = agent.request(Active, now).expect_err("terminated is final");
    assert_eq!(
        refused,
        LifecycleError::InvalidTransition {
            from: Terminated,
            to: Active,
        }
    );
    println!("refused: {refused}");
    Ok(())
}

/// Revocation, reclaim and expiry skip the table: they terminate from any
/// live state, once.
fn forced_terminations() -> Result<(), Box<dyn Error>> {
    let now = datetime!(2026-03-10 10:00 UTC);

    let (revoked, event) =
        lifecycle(Quarantined, None).terminate(TerminationReason::Revoked, now)?;
    assert_eq!(revoked.state(), Terminated);
    assert_eq!(
        event.cause,
        TransitionCause::Forced(TerminationReason::Revoked)
    );
    println!("revoked: {} -> {}", event.from, event.to);

    let again = revoked
        .terminate(TerminationReason::ReclaimedByParent, now)
        .expect_err("a terminated agent cannot end twice");
    assert_eq!(again, LifecycleError::AlreadyTerminated);
    println!("refused: {again}");

    // A delegated child with a TTL: the reaper leaves it alone until the
    // deadline, then terminates it.
    let expires_at = now + Duration::hours(1);
    let child = lifecycle(Active, Some(expires_at));
    assert_eq!(child.reap(expires_at - Duration::SECOND), None);
    let (reaped, event) = child
        .reap(expires_at)
        .expect("an expired live agent is reaped");
    assert_eq!(reaped.state(), Terminated);
    assert_eq!(
        event.cause,
        TransitionCause::Forced(TerminationReason::Expired)
    );
    println!("reaped at its expiry: {} -> {}", event.from, event.to);
    Ok(())
}

/// The decision an agent-authenticated request gets, per state and scope.
fn access_per_state() {
    let now = datetime!(2026-03-10 11:00 UTC);
    let expected = [
        (
            Provisioned,
            Err(Denial::NotActivated),
            Err(Denial::NotActivated),
        ),
        (Active, Ok(()), Ok(())),
        (Quarantined, Ok(()), Err(Denial::Quarantined)),
        (Suspended, Err(Denial::Suspended), Err(Denial::Suspended)),
        (Terminated, Err(Denial::Terminated), Err(Denial::Terminated)),
    ];
    for (state, own_state, other) in expected {
        let access = Access::for_agent(&lifecycle(state, None), now);
        assert_eq!(access.permits(RequestScope::OwnState), own_state);
        assert_eq!(access.permits(RequestScope::Other), other);
        println!(
            "{state:>11}: own state {}, anything else {}",
            verdict(own_state),
            verdict(other)
        );
    }
    assert!(Denial::Suspended.is_payment_required());

    // Expiry is judged at `now`, so a child past its TTL is cut off even
    // before the reaper has written the termination down.
    let overdue = lifecycle(Active, Some(now));
    assert_eq!(
        Access::for_agent(&overdue, now),
        Access::Denied(Denial::Expired)
    );
    println!(
        "an active agent past its expiry: {}",
        verdict(Err(Denial::Expired))
    );
}

fn verdict(decision: Result<(), Denial>) -> String {
    match decision {
        Ok(()) => "allowed".to_owned(),
        Err(denial) if denial.is_payment_required() => format!("402 {denial:?}"),
        Err(denial) => format!("403 {denial:?}"),
    }
}

/// A provisioning machine reports its stages with increasing sequence
/// numbers; `ready` or `error` ends the sequence.
fn provisioning_callbacks() -> Result<(), Box<dyn Error>> {
    let mut machine = CallbackSequence::new();
    for (seq, stage) in [(1, "installing"), (2, "configuring"), (3, "securing")] {
        machine = machine.accept(seq, stage.parse()?)?;
        println!("callback {seq} {stage}: accepted");
    }

    let replayed = machine
        .accept(2, CallbackStage::Configuring)
        .expect_err("a seq must be after the last accepted one");
    assert_eq!(replayed, CallbackError::NotIncreasing { seq: 2, last: 3 });
    println!("callback 2 configuring again: refused, {replayed}");

    let mismatched = machine
        .accept(4, CallbackStage::Error)
        .expect_err("error may only carry seq 2 or 3");
    assert_eq!(
        mismatched,
        CallbackError::StageSeqMismatch {
            stage: CallbackStage::Error,
            seq: 4,
        }
    );
    println!("callback 4 error: refused, {mismatched}");

    // What the store keeps is the last accepted (seq, stage); a machine
    // resumed from it continues where it left off.
    let mut machine = CallbackSequence::resume(machine.last());
    machine = machine.accept(4, CallbackStage::Ready)?;
    assert!(machine.is_final());
    println!("callback 4 ready: accepted, provisioning is done");

    let late = machine
        .accept(4, CallbackStage::Ready)
        .expect_err("nothing is accepted after ready");
    assert_eq!(late, CallbackError::AlreadyFinal(CallbackStage::Ready));
    println!("callback 4 ready again: refused, {late}");
    Ok(())
}
