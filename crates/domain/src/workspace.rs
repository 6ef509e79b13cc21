//! Who may do what in seed 002's workspace (Agent United's API around the
//! bootstrap): the workspace admin everything, a `member` reads and posts
//! to the channels it belongs to, an `observer` only reads.

use std::fmt;
use std::str::FromStr;

/// A caller's role in the workspace: a user's `role`, or `member` for an
/// agent of the workspace that has no account of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkspaceRole {
    Admin,
    Member,
    Observer,
}

/// What a workspace caller asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceAction {
    /// List or read the workspace's agents.
    ReadAgents,
    /// Create, change or delete agents, and their keys.
    ManageAgents,
    /// Read a channel and its members; `belongs` says whether the caller
    /// is a member of it.
    ReadChannel { belongs: bool },
    /// Create, rename or delete channels, and add or remove members.
    ManageChannels,
}

impl WorkspaceRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Observer => "observer",
        }
    }

    /// Whether this role may do `action`. Only the admin manages; everyone
    /// reads the agents; a channel is read by its members (and the admin,
    /// who sees every channel).
    pub fn permits(self, action: WorkspaceAction) -> bool {
        match action {
            WorkspaceAction::ReadAgents => true,
            WorkspaceAction::ReadChannel { belongs } => belongs || self == Self::Admin,
            WorkspaceAction::ManageAgents | WorkspaceAction::ManageChannels => self == Self::Admin,
        }
    }

    /// Whether the admin sees every channel in a list, not only its own.
    pub fn sees_every_channel(self) -> bool {
        self == Self::Admin
    }
}

/// A role that is not one of the workspace's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role must be admin, member or observer, got {0:?}")]
pub struct WorkspaceRoleError(pub String);

impl FromStr for WorkspaceRole {
    type Err = WorkspaceRoleError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "admin" => Ok(Self::Admin),
            "member" => Ok(Self::Member),
            "observer" => Ok(Self::Observer),
            other => Err(WorkspaceRoleError(other.to_owned())),
        }
    }
}

impl fmt::Display for WorkspaceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role a member holds in one channel (Agent United's channel roles,
/// and seed 002's `observer`).
pub const CHANNEL_ROLES: [&str; 4] = ["owner", "admin", "member", "observer"];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ROLES: [WorkspaceRole; 3] = [
        WorkspaceRole::Admin,
        WorkspaceRole::Member,
        WorkspaceRole::Observer,
    ];

    #[test]
    fn only_the_admin_manages() {
        for role in ROLES {
            let admin = role == WorkspaceRole::Admin;
            assert_eq!(role.permits(WorkspaceAction::ManageAgents), admin);
            assert_eq!(role.permits(WorkspaceAction::ManageChannels), admin);
            assert_eq!(
                role.permits(WorkspaceAction::ReadChannel { belongs: false }),
                admin
            );
        }
    }

    #[test]
    fn roles_round_trip_through_their_text() {
        for role in ROLES {
            assert_eq!(role.as_str().parse::<WorkspaceRole>(), Ok(role));
        }
        assert!("owner".parse::<WorkspaceRole>().is_err());
        assert!("Admin".parse::<WorkspaceRole>().is_err());
    }

    proptest! {
        /// Whatever a role may do to a channel it does not belong to, it
        /// may do to one it belongs to; and every role reads the agents.
        #[test]
        fn belonging_never_takes_a_right_away(index in 0usize..3) {
            let role = ROLES[index];
            let member = WorkspaceAction::ReadChannel { belongs: true };
            let outsider = WorkspaceAction::ReadChannel { belongs: false };
            prop_assert!(role.permits(WorkspaceAction::ReadAgents));
            prop_assert!(role.permits(member));
            prop_assert!(!role.permits(outsider) || role.permits(member));
        }
    }
}
