//! Unchanged files are not read through the chunker twice.
//!
//! Between two `down`s most of a database's large files (tables, indexes) do not change, yet
//! cutting and hashing every byte is what bounds a snapshot's speed. Like the files caches of
//! restic and borg, nodus trusts a file's metadata: a large regular file whose path, size and
//! modification time equal those it had in the previous snapshot of the same volume is taken to
//! hold the same bytes, **provided it was last modified before the second in which the
//! container was stopped for that snapshot** (`StoreRef::mtime_cutoff`, from the engine's
//! `FinishedAt`: the engine host's clock, the clock file times come from, even for a remote
//! engine). A change after the previous snapshot read the file gives it a later time, even at
//! the one-second resolution of the engine's tar headers; a file modified in that second, or
//! while the container ran during the snapshot, is read again. Its chunks are then the previous snapshot's: once the cutter makes a cut at a position
//! where the previous snapshot had one inside the file, every following chunk of the previous
//! snapshot that lies wholly inside the file is exactly what cutting would produce (FastCDC is
//! memoryless after a cut), so they are listed without cutting or hashing, and the stream is
//! skipped past them. Only chunks the store still holds are taken. The chunk list is the same as
//! a full read would give; the manifest records how many bytes were taken this way.
//!
//! The previous snapshot records its large files (`files.json` beside its chunk list, from
//! [`super::tarscan`]). Turned off by `x-nodus.snapshots.trust_mtime: false` (every byte is
//! then cut and hashed), e.g. for volumes whose files are rewritten with their old times.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::Path;

use super::chunker::Input;
use super::chunklist::{self, Item};
use super::tarscan::{FileSpan, TarScan};
use super::Hash;
use crate::snapshot::manifest::{Manifest, CHUNKS_FILE};

/// Beside a store snapshot's chunk list: its large files ([`FileSpan`]s), JSON.
pub const FILES_FILE: &str = "files.json";

/// What the previous snapshot of a volume offers.
#[derive(Debug)]
pub struct Previous {
    pub id: String,
    files: HashMap<String, FileSpan>,
    items: Vec<Item>,
    /// Stream offset of each chunk's start → its index in `items`.
    starts: HashMap<u64, usize>,
    /// Files modified in this second or later are not trusted (the previous snapshot began
    /// in it).
    cutoff: i64,
}

impl Previous {
    /// Loads what `m` (a committed store snapshot in `dir`) recorded; `None` when it recorded no
    /// files, or anything is unreadable (then nothing is reused: never an error).
    pub fn load(dir: &Path, m: &Manifest) -> Option<Previous> {
        let cutoff = m.store.as_ref()?.mtime_cutoff?;
        let files: Vec<FileSpan> =
            serde_json::from_slice(&std::fs::read(dir.join(FILES_FILE)).ok()?).ok()?;
        let items = chunklist::read(&dir.join(CHUNKS_FILE)).ok()?;
        Some(Previous::new(m.id.clone(), files, items, cutoff))
    }

    pub fn new(id: String, files: Vec<FileSpan>, items: Vec<Item>, cutoff: i64) -> Previous {
        let mut starts = HashMap::with_capacity(items.len());
        let mut at = 0u64;
        for (i, it) in items.iter().enumerate() {
            starts.insert(at, i);
            at += u64::from(it.raw_len);
        }
        Previous {
            id,
            files: files.into_iter().map(|f| (f.path.clone(), f)).collect(),
            items,
            starts,
            cutoff,
        }
    }

    /// The chunks of the previous snapshot that follow at `at`, inside the current file `cur`
    /// (which contains `at`), when the file is unchanged; and the stream offset where they end.
    fn run(&self, cur: &FileSpan, at: u64, known: &HashSet<Hash>) -> Option<(Vec<Item>, u64)> {
        let old = self.files.get(&cur.path)?;
        if old.size != cur.size || old.mtime != cur.mtime || cur.mtime >= self.cutoff {
            return None;
        }
        let rel = at.checked_sub(cur.offset)?;
        let mut p = old.offset + rel;
        let mut i = *self.starts.get(&p)?;
        let end = old.offset + old.size;
        let mut run = Vec::new();
        while let Some(it) = self.items.get(i) {
            let next = p + u64::from(it.raw_len);
            if next > end || !known.contains(&it.id) {
                break;
            }
            run.push(*it);
            p = next;
            i += 1;
        }
        (!run.is_empty()).then(|| (run, cur.offset + (p - old.offset)))
    }
}

