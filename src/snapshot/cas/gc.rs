//! Garbage collection and statistics of the store.
//!
//! GC runs under the exclusive lock (no writer or reader is in the store), after the snapshots
//! to drop had their directories removed. Order of removals, so a crash at any point leaves
//! every listed snapshot readable: (1) packs without an index (a writer died between the two)
//! and `*.tmp` files; (2) for packs partly used, the used chunks are copied (checked on the way)
//! into a new pack whose pack and index are durable before anything old goes; (3) old index
//! files, then old packs.

use std::collections::HashSet;
use std::fs;

use super::pack::PackWriter;
use super::{index, pack, parse_hex32, referrers, Cas, Hash};
use crate::snapshot::{Result, SnapshotError};

/// A pack whose used share is below this is repacked.
pub const REPACK_BELOW: f64 = 0.5;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    /// Another process held the store: nothing was done.
    pub busy: bool,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub packs_written: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Chunks that could not be copied because they are damaged (their pack is kept).
    pub damaged: Vec<String>,
}

impl GcReport {
    pub fn freed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

fn pack_files(cas: &Cas) -> Result<Vec<(Hash, u64)>> {
    let d = cas.packs_dir();
    let mut out = Vec::new();
    for e in fs::read_dir(&d).map_err(|e| SnapshotError::io(&d, e))? {
        let e = e.map_err(|e| SnapshotError::io(&d, e))?;
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(h) = n.strip_suffix(".pack").and_then(parse_hex32) {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((h, len));
        }
    }
    Ok(out)
}

fn remove(path: &std::path::Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SnapshotError::io(path, e)),
    }
}

fn sync(cas: &Cas) -> Result<()> {
    for d in [cas.index_dir(), cas.packs_dir()] {
        crate::state::atomic::sync_dir(&d).map_err(|e| SnapshotError::io(&d, e))?;
    }
    Ok(())
}

/// Removes what no snapshot references. Returns `busy` without doing anything when another
/// process holds the store.
pub fn gc(cas: &Cas) -> Result<GcReport> {
    let Some(_lock) = cas.try_lock_exclusive()? else {
        return Ok(GcReport {
            busy: true,
            ..Default::default()
        });
    };
    cas.remove_tmp_files()?;
    let refs = referrers(cas)?;
    let referenced: HashSet<Hash> = refs
        .iter()
        .flat_map(|r| r.chunks.iter().map(|c| c.id))
        .collect();
    let idx = index::load(cas, true)?;
    let on_disk = pack_files(cas)?;
    let mut report = GcReport {
        bytes_before: on_disk.iter().map(|(_, l)| l).sum(),
        ..Default::default()
    };
    let indexed: HashSet<Hash> = idx.packs.iter().copied().collect();

    // (1) Packs nothing indexes: a writer died before writing the index.
    for (h, _) in &on_disk {
        if !indexed.contains(h) {
            remove(&cas.pack_path(h))?;
            report.packs_deleted += 1;
        }
    }
    let sizes: std::collections::HashMap<Hash, u64> = on_disk.iter().copied().collect();

    // Classify indexed packs by the share of their bytes that is live (referenced, and the
    // copy the index resolves to).
    let mut drop_whole: Vec<Hash> = Vec::new();
    let mut repack: Vec<usize> = Vec::new();
    for (i, pack_id) in idx.packs.iter().enumerate() {
        let Some(&size) = sizes.get(pack_id) else {
            // Index of a pack that is gone: nothing can be read through it.
            drop_whole.push(*pack_id);
            continue;
        };
        let live: u64 = idx.entries[i]
            .iter()
            .filter(|e| referenced.contains(&e.id))
            .filter(|e| idx.get(&e.id).is_some_and(|l| l.pack as usize == i))
            .map(|e| e.len as u64)
            .sum();
        if live == 0 {
            drop_whole.push(*pack_id);
        } else if (live as f64) < (size.max(1) as f64) * REPACK_BELOW {
            repack.push(i);
        }
    }

    // (2) Copy the live chunks of partly used packs into new packs.
    let mut retired: Vec<Hash> = Vec::new();
    if !repack.is_empty() {
        let mut pw: Option<PackWriter> = None;
        for &i in &repack {
            let pack_id = idx.packs[i];
            let f = fs::File::open(cas.pack_path(&pack_id))
                .map_err(|e| SnapshotError::io(cas.pack_path(&pack_id), e))?;
            let live: Vec<_> = idx.entries[i]
                .iter()
                .filter(|e| referenced.contains(&e.id))
                .filter(|e| idx.get(&e.id).is_some_and(|l| l.pack as usize == i))
                .collect();
            // Check every chunk first: a pack with a damaged chunk is kept as it is.
            let mut copies = Vec::with_capacity(live.len());
            let mut damaged = false;
            for e in &live {
                let loc = idx.get(&e.id).expect("live");
                match pack::read_compressed(&f, &loc)
                    .map_err(|e| e.to_string())
                    .and_then(|c| {
                        let raw = pack::decompress(&c, loc.raw_len)?;
                        if super::chunker::chunk_id(&raw) != e.id {
                            return Err("BLAKE3 mismatch".into());
                        }
                        Ok(c)
                    }) {
                    Ok(c) => copies.push((e.id, c, loc.raw_len)),
                    Err(why) => {
                        report
                            .damaged
                            .push(format!("chunk {}: {why}", &super::hex32(&e.id)[..16]));
                        damaged = true;
                    }
                }
            }
            if damaged {
                continue;
            }
            for (id, c, raw_len) in copies {
                if pw.is_none() {
                    pw = Some(PackWriter::create(cas)?);
                }
                let p = pw.as_mut().expect("set");
                p.add(id, &c, raw_len)?;
                if p.size() >= pack::TARGET_SIZE {
                    pw.take().expect("set").finish(cas)?;
                    report.packs_written += 1;
                }
            }
            retired.push(pack_id);
        }
        if let Some(p) = pw.take() {
            if p.is_empty() {
                p.abandon();
            } else {
                p.finish(cas)?;
                report.packs_written += 1;
            }
        }
        report.packs_repacked = retired.len() as u64;
        super::crash_point("gc-repacked");
    }

    // (3) Old indexes first, then their packs.
    drop_whole.extend(retired);
    for h in &drop_whole {
        remove(&cas.index_path(h))?;
    }
    sync(cas)?;
    super::crash_point("gc-indexes-removed");
    for h in &drop_whole {
        if sizes.contains_key(h) {
            remove(&cas.pack_path(h))?;
            report.packs_deleted += 1;
        }
    }
    sync(cas)?;
    report.bytes_after = pack_files(cas)?.iter().map(|(_, l)| l).sum();
    Ok(report)
}

