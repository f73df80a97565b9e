//! The snapshot directory of one project: listing, atomic creation (`<id>.partial` → `<id>`),
//! deletion, verification sidecars, and cleanup of interrupted snapshots.
//!
//! A snapshot being written lives in `<id>.partial/` and holds an exclusive lock on
//! `<id>.partial/.lock` for as long as its writer runs. Opening the store removes every
//! `.partial` directory whose lock is free (its writer died: SIGKILL, power loss, full disk...),
//! so a concurrent snapshot of another nodus process is never removed under its feet.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use super::manifest::{self, Manifest, Verification, DATA_FILE, MANIFEST_FILE, VERIFIED_FILE};
use super::{Result, SnapshotError};
use crate::state::{atomic_write, ensure_private_dir};

const PARTIAL_SUFFIX: &str = ".partial";
const LOCK_FILE: &str = ".lock";
/// A `.partial` dir without a lock file is left alone while younger than this (its writer may be
/// between `mkdir` and creating the lock).
const LOCKLESS_GRACE: Duration = Duration::from_secs(60);

/// One committed snapshot as found on disk.
#[derive(Debug, Clone)]
pub struct SnapshotEntry {
    pub id: String,
    pub dir: PathBuf,
    /// The manifest, or why it could not be read (such a snapshot is listed as broken, never
    /// restored).
    pub manifest: std::result::Result<Manifest, String>,
    pub verification: Option<Verification>,
}

impl SnapshotEntry {
    /// The manifest, or the error saying it is unreadable.
    pub fn manifest_checked(&self) -> std::result::Result<Manifest, SnapshotError> {
        self.manifest
            .clone()
            .map_err(|reason| SnapshotError::BadManifest {
                id: self.id.clone(),
                path: self.dir.join(super::manifest::MANIFEST_FILE),
                reason,
            })
    }

    /// The snapshot's data file: `data.tar.zst` (single-file format) or its chunk list (store).
    pub fn data_path(&self) -> PathBuf {
        match &self.manifest {
            Ok(m) if !m.archive.file.is_empty() && !m.archive.file.contains('/') => {
                self.dir.join(&m.archive.file)
            }
            _ => self.dir.join(DATA_FILE),
        }
    }
    pub fn created(&self) -> Option<DateTime<Utc>> {
        match &self.manifest {
            Ok(m) => m.created().or_else(|| manifest::id_time(&self.id)),
            Err(_) => manifest::id_time(&self.id),
        }
    }
    /// Verified, and the verification is of the archive the manifest names.
    pub fn verified_ok(&self) -> bool {
        match (&self.verification, &self.manifest) {
            (Some(v), Ok(m)) => v.ok && v.sha256 == m.archive.sha256,
            _ => false,
        }
    }
    /// A verification ran and failed.
    pub fn verified_bad(&self) -> bool {
        matches!(&self.verification, Some(v) if !v.ok)
    }
}

/// Name of the deduplicating store beside the projects' snapshot directories
/// (`<state dir>/snapshots/.store`): hidden, so no project name can collide with it.
pub const DEFAULT_CAS_NAME: &str = ".store";

/// The snapshots of one project.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    /// The deduplicating store new snapshots are written to.
    cas: PathBuf,
    /// `x-nodus.snapshots.trust_mtime`: new snapshots take unchanged files from the previous one.
    trust_mtime: bool,
}

/// The default deduplicating store for a project snapshot directory `<x>/snapshots/<project>`:
/// `<x>/snapshots/.store`.
pub fn default_cas_dir(dir: &Path) -> PathBuf {
    dir.parent()
        .map(|p| p.join(DEFAULT_CAS_NAME))
        .unwrap_or_else(|| dir.join(DEFAULT_CAS_NAME))
}

impl SnapshotStore {
    /// Opens (creating it 0700 when missing) and removes interrupted snapshots; returns the
    /// store and the names of the `.partial` directories removed (callers print them).
    pub fn open(dir: impl Into<PathBuf>) -> Result<(SnapshotStore, Vec<String>)> {
        let dir = dir.into();
        ensure_private_dir(&dir).map_err(|e| SnapshotError::io(&dir, e))?;
        let store = SnapshotStore::at(dir);
        let cleaned = store.cleanup()?;
        Ok((store, cleaned))
    }

    /// The store at `dir` without creating or cleaning anything (for read-only lookups).
    pub fn at(dir: impl Into<PathBuf>) -> SnapshotStore {
        let dir = dir.into();
        let cas = default_cas_dir(&dir);
        SnapshotStore {
            dir,
            cas,
            trust_mtime: true,
        }
    }

