//! The content-addressed deduplicating snapshot store (restic/borg style).
//!
//! ```text
//! <store>/config              {"version":1,"id":"<hex>"}: snapshots record the id they use
//! <store>/lock                flock: writers and readers shared, GC exclusive
//! <store>/packs/<blake3>.pack zstd-compressed chunks, appended; named by the BLAKE3 of the file
//! <store>/packs/*.tmp         a pack being written (removed at the next exclusive open)
//! <store>/index/<pack>.idx    chunk id → (offset, len, raw len) for one pack, BLAKE3-sealed
//! <store>/roots/<hash>        one file per project snapshot dir using this store (its path)
//! ```
//!
//! A snapshot's tar stream is cut with FastCDC ([`chunker`]); chunk ids are BLAKE3 of the raw
//! bytes. The snapshot itself lives in its project's snapshot dir as before: `manifest.json`
//! plus `chunks`, the ordered chunk list ([`chunklist`]).
//!
//! Crash safety (order of durable writes): pack written and fsynced, renamed to its hash,
//! directory fsynced; then its index file (tmp, fsync, rename); then the chunk list and the
//! manifest in `<id>.partial/`, renamed to `<id>/`. A snapshot exists only once that rename is
//! done; before it, anything written is unreferenced and the next GC removes it. Every new chunk
//! is decompressed and re-hashed after compression, before it is appended to a pack.
//!
//! Deletion removes manifests first (the snapshot dir), then [`gc`] runs under the exclusive
//! lock: packs nothing references are deleted, partly used ones are repacked (new pack and index
//! durable first, then the old index and pack removed), so a crash at any point leaves every
//! listed snapshot readable.

pub mod chunker;
pub mod chunklist;
pub mod gc;
pub mod index;
pub mod pack;
pub mod read;
pub mod reuse;
#[cfg(test)]
mod reuse_tests;
pub mod tarscan;
pub mod verify;
pub mod write;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Result, SnapshotError};
use crate::state::{atomic_write, ensure_private_dir};

/// A BLAKE3 hash: chunk ids and pack names.
pub type Hash = [u8; 32];

pub fn hex32(h: &Hash) -> String {
    hex::encode(h)
}

pub fn parse_hex32(s: &str) -> Option<Hash> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

/// The store's configuration file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Config {
    version: u32,
    id: String,
}

/// An opened store directory.
#[derive(Debug, Clone)]
pub struct Cas {
    dir: PathBuf,
    id: String,
}

/// A held store lock (shared or exclusive); released on drop (and by the kernel when the holder
/// dies, so it is never stale).
#[derive(Debug)]
pub struct CasLock {
    _file: File,
}

impl Cas {
    /// Opens the store at `dir`, creating it (0700, with a fresh id) when missing.
    pub fn open(dir: &Path) -> Result<Cas> {
        let io_err = |p: &Path, e| SnapshotError::io(p, e);
        for sub in ["", "packs", "index", "roots"] {
            let p = dir.join(sub);
            ensure_private_dir(&p).map_err(|e| io_err(&p, e))?;
        }
        let cfg_path = dir.join("config");
        let cfg = match fs::read(&cfg_path) {
            Ok(b) => serde_json::from_slice::<Config>(&b).map_err(|e| {
                SnapshotError::Other(format!(
                    "snapshot store config {} is unreadable: {e}",
                    cfg_path.display()
                ))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let cfg = Config {
                    version: 1,
                    id: format!(
                        "{}{}",
                        super::manifest::short_random_hex(),
                        super::manifest::short_random_hex()
                    ),
                };
                // Unique per writer: two snapshots of one command may create it at once.
                let tmp = dir.join(format!(
                    "config.{}-{}.tmp",
                    std::process::id(),
                    super::manifest::short_random_hex()
                ));
                let bytes = serde_json::to_vec(&cfg).expect("config serialises");
                super::store::write_new_file(&tmp, &bytes).map_err(|e| io_err(&tmp, e))?;
                // Another process may have created it meanwhile: the first one wins.
                match fs::hard_link(&tmp, &cfg_path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        return Err(io_err(&cfg_path, e));
                    }
                }
                let _ = fs::remove_file(&tmp);
                crate::state::atomic::sync_dir(dir).map_err(|e| io_err(dir, e))?;
                let b = fs::read(&cfg_path).map_err(|e| io_err(&cfg_path, e))?;
                serde_json::from_slice::<Config>(&b)
                    .map_err(|e| SnapshotError::Other(format!("{}: {e}", cfg_path.display())))?
            }
            Err(e) => return Err(io_err(&cfg_path, e)),
        };
        Ok(Cas {
            dir: dir.to_path_buf(),
            id: cfg.id,
        })
    }

