//! The stable way in and out of a snapshot as a plain tar stream, whatever its on-disk format
//! (single-file `data.tar.zst`, or chunks in the deduplicating store). Used by restore,
//! verification, export/import and migration.
//!
//! Both functions are blocking: call them from `spawn_blocking` (or a plain thread).

use std::fs::File;
use std::io::{self, Read};

use super::manifest::{Manifest, DATA_FILE};
use super::store::{SnapshotEntry, SnapshotStore};
use super::{Result, SnapshotError};

/// The uncompressed tar stream of a committed snapshot (either format), as the engine's archive
/// endpoint produced it. Integrity is checked while reading: a damaged single-file archive fails
/// on its zstd frame checksum, a damaged chunk on its BLAKE3 id; either makes `read` return an
/// error (never a silent short or altered stream). Check the manifest first if you need to
/// refuse before reading anything (`snapshot verify` does).
pub fn open_tar_reader(entry: &SnapshotEntry) -> Result<Box<dyn Read + Send>> {
    let manifest = entry.manifest_checked()?;
    open_manifest_reader(entry, &manifest)
}

fn open_manifest_reader(
    entry: &SnapshotEntry,
    manifest: &Manifest,
) -> Result<Box<dyn Read + Send>> {
    if manifest.store.is_some() {
        return super::cas::read::open_snapshot(entry, manifest);
    }
    let path = entry.dir.join(DATA_FILE);
    let file = File::open(&path).map_err(|e| SnapshotError::io(&path, e))?;
    let dec = zstd::stream::read::Decoder::new(file).map_err(|e| SnapshotError::io(&path, e))?;
    Ok(Box::new(CorruptOnError {
        inner: dec,
        what: format!("snapshot {}: {}", entry.id, path.display()),
    }))
}

/// Writes a new snapshot into `store` from an uncompressed tar stream and returns its manifest.
/// `manifest` supplies the metadata (id — must not exist yet —, project, service, kind, volume,
/// census, stop evidence, created_at, reason...); `format`, `archive.{file, compression, level,
/// raw_bytes, compressed_bytes, sha256}` and `store` are filled in here, `archive.top` is read
/// from the stream when empty. The snapshot goes to the deduplicating store of `store`
/// ([`SnapshotStore::cas_dir`]) and is listed only once complete (`<id>.partial` until then;
/// on error nothing is listed).
pub fn import_tar(
    store: &SnapshotStore,
    manifest: Manifest,
    tar: &mut (dyn Read + Send),
) -> Result<Manifest> {
    super::cas::write::import_blocking(store, manifest, tar)
}

/// Turns read errors of a single-file archive into errors saying it is corrupt.
struct CorruptOnError<R> {
    inner: R,
    what: String,
}

impl<R: Read> Read for CorruptOnError<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is corrupt: {e}", self.what),
            )
        })
    }
}
