use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// The tenant-unique, human-chosen name of an agent (`agent_id` in seeds 000
/// and 001): 3 to 64 characters of lowercase `a-z`, `0-9` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AgentSlug(String);

/// Why a string is not an [`AgentSlug`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("agent_id must be 3 to 64 characters long, got {0}")]
    Length(usize),
    #[error(
        "agent_id may contain only lowercase letters a-z, digits and '-', found {0:?} at position {1}"
    )]
    Character(char, usize),
}

impl AgentSlug {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 64;

    pub fn parse(input: &str) -> Result<Self, SlugError> {
        // Counting chars, not bytes, so the length in the error is the one the
        // user sees; any non-ASCII char is rejected below anyway.
        let len = input.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(SlugError::Length(len));
        }
        if let Some((position, bad)) = input
            .chars()
            .enumerate()
            .find(|(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
        {
            return Err(SlugError::Character(bad, position));
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The key of this agent's entry in the tenant agent-limits map.
    pub fn limits_key(&self) -> String {
        format!("agent:{}", self.0)
    }
}

impl FromStr for AgentSlug {
    type Err = SlugError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for AgentSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AgentSlug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AgentSlug {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_edges_of_the_length_range() {
        assert!(AgentSlug::parse("abc").is_ok());
        assert!(AgentSlug::parse(&"a".repeat(64)).is_ok());
        assert_eq!(AgentSlug::parse("ab"), Err(SlugError::Length(2)));
        assert_eq!(
            AgentSlug::parse(&"a".repeat(65)),
            Err(SlugError::Length(65))
        );
        assert_eq!(AgentSlug::parse(""), Err(SlugError::Length(0)));
    }

    #[test]
    fn rejects_characters_outside_the_alphabet() {
        assert_eq!(
            AgentSlug::parse("Summarizer"),
            Err(SlugError::Character('S', 0))
        );
        assert_eq!(
            AgentSlug::parse("my_agent"),
            Err(SlugError::Character('_', 2))
        );
        assert_eq!(
            AgentSlug::parse("agent é"),
            Err(SlugError::Character(' ', 5))
        );
        assert!(AgentSlug::parse("summarizer-v1").is_ok());
    }

    #[test]
    fn deserializes_with_validation() {
        let ok: AgentSlug = serde_json::from_str("\"my-agent-01\"").unwrap();
        assert_eq!(ok.as_str(), "my-agent-01");
        assert_eq!(ok.limits_key(), "agent:my-agent-01");
        assert!(serde_json::from_str::<AgentSlug>("\"X\"").is_err());
    }

    proptest! {
        #[test]
        fn every_valid_slug_round_trips(s in "[a-z0-9-]{3,64}") {
            let slug = AgentSlug::parse(&s).unwrap();
            prop_assert_eq!(slug.as_str(), s.as_str());
        }

        #[test]
        fn anything_with_a_foreign_char_is_rejected(prefix in "[a-z0-9-]{0,30}", bad in "[^a-z0-9-]", suffix in "[a-z0-9-]{3,30}") {
            let candidate = format!("{prefix}{bad}{suffix}");
            prop_assert!(AgentSlug::parse(&candidate).is_err());
        }
    }
}
