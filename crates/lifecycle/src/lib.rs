//! The state machines of Agentry, as pure functions.
//!
//! This crate owns the agent lifecycle of DESIGN.md §2 (the state an agent
//! is born in, which transitions exist, which are forced, and what an agent
//! in each state may do with which credential), the rules that create or
//! wake agents (a delegation's plan, who may bootstrap an existing agent),
//! and seed 003's provisioning workflow (its callback sequence, sessions,
//! one-time tokens and lifetimes). Each decision is a function of its
//! inputs, the current time included, so another service can embed the
//! rules and every rule is tested without a database.
//!
//! It must never depend on tokio, diesel, actix or anything that does I/O,
//! and it never reads the clock: `now` is always a parameter.
//!
//! A move the table does not allow is refused with the moves that are:
//!
//! ```rust
//! use agentry_domain::AgentOrigin;
//! use agentry_domain::LifecycleState::{Active, Terminated};
//! use agentry_lifecycle::{Lifecycle, LifecycleError};
//! use time::macros::datetime;
//!
//! // A registered agent acts at once.
//! let agent = Lifecycle::born(AgentOrigin::Registry, None);
//! assert_eq!(agent.state(), Active);
//! let refused = agent.request(Terminated, datetime!(2026-03-10 12:00 UTC));
//! assert_eq!(
//!     refused,
//!     Err(LifecycleError::InvalidTransition { from: Active, to: Terminated })
//! );
//! ```

mod access;
mod agent;
mod bootstrap;
mod callback;
mod delegation;
mod provisioning;

pub use access::{
    Access, AdmissionError, AgentCredential, Denial, RequestScope, admit, full_access,
    may_issue_credentials, token_is_current,
};
pub use agent::{
    Lifecycle, LifecycleCommand, LifecycleError, LifecycleEvent, TerminationReason,
    TransitionCause, allowed_targets, birth_state,
};
pub use bootstrap::{BootstrapRefusal, may_take_over, repeat_bootstrap};
pub use callback::{CallbackError, CallbackSequence, CallbackStage};
pub use delegation::{
    ChildTerms, DelegatingParent, DelegationAsk, DelegationError, MAX_DELEGATION_TTL_SECONDS,
    child_expiry, is_repeat_delegation,
};
pub use provisioning::{
    ArtifactKind, BootstrapSession, Completion, DownloadGrant, OneTimeToken, OpenRefusal,
    ProvisionLogFull, ProvisioningPolicy, Readiness, SessionRefusal, SessionStatus, SessionTerms,
    TokenRefusal, TokenUse, TtlOutOfRange,
};
