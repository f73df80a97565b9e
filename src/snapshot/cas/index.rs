//! Index files (`index/<pack>.idx`): chunk id → (offset, compressed length, raw length) for the
//! chunks of one pack. Format: magic, pack id, count, 48-byte entries, BLAKE3 seal of all that.
//! Written after the pack is durable (tmp file, fsync, rename, fsync dir).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::{hex32, parse_hex32, Cas, Hash};
use crate::snapshot::{Result, SnapshotError};

const MAGIC: &[u8; 8] = b"NDXIDX01";
const ENTRY: usize = 48;

/// One chunk in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: Hash,
    /// Byte offset of the compressed chunk in the pack.
    pub offset: u64,
    /// Compressed length.
    pub len: u32,
    /// Raw (decompressed) length.
    pub raw_len: u32,
}

/// Where a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// Index into [`Index::packs`].
    pub pack: u32,
    pub offset: u64,
    pub len: u32,
    pub raw_len: u32,
}

/// Everything the index files say.
#[derive(Debug, Default)]
pub struct Index {
    pub packs: Vec<Hash>,
    /// Entries of each pack (same order as `packs`).
    pub entries: Vec<Vec<Entry>>,
    pub map: HashMap<Hash, Loc>,
    /// Index files that could not be read (path: reason).
    pub problems: Vec<String>,
}

impl Index {
    pub fn get(&self, id: &Hash) -> Option<Loc> {
        self.map.get(id).copied()
    }
    pub fn pack_of(&self, loc: &Loc) -> &Hash {
        &self.packs[loc.pack as usize]
    }
    fn add(&mut self, pack: Hash, entries: Vec<Entry>) {
        let p = self.packs.len() as u32;
        for e in &entries {
            self.map.entry(e.id).or_insert(Loc {
                pack: p,
                offset: e.offset,
                len: e.len,
                raw_len: e.raw_len,
            });
        }
        self.packs.push(pack);
        self.entries.push(entries);
    }
}

pub fn encode(pack: &Hash, entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(44 + entries.len() * ENTRY + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(pack);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.id);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
    }
    let seal = blake3::hash(&out);
    out.extend_from_slice(seal.as_bytes());
    out
}

pub fn decode(b: &[u8]) -> std::result::Result<(Hash, Vec<Entry>), String> {
    if b.len() < 76 || &b[..8] != MAGIC {
        return Err("not an index file (bad header)".into());
    }
    let (body, seal) = b.split_at(b.len() - 32);
    if blake3::hash(body).as_bytes() != seal {
        return Err("index checksum mismatch (torn or altered)".into());
    }
    let pack: Hash = body[8..40].try_into().expect("32");
    let n = u32::from_le_bytes(body[40..44].try_into().expect("4")) as usize;
    if body.len() != 44 + n * ENTRY {
        return Err(format!(
            "index says {n} entries but holds {} bytes",
            body.len()
        ));
    }
    let entries = body[44..]
        .chunks_exact(ENTRY)
        .map(|c| Entry {
            id: c[..32].try_into().expect("32"),
            offset: u64::from_le_bytes(c[32..40].try_into().expect("8")),
            len: u32::from_le_bytes(c[40..44].try_into().expect("4")),
            raw_len: u32::from_le_bytes(c[44..48].try_into().expect("4")),
        })
        .collect();
    Ok((pack, entries))
}

/// Writes the index of `pack` durably (the pack must already be durable).
pub fn write(cas: &Cas, pack: &Hash, entries: &[Entry]) -> Result<()> {
    let path = cas.index_path(pack);
    let tmp = cas.index_dir().join(format!(
        "{}.{}-{}.tmp",
        hex32(pack),
        std::process::id(),
        crate::snapshot::manifest::short_random_hex()
    ));
    crate::snapshot::store::write_new_file(&tmp, &encode(pack, entries))
        .map_err(|e| SnapshotError::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| SnapshotError::io(&path, e))?;
    crate::state::atomic::sync_dir(&cas.index_dir()).map_err(|e| SnapshotError::io(&path, e))
}

fn read_file(path: &Path) -> std::result::Result<(Hash, Vec<Entry>), String> {
    let b = fs::read(path).map_err(|e| e.to_string())?;
    decode(&b)
}

/// Loads every index file. Unreadable ones are recorded in `problems` (their chunks count as
/// missing); with `strict` they are an error instead (GC must know everything that is stored).
pub fn load(cas: &Cas, strict: bool) -> Result<Index> {
    let dir = cas.index_dir();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map_err(|e| SnapshotError::io(&dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".idx"))
        .collect();
    names.sort();
    let mut index = Index::default();
    for name in names {
        let path = dir.join(&name);
        let result = read_file(&path).and_then(|(pack, entries)| {
            let stem = name.trim_end_matches(".idx");
            if parse_hex32(stem) != Some(pack) {
                return Err(format!("index is for pack {}", hex32(&pack)));
            }
            Ok((pack, entries))
        });
        match result {
            Ok((pack, entries)) => index.add(pack, entries),
            Err(reason) if strict => {
                return Err(SnapshotError::Corrupt {
                    id: "store index".into(),
                    path,
                    reason,
                })
            }
            Err(reason) => index.problems.push(format!("{}: {reason}", path.display())),
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_and_damage() {
        let e = vec![Entry {
            id: [9; 32],
            offset: 12,
            len: 34,
            raw_len: 56,
        }];
        let b = encode(&[3; 32], &e);
        assert_eq!(decode(&b).unwrap(), ([3; 32], e));
        let mut bad = b.clone();
        bad[50] ^= 4;
        assert!(decode(&bad).is_err());
    }
}
