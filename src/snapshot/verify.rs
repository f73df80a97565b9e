//! Verifying a snapshot: recompute the SHA-256 of the archive, decompress it and read the tar to
//! the end (every entry must parse), and for postgres require `PG_VERSION` in the data dir.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use indicatif::ProgressBar;

use super::manifest::{Manifest, Verification};
use super::pipeline::{CountingReader, HashingReader, CHUNK};
use super::store::{SnapshotEntry, SnapshotStore};
use super::{cas, Result, SnapshotError};
use crate::stack::ServiceKind;

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    pub sha256: String,
}

/// Checks `path` against `manifest` (blocking; call from `spawn_blocking` for big files).
/// `progress` advances by compressed bytes read.
pub fn verify_archive(
    path: &Path,
    manifest: &Manifest,
    progress: Option<ProgressBar>,
) -> Result<VerifyReport> {
    let id = &manifest.id;
    let corrupt = |reason: String| SnapshotError::Corrupt {
        id: id.clone(),
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| SnapshotError::io(path, e))?;
    let mut hashing = HashingReader::new(BufReader::with_capacity(CHUNK, file), progress);
    // Read everything; remember the first problem but keep hashing so a checksum mismatch (the
    // clearest diagnosis) wins over a decoding error.
    let read_result = read_tar(&mut hashing, manifest);
    let (sha, compressed) = hashing.finish().map_err(|e| SnapshotError::io(path, e))?;
    if sha != manifest.archive.sha256 {
        return Err(SnapshotError::ChecksumMismatch {
            id: id.clone(),
            path: path.to_path_buf(),
            expected: manifest.archive.sha256.clone(),
            actual: sha,
        });
    }
    let (entries, raw, saw_pg_version) = read_result.map_err(corrupt)?;
    if compressed != manifest.archive.compressed_bytes {
        return Err(corrupt(format!(
            "{compressed} compressed bytes, the manifest says {}",
            manifest.archive.compressed_bytes
        )));
    }
    check_walk(manifest, entries, raw, saw_pg_version).map_err(corrupt)?;
    Ok(VerifyReport {
        entries,
        raw_bytes: raw,
        compressed_bytes: compressed,
        sha256: manifest.archive.sha256.clone(),
    })
}

/// Decompresses and walks the tar; returns (entries, raw bytes, PG_VERSION seen).
fn read_tar<R: io::Read>(
    input: R,
    manifest: &Manifest,
) -> std::result::Result<(u64, u64, bool), String> {
    let dec = zstd::stream::read::Decoder::new(input).map_err(|e| format!("zstd: {e}"))?;
    walk_tar(dec, manifest)
}

/// Walks an uncompressed tar to its end; returns (entries, raw bytes, PG_VERSION seen).
fn walk_tar<R: io::Read>(
    dec: R,
    manifest: &Manifest,
) -> std::result::Result<(u64, u64, bool), String> {
    let counting = CountingReader {
        inner: dec,
        bytes: 0,
    };
    let mut archive = tar::Archive::new(counting);
    let top = manifest.archive.top.trim_end_matches('/');
    let pg_version = format!("{top}/PG_VERSION");
    let mut entries = 0u64;
    let mut saw_pg_version = false;
    for entry in archive.entries().map_err(|e| format!("tar: {e}"))? {
        let mut entry = entry.map_err(|e| format!("tar entry {}: {e}", entries + 1))?;
        let path = entry
            .path()
            .map_err(|e| format!("tar entry {}: bad path: {e}", entries + 1))?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        if !top.is_empty() && path != top && !path.starts_with(&format!("{top}/")) {
            return Err(format!(
                "entry {path:?} is outside the data directory {top:?}"
            ));
        }
        if path == pg_version {
            saw_pg_version = true;
        }
        io::copy(&mut entry, &mut io::sink()).map_err(|e| format!("tar entry {path}: {e}"))?;
        entries += 1;
    }
    // Past the end-of-archive marker: drain the decompressor so the whole frame (and its
    // checksum) is checked and counted.
    let mut counting = archive.into_inner();
    io::copy(&mut counting, &mut io::sink()).map_err(|e| format!("zstd: {e}"))?;
    Ok((entries, counting.bytes, saw_pg_version))
}

