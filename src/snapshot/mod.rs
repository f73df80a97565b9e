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
pub mod cas;
pub mod create;
pub mod export;
pub mod hook;
pub mod import;
pub mod manifest;
pub mod migrate;
pub mod ops;
pub mod pick;
pub mod pipeline;
pub mod policy;
pub mod restore;
pub mod retention;
pub mod store;
pub mod tar_io;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::engine::{EngineError, MountInfo};
use crate::stack::xnodus::Retention;
use retention::{Candidate, Decision};

pub use create::{snapshot_container, SnapshotRequest};
pub use hook::{SnapshotHook, SnapshotOutcome};
pub use manifest::{Manifest, Reason, Verification};
pub use policy::SnapshotChoice;
pub use store::{SnapshotEntry, SnapshotStore};
pub use tar_io::{import_tar, open_tar_reader};

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
    Ambiguous {
        prefix: String,
        candidates: Vec<String>,
    },
    #[error("snapshot {id}: checksum mismatch for {path}: manifest says sha256 {expected}, file has {actual} — the archive is corrupt and will not be used")]
    ChecksumMismatch {
        id: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("snapshot {id}: {path} is unreadable: {reason} — the archive will not be used")]
    Corrupt {
        id: String,
        path: PathBuf,
        reason: String,
    },
    #[error("snapshot {id}: manifest {path} is unreadable: {reason}")]
    BadManifest {
        id: String,
        path: PathBuf,
        reason: String,
    },
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
        format!(
            "no space left on the device holding {} ({e})",
            path.display()
        )
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

/// The container mount holding `data_dir`: the one at `data_dir` itself or its deepest parent.
pub fn mount_for<'a>(mounts: &'a [MountInfo], data_dir: &str) -> Option<&'a MountInfo> {
    let dir = data_dir.trim_end_matches('/');
    mounts
        .iter()
        .filter(|m| {
            let t = m.target.trim_end_matches('/');
            dir == t || t.is_empty() || dir.starts_with(&format!("{t}/"))
        })
        .max_by_key(|m| m.target.trim_end_matches('/').len())
}

