use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The role an agent holds (`role` in seed 001's profile).
///
/// The order is the order of authority, lowest first, and is what "no
/// escalation" in delegation means: a child may be given a role `<=` its
/// parent's, never more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Agent,
    Operator,
    Admin,
}

/// The role of a tenant API key. Keys do not delegate to each other, so the
/// roles are not ordered; what each may do is the permission table in
/// `agentry-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiKeyRole {
    Admin,
    Operator,
    Auditor,
    /// May bootstrap agents and nothing else (seed 000: "the API key grants
    /// provisioning authority, not runtime access").
    Provisioner,
}

/// Why a string is not a [`Role`] or [`ApiKeyRole`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {given:?}; expected one of: {expected}")]
pub struct RoleError {
    given: String,
    expected: &'static str,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Agent, Role::Operator, Role::Admin];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether an agent holding `self` may hand `requested` to a child.
    pub fn may_grant(self, requested: Role) -> bool {
        requested <= self
    }
}

impl ApiKeyRole {
    pub const ALL: [ApiKeyRole; 4] = [
        ApiKeyRole::Admin,
        ApiKeyRole::Operator,
        ApiKeyRole::Auditor,
        ApiKeyRole::Provisioner,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ApiKeyRole::Admin => "admin",
            ApiKeyRole::Operator => "operator",
            ApiKeyRole::Auditor => "auditor",
            ApiKeyRole::Provisioner => "provisioner",
        }
    }
}

impl FromStr for Role {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| RoleError {
                given: s.to_owned(),
                expected: "agent, operator, admin",
            })
    }
}

impl FromStr for ApiKeyRole {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiKeyRole::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| RoleError {
                given: s.to_owned(),
                expected: "admin, operator, auditor, provisioner",
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Display for ApiKeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_grows_from_agent_to_admin() {
        assert!(Role::Agent < Role::Operator && Role::Operator < Role::Admin);
        assert!(Role::Operator.may_grant(Role::Agent));
        assert!(Role::Operator.may_grant(Role::Operator));
        assert!(!Role::Operator.may_grant(Role::Admin));
        assert!(!Role::Agent.may_grant(Role::Operator));
    }

    #[test]
    fn text_forms_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{role}\""));
        }
        for role in ApiKeyRole::ALL {
            assert_eq!(role.as_str().parse::<ApiKeyRole>().unwrap(), role);
        }
        let error = "root".parse::<Role>().unwrap_err();
        assert!(error.to_string().contains("agent, operator, admin"));
        assert!("Agent".parse::<Role>().is_err());
        assert!("agent".parse::<ApiKeyRole>().is_err());
    }
}