/// Checks a store-backed snapshot (blocking): its chunk list against the manifest, every chunk
/// present and in an intact pack (from `check`, or a check of its own when None); with
/// `read_data`, the tar stream reassembled from the chunks (each decompressed and re-hashed)
/// and walked to the end like a single-file archive.
pub fn verify_chunked(
    entry: &SnapshotEntry,
    manifest: &Manifest,
    check: Option<&cas::verify::StoreCheck>,
    read_data: bool,
    progress: Option<ProgressBar>,
) -> Result<VerifyReport> {
    let id = &manifest.id;
    let list = entry.dir.join(super::manifest::CHUNKS_FILE);
    let (sha, _) =
        super::pipeline::sha256_file(&list, None).map_err(|e| SnapshotError::io(&list, e))?;
    if sha != manifest.archive.sha256 {
        return Err(SnapshotError::ChecksumMismatch {
            id: id.clone(),
            path: list,
            expected: manifest.archive.sha256.clone(),
            actual: sha,
        });
    }
    let corrupt = |reason: String| SnapshotError::Corrupt {
        id: id.clone(),
        path: list.clone(),
        reason,
    };
    let own;
    let check = match check {
        Some(c) => c,
        None => {
            let c = cas::read::cas_of(manifest)?;
            own = cas::verify::check(&c, Some(std::slice::from_ref(id)), read_data)?;
            &own
        }
    };
    let problems = check.problems_of(id);
    if !problems.is_empty() {
        return Err(corrupt(format!(
            "{} damaged or missing {}: {}",
            problems.len(),
            crate::guard::census::plural(problems.len(), "chunk", "chunks"),
            problems.join("; ")
        )));
    }
    let chunks = manifest.store.as_ref().map(|s| s.chunks).unwrap_or(0);
    if !read_data {
        return Ok(VerifyReport {
            entries: 0,
            raw_bytes: manifest.archive.raw_bytes,
            compressed_bytes: chunks,
            sha256: manifest.archive.sha256.clone(),
        });
    }
    let reader = super::tar_io::open_tar_reader(entry)?;
    let reader: Box<dyn io::Read + Send> = match progress {
        Some(pb) => Box::new(pb.wrap_read(reader)),
        None => reader,
    };
    let (entries, raw, saw_pg_version) = walk_tar(reader, manifest).map_err(corrupt)?;
    check_walk(manifest, entries, raw, saw_pg_version).map_err(corrupt)?;
    Ok(VerifyReport {
        entries,
        raw_bytes: raw,
        compressed_bytes: chunks,
        sha256: manifest.archive.sha256.clone(),
    })
}

/// Verifies a stored snapshot completely (a store-backed one with `--read-data`) and records
/// the outcome in its sidecar (success or failure).
pub async fn verify_entry(
    store: &SnapshotStore,
    entry: &SnapshotEntry,
    progress: ProgressBar,
) -> Result<VerifyReport> {
    verify_entry_with(store, entry, None, true, progress).await
}

/// [`verify_entry`] with a store check done beforehand for several snapshots, and without
/// reading the data (`read_data` false: chunk presence and pack checksums only).
pub async fn verify_entry_with(
    store: &SnapshotStore,
    entry: &SnapshotEntry,
    check: Option<std::sync::Arc<cas::verify::StoreCheck>>,
    read_data: bool,
    progress: ProgressBar,
) -> Result<VerifyReport> {
    let manifest = entry.manifest_checked()?;
    let path = entry.data_path();
    let m = manifest.clone();
    let pb = progress.clone();
    let e = entry.clone();
    let result = tokio::task::spawn_blocking(move || {
        if m.store.is_some() {
            verify_chunked(&e, &m, check.as_deref(), read_data, Some(pb))
        } else {
            verify_archive(&path, &m, Some(pb))
        }
    })
    .await
    .map_err(|e| SnapshotError::Other(format!("verification thread failed: {e}")))?;
    progress.finish_and_clear();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let record = match &result {
        Ok(r) => Verification {
            ok: true,
            verified_at: now,
            sha256: r.sha256.clone(),
            entries: r.entries,
            error: None,
            nodus_version: env!("CARGO_PKG_VERSION").into(),
        },
        Err(SnapshotError::Io { .. }) => return result, // could not read: nothing learnt
        Err(e) => Verification {
            ok: false,
            verified_at: now,
            sha256: manifest.archive.sha256.clone(),
            entries: 0,
            error: Some(e.to_string()),
            nodus_version: env!("CARGO_PKG_VERSION").into(),
        },
    };
    store.write_verification(&entry.id, &record)?;
    result
}

