//! Seed 003 machine provisioning: the instance's certificate authority,
//! machine instances with their bootstrap tokens, the bootstrap sessions and
//! the client certificates issued in them, built artifacts, the callback
//! state machine and the provisioning log.
//!
//! Secrets reach the store sealed (under the master key) or hashed by the
//! caller; the store keeps bytes and decides races: one CA, one completed
//! session per bootstrap token, callbacks in order. What is allowed comes
//! from `agentry-lifecycle` (`BootstrapSession`, `OneTimeToken`,
//! `CallbackSequence`, `ProvisioningPolicy`): each command locks, reads,
//! asks it, and writes what it returns.

mod authority;
mod callbacks;
mod instances;
mod sessions;

pub use agentry_lifecycle::ArtifactKind;
pub use authority::CaRecord;
pub use callbacks::{CallbackState, ProvisionLog};
pub use instances::{ArtifactRecord, MachineInstance, MachineInstancePatch, NewMachineInstance};
pub use sessions::{
    IssuedCertificateRecord, MachineSession, NewIssuedCertificate, NewMachineSession,
    OpenSessionError, OpenedSession, SessionError,
};

const INSTANCE: &str = "provisioning instance";
