use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an agent is in its life (DESIGN.md §2). The rules for moving between
/// states live in `agentry-lifecycle`; this is only the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LifecycleState {
    /// Created but not yet activated (a profile made without bootstrap).
    Provisioned,
    Active,
    /// May read its own state and nothing else.
    Quarantined,
    /// Paused; its requests get 402.
    Suspended,
    /// Final: revoked, expired or retired.
    Terminated,
}

/// Why a string is not a [`LifecycleState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown lifecycle state {0:?}; expected one of: provisioned, active, quarantined, suspended, terminated"
)]
pub struct StateError(String);

impl LifecycleState {
    pub const ALL: [LifecycleState; 5] = [
        LifecycleState::Provisioned,
        LifecycleState::Active,
        LifecycleState::Quarantined,
        LifecycleState::Suspended,
        LifecycleState::Terminated,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            LifecycleState::Provisioned => "provisioned",
            LifecycleState::Active => "active",
            LifecycleState::Quarantined => "quarantined",
            LifecycleState::Suspended => "suspended",
            LifecycleState::Terminated => "terminated",
        }
    }
}

impl FromStr for LifecycleState {
    type Err = StateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LifecycleState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StateError(s.to_owned()))
    }
}

impl fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for state in LifecycleState::ALL {
            assert_eq!(state.as_str().parse::<LifecycleState>().unwrap(), state);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{state}\"")
            );
        }
        let error = "revoked".parse::<LifecycleState>().unwrap_err();
        assert!(error.to_string().contains("quarantined"));
    }
}
