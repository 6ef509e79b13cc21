//! Request validation that reports every problem at once.

use std::fmt::Display;

use crate::error::ApiError;

#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    /// Keeps the value of `result`, or notes its error against `field`.
    pub(crate) fn check<T, E: Display>(&mut self, result: Result<T, E>, field: &str) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.0.push(format!("{field}: {error}"));
                None
            }
        }
    }

    /// Notes `field` if present and not `min..=max` characters long.
    pub(crate) fn length(&mut self, field: &str, value: Option<&str>, min: usize, max: usize) {
        if let Some(value) = value {
            let length = value.chars().count();
            if !(min..=max).contains(&length) {
                self.0.push(format!(
                    "{field}: must be {min} to {max} characters, got {length}"
                ));
            }
        }
    }

    pub(crate) fn push(&mut self, problem: String) {
        self.0.push(problem);
    }

    /// 400 listing every problem, or nothing.
    pub(crate) fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::bad_request("invalid_request", self.0.join("; ")))
        }
    }
}
