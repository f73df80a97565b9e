//! Reading a store-backed snapshot back as its tar stream, every chunk checked against its id.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use super::chunklist::{self, Item};
use super::index::{self, Index, Loc};
use super::{hex32, pack, Cas, CasLock, Hash};
use crate::snapshot::manifest::{Manifest, CHUNKS_FILE};
use crate::snapshot::store::SnapshotEntry;
use crate::snapshot::{Result, SnapshotError};

/// At most this many pack files are kept open by a reader.
const OPEN_PACKS: usize = 64;

/// Chunks read ahead (read, decompressed and checked by the workers) per worker.
const AHEAD_PER_WORKER: usize = 8;

/// The tar stream of a store-backed snapshot. Holds the store's shared lock while it lives (a
/// GC waits for it). Chunks are read, decompressed and re-hashed ahead of the reader by a few
/// worker threads (a restore is otherwise bound by one core) and handed out in order.
pub struct ChunkReader {
    cas: Cas,
    _lock: CasLock,
    index: Index,
    items: Vec<Item>,
    /// The next item to hand to a worker.
    next: usize,
    /// Items handed out to workers, in order.
    ahead: VecDeque<Ahead>,
    window: usize,
    jobs: Option<mpsc::Sender<Job>>,
    buf: Vec<u8>,
    pos: usize,
    files: HashMap<u32, Arc<File>>,
    snapshot: String,
    /// Once a read failed, every later one fails the same way (never a clean end after it).
    failed: Option<String>,
    /// See [`ChunkReader::after_verification`].
    frame_check: bool,
}

/// A chunk on its way: its reply, or the error found before it could be handed out.
enum Ahead {
    Wait {
        item: Item,
        pack: Hash,
        reply: mpsc::Receiver<std::result::Result<Vec<u8>, String>>,
    },
    Failed(io::Error),
}

struct Job {
    file: Arc<File>,
    loc: Loc,
    id: Hash,
    frame_check: bool,
    reply: mpsc::SyncSender<std::result::Result<Vec<u8>, String>>,
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

/// Starts `n` workers reading, decompressing and checking chunks; they end when the sender
/// is dropped.
fn start_workers(n: usize) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..n {
        let rx = rx.clone();
        std::thread::spawn(move || loop {
            let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
            let Ok(job) = job else { break };
            // The reader may be gone (dropped after an error): nothing to tell.
            let _ = job.reply.send(pack::read_chunk_with(
                &job.file,
                &job.loc,
                &job.id,
                job.frame_check,
            ));
        });
    }
    tx
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
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        Ok(ChunkReader {
            cas,
            _lock: lock,
            index,
            items,
            next: 0,
            ahead: VecDeque::new(),
            window: workers * AHEAD_PER_WORKER,
            jobs: Some(start_workers(workers)),
            buf: Vec::new(),
            pos: 0,
            files: HashMap::new(),
            snapshot: entry.id.clone(),
            failed: None,
            frame_check: false,
        })
    }

    /// For a read right after every chunk of the snapshot was checked against its id (a
    /// restore's upload): chunks whose zstd frame carries a checksum are checked by it instead
    /// of being re-hashed ([`pack::read_chunk_with`]).
    pub fn after_verification(mut self) -> ChunkReader {
        self.frame_check = true;
        self
    }

    fn bad(&self, item: &Item, why: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "snapshot {}: chunk {} {why}",
                self.snapshot,
                &hex32(&item.id)[..16]
            ),
        )
    }

    /// Hands the next item to a worker (or records why it cannot be read).
    fn dispatch(&mut self, item: Item) -> Ahead {
        let Some(loc) = self.index.get(&item.id) else {
            return Ahead::Failed(self.bad(&item, "is missing from the snapshot store".into()));
        };
        if loc.raw_len != item.raw_len {
            return Ahead::Failed(self.bad(
                &item,
                format!(
                    "has {} bytes in the store, {} in the chunk list",
                    loc.raw_len, item.raw_len
                ),
            ));
        }
        let pack = *self.index.pack_of(&loc);
        if !self.files.contains_key(&loc.pack) {
            if self.files.len() >= OPEN_PACKS {
                self.files.clear();
            }
            let path = self.cas.pack_path(&pack);
            match File::open(&path) {
                Ok(f) => {
                    self.files.insert(loc.pack, Arc::new(f));
                }
                Err(e) => {
                    return Ahead::Failed(self.bad(&item, format!("({}): {e}", path.display())))
                }
            }
        }
        let (reply, rx) = mpsc::sync_channel(1);
        let job = Job {
            file: self.files[&loc.pack].clone(),
            loc,
            id: item.id,
            frame_check: self.frame_check,
            reply,
        };
        match self.jobs.as_ref().map(|j| j.send(job)) {
            Some(Ok(())) => Ahead::Wait {
                item,
                pack,
                reply: rx,
            },
            _ => Ahead::Failed(self.bad(&item, "could not be read: the reader stopped".into())),
        }
    }

    fn load_next(&mut self) -> io::Result<bool> {
        let r = self.load_next_inner();
        if let Err(e) = &r {
            if self.failed.is_none() {
                self.failed = Some(e.to_string());
                self.jobs = None;
                self.ahead.clear();
                self.next = self.items.len();
            }
        }
        r
    }

    fn load_next_inner(&mut self) -> io::Result<bool> {
        if let Some(why) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, why.clone()));
        }
        while self.ahead.len() < self.window {
            let Some(item) = self.items.get(self.next).copied() else {
                break;
            };
            self.next += 1;
            let a = self.dispatch(item);
            self.ahead.push_back(a);
        }
        match self.ahead.pop_front() {
            None => Ok(false),
            Some(Ahead::Failed(e)) => Err(e),
            Some(Ahead::Wait { item, pack, reply }) => match reply.recv() {
                Ok(Ok(raw)) => {
                    self.buf = raw;
                    self.pos = 0;
                    Ok(true)
                }
                Ok(Err(e)) => Err(self.bad(&item, format!("in pack {}: {e}", &hex32(&pack)[..16]))),
                Err(_) => Err(self.bad(&item, "could not be read: a reader thread died".into())),
            },
        }
    }

    /// Copies the rest of the stream into `w` a whole chunk at a time (one copy less than
    /// `io::copy`, which goes through a small buffer). Returns the bytes copied.
    pub fn copy_to(&mut self, w: &mut dyn Write) -> io::Result<u64> {
        let mut n = 0u64;
        loop {
            if self.pos < self.buf.len() {
                w.write_all(&self.buf[self.pos..])?;
                n += (self.buf.len() - self.pos) as u64;
                self.pos = self.buf.len();
            }
            if !self.load_next()? {
                return Ok(n);
            }
        }
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