/// What reading the whole tar must have found: the manifest's size, some entries, and for
/// postgres the data directory's `PG_VERSION` (both formats).
fn check_walk(
    manifest: &Manifest,
    entries: u64,
    raw: u64,
    saw_pg_version: bool,
) -> std::result::Result<(), String> {
    if raw != manifest.archive.raw_bytes {
        return Err(format!(
            "{raw} bytes of tar, the manifest says {}",
            manifest.archive.raw_bytes
        ));
    }
    if entries == 0 {
        return Err("the archive holds no entries".into());
    }
    if manifest.kind == ServiceKind::Postgres && !saw_pg_version {
        return Err(format!(
            "no {}/PG_VERSION in the archive: this is not a postgres data directory",
            manifest.archive.top
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::snapshot::manifest::tests::sample;
    use crate::snapshot::pipeline::sha256_file;
    use std::io::Write;

    /// Builds `<tmp>/data/...` like a tiny PGDATA and archives it as the engine would (top
    /// entry `data`), zstd-compressed; returns (archive path, manifest matching it).
    pub(crate) fn build_snapshot(
        dir: &Path,
        with_pg_version: bool,
    ) -> (std::path::PathBuf, Manifest) {
        let src = dir.join("src/data");
        std::fs::create_dir_all(src.join("base/1")).unwrap();
        if with_pg_version {
            std::fs::write(src.join("PG_VERSION"), "16\n").unwrap();
        }
        let mut big = Vec::new();
        for i in 0..20_000u32 {
            writeln!(big, "row {i} {}", i.wrapping_mul(2654435761)).unwrap();
        }
        std::fs::write(src.join("base/1/1259"), &big).unwrap();
        let mut raw = Vec::new();
        {
            let mut b = tar::Builder::new(&mut raw);
            b.append_dir_all("data", &src).unwrap();
            b.finish().unwrap();
        }
        let out = dir.join("data.tar.zst");
        let mut enc = zstd::stream::write::Encoder::new(File::create(&out).unwrap(), 3).unwrap();
        enc.include_checksum(true).unwrap();
        enc.write_all(&raw).unwrap();
        enc.finish().unwrap();
        let (sha, size) = sha256_file(&out, None).unwrap();
        let mut m = sample("20250101T000000Z-db-abcdef");
        m.archive.sha256 = sha;
        m.archive.compressed_bytes = size;
        m.archive.raw_bytes = raw.len() as u64;
        m.archive.top = "data".into();
        (out, m)
    }

    #[test]
    fn a_good_archive_verifies() {
        let d = tempfile::tempdir().unwrap();
        let (path, m) = build_snapshot(d.path(), true);
        let r = verify_archive(&path, &m, None).unwrap();
        assert!(r.entries >= 5, "{r:?}");
        assert_eq!(r.raw_bytes, m.archive.raw_bytes);
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let d = tempfile::tempdir().unwrap();
        let (path, m) = build_snapshot(d.path(), true);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = verify_archive(&path, &m, None).unwrap_err();
        assert!(
            matches!(err, SnapshotError::ChecksumMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_archive_is_detected_even_with_a_matching_checksum() {
        let d = tempfile::tempdir().unwrap();
        let (path, mut m) = build_snapshot(d.path(), true);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
        // With the original checksum: a checksum mismatch.
        assert!(matches!(
            verify_archive(&path, &m, None).unwrap_err(),
            SnapshotError::ChecksumMismatch { .. }
        ));
        // Even if the manifest were written for the truncated file, decoding must fail.
        let (sha, size) = sha256_file(&path, None).unwrap();
        m.archive.sha256 = sha;
        m.archive.compressed_bytes = size;
        let err = verify_archive(&path, &m, None).unwrap_err();
        assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn postgres_archive_needs_pg_version() {
        let d = tempfile::tempdir().unwrap();
        let (path, mut m) = build_snapshot(d.path(), false);
        let err = verify_archive(&path, &m, None).unwrap_err();
        assert!(err.to_string().contains("PG_VERSION"), "{err}");
        m.kind = ServiceKind::Redis;
        verify_archive(&path, &m, None).unwrap();
    }

    #[test]
    fn size_mismatch_is_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let (path, mut m) = build_snapshot(d.path(), true);
        m.archive.raw_bytes += 512;
        assert!(matches!(
            verify_archive(&path, &m, None).unwrap_err(),
            SnapshotError::Corrupt { .. }
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_entry_records_the_sidecar() {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(d.path().join("store")).unwrap();
        let (path, mut m) = build_snapshot(d.path(), true);
        m.id = "20250101T000000Z-db-abcdef".into();
        let p = store.begin(&m.id).unwrap();
        std::fs::copy(&path, p.data_path()).unwrap();
        p.commit(&m).unwrap();
        let entry = store.get(&m.id).unwrap();
        verify_entry(&store, &entry, ProgressBar::hidden())
            .await
            .unwrap();
        let entry = store.get(&m.id).unwrap();
        assert!(entry.verified_ok());
        // Corrupt it: the sidecar now records the failure.
        let data = entry.data_path();
        let mut bytes = std::fs::read(&data).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&data, bytes).unwrap();
        assert!(verify_entry(&store, &entry, ProgressBar::hidden())
            .await
            .is_err());
        let entry = store.get(&m.id).unwrap();
        assert!(!entry.verified_ok());
        assert!(entry.verified_bad());
    }
}
