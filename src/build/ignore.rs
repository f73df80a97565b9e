//! Docker's `.dockerignore` semantics (moby/patternmatcher + docker CLI `ReadAll`).

use std::path::PathBuf;

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {}

/// A pattern that does not compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{line}: bad pattern `{pattern}`: {reason}", file.display())]
pub struct PatternError {
    pub file: PathBuf,
    pub line: usize,
    pub pattern: String,
    pub reason: String,
}
