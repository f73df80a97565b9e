//! Volume snapshots (archive endpoint + zstd + SHA-256), restore, retention; logical backups.
//!
//! Layout under `StateDir::snapshots_dir(project)`:
//!
//! ```text
//! <id>/data.tar.zst      the data dir as the Engine API archive endpoint produced it, zstd-compressed
//! <id>/manifest.json     what, where, when, sizes, SHA-256 of data.tar.zst, census, stop evidence
//! <id>/verified.json     outcome of the last `snapshot verify` (sidecar, written atomically)
//! <id>.partial/          a snapshot being written (never listed; removed at the next store open)
//! ```
//!
//! Nothing here pulls an image or runs a helper to *read* a volume: archives are streamed from
//! the stopped service container through `GET /containers/{id}/archive`. Restores empty the
//! volume with a short-lived container of the service's own image (already local) and upload
//! through `PUT /containers/{id}/archive`.

pub mod backup;
pub mod create;
pub mod manifest;
pub mod pipeline;
pub mod restore;
pub mod retention;
pub mod store;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::engine::EngineError;

pub use create::{snapshot_container, SnapshotHook, SnapshotOutcome, SnapshotRequest};
pub use manifest::{Manifest, Reason, Verification};
pub use store::{SnapshotEntry, SnapshotStore};

/// Errors of snapshot, restore and backup operations; each names the snapshot, file or container.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}", io_message(path, source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("no snapshot {0} (see `nodus snapshot list`)")]
    NotFound(String),
    #[error("{prefix} matches several snapshots: {}", candidates.join(", "))]
    Ambiguous { prefix: String, candidates: Vec<String> },
    #[error("snapshot {id}: checksum mismatch for {path}: manifest says sha256 {expected}, file has {actual} — the archive is corrupt and will not be used")]
    ChecksumMismatch {
        id: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("snapshot {id}: {path} is unreadable: {reason} — the archive will not be used")]
    Corrupt { id: String, path: PathBuf, reason: String },
    #[error("snapshot {id}: manifest {path} is unreadable: {reason}")]
    BadManifest { id: String, path: PathBuf, reason: String },
    #[error("{0}")]
    Other(String),
}

impl SnapshotError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SnapshotError::Io {
            path: path.into(),
            source,
        }
    }
}

fn io_message(path: &Path, e: &std::io::Error) -> String {
    if is_no_space(e) {
        format!("no space left on the device holding {} ({e})", path.display())
    } else {
        format!("{}: {e}", path.display())
    }
}

/// True for ENOSPC / EDQUOT.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// Human-readable byte size (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn no_space_message_names_the_path() {
        let e = SnapshotError::io("/x/y.partial/data.tar.zst", std::io::Error::from(std::io::ErrorKind::StorageFull));
        let s = e.to_string();
        assert!(s.contains("no space left"), "{s}");
        assert!(s.contains("/x/y.partial/data.tar.zst"), "{s}");
    }
}
