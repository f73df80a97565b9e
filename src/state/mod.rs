//! The state dir (`.nodus/` beside the stack, or `--state-dir`): generated compose file, project
//! name memory, lock, ledger, snapshots, backups.

pub mod atomic;
pub mod lock;

use std::path::{Path, PathBuf};

pub use atomic::{atomic_write, ensure_private_dir};
pub use lock::StackLock;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state dir {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another nodus command holds the lock on {path} and did not finish within {waited_secs}s"
    )]
    LockTimeout { path: PathBuf, waited_secs: u64 },
    #[error("{path} is unreadable or torn: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl StateError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StateError::Io {
            path: path.into(),
            source,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Creates the directory (0700) when missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StateError> {
        let root = root.into();
        ensure_private_dir(&root).map_err(|e| StateError::io(&root, e))?;
        Ok(StateDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The generated, hardened compose file.
    pub fn compose_path(&self) -> PathBuf {
        self.root.join("compose.yaml")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }
    /// Remembered project name.
    pub fn project_file(&self) -> PathBuf {
        self.root.join("project")
    }
    /// The ledger is per stack (state dir), not per project name: a renamed project must be
    /// compared with what the stack held under its old name. Entries record the project name.
    pub fn ledger_path(&self, _project: &str) -> PathBuf {
        self.root.join("ledger.json")
    }
    pub fn snapshots_dir(&self, project: &str) -> PathBuf {
        self.root.join("snapshots").join(project)
    }
    pub fn backups_dir(&self, project: &str) -> PathBuf {
        self.root.join("backups").join(project)
    }

    /// The project name used last time, if any.
    pub fn remembered_project(&self) -> Result<Option<String>, StateError> {
        let path = self.project_file();
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::io(path, e)),
        }
    }

    pub fn remember_project(&self, project: &str) -> Result<(), StateError> {
        let path = self.project_file();
        atomic_write(&path, format!("{project}\n").as_bytes(), 0o600)
            .map_err(|e| StateError::io(path, e))
    }
}
