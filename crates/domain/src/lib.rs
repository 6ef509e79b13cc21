//! Agentry's vocabulary: the value types every other crate speaks in.
//!
//! It holds the entities, an agent and its API keys ([`AgentRecord`],
//! [`ApiKeyRecord`]), and the value types that carry a rule with them, such as an agent
//! slug, an amount of money, a role, a lifecycle state, an e-mail address, a
//! password that meets the policy, and the identifiers with their text forms.
//! Each one is checked when it is built, so a value of the type is always
//! valid and code that receives one never re-checks it.
//!
//! It must never depend on tokio, diesel, actix or anything else that does
//! I/O, and it never reads the clock or a random source: time and fresh ids
//! are passed in by the caller. Wire formats belong to `agentry-http`; the
//! serde impls here are the canonical, wire-agnostic ones (a slug is a string,
//! money is a USD number).

mod agent;
mod email;
mod id;
mod money;
mod name;
mod origin;
mod password;
mod role;
mod scope;
mod slug;
mod state;
mod trust;
mod workspace;

pub use agent::{AgentRecord, ApiKeyRecord};
pub use email::{Email, EmailError};
pub use id::{AgentId, IdError, TenantId, TypeId};
pub use money::{Money, MoneyError};
pub use name::{AgentName, NameError};
pub use origin::{AgentOrigin, OriginError};
pub use password::{PASSWORD_MIN_CHARS, Password, PasswordError};
pub use role::{ApiKeyRole, Role, RoleError};
pub use scope::{Scope, ScopeError};
pub use slug::{AgentSlug, SlugError};
pub use state::{LifecycleState, StateError};
pub use trust::{TrustLevel, TrustLevelError};
pub use workspace::{CHANNEL_ROLES, WorkspaceAction, WorkspaceRole, WorkspaceRoleError};
