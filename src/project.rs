//! Loading a stack from disk: discovery of stack files like compose, `.env`, the process
//! environment, `env_file:`, the project name and the state dir. The I/O half of `stack/`.

use std::path::{Path, PathBuf};

use crate::cli::GlobalArgs;
use crate::stack::{Env, Hardened, Stack};
use crate::state::StateDir;

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("no stack file found in {dir} (looked for nodus.yaml, compose.yaml, compose.yml, docker-compose.yml, docker-compose.yaml); pass one with -f")]
    NotFound { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    DotEnv {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A stack loaded from disk, with its state dir.
#[derive(Debug, Clone)]
pub struct Project {
    pub stack: Stack,
    pub hardened: Hardened,
    /// Directory of the first stack file.
    pub dir: PathBuf,
    pub state: StateDir,
    pub env: Env,
}

impl Project {
    pub fn name(&self) -> &str {
        &self.stack.project
    }
}

/// Finds, reads and loads the stack named by the global flags.
pub fn load(global: &GlobalArgs) -> anyhow::Result<Project> {
    let _ = global;
    todo!("project loading")
}

/// The default stack files in `dir`, compose-style.
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, ProjectError> {
    let _ = dir;
    todo!("discover")
}