/// The stream being stored, followed by a [`TarScan`]: counts the bytes, keeps the first 512,
/// and answers [`Input::known_run`] from the previous snapshot.
pub struct TarInput<'a> {
    inner: &'a mut dyn Input,
    pub scan: TarScan,
    prev: Option<&'a Previous>,
    known: &'a HashSet<Hash>,
    /// The first span that may still contain an offset asked about.
    cur: usize,
    pub bytes: u64,
    pub head: Vec<u8>,
    /// Files whose offered run did not hold.
    refused: HashSet<String>,
}

impl<'a> TarInput<'a> {
    pub fn new(
        inner: &'a mut dyn Input,
        prev: Option<&'a Previous>,
        known: &'a HashSet<Hash>,
    ) -> TarInput<'a> {
        TarInput {
            inner,
            scan: TarScan::new(),
            prev,
            known,
            cur: 0,
            bytes: 0,
            head: Vec::with_capacity(512),
            refused: HashSet::new(),
        }
    }
}

impl Read for TarInput<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.head.len() < 512 {
            let take = (512 - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        self.scan.feed(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl Input for TarInput<'_> {
    fn known_run(&mut self, at: u64) -> Option<(Vec<Item>, u64)> {
        let prev = self.prev?;
        let spans = &self.scan.spans;
        while spans.get(self.cur).is_some_and(|s| s.offset + s.size <= at) {
            self.cur += 1;
        }
        let s = spans.get(self.cur)?;
        if at < s.offset || self.refused.contains(&s.path) {
            return None;
        }
        prev.run(s, at, self.known)
    }

    fn refuse(&mut self, at: u64) {
        if let Some(s) = self
            .scan
            .spans
            .iter()
            .find(|s| s.offset <= at && at < s.offset + s.size)
        {
            self.refused.insert(s.path.clone());
        }
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        self.scan.skip(n).map_err(io::Error::other)?;
        self.inner.skip(n)?;
        self.bytes += n;
        Ok(())
    }
}

/// Removes the file records of `service`'s snapshots in the snapshot dir `dir` (before a
/// restore into its volume: the restored files carry the times of the snapshot restored, so a
/// later snapshot must read them rather than trust a record taken before). Nothing else of a
/// snapshot is touched; the next snapshot reads every byte and records the files anew.
pub fn forget_files(dir: &Path, service: &str) -> crate::snapshot::Result<()> {
    let list = crate::snapshot::SnapshotStore::at(dir).list()?;
    for e in list {
        let ours = match &e.manifest {
            Ok(m) => m.service == service,
            // Unreadable manifest: its records cannot vouch for anything anyway.
            Err(_) => true,
        };
        let path = e.dir.join(FILES_FILE);
        if ours {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(crate::snapshot::SnapshotError::io(&path, err)),
            }
        }
    }
    Ok(())
}

/// Writes the large files `scan` found beside the chunk list at `list_path` (0600, fsynced
/// with the rest of the snapshot by its commit).
pub fn write_files(list_path: &Path, spans: &[FileSpan]) -> io::Result<()> {
    let path = list_path.with_file_name(FILES_FILE);
    let bytes = serde_json::to_vec(spans).map_err(io::Error::other)?;
    crate::snapshot::store::write_new_file(&path, &bytes)
}

/// The chunk list of a full cut of `tar` (what a run must agree with).
#[cfg(test)]
pub(super) fn full_cut(tar: &[u8]) -> Vec<Item> {
    let mut out = Vec::new();
    super::chunker::for_each_chunk(tar, |c| {
        out.push(Item {
            id: super::chunker::chunk_id(c),
            raw_len: c.len() as u32,
        });
        Ok(())
    })
    .unwrap();
    out
}
