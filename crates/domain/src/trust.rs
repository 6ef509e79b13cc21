use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How far an operator trusts a registered agent (seed 004's `trustLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustLevel {
    Low,
    Medium,
    High,
    Critical,
}

/// Why a string is not a [`TrustLevel`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown trust level {0:?}; expected one of: low, medium, high, critical")]
pub struct TrustLevelError(String);

impl TrustLevel {
    pub const ALL: [TrustLevel; 4] = [
        TrustLevel::Low,
        TrustLevel::Medium,
        TrustLevel::High,
        TrustLevel::Critical,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            TrustLevel::Low => "low",
            TrustLevel::Medium => "medium",
            TrustLevel::High => "high",
            TrustLevel::Critical => "critical",
        }
    }
}

impl FromStr for TrustLevel {
    type Err = TrustLevelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustLevel::ALL
            .into_iter()
            .find(|level| level.as_str() == s)
            .ok_or_else(|| TrustLevelError(s.to_owned()))
    }
}

impl fmt::Display for TrustLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_levels_and_nothing_else() {
        for level in TrustLevel::ALL {
            assert_eq!(level.as_str().parse::<TrustLevel>().unwrap(), level);
            assert_eq!(
                serde_json::from_str::<TrustLevel>(&format!("\"{level}\"")).unwrap(),
                level
            );
        }
        assert!("extreme".parse::<TrustLevel>().is_err());
        assert!("HIGH".parse::<TrustLevel>().is_err());
        assert!(serde_json::from_str::<TrustLevel>("\"none\"").is_err());
        assert!(TrustLevel::Low < TrustLevel::Critical);
    }
}
