//! Atomic file writes: temp file in the same directory, fsync, rename, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents with mode 0700 (existing ones are left as they are,
/// except `dir` itself, which is set to 0700).
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` to `path` atomically with the given mode: readers see the old content or the new
/// one, never a torn file.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    // Unique per call, not only per process: two threads of one command may write the same
    // file at once (two snapshots registering their store); a shared name made one rename fail.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `down` into a new snapshot store: two snapshots registered the store's root at
    /// once and one failed (the shared temporary file was renamed away under it).
    #[test]
    fn concurrent_writes_of_one_file_all_succeed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let results: Vec<io::Result<()>> = (0..8u8)
            .map(|i| {
                let (p, barrier) = (p.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..20).try_for_each(|_| atomic_write(&p, &[b'a' + i; 64], 0o600))
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        for r in results {
            r.expect("every concurrent write succeeds");
        }
        let got = fs::read(&p).unwrap();
        assert_eq!(got.len(), 64);
        assert!(
            got.iter().all(|b| *b == got[0]),
            "one writer's whole content"
        );
        let left = fs::read_dir(d.path()).unwrap().count();
        assert_eq!(left, 1, "no temporary file left");
    }

    #[test]
    fn writes_and_replaces_with_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/file.json");
        atomic_write(&p, b"one", 0o600).unwrap();
        atomic_write(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // no temp files left behind
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn private_dir_is_0700() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        ensure_private_dir(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
