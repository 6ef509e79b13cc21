use std::fmt;

/// A permission an operator grants a registered agent (seed 004's
/// `scopes`, e.g. `read:customers`): 1 to 128 characters, starting with a
/// letter, of ASCII letters, digits and `: . _ - / *`. Agentry stores and
/// reports scopes; what they allow is for the services that read them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

/// Why a string or a list is not a valid set of [`Scope`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("a scope must be 1 to 128 characters long, got {0}")]
    Length(usize),
    #[error("scope {0:?} must start with a letter")]
    Start(String),
    #[error("scope {0:?} may contain only letters, digits and ': . _ - / *'")]
    Character(String),
    #[error("at most {max} scopes, got {0}", max = Scope::MAX_PER_AGENT)]
    TooMany(usize),
    #[error("scope {0:?} is listed twice")]
    Duplicate(String),
}

impl Scope {
    pub const MAX_LEN: usize = 128;
    pub const MAX_PER_AGENT: usize = 64;

    pub fn parse(input: &str) -> Result<Self, ScopeError> {
        let len = input.chars().count();
        if !(1..=Self::MAX_LEN).contains(&len) {
            return Err(ScopeError::Length(len));
        }
        if !input.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(ScopeError::Start(input.to_owned()));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || ":._-/*".contains(c);
        if !input.chars().all(allowed) {
            return Err(ScopeError::Character(input.to_owned()));
        }
        Ok(Self(input.to_owned()))
    }

    /// A whole list: each scope valid, none twice, at most
    /// [`Scope::MAX_PER_AGENT`]. Order is kept as given.
    pub fn parse_list<'a>(
        inputs: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Scope>, ScopeError> {
        let mut scopes: Vec<Scope> = Vec::new();
        for input in inputs {
            let scope = Scope::parse(input)?;
            if scopes.contains(&scope) {
                return Err(ScopeError::Duplicate(scope.0));
            }
            scopes.push(scope);
        }
        if scopes.len() > Self::MAX_PER_AGENT {
            return Err(ScopeError::TooMany(scopes.len()));
        }
        Ok(scopes)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_seeds_scopes_and_refuses_the_rest() {
        for good in ["read:customers", "write:tickets", "a", "api.v2/items:*"] {
            assert_eq!(Scope::parse(good).map(|scope| scope.0), Ok(good.to_owned()));
        }
        assert_eq!(Scope::parse(""), Err(ScopeError::Length(0)));
        assert_eq!(Scope::parse(&"a".repeat(129)), Err(ScopeError::Length(129)));
        assert!(matches!(Scope::parse(":read"), Err(ScopeError::Start(_))));
        assert!(matches!(
            Scope::parse("read customers"),
            Err(ScopeError::Character(_))
        ));
        assert!(matches!(
            Scope::parse("read:é"),
            Err(ScopeError::Character(_))
        ));
    }

    #[test]
    fn a_list_has_no_duplicates_and_a_bounded_length() {
        assert!(matches!(
            Scope::parse_list(["a", "b", "a"]),
            Err(ScopeError::Duplicate(_))
        ));
        let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        assert_eq!(
            Scope::parse_list(many.iter().map(String::as_str)),
            Err(ScopeError::TooMany(65))
        );
        assert_eq!(
            Scope::parse_list(many[..64].iter().map(String::as_str)).map(|l| l.len()),
            Ok(64)
        );
    }

    proptest! {
        /// Whatever is accepted is exactly what the rule describes.
        #[test]
        fn accepted_means_well_formed(input in "\\PC{0,140}") {
            let expected = (1..=Scope::MAX_LEN).contains(&input.chars().count())
                && input.starts_with(|c: char| c.is_ascii_alphabetic())
                && input.chars().all(|c| c.is_ascii_alphanumeric() || ":._-/*".contains(c));
            prop_assert_eq!(Scope::parse(&input).is_ok(), expected);
        }
    }
}