    /// Opens an existing store (never creates one) and checks it is the one `store_id` names.
    pub fn open_existing(dir: &Path, store_id: &str) -> Result<Cas> {
        let cfg_path = dir.join("config");
        let b = fs::read(&cfg_path).map_err(|e| SnapshotError::io(&cfg_path, e))?;
        let cfg: Config = serde_json::from_slice(&b)
            .map_err(|e| SnapshotError::Other(format!("{}: {e}", cfg_path.display())))?;
        if cfg.id != store_id {
            return Err(SnapshotError::Other(format!(
                "the snapshot store at {} has id {}, the snapshot was written to store {store_id}",
                dir.display(),
                cfg.id
            )));
        }
        Ok(Cas {
            dir: dir.to_path_buf(),
            id: cfg.id,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn packs_dir(&self) -> PathBuf {
        self.dir.join("packs")
    }
    pub fn index_dir(&self) -> PathBuf {
        self.dir.join("index")
    }
    pub fn roots_dir(&self) -> PathBuf {
        self.dir.join("roots")
    }
    pub fn pack_path(&self, pack: &Hash) -> PathBuf {
        self.packs_dir().join(format!("{}.pack", hex32(pack)))
    }
    pub fn index_path(&self, pack: &Hash) -> PathBuf {
        self.index_dir().join(format!("{}.idx", hex32(pack)))
    }

    fn lock_file(&self) -> Result<File> {
        let p = self.dir.join("lock");
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| SnapshotError::io(&p, e))
    }

    /// Shared lock (writers, readers): waits while a GC runs.
    pub fn lock_shared(&self) -> Result<CasLock> {
        let f = self.lock_file()?;
        f.lock_shared()
            .map_err(|e| SnapshotError::io(self.dir.join("lock"), e))?;
        Ok(CasLock { _file: f })
    }

    /// Exclusive lock (GC), or None when someone else holds the store.
    pub fn try_lock_exclusive(&self) -> Result<Option<CasLock>> {
        let f = self.lock_file()?;
        match f.try_lock() {
            Ok(()) => Ok(Some(CasLock { _file: f })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(SnapshotError::io(self.dir.join("lock"), e)),
        }
    }

    /// Exclusive lock, waiting for it.
    pub fn lock_exclusive(&self) -> Result<CasLock> {
        let f = self.lock_file()?;
        f.lock()
            .map_err(|e| SnapshotError::io(self.dir.join("lock"), e))?;
        Ok(CasLock { _file: f })
    }

    /// Opens for writing: when nobody else uses the store, removes what interrupted writers
    /// left (`*.tmp` packs and indexes); then takes the shared lock. Returns the names removed.
    pub fn lock_for_write(&self) -> Result<(CasLock, Vec<String>)> {
        let mut cleaned = Vec::new();
        if let Some(_x) = self.try_lock_exclusive()? {
            cleaned = self.remove_tmp_files()?;
        }
        Ok((self.lock_shared()?, cleaned))
    }

    /// Removes `*.tmp` files in `packs/` and `index/` (call under the exclusive lock only).
    pub fn remove_tmp_files(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for d in [self.packs_dir(), self.index_dir()] {
            for e in fs::read_dir(&d).map_err(|e| SnapshotError::io(&d, e))? {
                let e = e.map_err(|e| SnapshotError::io(&d, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    fs::remove_file(e.path()).map_err(|err| SnapshotError::io(e.path(), err))?;
                    out.push(name);
                }
            }
        }
        Ok(out)
    }

    /// Records that `snapshots_dir` holds snapshots using this store (GC and verify read the
    /// chunk lists of every registered dir).
    pub fn register_root(&self, snapshots_dir: &Path) -> Result<()> {
        let abs =
            std::path::absolute(snapshots_dir).map_err(|e| SnapshotError::io(snapshots_dir, e))?;
        let s = abs.to_string_lossy().into_owned();
        let name = &hex::encode(blake3::hash(s.as_bytes()).as_bytes())[..32];
        let p = self.roots_dir().join(name);
        if fs::read_to_string(&p).is_ok_and(|c| c.trim_end() == s) {
            return Ok(());
        }
        atomic_write(&p, format!("{s}\n").as_bytes(), 0o600).map_err(|e| SnapshotError::io(&p, e))
    }

    /// The registered snapshot dirs that still exist.
    pub fn roots(&self) -> Result<Vec<PathBuf>> {
        let d = self.roots_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&d).map_err(|e| SnapshotError::io(&d, e))? {
            let e = e.map_err(|e| SnapshotError::io(&d, e))?;
            if let Ok(s) = fs::read_to_string(e.path()) {
                let p = PathBuf::from(s.trim_end());
                if p.is_dir() {
                    out.push(p);
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// A snapshot using the store, as found in a registered snapshot dir.
#[derive(Debug, Clone)]
pub struct Referrer {
    /// The snapshot id (directory name).
    pub id: String,
    /// Its project snapshot dir.
    pub root: PathBuf,
    /// The chunk list.
    pub chunks: Vec<chunklist::Item>,
    /// Logical (tar) bytes.
    pub raw_bytes: u64,
}

/// Every committed snapshot of every registered dir whose manifest names this store, with its
/// chunk list. A snapshot dir with a chunk list but an unreadable manifest counts too (its
/// chunks are kept); an unreadable chunk list of a snapshot using this store is an error (GC
/// must not run without knowing what it references).
pub fn referrers(cas: &Cas) -> Result<Vec<Referrer>> {
    referrers_with(cas, true)
}

/// [`referrers`], skipping snapshots whose chunk list is unreadable (for verification and
/// statistics: one damaged list must not hide the others; that snapshot fails on its own).
pub fn referrers_lenient(cas: &Cas) -> Result<Vec<Referrer>> {
    referrers_with(cas, false)
}

fn referrers_with(cas: &Cas, strict: bool) -> Result<Vec<Referrer>> {
    let mut out = Vec::new();
    for root in cas.roots()? {
        for e in super::SnapshotStore::at(&root).list()? {
            let list_path = e.dir.join(super::manifest::CHUNKS_FILE);
            let ours = match &e.manifest {
                Ok(m) => m.store.as_ref().is_some_and(|s| s.store_id == cas.id),
                Err(_) => list_path.is_file(),
            };
            if !ours {
                continue;
            }
            let chunks = match chunklist::read(&list_path) {
                Ok(c) => c,
                Err(_) if !strict => continue,
                Err(reason) => {
                    return Err(SnapshotError::Corrupt {
                        id: e.id.clone(),
                        path: list_path.clone(),
                        reason,
                    })
                }
            };
            let raw_bytes = chunks.iter().map(|c| c.raw_len as u64).sum();
            out.push(Referrer {
                id: e.id.clone(),
                root: root.clone(),
                chunks,
                raw_bytes,
            });
        }
    }
    Ok(out)
}

/// The store directory a project's snapshots go to: `x-nodus.snapshots.store` (relative to the
/// stack's directory) or `<state dir>/snapshots/.store`.
pub fn store_dir_for(project: &crate::project::Project) -> PathBuf {
    let snapshots = project.state.snapshots_dir(project.name());
    match &project.stack.nodus.snapshots.store {
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                project.dir.join(p)
            }
        }
        None => super::store::default_cas_dir(&snapshots),
    }
}

/// Test hook: `NODUS_TEST_CRASH_AT=<name>` makes the process SIGKILL itself at that point of a
/// store write or GC, so tests can check what a crash leaves behind. Not meant for users.
pub(crate) fn crash_point(name: &str) {
    if std::env::var("NODUS_TEST_CRASH_AT").is_ok_and(|v| v == name) {
        // SAFETY: kill(2) on our own pid; nothing else is touched.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
