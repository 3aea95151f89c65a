//! The library's error type and the exit codes of the contract (`docs/contract.md`).
//!
//! Every error that reaches the operator carries a stable `kind` (for `--json`), a message that
//! says what was found and why it matters, and, where one exists, the exact command that fixes it.

use std::fmt;

/// Exit codes, exactly as the contract's table gives them. Callers (`disinto init`, Ansible)
/// branch on these numbers: never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Refused = 3,
    NotConfirmed = 4,
    Problems = 5,
    RollbackFailed = 6,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// One error of the tool. `kind` is a stable kebab-case name for machines; `message` is for people.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub exit: ExitCode,
    pub kind: &'static str,
    pub message: String,
    /// The exact command (or action) that fixes it, when there is one.
    pub fix: Option<String>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

impl Error {
    fn new(exit: ExitCode, kind: &'static str, message: impl Into<String>) -> Self {
        Error {
            exit,
            kind,
            message: message.into(),
            fix: None,
        }
    }
    /// Bad input: nothing was changed. Exit 2.
    pub fn usage(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(ExitCode::Usage, kind, message)
    }
    /// The layout or the machine needs an operator: nothing was changed. Exit 3.
    pub fn refused(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(ExitCode::Refused, kind, message)
    }
    /// No confirmation: nothing was changed. Exit 4.
    pub fn not_confirmed(message: impl Into<String>) -> Self {
        Self::new(ExitCode::NotConfirmed, "not-confirmed", message)
    }
    /// A failure while applying, after which everything was rolled back. Exit 1.
    pub fn failed(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(ExitCode::Failed, kind, message)
    }
    /// A rollback that itself failed: manual recovery needed. Exit 6.
    pub fn rollback_failed(message: impl Into<String>) -> Self {
        Self::new(ExitCode::RollbackFailed, "rollback-failed", message)
    }
    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
