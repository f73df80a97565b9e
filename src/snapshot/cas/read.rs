//! Reading a store-backed snapshot back as its tar stream, every chunk checked against its id.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::chunklist::{self, Item};
use super::index::{self, Index};
use super::{hex32, pack, Cas, CasLock};
use crate::snapshot::manifest::{Manifest, CHUNKS_FILE};
use crate::snapshot::store::SnapshotEntry;
use crate::snapshot::{Result, SnapshotError};

/// At most this many pack files are kept open by a reader.
const OPEN_PACKS: usize = 64;

/// The tar stream of a store-backed snapshot. Holds the store's shared lock while it lives (a
/// GC waits for it).
pub struct ChunkReader {
    cas: Cas,
    _lock: CasLock,
    index: Index,
    items: Vec<Item>,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    files: HashMap<u32, File>,
    snapshot: String,
}

/// The store a manifest's chunks are in.
pub fn cas_of(m: &Manifest) -> Result<Cas> {
    let s = m.store.as_ref().ok_or_else(|| {
        SnapshotError::Other(format!("snapshot {} is not in a snapshot store", m.id))
    })?;
    Cas::open_existing(Path::new(&s.path), &s.store_id)
}

pub fn open_snapshot(entry: &SnapshotEntry, m: &Manifest) -> Result<Box<dyn Read + Send>> {
    Ok(Box::new(ChunkReader::open(entry, m)?))
}

impl ChunkReader {
    pub fn open(entry: &SnapshotEntry, m: &Manifest) -> Result<ChunkReader> {
        let cas = cas_of(m)?;
        let lock = cas.lock_shared()?;
        let list = entry.dir.join(CHUNKS_FILE);
        let items = chunklist::read(&list).map_err(|reason| SnapshotError::Corrupt {
            id: entry.id.clone(),
            path: list.clone(),
            reason,
        })?;
        let index = index::load(&cas, false)?;
        Ok(ChunkReader {
            cas,
            _lock: lock,
            index,
            items,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            files: HashMap::new(),
            snapshot: entry.id.clone(),
        })
    }

    fn load_next(&mut self) -> io::Result<bool> {
        let Some(item) = self.items.get(self.next).copied() else {
            return Ok(false);
        };
        self.next += 1;
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot {}: chunk {} {why}",
                    self.snapshot,
                    &hex32(&item.id)[..16]
                ),
            )
        };
        let loc = self
            .index
            .get(&item.id)
            .ok_or_else(|| bad("is missing from the snapshot store".into()))?;
        if loc.raw_len != item.raw_len {
            return Err(bad(format!(
                "has {} bytes in the store, {} in the chunk list",
                loc.raw_len, item.raw_len
            )));
        }
        if !self.files.contains_key(&loc.pack) {
            if self.files.len() >= OPEN_PACKS {
                self.files.clear();
            }
            let path = self.cas.pack_path(self.index.pack_of(&loc));
            let f = File::open(&path).map_err(|e| bad(format!("({}): {e}", path.display())))?;
            self.files.insert(loc.pack, f);
        }
        let f = &self.files[&loc.pack];
        let raw = pack::read_chunk(f, &loc, &item.id).map_err(|e| {
            bad(format!(
                "in pack {}: {e}",
                &hex32(self.index.pack_of(&loc))[..16]
            ))
        })?;
        self.buf = raw;
        self.pos = 0;
        Ok(true)
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            if !self.load_next()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
