use std::fmt;
use std::str::FromStr;

/// The route that created an agent. Seed 000's idempotent repeat hands a
/// provisioner a fresh token only for agents a bootstrap made: an agent
/// registered, delegated or set up in a workspace belongs to whoever made
/// it, and a provisioner naming it must not get its runtime credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentOrigin {
    /// `POST /v1/agent/bootstrap` (seed 000).
    Bootstrap,
    /// The profiles API (seed 001) or anything else created through a
    /// tenant key that is not a bootstrap.
    Api,
    /// `POST /v1/agent/delegate`: a child of another agent.
    Delegation,
    /// The agent registry (seed 004).
    Registry,
    /// A workspace's first-run setup (seed 002).
    Workspace,
    /// A provisioning machine's instance (seed 003).
    Machine,
}

/// Why a string is not an [`AgentOrigin`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown agent origin {0:?}")]
pub struct OriginError(String);

impl AgentOrigin {
    pub const ALL: [AgentOrigin; 6] = [
        AgentOrigin::Bootstrap,
        AgentOrigin::Api,
        AgentOrigin::Delegation,
        AgentOrigin::Registry,
        AgentOrigin::Workspace,
        AgentOrigin::Machine,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            AgentOrigin::Bootstrap => "bootstrap",
            AgentOrigin::Api => "api",
            AgentOrigin::Delegation => "delegation",
            AgentOrigin::Registry => "registry",
            AgentOrigin::Workspace => "workspace",
            AgentOrigin::Machine => "machine",
        }
    }
}

impl FromStr for AgentOrigin {
    type Err = OriginError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AgentOrigin::ALL
            .into_iter()
            .find(|origin| origin.as_str() == s)
            .ok_or_else(|| OriginError(s.to_owned()))
    }
}

impl fmt::Display for AgentOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_origin_reads_back_and_nothing_else_does() {
        for origin in AgentOrigin::ALL {
            assert_eq!(origin.as_str().parse::<AgentOrigin>().unwrap(), origin);
        }
        assert!("Bootstrap".parse::<AgentOrigin>().is_err());
        assert!("".parse::<AgentOrigin>().is_err());
    }
}
