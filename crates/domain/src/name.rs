use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::AgentSlug;

/// An agent's name as a client wrote it: seed 002's `name` and seed 004's
/// `name`, mixed case allowed. Every name maps onto exactly one
/// [`AgentSlug`] (seeds 000/001's `agent_id`), so the same agent is
/// reachable from every family; the slug is what must be unique in a
/// tenant, and it is derived from the lowercased name, so two names that
/// differ only in case can never be two agents.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AgentName(String);

/// Why a string is not an [`AgentName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must be {min} to {max} characters long, got {got}")]
    Length { min: usize, max: usize, got: usize },
    #[error("name may contain only letters a-z and A-Z, digits and '-', found {0:?}")]
    WorkspaceCharacter(char),
    #[error("name must not contain control characters")]
    Control,
    #[error("name must not begin or end with white space")]
    Padding,
}

/// How many hex digits of the name's SHA-256 a derived slug ends with: 32
/// bits, so two names of one tenant share a slug (and the second is refused
/// as taken, never merged) about once in four billion pairs.
const DIGEST_HEX: usize = 8;

impl AgentName {
    pub const MAX_LEN: usize = 100;

    /// A registry name (seed 004, which gives `name` no rule beyond its
    /// example): 1 to 100 characters, none of them control characters, not
    /// padded with white space.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let got = input.chars().count();
        if !(1..=Self::MAX_LEN).contains(&got) {
            return Err(NameError::Length {
                min: 1,
                max: Self::MAX_LEN,
                got,
            });
        }
        if input.chars().any(char::is_control) {
            return Err(NameError::Control);
        }
        if input.trim() != input {
            return Err(NameError::Padding);
        }
        Ok(Self(input.to_owned()))
    }

    /// A workspace agent's name (seed 002): "alphanumeric + hyphens, 3-100
    /// chars", mixed case allowed.
    pub fn parse_workspace(input: &str) -> Result<Self, NameError> {
        let got = input.chars().count();
        if !(AgentSlug::MIN_LEN..=Self::MAX_LEN).contains(&got) {
            return Err(NameError::Length {
                min: AgentSlug::MIN_LEN,
                max: Self::MAX_LEN,
                got,
            });
        }
        if let Some(bad) = input
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(NameError::WorkspaceCharacter(bad));
        }
        Ok(Self(input.to_owned()))
    }

    /// The name of an agent that was given only a slug.
    pub fn of_slug(slug: &AgentSlug) -> Self {
        Self(slug.as_str().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The agent's slug: the lowercased name when that is a slug already
    /// (`Research-Coordinator` is `research-coordinator`); otherwise the
    /// name's letters and digits lowercased, every other run of characters
    /// a `-`, cut to fit, and `-` plus the first hex digits of the
    /// lowercased name's SHA-256, so the slug stays unique to the name
    /// (`My Assistant` is `my-assistant-` and 8 hex digits).
    pub fn slug(&self) -> AgentSlug {
        let lowered = self.0.to_lowercase();
        if let Ok(slug) = AgentSlug::parse(&lowered) {
            return slug;
        }
        let mut base = String::new();
        for c in lowered.chars() {
            if c.is_ascii_alphanumeric() {
                base.push(c);
            } else if !base.is_empty() && !base.ends_with('-') {
                base.push('-');
            }
        }
        // Room for `-` and the digest.
        base.truncate(AgentSlug::MAX_LEN - DIGEST_HEX - 1);
        let base = base.trim_end_matches('-');
        let digest = Sha256::digest(lowered.as_bytes());
        let hex: String = digest
            .iter()
            .take(DIGEST_HEX / 2)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let derived = if base.is_empty() {
            format!("agent-{hex}")
        } else {
            format!("{base}-{hex}")
        };
        AgentSlug::parse(&derived).expect("a derived slug is built from the slug alphabet")
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_name_that_is_a_slug_but_for_case_maps_onto_that_slug() {
        let name = AgentName::parse_workspace("Research-Coordinator").unwrap();
        assert_eq!(name.as_str(), "Research-Coordinator");
        assert_eq!(name.slug().as_str(), "research-coordinator");
        assert_eq!(
            AgentName::parse("my-assistant").unwrap().slug().as_str(),
            "my-assistant"
        );
    }

    #[test]
    fn other_names_get_a_slug_with_a_digest() {
        let slug = AgentName::parse("My Assistant").unwrap().slug();
        assert!(slug.as_str().starts_with("my-assistant-"), "{slug}");
        assert_eq!(slug.as_str().len(), "my-assistant-".len() + DIGEST_HEX);
        assert!(
            AgentName::parse("ai")
                .unwrap()
                .slug()
                .as_str()
                .starts_with("ai-")
        );
        assert!(
            AgentName::parse("🤖")
                .unwrap()
                .slug()
                .as_str()
                .starts_with("agent-")
        );
        let long = AgentName::parse_workspace(&"a".repeat(100)).unwrap().slug();
        assert_eq!(long.as_str().len(), AgentSlug::MAX_LEN);
    }

    #[test]
    fn workspace_names_follow_seed_002() {
        assert!(AgentName::parse_workspace("abc").is_ok());
        assert!(AgentName::parse_workspace(&"A".repeat(100)).is_ok());
        assert_eq!(
            AgentName::parse_workspace("ab"),
            Err(NameError::Length {
                min: 3,
                max: 100,
                got: 2
            })
        );
        assert!(matches!(
            AgentName::parse_workspace(&"a".repeat(101)),
            Err(NameError::Length { got: 101, .. })
        ));
        assert_eq!(
            AgentName::parse_workspace("data_collector"),
            Err(NameError::WorkspaceCharacter('_'))
        );
        assert_eq!(
            AgentName::parse_workspace("data collector"),
            Err(NameError::WorkspaceCharacter(' '))
        );
    }

    #[test]
    fn registry_names_refuse_only_what_cannot_be_a_name() {
        assert!(AgentName::parse("Support bot (EU) #2").is_ok());
        assert!(matches!(
            AgentName::parse(""),
            Err(NameError::Length { got: 0, .. })
        ));
        assert_eq!(AgentName::parse("a\u{0}b"), Err(NameError::Control));
        assert_eq!(AgentName::parse(" padded"), Err(NameError::Padding));
    }

    proptest! {
        #[test]
        fn every_name_has_a_valid_slug(name in "\\PC{1,100}") {
            if let Ok(name) = AgentName::parse(&name) {
                prop_assert!(AgentSlug::parse(name.slug().as_str()).is_ok());
            }
        }

        #[test]
        fn names_that_differ_only_in_case_share_their_slug(name in "[A-Za-z0-9 _.-]{1,100}") {
            if let (Ok(lower), Ok(upper)) = (
                AgentName::parse(&name.to_lowercase()),
                AgentName::parse(&name.to_uppercase()),
            ) {
                prop_assert_eq!(lower.slug(), upper.slug());
            }
        }

        #[test]
        fn names_that_differ_otherwise_get_different_slugs(
            a in "[a-z0-9 _.-]{1,100}",
            b in "[a-z0-9 _.-]{1,100}",
        ) {
            if let (Ok(first), Ok(second)) = (AgentName::parse(&a), AgentName::parse(&b))
                && a != b
            {
                prop_assert_ne!(first.slug(), second.slug());
            }
        }

        #[test]
        fn a_slug_is_its_own_name(slug in "[a-z0-9-]{3,64}") {
            let slug = AgentSlug::parse(&slug).unwrap();
            prop_assert_eq!(AgentName::of_slug(&slug).slug(), slug);
        }
    }
}