    /// The snapshots of `project`, writing to the store its stack names (`x-nodus.snapshots.store`)
    /// or the default one. Nothing is created.
    pub fn for_project(project: &crate::project::Project) -> SnapshotStore {
        SnapshotStore::at(project.state.snapshots_dir(project.name())).for_stack(project)
    }

    /// Uses the store and the policy `project`'s stack names.
    pub fn for_stack(self, project: &crate::project::Project) -> SnapshotStore {
        self.with_cas(super::cas::store_dir_for(project))
            .with_trust_mtime(project.stack.nodus.snapshots.trust_mtime)
    }

    /// `x-nodus.snapshots.trust_mtime`.
    pub fn with_trust_mtime(mut self, trust: bool) -> SnapshotStore {
        self.trust_mtime = trust;
        self
    }

    pub fn trust_mtime(&self) -> bool {
        self.trust_mtime
    }

    /// Uses the deduplicating store at `cas` (`x-nodus.snapshots.store`) for new snapshots.
    pub fn with_cas(mut self, cas: impl Into<PathBuf>) -> SnapshotStore {
        self.cas = cas.into();
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The deduplicating store new snapshots go to.
    pub fn cas_dir(&self) -> &Path {
        &self.cas
    }

    /// Removes `.partial` dirs whose writer is gone and leftovers of interrupted deletions.
    fn cleanup(&self) -> Result<Vec<String>> {
        let mut cleaned = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| SnapshotError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| SnapshotError::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(".trash-") {
                fs::remove_dir_all(&path).map_err(|e| SnapshotError::io(&path, e))?;
                continue;
            }
            if !name.ends_with(PARTIAL_SUFFIX) || !path.is_dir() {
                continue;
            }
            let lock_path = path.join(LOCK_FILE);
            let stale = match OpenOptions::new().read(true).write(true).open(&lock_path) {
                Ok(f) => match f.try_lock() {
                    Ok(()) => true,
                    Err(fs::TryLockError::WouldBlock) => false,
                    Err(fs::TryLockError::Error(e)) => {
                        return Err(SnapshotError::io(&lock_path, e))
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let age = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .unwrap_or(Duration::MAX);
                    age > LOCKLESS_GRACE
                }
                Err(e) => return Err(SnapshotError::io(&lock_path, e)),
            };
            if stale {
                fs::remove_dir_all(&path).map_err(|e| SnapshotError::io(&path, e))?;
                cleaned.push(name);
            }
        }
        if !cleaned.is_empty() {
            sync_dir(&self.dir)?;
        }
        cleaned.sort();
        Ok(cleaned)
    }

    /// Every committed snapshot, oldest first. `.partial` and hidden directories are ignored.
    pub fn list(&self) -> Result<Vec<SnapshotEntry>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(SnapshotError::io(&self.dir, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| SnapshotError::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !manifest::is_snapshot_id(&name) || !entry.path().is_dir() {
                continue;
            }
            out.push(self.entry(&name));
        }
        out.sort_by(|a, b| a.created().cmp(&b.created()).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    fn entry(&self, id: &str) -> SnapshotEntry {
        let dir = self.dir.join(id);
        let manifest = read_manifest(&dir.join(MANIFEST_FILE)).and_then(|m| {
            if m.id == id {
                Ok(m)
            } else {
                Err(format!("manifest is for {} (directory {id})", m.id))
            }
        });
        let verification = fs::read(dir.join(VERIFIED_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Verification>(&b).ok());
        SnapshotEntry {
            id: id.to_string(),
            dir,
            manifest,
            verification,
        }
    }

    /// A snapshot by exact id or unique prefix.
    pub fn get(&self, id_or_prefix: &str) -> Result<SnapshotEntry> {
        let exact = self.dir.join(id_or_prefix);
        if manifest::is_snapshot_id(id_or_prefix) && exact.is_dir() {
            return Ok(self.entry(id_or_prefix));
        }
        let matches: Vec<SnapshotEntry> = self
            .list()?
            .into_iter()
            .filter(|e| !id_or_prefix.is_empty() && e.id.starts_with(id_or_prefix))
            .collect();
        match matches.len() {
            0 => Err(SnapshotError::NotFound(id_or_prefix.to_string())),
            1 => Ok(matches.into_iter().next().expect("one")),
            _ => Err(SnapshotError::Ambiguous {
                prefix: id_or_prefix.to_string(),
                candidates: matches.into_iter().map(|e| e.id).collect(),
            }),
        }
    }

    /// Starts a snapshot: creates `<id>.partial/` (0700) and locks it.
    pub fn begin(&self, id: &str) -> Result<PartialSnapshot> {
        let dir = self.dir.join(format!("{id}{PARTIAL_SUFFIX}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| SnapshotError::io(&dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .and_then(|f| f.try_lock().map_err(io::Error::from).map(|()| f));
        let lock = match lock {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(SnapshotError::io(&lock_path, e));
            }
        };
        Ok(PartialSnapshot {
            id: id.to_string(),
            dir,
            final_dir: self.dir.join(id),
            parent: self.dir.clone(),
            lock: Some(lock),
            committed: false,
        })
    }

    /// Deletes a snapshot: renamed out of the listing first, then removed.
    pub fn delete(&self, id: &str) -> Result<()> {
        if !manifest::is_snapshot_id(id) {
            return Err(SnapshotError::NotFound(id.to_string()));
        }
        let dir = self.dir.join(id);
        if !dir.is_dir() {
            return Err(SnapshotError::NotFound(id.to_string()));
        }
        let trash = self.dir.join(format!(".trash-{id}"));
        fs::rename(&dir, &trash).map_err(|e| SnapshotError::io(&dir, e))?;
        sync_dir(&self.dir)?;
        fs::remove_dir_all(&trash).map_err(|e| SnapshotError::io(&trash, e))?;
        Ok(())
    }

    /// Records the outcome of a verification (atomically, 0600).
    pub fn write_verification(&self, id: &str, v: &Verification) -> Result<()> {
        let path = self.dir.join(id).join(VERIFIED_FILE);
        let mut bytes = serde_json::to_vec_pretty(v).expect("verification serialises");
        bytes.push(b'\n');
        atomic_write(&path, &bytes, 0o600).map_err(|e| SnapshotError::io(&path, e))
    }
}

fn read_manifest(path: &Path) -> std::result::Result<Manifest, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    crate::state::atomic::sync_dir(dir).map_err(|e| SnapshotError::io(dir, e))
}

/// A snapshot being written. Dropping it without [`PartialSnapshot::commit`] removes it.
#[derive(Debug)]
pub struct PartialSnapshot {
    pub id: String,
    dir: PathBuf,
    final_dir: PathBuf,
    parent: PathBuf,
    lock: Option<File>,
    committed: bool,
}

impl PartialSnapshot {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Where a single-file archive goes (the caller creates it 0600 and fsyncs it).
    pub fn data_path(&self) -> PathBuf {
        self.dir.join(DATA_FILE)
    }
    pub fn final_dir(&self) -> &Path {
        &self.final_dir
    }

    /// Writes the manifest (last, fsynced), renames `<id>.partial` to `<id>` and fsyncs the
    /// parent directory. After this returns the snapshot is listed.
    pub fn commit(mut self, manifest: &Manifest) -> Result<PathBuf> {
        let data = self.dir.join(&manifest.archive.file);
        // The archive must be durable before the manifest makes it count.
        File::open(&data)
            .and_then(|f| f.sync_all())
            .map_err(|e| SnapshotError::io(&data, e))?;
        let mpath = self.dir.join(MANIFEST_FILE);
        write_new_file(&mpath, &manifest.to_json()).map_err(|e| SnapshotError::io(&mpath, e))?;
        let lock_path = self.dir.join(LOCK_FILE);
        fs::remove_file(&lock_path).map_err(|e| SnapshotError::io(&lock_path, e))?;
        sync_dir(&self.dir)?;
        fs::rename(&self.dir, &self.final_dir)
            .map_err(|e| SnapshotError::io(&self.final_dir, e))?;
        sync_dir(&self.parent)?;
        self.committed = true;
        self.lock.take();
        Ok(self.final_dir.clone())
    }
}

impl Drop for PartialSnapshot {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
            let _ = crate::state::atomic::sync_dir(&self.parent);
            crate::interrupt::note_removed(format!(
                "snapshot {} ({})",
                self.id,
                self.dir.display()
            ));
        }
    }
}

/// Creates `path` (0600, must not exist), writes and fsyncs it.
pub fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates a file for streaming into (0600, must not exist).
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // umask cannot widen 0600, but an inherited ACL could: be explicit.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::manifest::tests::sample;

    fn commit_one(store: &SnapshotStore, id: &str) -> PathBuf {
        let p = store.begin(id).unwrap();
        write_new_file(&p.data_path(), b"archive").unwrap();
        p.commit(&sample(id)).unwrap()
    }

    #[test]
    fn commit_makes_a_listed_private_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let (store, cleaned) = SnapshotStore::open(d.path().join("snaps/demo")).unwrap();
        assert!(cleaned.is_empty());
        let id = "20250629T230000Z-db-abcdef";
        let dir = commit_one(&store, id);
        assert_eq!(dir, store.dir().join(id));
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for f in [DATA_FILE, MANIFEST_FILE] {
            assert_eq!(
                fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777,
                0o600,
                "{f}"
            );
        }
        assert!(!dir.join(LOCK_FILE).exists());
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, id);
        assert_eq!(list[0].manifest.as_ref().unwrap().id, id);
        assert!(!list[0].verified_ok());
    }

    #[test]
    fn listing_ignores_partial_and_hidden_dirs() {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(d.path()).unwrap();
        commit_one(&store, "20250101T000000Z-db-000001");
        // A snapshot still being written (lock held) with a manifest already present.
        let p = store.begin("20250102T000000Z-db-000002").unwrap();
        write_new_file(
            &p.dir().join(MANIFEST_FILE),
            &sample("20250102T000000Z-db-000002").to_json(),
        )
        .unwrap();
        fs::create_dir(store.dir().join(".trash-20250103T000000Z-db-000003")).unwrap();
        fs::write(store.dir().join("README"), "x").unwrap();
        let ids: Vec<_> = store.list().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, vec!["20250101T000000Z-db-000001"]);
        drop(p);
    }

    #[test]
    fn interrupted_snapshots_are_cleaned_at_open_but_live_ones_are_not() {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(d.path()).unwrap();
        // Simulate a writer killed mid-way: the partial dir and its (unlocked) lock file remain.
        let dead = store.dir().join("20250101T000000Z-db-dead00.partial");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join(LOCK_FILE), "").unwrap();
        fs::write(dead.join(DATA_FILE), vec![0u8; 4096]).unwrap();
        // A live writer in this process.
        let live = store.begin("20250101T000001Z-db-11ve00").unwrap();
        let (store2, cleaned) = SnapshotStore::open(d.path()).unwrap();
        assert_eq!(cleaned, vec!["20250101T000000Z-db-dead00.partial"]);
        assert!(!dead.exists());
        assert!(
            live.dir().exists(),
            "a snapshot being written must not be removed"
        );
        assert!(store2.list().unwrap().is_empty());
        drop(live);
        assert!(!store
            .dir()
            .join("20250101T000001Z-db-11ve00.partial")
            .exists());
    }

    #[test]
    fn dropped_partial_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(d.path()).unwrap();
        let p = store.begin("20250101T000000Z-db-aaaaaa").unwrap();
        write_new_file(&p.data_path(), b"half").unwrap();
        let dir = p.dir().to_path_buf();
        drop(p);
        assert!(!dir.exists());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn get_by_prefix_delete_and_verification_sidecar() {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(d.path()).unwrap();
        commit_one(&store, "20250101T000000Z-db-aaaaaa");
        commit_one(&store, "20250101T000000Z-db-bbbbbb");
        assert_eq!(
            store.get("20250101T000000Z-db-a").unwrap().id,
            "20250101T000000Z-db-aaaaaa"
        );
        assert!(matches!(
            store.get("20250101T"),
            Err(SnapshotError::Ambiguous { .. })
        ));
        assert!(matches!(store.get("2030"), Err(SnapshotError::NotFound(_))));
        let sha = sample("x").archive.sha256;
        store
            .write_verification(
                "20250101T000000Z-db-aaaaaa",
                &Verification {
                    ok: true,
                    verified_at: "2025-01-02T00:00:00Z".into(),
                    sha256: sha,
                    entries: 3,
                    error: None,
                    nodus_version: "0".into(),
                },
            )
            .unwrap();
        assert!(store
            .get("20250101T000000Z-db-aaaaaa")
            .unwrap()
            .verified_ok());
        store.delete("20250101T000000Z-db-aaaaaa").unwrap();
        let ids: Vec<_> = store.list().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, vec!["20250101T000000Z-db-bbbbbb"]);
        assert!(matches!(
            store.delete("20250101T000000Z-db-aaaaaa"),
            Err(SnapshotError::NotFound(_))
        ));
    }

    #[test]
    fn unreadable_manifest_is_listed_as_broken() {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(d.path()).unwrap();
        let dir = store.dir().join("20250101T000000Z-db-cccccc");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(MANIFEST_FILE), "{ torn").unwrap();
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        assert!(list[0].manifest.is_err());
    }
}
