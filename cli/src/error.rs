//! The CLI's error: one line, plus an optional hint line on what to do next.

use std::fmt;

/// A user-facing error. Never holds a credential value.
#[derive(Debug)]
pub struct CliError {
    /// The one-line message.
    pub message: String,
    /// What to do next, if known.
    pub hint: Option<String>,
}

impl CliError {
    /// A new error.
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prefixes the message with a file name.
    pub fn in_file(self, file: &std::path::Path) -> Self {
        CliError {
            message: format!("{}: {}", file.display(), self.message),
            hint: self.hint,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<sealcred_shared::Error> for CliError {
    fn from(e: sealcred_shared::Error) -> Self {
        CliError::new(e.to_string())
    }
}

impl From<sealcred_shared::provider::ProviderError> for CliError {
    fn from(e: sealcred_shared::provider::ProviderError) -> Self {
        CliError::new(e.message)
    }
}
