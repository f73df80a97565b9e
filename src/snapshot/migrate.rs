//! `snapshot migrate`: moves single-file snapshots (`data.tar.zst`) into the deduplicating
//! store, keeping their ids, one at a time and atomically per snapshot:
//!
//! 1. the old snapshot's tar stream (zstd frame checksum checked while reading) is written with
//!    [`super::import_tar`] as a snapshot of the same id in a scratch directory
//!    `<project>/.migrate/` (never listed), its chunks going to the project's store;
//! 2. the new snapshot is read back from the store and its tar's SHA-256 and length compared
//!    with the old one's;
//! 3. the two directories are swapped with `renameat2(RENAME_EXCHANGE)` (one atomic step; where
//!    the file system lacks it: old → `.migrate/<id>.old`, new → `<id>`), then the old one is
//!    removed.
//!
//! A crash at any point leaves the snapshot listed in one format or the other (or, in the
//! fallback's one-rename window, its old copy in `.migrate/<id>.old`, which the next run puts
//! back); the next run clears `.migrate/` and goes on. Snapshots already in the store are
//! skipped, so running it again is harmless.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::pipeline::HashingReader;
use super::store::{SnapshotEntry, SnapshotStore};
use super::{human_bytes, Result, SnapshotError};
use crate::output::Ui;

const SCRATCH: &str = ".migrate";
const OLD_SUFFIX: &str = ".old";

/// One migrated snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Moved {
    pub id: String,
    /// Bytes of the single-file archive removed.
    pub old_bytes: u64,
    /// Compressed bytes the snapshot added to the store (0 when all its chunks were there).
    pub added_bytes: u64,
    pub raw_bytes: u64,
}

/// What `snapshot migrate` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateReport {
    pub migrated: Vec<Moved>,
    /// Snapshots already in the store.
    pub already_in_store: usize,
    /// Snapshots left as they are: unreadable manifest, or the migration failed (the old one
    /// stays listed and usable).
    pub failed: Vec<Failed>,
    pub old_bytes: u64,
    pub added_bytes: u64,
    /// Interrupted migrations of an earlier run put back.
    pub recovered: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub id: String,
    pub error: String,
}

