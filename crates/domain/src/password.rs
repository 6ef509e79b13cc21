use std::fmt;

/// The fewest characters a password may have (seed 002).
pub const PASSWORD_MIN_CHARS: usize = 12;
/// Hashing cost grows with input; a bound keeps a login request cheap to
/// refuse. No human types more than this.
const PASSWORD_MAX_BYTES: usize = 1024;

/// A plaintext password that meets the policy, on its way to being hashed.
///
/// It is never serialized and its `Debug` output is redacted, so it cannot
/// end up in a log or a response by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

/// Why a string is not an acceptable [`Password`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be at least 12 characters long")]
    TooShort,
    #[error("password must be at most 1024 bytes long")]
    TooLong,
}

impl Password {
    pub fn new(plaintext: String) -> Result<Self, PasswordError> {
        if plaintext.chars().count() < PASSWORD_MIN_CHARS {
            return Err(PasswordError::TooShort);
        }
        if plaintext.len() > PASSWORD_MAX_BYTES {
            return Err(PasswordError::TooLong);
        }
        Ok(Self(plaintext))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_the_length_policy_in_characters() {
        assert_eq!(
            Password::new("elevenchars".into()),
            Err(PasswordError::TooShort)
        );
        assert!(Password::new("twelve chars".into()).is_ok());
        // Twelve characters, more than twelve bytes: still long enough.
        assert!(Password::new("ééééééééééé1".into()).is_ok());
        assert_eq!(Password::new("x".repeat(1025)), Err(PasswordError::TooLong));
    }

    #[test]
    fn never_shows_itself_in_debug_output() {
        let password = Password::new("correct horse battery".into()).unwrap();
        assert_eq!(format!("{password:?}"), "Password(<redacted>)");
        assert_eq!(password.expose(), "correct horse battery");
    }
}
