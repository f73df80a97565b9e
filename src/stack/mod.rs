//! Stack files: parsing, interpolation, override merging, `x-nodus`, hardening and planning.
//!
//! Pure: no file, network or engine I/O happens here. Callers (see `crate::project`) read the files
//! and the environment and hand their text in; everything returned is data.

pub mod build;
pub mod detect;
pub mod duration;
pub mod harden;
pub mod interpolate;
mod load;
pub mod locate;
pub mod merge;
pub mod model;
pub mod plan;
pub mod position;
mod render;
pub mod xnodus;

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Serialize;

pub use harden::{render_plain, render_yaml, render_yaml_for, Finding, FindingLevel, Hardened};
pub use load::resolve_paths;
pub use model::{ComposeFile, Service};
pub use xnodus::{ServiceKind, WatchAction, WatchRule, XNodus};

/// One stack file as read from disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// As the user named it (shown in errors).
    pub path: PathBuf,
    pub text: String,
}

/// Variables for `${VAR}` interpolation: the process environment over `.env`.
pub type Env = IndexMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// YAML syntax or type error, with position.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// An error at a place in the document (path like `services.db.environment`).
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
    /// `${VAR:?message}` with VAR unset, or a malformed `${...}`; `line`/`column` of the key
    /// holding it (0 when it could not be located).
    #[error("{}: {path}: {message}", at(file, *line, *column))]
    Interpolation {
        file: String,
        line: usize,
        column: usize,
        path: String,
        message: String,
    },
    #[error("no such service: {name} (services in this stack: {})", available.join(", "))]
    UnknownService {
        name: String,
        available: Vec<String>,
    },
    #[error("dependency cycle between services: {}", cycle.join(" -> "))]
    DependencyCycle { cycle: Vec<String> },
    #[error("service {service} depends on {dependency}, which is not defined")]
    MissingDependency { service: String, dependency: String },
    #[error("invalid project name {name:?}: {reason}")]
    ProjectName { name: String, reason: String },
    /// Every unknown key of `x-nodus` (not only the first), each as `file:line:col: path: ...`.
    #[error("{}", unknown_keys(problems))]
    UnknownKeys { problems: Vec<String> },
}

/// `file:line:col`, or `file` when the position is unknown (line 0).
fn at(file: &str, line: usize, column: usize) -> String {
    if line == 0 {
        file.to_string()
    } else {
        format!("{file}:{line}:{column}")
    }
}

fn unknown_keys(problems: &[String]) -> String {
    match problems {
        [one] => one.clone(),
        many => format!(
            "{} unknown keys in x-nodus:\n  {}",
            many.len(),
            many.join("\n  ")
        ),
    }
}

/// Where the project name came from (for messages and the "project renamed" warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectSource {
    Flag,
    Environment,
    NameKey,
    Directory,
}

/// A loaded stack: merged, interpolated and validated, as the user wrote it (not yet hardened).
#[derive(Debug, Clone)]
pub struct Stack {
    /// Normalised compose project name.
    pub project: String,
    pub project_source: ProjectSource,
    /// The stack files, in override order.
    pub files: Vec<PathBuf>,
    pub compose: ComposeFile,
    pub nodus: XNodus,
    /// Non-fatal remarks found while loading (e.g. unset variables defaulting to "").
    pub warnings: Vec<String>,
}

/// What nodus knows about a stateful service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatefulService {
    pub service: String,
    pub kind: ServiceKind,
    /// Data directory inside the container (PGDATA for postgres).
    pub data_dir: String,
    /// Compose volume key the data dir is on after hardening (None: bind mount kept, or hardening
    /// disabled and the data dir is not on a named volume).
    pub volume_key: Option<String>,
    /// The engine-level volume name (`<project>_<key>` or the volume's `name:`).
    pub volume_name: Option<String>,
}

impl Stack {
    /// Parses, merges (later files override earlier ones), interpolates and validates.
    /// `project_override` is `-p` (source Flag) or `COMPOSE_PROJECT_NAME` (source Environment);
    /// `dir_name` is the stack directory's name, the last fallback.
    pub fn load(
        sources: &[SourceFile],
        env: &Env,
        project_override: Option<(&str, ProjectSource)>,
        dir_name: &str,
    ) -> Result<Stack, StackError> {
        load::load(sources, env, project_override, dir_name)
    }

    pub fn service_names(&self) -> Vec<String> {
        self.compose.services.keys().cloned().collect()
    }

    /// Errors with the list of services when a name is unknown.
    pub fn check_services(&self, names: &[String]) -> Result<(), StackError> {
        for n in names {
            if !self.compose.services.contains_key(n) {
                return Err(StackError::UnknownService {
                    name: n.clone(),
                    available: self.service_names(),
                });
            }
        }
        Ok(())
    }

    /// The hardened compose model plus what was changed and warned about.
    pub fn harden(&self) -> Hardened {
        harden::harden(self)
    }
}

/// Normalises a project name as compose does: lowercase, only `[a-z0-9_-]`, starting with a
/// letter or digit.
pub fn normalize_project_name(raw: &str) -> String {
    let lowered: String = raw
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    lowered.trim_start_matches(['_', '-']).to_string()
}