/// The newest snapshot of `service` taken at or before `before` (any time when None) that is
/// usable: readable manifest, archive present, not known to be corrupt. Safety snapshots (the
/// contents a restore replaced) are skipped: they are restored by id only, so running
/// `restore --latest` twice does not undo the first restore. Read-only.
pub fn latest_usable(
    snapshots_dir: &Path,
    service: &str,
    before: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<SnapshotEntry> {
    let store = SnapshotStore::at(snapshots_dir);
    store.list().ok()?.into_iter().rev().find(|e| {
        let Ok(m) = &e.manifest else { return false };
        m.service == service
            && m.reason != Reason::Safety
            && !e.verified_bad()
            && e.data_path().is_file()
            && before.is_none_or(|b| e.created().is_some_and(|c| c <= b))
    })
}

/// Applies the retention policy to the snapshots of `groups` (all when None); with `dry_run`
/// nothing is deleted. Snapshots whose manifest is unreadable are never touched by retention.
/// The stores the deleted snapshots used are garbage-collected afterwards.
pub fn prune(
    store: &SnapshotStore,
    keep: &Retention,
    groups: Option<&[String]>,
    dry_run: bool,
) -> Result<(Vec<Decision>, Vec<Collected>)> {
    let decisions = prune_plan(store, keep, groups)?;
    let mut collected = Vec::new();
    if !dry_run {
        let ids: Vec<String> = decisions
            .iter()
            .filter(|d| !d.keep)
            .map(|d| d.id.clone())
            .collect();
        collected = delete_snapshots(store, &ids)?;
    }
    Ok((decisions, collected))
}

/// What the retention policy keeps and drops of the snapshots of `groups` (all when None);
/// deletes nothing. Snapshots whose manifest is unreadable are never part of the plan.
pub fn prune_plan(
    store: &SnapshotStore,
    keep: &Retention,
    groups: Option<&[String]>,
) -> Result<Vec<Decision>> {
    let entries = store.list()?;
    let candidates: Vec<Candidate> = entries
        .iter()
        .filter_map(|e| {
            let m = e.manifest.as_ref().ok()?;
            let group = m.retention_key();
            if groups.is_some_and(|g| !g.contains(&group)) {
                return None;
            }
            Some(Candidate {
                id: e.id.clone(),
                group,
                created: e.created()?,
                verified: e.verified_ok(),
            })
        })
        .collect();
    Ok(retention::plan(&candidates, keep))
}

/// What the garbage collection of one store did after snapshots were deleted.
#[derive(Debug)]
pub struct Collected {
    pub store: PathBuf,
    pub result: Result<cas::gc::GcReport>,
}

impl Collected {
    /// One status line.
    pub fn describe(&self) -> String {
        match &self.result {
            Ok(r) if r.busy => format!(
                "snapshot store {} is in use by another nodus; its space is reclaimed at the next prune",
                self.store.display()
            ),
            Ok(r) => format!(
                "snapshot store {}: freed {} ({} packs removed, {} repacked)",
                self.store.display(),
                human_bytes(r.freed()),
                r.packs_deleted,
                r.packs_repacked
            ),
            Err(e) => format!(
                "garbage collection of snapshot store {} failed (nothing listed was affected): {e}",
                self.store.display()
            ),
        }
    }
}

/// Deletes snapshots (their directories, manifests first), then collects the garbage of the
/// stores their chunks were in and of the store new snapshots go to (what interrupted writers
/// left is reclaimed there). A failed collection is reported, not returned: every listed
/// snapshot stays readable whatever happened to it.
pub fn delete_snapshots(store: &SnapshotStore, ids: &[String]) -> Result<Vec<Collected>> {
    let mut stores: Vec<(String, String)> = Vec::new();
    if let Ok(c) = std::fs::read(store.cas_dir().join("config")) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&c) {
            if let Some(id) = v["id"].as_str() {
                let p = std::path::absolute(store.cas_dir())
                    .unwrap_or_else(|_| store.cas_dir().to_path_buf());
                stores.push((p.to_string_lossy().into_owned(), id.to_string()));
            }
        }
    }
    for id in ids {
        if let Ok(e) = store.get(id) {
            if let Ok(Manifest { store: Some(r), .. }) = &e.manifest {
                let key = (r.path.clone(), r.store_id.clone());
                if !stores.contains(&key) {
                    stores.push(key);
                }
            }
        }
        store.delete(id)?;
    }
    Ok(stores
        .into_iter()
        .map(|(path, id)| {
            let dir = PathBuf::from(&path);
            let result = cas::Cas::open_existing(&dir, &id).and_then(|c| cas::gc::gc(&c));
            Collected { store: dir, result }
        })
        .collect())
}

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
    fn mount_for_picks_the_deepest_parent() {
        use crate::engine::MountKind;
        let m = |t: &str| MountInfo {
            kind: MountKind::Volume,
            name_or_source: format!("v{t}"),
            target: t.into(),
        };
        let mounts = vec![
            m("/var/lib"),
            m("/var/lib/postgresql"),
            m("/var/lib/postgresql/data2"),
        ];
        assert_eq!(
            mount_for(&mounts, "/var/lib/postgresql/data")
                .unwrap()
                .target,
            "/var/lib/postgresql"
        );
        assert_eq!(
            mount_for(&mounts, "/var/lib/postgresql/data2/")
                .unwrap()
                .target,
            "/var/lib/postgresql/data2"
        );
        assert!(mount_for(&mounts, "/data").is_none());
    }

    #[test]
    fn prune_deletes_what_the_plan_drops() {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(d.path()).unwrap();
        for i in 0..4 {
            let id = format!("2025010{}T000000Z-db-aaaaa{i}", i + 1);
            let mut m = manifest::tests::sample(&id);
            m.created_at = format!("2025-01-0{}T00:00:00Z", i + 1);
            let p = store.begin(&id).unwrap();
            store::write_new_file(&p.data_path(), b"x").unwrap();
            p.commit(&m).unwrap();
        }
        let keep = Retention {
            last: Some(2),
            ..Default::default()
        };
        let (plan, _) = prune(&store, &keep, None, true).unwrap();
        assert_eq!(plan.iter().filter(|d| !d.keep).count(), 2);
        assert_eq!(store.list().unwrap().len(), 4, "dry run deletes nothing");
        prune(&store, &keep, Some(&["volume:other".to_string()]), false).unwrap();
        assert_eq!(store.list().unwrap().len(), 4, "other groups untouched");
        prune(&store, &keep, None, false).unwrap();
        let ids: Vec<_> = store.list().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(
            ids,
            vec!["20250103T000000Z-db-aaaaa2", "20250104T000000Z-db-aaaaa3"]
        );
    }

    #[test]
    fn latest_usable_skips_corrupt_and_later_snapshots() {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(d.path()).unwrap();
        let mk = |id: &str, at: &str, service: &str| {
            let mut m = manifest::tests::sample(id);
            m.created_at = at.into();
            m.service = service.into();
            let p = store.begin(id).unwrap();
            store::write_new_file(&p.data_path(), b"x").unwrap();
            p.commit(&m).unwrap();
        };
        mk("20250101T000000Z-db-000001", "2025-01-01T00:00:00Z", "db");
        mk("20250102T000000Z-db-000002", "2025-01-02T00:00:00Z", "db");
        mk("20250103T000000Z-db-000003", "2025-01-03T00:00:00Z", "db");
        mk(
            "20250104T000000Z-cache-000004",
            "2025-01-04T00:00:00Z",
            "cache",
        );
        let t = |s: &str| {
            Some(
                chrono::DateTime::parse_from_rfc3339(s)
                    .unwrap()
                    .with_timezone(&chrono::Utc),
            )
        };
        assert_eq!(
            latest_usable(d.path(), "db", None).unwrap().id,
            "20250103T000000Z-db-000003"
        );
        assert_eq!(
            latest_usable(d.path(), "db", t("2025-01-02T12:00:00Z"))
                .unwrap()
                .id,
            "20250102T000000Z-db-000002"
        );
        store
            .write_verification(
                "20250102T000000Z-db-000002",
                &Verification {
                    ok: false,
                    verified_at: "x".into(),
                    sha256: String::new(),
                    entries: 0,
                    error: Some("bad".into()),
                    nodus_version: "0".into(),
                },
            )
            .unwrap();
        assert_eq!(
            latest_usable(d.path(), "db", t("2025-01-02T12:00:00Z"))
                .unwrap()
                .id,
            "20250101T000000Z-db-000001"
        );
        assert!(latest_usable(d.path(), "db", t("2024-12-31T00:00:00Z")).is_none());
        assert!(latest_usable(d.path(), "nope", None).is_none());
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn no_space_message_names_the_path() {
        let e = SnapshotError::io(
            "/x/y.partial/data.tar.zst",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        let s = e.to_string();
        assert!(s.contains("no space left"), "{s}");
        assert!(s.contains("/x/y.partial/data.tar.zst"), "{s}");
    }
}
