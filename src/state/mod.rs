//! The state dir (`.nodus/` beside the stack, or `--state-dir`): generated compose file, project
//! name memory, lock, ledger, snapshots, backups.

pub mod atomic;
pub mod journal;
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

/// One stack's part of a state dir.
///
/// Several stack files may share a state dir (the default `.nodus/` beside them): each gets its
/// own ledger, rendered file, remembered project name, snapshots, backups and lock. The first
/// stack file that used the state dir keeps the top level (the layout of single-stack folders,
/// unchanged: nothing moves on upgrade) and is named in `<state dir>/stack`; every other stack
/// file gets `<state dir>/stacks/<file name>/`.
#[derive(Debug, Clone)]
pub struct StateDir {
    /// Where this stack's files are.
    root: PathBuf,
    /// The shared state dir.
    top: PathBuf,
}

/// The file naming the stack file that owns a state dir's top level.
const OWNER_FILE: &str = "stack";
/// Where the other stack files' parts are.
const STACKS_DIR: &str = "stacks";

impl StateDir {
    /// Opens `root` as a state dir of one stack (its top level), creating it (0700) when missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StateError> {
        let root = root.into();
        ensure_private_dir(&root).map_err(|e| StateError::io(&root, e))?;
        Ok(StateDir {
            top: root.clone(),
            root,
        })
    }

    /// Opens the part of the state dir `top` that belongs to the stack file named `stack_file`
    /// (its file name, e.g. `compose.yaml`; a path is reduced to its file name).
    pub fn open_for_stack(top: impl Into<PathBuf>, stack_file: &Path) -> Result<Self, StateError> {
        let top = top.into();
        ensure_private_dir(&top).map_err(|e| StateError::io(&top, e))?;
        let key = stack_key(stack_file);
        let owner = claim_owner(&top, &key)?;
        let root = if owner == key {
            top.clone()
        } else {
            let dir = top.join(STACKS_DIR).join(&key);
            ensure_private_dir(&dir).map_err(|e| StateError::io(&dir, e))?;
            dir
        };
        Ok(StateDir { root, top })
    }

    /// The shared state dir (equal to [`StateDir::root`] for the stack owning its top level).
    pub fn top(&self) -> &Path {
        &self.top
    }

    /// This stack's directory inside the state dir.
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

/// The key of a stack file in a state dir: its file name, with anything unusual replaced.
fn stack_key(stack_file: &Path) -> String {
    let name = stack_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stack".to_string());
    let key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match key.trim_start_matches('.') {
        "" => "stack".to_string(),
        k => k.to_string(),
    }
}

/// The stack file owning the top level of `top`: the one named in `<top>/stack`, else (a state
/// dir written before per-stack keys) the first file named in the header of the rendered
/// compose file there, else `key` (first come). Claimed atomically (hard link of a complete
/// temp file), so two commands starting at once agree.
fn claim_owner(top: &Path, key: &str) -> Result<String, StateError> {
    let owner_path = top.join(OWNER_FILE);
    if let Some(owner) = read_owner(&owner_path)? {
        return Ok(owner);
    }
    let candidate = legacy_owner(top).unwrap_or_else(|| key.to_string());
    let tmp = top.join(format!(".{OWNER_FILE}.tmp-{}", std::process::id()));
    atomic_write(&tmp, format!("{candidate}\n").as_bytes(), 0o600)
        .map_err(|e| StateError::io(&tmp, e))?;
    let linked = std::fs::hard_link(&tmp, &owner_path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            let _ = atomic::sync_dir(top);
            Ok(candidate)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(read_owner(&owner_path)?.unwrap_or(candidate))
        }
        Err(e) => Err(StateError::io(owner_path, e)),
    }
}

fn read_owner(path: &Path) -> Result<Option<String>, StateError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::io(path, e)),
    }
}

/// The first stack file named in the header of `<top>/compose.yaml` ("# Generated by nodus from
/// a.yaml, b.yaml (project p)."), reduced to its key.
fn legacy_owner(top: &Path) -> Option<String> {
    let text = std::fs::read_to_string(top.join("compose.yaml")).ok()?;
    let line = text.lines().next()?;
    let rest = line.strip_prefix("# Generated by nodus from ")?;
    let files = rest.rsplit_once(" (project ")?.0;
    let first = files.split(", ").next()?.trim();
    (!first.is_empty()).then(|| stack_key(Path::new(first)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_in_one_state_dir_do_not_share_files() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join(".nodus");
        let a = StateDir::open_for_stack(&top, Path::new("dir/dev.yaml")).unwrap();
        let b = StateDir::open_for_stack(&top, Path::new("nodus-adk.yaml")).unwrap();
        // the first stack keeps the top level (the single-stack layout)
        assert_eq!(a.root(), top.as_path());
        assert_eq!(b.root(), top.join("stacks/nodus-adk.yaml").as_path());
        for (x, y) in [
            (a.ledger_path("p"), b.ledger_path("p")),
            (a.compose_path(), b.compose_path()),
            (a.project_file(), b.project_file()),
            (a.lock_path(), b.lock_path()),
            (a.snapshots_dir("p"), b.snapshots_dir("p")),
            (a.backups_dir("p"), b.backups_dir("p")),
        ] {
            assert_ne!(x, y);
        }
        a.remember_project("dev").unwrap();
        assert_eq!(b.remembered_project().unwrap(), None);
        // reopening gives the same places
        let a2 = StateDir::open_for_stack(&top, Path::new("/elsewhere/dev.yaml")).unwrap();
        assert_eq!(a2.root(), a.root());
        assert_eq!(a2.remembered_project().unwrap().as_deref(), Some("dev"));
        let b2 = StateDir::open_for_stack(&top, Path::new("nodus-adk.yaml")).unwrap();
        assert_eq!(b2.root(), b.root());
    }

    #[test]
    fn a_state_dir_from_before_keeps_its_owner() {
        // Written by an older nodus: everything at the top, no owner file; the rendered file's
        // header names the stack it came from.
        let d = tempfile::tempdir().unwrap();
        let top = d.path().to_path_buf();
        std::fs::write(
            top.join("compose.yaml"),
            "# Generated by nodus from stacks/dev.yaml, stacks/dev.override.yaml (project ncdev). Do not edit.\nservices: {}\n",
        )
        .unwrap();
        std::fs::write(top.join("ledger.json"), "{}").unwrap();
        std::fs::write(top.join("project"), "ncdev\n").unwrap();
        // another stack of the folder comes first: it does not take the old ledger
        let other = StateDir::open_for_stack(&top, Path::new("stacks/nodus-adk.yaml")).unwrap();
        assert_ne!(other.ledger_path("x"), top.join("ledger.json"));
        assert_eq!(other.remembered_project().unwrap(), None);
        // the stack that wrote it keeps it, in place
        let dev = StateDir::open_for_stack(&top, Path::new("stacks/dev.yaml")).unwrap();
        assert_eq!(dev.ledger_path("x"), top.join("ledger.json"));
        assert_eq!(dev.remembered_project().unwrap().as_deref(), Some("ncdev"));
    }

    #[test]
    fn single_stack_state_dir_without_header_stays_in_place() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().to_path_buf();
        std::fs::write(top.join("ledger.json"), "{}").unwrap();
        std::fs::write(top.join("project"), "app\n").unwrap();
        let s = StateDir::open_for_stack(&top, Path::new("compose.yaml")).unwrap();
        assert_eq!(s.ledger_path("app"), top.join("ledger.json"));
        assert_eq!(s.remembered_project().unwrap().as_deref(), Some("app"));
    }
}