/// `snapshot stats`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub path: String,
    pub packs: u64,
    /// Bytes of all packs.
    pub store_bytes: u64,
    /// Snapshots (of every project using the store).
    pub snapshots: u64,
    /// Bytes of tar those snapshots hold together.
    pub logical_bytes: u64,
    pub unique_chunks: u64,
    /// Compressed bytes of the chunks some snapshot uses.
    pub referenced_bytes: u64,
    /// Bytes a GC would free (unreferenced chunks, duplicates, packs without an index).
    pub reclaimable_bytes: u64,
    /// logical / store bytes.
    pub dedup_ratio: f64,
}

pub fn stats(cas: &Cas) -> Result<Stats> {
    let _lock = cas.lock_shared()?;
    let refs = super::referrers_lenient(cas)?;
    let idx = index::load(cas, false)?;
    let on_disk = pack_files(cas)?;
    let present: HashSet<Hash> = on_disk.iter().map(|(h, _)| *h).collect();
    let mut referenced: HashSet<Hash> = HashSet::new();
    for r in &refs {
        referenced.extend(r.chunks.iter().map(|c| c.id));
    }
    let referenced_bytes: u64 = referenced
        .iter()
        .filter_map(|id| idx.get(id))
        .filter(|l| present.contains(idx.pack_of(l)))
        .map(|l| l.len as u64)
        .sum();
    let store_bytes: u64 = on_disk.iter().map(|(_, l)| l).sum();
    let logical_bytes: u64 = refs.iter().map(|r| r.raw_bytes).sum();
    Ok(Stats {
        path: cas.dir().display().to_string(),
        packs: on_disk.len() as u64,
        store_bytes,
        snapshots: refs.len() as u64,
        logical_bytes,
        unique_chunks: referenced.len() as u64,
        referenced_bytes,
        reclaimable_bytes: store_bytes.saturating_sub(referenced_bytes),
        dedup_ratio: if store_bytes == 0 {
            0.0
        } else {
            logical_bytes as f64 / store_bytes as f64
        },
    })
}
