//! Pack files: compressed chunks appended one after another, named by the BLAKE3 of the whole
//! file once complete (`packs/<hash>.pack`; `packs/<random>.tmp` while being written).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::index::{self, Entry, Loc};
use super::{chunker, Cas, Hash};
use crate::snapshot::{Result, SnapshotError};

/// A pack is closed once it reaches this size.
pub const TARGET_SIZE: u64 = 32 << 20;

/// A pack being written.
pub struct PackWriter {
    tmp: PathBuf,
    out: BufWriter<File>,
    hasher: blake3::Hasher,
    size: u64,
    entries: Vec<Entry>,
}

impl PackWriter {
    pub fn create(cas: &Cas) -> Result<PackWriter> {
        #[cfg(test)]
        if cas.dir().join("fail-pack-create").exists() {
            return Err(SnapshotError::Other("test: pack creation fails".into()));
        }
        let tmp = cas.packs_dir().join(format!(
            "{}-{}.tmp",
            std::process::id(),
            crate::snapshot::manifest::short_random_hex()
        ));
        let f = crate::snapshot::store::create_private_file(&tmp)
            .map_err(|e| SnapshotError::io(&tmp, e))?;
        Ok(PackWriter {
            tmp,
            out: BufWriter::with_capacity(1 << 20, f),
            hasher: blake3::Hasher::new(),
            size: 0,
            entries: Vec::new(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a compressed chunk (already checked to decompress to `id`).
    pub fn add(&mut self, id: Hash, compressed: &[u8], raw_len: u32) -> Result<()> {
        self.out
            .write_all(compressed)
            .map_err(|e| SnapshotError::io(&self.tmp, e))?;
        self.hasher.update(compressed);
        self.entries.push(Entry {
            id,
            offset: self.size,
            len: compressed.len() as u32,
            raw_len,
        });
        self.size += compressed.len() as u64;
        Ok(())
    }

    /// Makes the pack durable under its hash name, then writes its index. Returns the pack id
    /// and its entries.
    pub fn finish(self, cas: &Cas) -> Result<(Hash, Vec<Entry>)> {
        let PackWriter {
            tmp,
            out,
            hasher,
            entries,
            ..
        } = self;
        let f = out
            .into_inner()
            .map_err(|e| SnapshotError::io(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| SnapshotError::io(&tmp, e))?;
        drop(f);
        let id: Hash = *hasher.finalize().as_bytes();
        let path = cas.pack_path(&id);
        fs::rename(&tmp, &path).map_err(|e| SnapshotError::io(&path, e))?;
        crate::state::atomic::sync_dir(&cas.packs_dir())
            .map_err(|e| SnapshotError::io(cas.packs_dir(), e))?;
        super::crash_point("pack-committed");
        index::write(cas, &id, &entries)?;
        super::crash_point("index-committed");
        Ok((id, entries))
    }

    /// Removes the unfinished pack.
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

// One zstd context per thread, kept: creating one per chunk cost a few per cent of a restore.
thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses a chunk and checks that it decompresses back to `id` (a compression library bug
/// must not get into a pack).
pub fn compress_checked(id: &Hash, raw: &[u8], level: i32) -> std::result::Result<Vec<u8>, String> {
    let c = COMPRESSOR
        .with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(l, _)| *l != level) {
                let mut new = zstd::bulk::Compressor::new(level)?;
                // The frame's XXH64 lets a read right after a full check skip the BLAKE3.
                new.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
                *c = Some((level, new));
            }
            c.as_mut().expect("set").1.compress(raw)
        })
        .map_err(|e| format!("zstd: {e}"))?;
    let back = decompress(&c, raw.len() as u32)?;
    if &chunker::chunk_id(&back) != id {
        return Err(format!(
            "chunk {} does not decompress to itself after compression",
            super::hex32(id)
        ));
    }
    Ok(c)
}

pub fn decompress(c: &[u8], raw_len: u32) -> std::result::Result<Vec<u8>, String> {
    let out = DECOMPRESSOR
        .with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new()?);
            }
            d.as_mut().expect("set").decompress(c, raw_len as usize)
        })
        .map_err(|e| format!("zstd: {e}"))?;
    if out.len() != raw_len as usize {
        return Err(format!(
            "{} bytes after decompression, expected {raw_len}",
            out.len()
        ));
    }
    Ok(out)
}

/// Reads the compressed bytes of a chunk.
pub fn read_compressed(f: &File, loc: &Loc) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; loc.len as usize];
    f.read_exact_at(&mut buf, loc.offset)?;
    Ok(buf)
}

/// Reads, decompresses and checks a chunk against its id.
pub fn read_chunk(f: &File, loc: &Loc, id: &Hash) -> std::result::Result<Vec<u8>, String> {
    read_chunk_with(f, loc, id, false)
}

/// [`read_chunk`]; with `frame_check`, a chunk whose zstd frame carries a content checksum is
/// checked by it (XXH64, verified by the decoder) instead of by its BLAKE3 id — for a read right
/// after every chunk was checked against its id (a restore's upload): damage since is still
/// caught. Chunks written without a frame checksum are re-hashed either way.
pub fn read_chunk_with(
    f: &File,
    loc: &Loc,
    id: &Hash,
    frame_check: bool,
) -> std::result::Result<Vec<u8>, String> {
    let c = read_compressed(f, loc).map_err(|e| format!("read: {e}"))?;
    let raw = decompress(&c, loc.raw_len)?;
    if !(frame_check && frame_has_checksum(&c)) && &chunker::chunk_id(&raw) != id {
        return Err("BLAKE3 mismatch (the chunk's bytes changed)".into());
    }
    Ok(raw)
}

/// Whether a compressed chunk's zstd frame carries a content checksum.
pub fn frame_has_checksum(c: &[u8]) -> bool {
    crate::snapshot::pipeline::header_has_checksum(c)
}

/// BLAKE3 of a pack file (its name, when intact).
pub fn hash_file(path: &std::path::Path) -> std::io::Result<Hash> {
    let mut h = blake3::Hasher::new();
    let f = File::open(path)?;
    h.update_reader(f)?;
    Ok(*h.finalize().as_bytes())
}