impl MigrateReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "migrated {} {} into the store ({} of single-file archives replaced by {} of new chunks), {} already there",
            self.migrated.len(),
            crate::guard::census::plural(self.migrated.len(), "snapshot", "snapshots"),
            human_bytes(self.old_bytes),
            human_bytes(self.added_bytes),
            self.already_in_store
        );
        if !self.failed.is_empty() {
            s.push_str(&format!(
                "; {} failed and stay as they were: {}",
                self.failed.len(),
                self.failed
                    .iter()
                    .map(|f| f.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s
    }
}

/// Migrates every single-file snapshot of `store`. Blocking.
pub fn migrate(store: &SnapshotStore, ui: &Ui) -> Result<MigrateReport> {
    let mut report = MigrateReport {
        recovered: recover(store.dir())?,
        ..Default::default()
    };
    for r in &report.recovered {
        ui.status(format!(
            "put back snapshot {r} (an earlier migration was interrupted)"
        ));
    }
    let scratch_dir = store.dir().join(SCRATCH);
    let (scratch, _) = SnapshotStore::open(&scratch_dir)?;
    let scratch = scratch.with_cas(store.cas_dir());
    for e in store.list()? {
        let m = match &e.manifest {
            Ok(m) => m,
            Err(err) => {
                report.failed.push(Failed {
                    id: e.id.clone(),
                    error: format!("unreadable manifest: {err}"),
                });
                continue;
            }
        };
        if m.store.is_some() {
            report.already_in_store += 1;
            continue;
        }
        match migrate_one(store, &scratch, &e) {
            Ok(moved) => {
                ui.success(format!(
                    "{}: in the store ({} archive replaced, {} of new chunks)",
                    e.id,
                    human_bytes(moved.old_bytes),
                    human_bytes(moved.added_bytes)
                ));
                report.old_bytes += moved.old_bytes;
                report.added_bytes += moved.added_bytes;
                report.migrated.push(moved);
            }
            Err(err) => {
                ui.error(format!("{}: {err} (left as it was)", e.id));
                report.failed.push(Failed {
                    id: e.id.clone(),
                    error: err.to_string(),
                });
            }
        }
    }
    let _ = fs::remove_dir(&scratch_dir);
    Ok(report)
}

fn migrate_one(store: &SnapshotStore, scratch: &SnapshotStore, e: &SnapshotEntry) -> Result<Moved> {
    let m = e.manifest.clone().map_err(SnapshotError::Other)?;
    let old_bytes = fs::metadata(e.data_path()).map(|x| x.len()).unwrap_or(0);
    // Leftovers of an earlier attempt for this id.
    let new_dir = scratch.dir().join(&e.id);
    if new_dir.exists() {
        fs::remove_dir_all(&new_dir).map_err(|err| SnapshotError::io(&new_dir, err))?;
    }
    // 1. Write it into the store under the same id, in the scratch directory.
    let mut hashing = HashingReader::new(super::open_tar_reader(e)?, None);
    let new_m = super::import_tar(scratch, m.clone(), &mut hashing)?;
    let (old_sha, old_len) = hashing.finish().map_err(|err| SnapshotError::Corrupt {
        id: e.id.clone(),
        path: e.data_path(),
        reason: err.to_string(),
    })?;
    if old_len != m.archive.raw_bytes {
        return Err(SnapshotError::Corrupt {
            id: e.id.clone(),
            path: e.data_path(),
            reason: format!(
                "{old_len} bytes of tar, the manifest says {}",
                m.archive.raw_bytes
            ),
        });
    }
    // 2. Read it back from the store.
    let new_entry = scratch.get(&e.id)?;
    let (new_sha, new_len) = HashingReader::new(super::open_tar_reader(&new_entry)?, None)
        .finish()
        .map_err(|err| SnapshotError::Other(format!("reading back from the store: {err}")))?;
    if (new_sha.as_str(), new_len) != (old_sha.as_str(), old_len) {
        return Err(SnapshotError::Other(format!(
            "the store gives back {new_len} bytes with sha256 {new_sha}, the archive held {old_len} bytes with sha256 {old_sha}"
        )));
    }
    // 3. Swap, then remove the old one.
    let listed = store.dir().join(&e.id);
    let old_dir = swap(
        &listed,
        &new_dir,
        &scratch.dir().join(format!("{}{OLD_SUFFIX}", e.id)),
    )?;
    fs::remove_dir_all(&old_dir).map_err(|err| SnapshotError::io(&old_dir, err))?;
    Ok(Moved {
        id: e.id.clone(),
        old_bytes,
        added_bytes: new_m.store.as_ref().map(|s| s.added_bytes).unwrap_or(0),
        raw_bytes: old_len,
    })
}

/// Puts `new` where `listed` is; returns where the old directory went.
fn swap(listed: &Path, new: &Path, old_aside: &Path) -> Result<PathBuf> {
    let dir = listed.parent().unwrap_or(Path::new("."));
    match exchange(listed, new) {
        Ok(()) => {
            crate::state::atomic::sync_dir(dir).map_err(|e| SnapshotError::io(dir, e))?;
            return Ok(new.to_path_buf());
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {}
        Err(e) => return Err(SnapshotError::io(listed, e)),
    }
    fs::rename(listed, old_aside).map_err(|e| SnapshotError::io(listed, e))?;
    fs::rename(new, listed).map_err(|e| SnapshotError::io(listed, e))?;
    crate::state::atomic::sync_dir(dir).map_err(|e| SnapshotError::io(dir, e))?;
    Ok(old_aside.to_path_buf())
}

/// Atomically exchanges two paths (Linux `renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; renameat2 does not keep the pointers.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Puts back old snapshots an interrupted fallback swap left aside, then clears the scratch
/// directory (whatever else is in it is either a copy not yet swapped in or an old copy
/// already replaced).
fn recover(project_dir: &Path) -> Result<Vec<String>> {
    let scratch = project_dir.join(SCRATCH);
    let mut put_back = Vec::new();
    let rd = match fs::read_dir(&scratch) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(put_back),
        Err(e) => return Err(SnapshotError::io(&scratch, e)),
    };
    let names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for n in &names {
        if let Some(id) = n.strip_suffix(OLD_SUFFIX) {
            let listed = project_dir.join(id);
            if !listed.exists() {
                fs::rename(scratch.join(n), &listed).map_err(|e| SnapshotError::io(&listed, e))?;
                put_back.push(id.to_string());
            }
        }
    }
    for n in names {
        let p = scratch.join(&n);
        if p.exists() {
            if p.is_dir() {
                fs::remove_dir_all(&p).map_err(|e| SnapshotError::io(&p, e))?;
            } else {
                fs::remove_file(&p).map_err(|e| SnapshotError::io(&p, e))?;
            }
        }
    }
    crate::state::atomic::sync_dir(project_dir).map_err(|e| SnapshotError::io(project_dir, e))?;
    Ok(put_back)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::verify::tests::build_snapshot;
    use std::io::Read;

    #[test]
    fn exchange_swaps_two_directories() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(a.join("x"), "A").unwrap();
        fs::write(b.join("x"), "B").unwrap();
        let aside = d.path().join("aside");
        let old = swap(&a, &b, &aside).unwrap();
        assert_eq!(fs::read_to_string(a.join("x")).unwrap(), "B");
        assert_eq!(fs::read_to_string(old.join("x")).unwrap(), "A");
    }

    #[test]
    fn an_interrupted_fallback_swap_is_put_back() {
        let d = tempfile::tempdir().unwrap();
        let id = "20250101T000000Z-db-abcdef";
        let scratch = d.path().join(SCRATCH);
        fs::create_dir_all(scratch.join(format!("{id}{OLD_SUFFIX}"))).unwrap();
        fs::create_dir_all(scratch.join(id)).unwrap();
        assert_eq!(recover(d.path()).unwrap(), vec![id.to_string()]);
        assert!(d.path().join(id).is_dir());
        assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
    }

    #[test]
    fn migrate_moves_single_file_snapshots_into_the_store_once() {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(d.path().join("snapshots/demo")).unwrap();
        let (path, m) = build_snapshot(d.path(), true);
        let p = store.begin(&m.id).unwrap();
        fs::copy(&path, p.data_path()).unwrap();
        p.commit(&m).unwrap();
        let mut raw = Vec::new();
        zstd::stream::read::Decoder::new(fs::File::open(&path).unwrap())
            .unwrap()
            .read_to_end(&mut raw)
            .unwrap();

        let ui = Ui::plain();
        let r = migrate(&store, &ui).unwrap();
        assert_eq!(r.migrated.len(), 1, "{r:?}");
        assert!(r.failed.is_empty(), "{r:?}");
        let e = store.get(&m.id).unwrap();
        let got = e.manifest.as_ref().unwrap();
        assert!(got.store.is_some());
        assert_eq!(got.census, m.census);
        assert!(!e.dir.join(super::super::manifest::DATA_FILE).exists());
        let mut back = Vec::new();
        super::super::open_tar_reader(&e)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, raw);
        assert!(!store.dir().join(SCRATCH).exists());
        // Again: nothing to do.
        let again = migrate(&store, &ui).unwrap();
        assert!(again.migrated.is_empty());
        assert_eq!(again.already_in_store, 1);
    }
}
