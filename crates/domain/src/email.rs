use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// An e-mail address in canonical (lowercase) form.
///
/// The check is deliberately the practical one, not RFC 5322: one `@`, a
/// non-empty local part of at most 64 characters without spaces, and a domain
/// of one or more dot-separated host-name labels. A single label is an
/// address (`admin@localhost`, seed 002's own example; RFC 5321 and a
/// browser's `type=email` accept it too), so no dot is required. Lowercasing the whole
/// address makes uniqueness case-insensitive, which is what users expect even
/// though the RFC lets a local part be case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Email(String);

/// Why a string is not an [`Email`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email must be at most 254 characters")]
    TooLong,
    #[error("email must have the form name@example.com")]
    Shape,
    #[error("the part of the email before '@' must be 1 to 64 characters without spaces")]
    LocalPart,
    #[error("the domain of the email must be host-name labels, such as example.com or localhost")]
    Domain,
}

impl Email {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        if input.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = input.split_once('@').ok_or(EmailError::Shape)?;
        if domain.contains('@') {
            return Err(EmailError::Shape);
        }
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && local
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !"()<>[]\\,;:\"".contains(c));
        if !local_ok {
            return Err(EmailError::LocalPart);
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
        if !domain_ok {
            return Err(EmailError::Domain);
        }
        Ok(Self(input.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Email {
    type Err = EmailError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses_in_canonical_form() {
        assert_eq!(
            Email::parse("Alice.Smith+ops@Example.COM")
                .unwrap()
                .as_str(),
            "alice.smith+ops@example.com"
        );
        assert!(Email::parse("a@b.co").is_ok());
        assert!(Email::parse("x@sub.domain-1.example").is_ok());
        assert_eq!(
            Email::parse("admin@localhost").unwrap().as_str(),
            "admin@localhost"
        );
    }

    #[test]
    fn rejects_each_kind_of_mistake() {
        assert_eq!(Email::parse("alice"), Err(EmailError::Shape));
        assert_eq!(Email::parse("a@b@c.com"), Err(EmailError::Shape));
        assert_eq!(Email::parse("@example.com"), Err(EmailError::LocalPart));
        assert_eq!(
            Email::parse("al ice@example.com"),
            Err(EmailError::LocalPart)
        );
        assert_eq!(
            Email::parse(&format!("{}@example.com", "a".repeat(65))),
            Err(EmailError::LocalPart)
        );
        assert_eq!(Email::parse("alice@"), Err(EmailError::Domain));
        assert_eq!(Email::parse("alice@example.com."), Err(EmailError::Domain));
        assert_eq!(Email::parse("alice@exa_mple.com"), Err(EmailError::Domain));
        assert_eq!(Email::parse("alice@example..com"), Err(EmailError::Domain));
        assert_eq!(Email::parse("alice@-example.com"), Err(EmailError::Domain));
        assert_eq!(
            Email::parse(&format!("a@{}.com", "b".repeat(260))),
            Err(EmailError::TooLong)
        );
    }
}
