//! Writing a snapshot into the store: the tar stream is cut and hashed on one thread, new chunks
//! are compressed (and checked by decompressing and re-hashing) on a small pool, and one thread
//! appends them to packs. All of it off the async runtime.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::chunklist::{self, Item};
use super::pack::{self, PackWriter};
use super::{chunker, index, Cas, CasLock, Hash};
use crate::engine::ByteStream;
use crate::snapshot::manifest::{Manifest, StoreRef, CHUNKS_FILE, FORMAT_STORE};
use crate::snapshot::pipeline::{Codec, Msg};
use crate::snapshot::store::{write_new_file, SnapshotStore};
use crate::snapshot::{Result, SnapshotError};

/// What a write stored.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Bytes of tar.
    pub raw_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    /// Compressed bytes of the new chunks.
    pub added_bytes: u64,
    /// SHA-256 of the chunk list file.
    pub list_sha256: String,
    /// The first 512 bytes of the tar (its first header).
    pub head: Vec<u8>,
    pub level: i32,
}

/// The zstd level for chunks (the snapshot default: 1 on small machines, 3 on bigger ones).
pub fn chunk_level() -> i32 {
    match Codec::snapshot_default() {
        Codec::Zstd { level, .. } => level,
        Codec::Gzip { .. } => 3,
    }
}

/// Opens the store of `store` for writing: creates it when missing, registers the snapshot dir,
/// removes what interrupted writers left when nobody uses it, and takes the shared lock (held
/// until the returned guard drops: keep it until the snapshot is committed).
pub fn open_for_write(store: &SnapshotStore) -> Result<(Cas, CasLock)> {
    let cas = Cas::open(store.cas_dir())?;
    cas.register_root(store.dir())?;
    let (lock, cleaned) = cas.lock_for_write()?;
    for c in cleaned {
        tracing::info!("removed {c} left in the snapshot store by an interrupted writer");
    }
    Ok((cas, lock))
}

/// Counts the raw bytes and keeps the first 512.
struct Counting<'a> {
    inner: &'a mut (dyn Read + Send),
    bytes: u64,
    head: Vec<u8>,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.head.len() < 512 {
            let take = (512 - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

type Compressed = std::result::Result<(Hash, Vec<u8>, u32), SnapshotError>;

/// Chunks `input`, stores the chunks the store lacks, and writes the ordered chunk list to
/// `list_path` (0600, fsynced). Blocking. The caller holds the store's shared lock.
pub fn write_chunks(
    cas: &Cas,
    list_path: &Path,
    input: &mut (dyn Read + Send),
    level: i32,
) -> Result<Written> {
    // Known chunks: indexed, in a pack that exists (never dedup against missing data).
    let idx = index::load(cas, false)?;
    let existing: HashSet<Hash> = std::fs::read_dir(cas.packs_dir())
        .map_err(|e| SnapshotError::io(cas.packs_dir(), e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            super::parse_hex32(n.strip_suffix(".pack")?)
        })
        .collect();
    let known: HashSet<Hash> = idx
        .map
        .iter()
        .filter(|(_, loc)| existing.contains(idx.pack_of(loc)))
        .map(|(id, _)| *id)
        .collect();
    drop(idx);

    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let (work_tx, work_rx) = mpsc::sync_channel::<(Hash, Vec<u8>)>(workers * 4);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = mpsc::sync_channel::<Compressed>(workers * 4);

    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<(u64, u64)> {
            let mut pw: Option<PackWriter> = None;
            let (mut added, mut n) = (0u64, 0u64);
            for msg in done_rx {
                let (id, c, raw_len) = match msg {
                    Ok(x) => x,
                    Err(e) => {
                        if let Some(p) = pw.take() {
                            p.abandon();
                        }
                        return Err(e);
                    }
                };
                if pw.is_none() {
                    pw = Some(PackWriter::create(cas)?);
                }
                let p = pw.as_mut().expect("set");
                if let Err(e) = p.add(id, &c, raw_len) {
                    pw.take().expect("set").abandon();
                    return Err(e);
                }
                added += c.len() as u64;
                n += 1;
                if p.size() >= pack::TARGET_SIZE {
                    pw.take().expect("set").finish(cas)?;
                }
            }
            if let Some(p) = pw.take() {
                if p.is_empty() {
                    p.abandon();
                } else {
                    p.finish(cas)?;
                }
            }
            Ok((added, n))
        });
        for _ in 0..workers {
            let rx = work_rx.clone();
            let tx = done_tx.clone();
            s.spawn(move || loop {
                let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((id, raw)) = job else { break };
                let msg = pack::compress_checked(&id, &raw, level)
                    .map(|c| (id, c, raw.len() as u32))
                    .map_err(SnapshotError::Other);
                if tx.send(msg).is_err() {
                    break;
                }
            });
        }
        // Only the workers hold the receiver: when they all stopped (the pack writer failed),
        // sending work fails instead of blocking forever.
        drop(work_rx);

        let mut counting = Counting {
            inner: input,
            bytes: 0,
            head: Vec::with_capacity(512),
        };
        let mut items: Vec<Item> = Vec::new();
        let mut pending: HashSet<Hash> = HashSet::new();
        let mut writer_stopped = false;
        let chunked = chunker::for_each_chunk(&mut counting, |data| {
            let id = chunker::chunk_id(data);
            items.push(Item {
                id,
                raw_len: data.len() as u32,
            });
            if !known.contains(&id) && pending.insert(id) {
                work_tx.send((id, data.to_vec())).map_err(|_| {
                    writer_stopped = true;
                    SnapshotError::Other("the snapshot store writer stopped".into())
                })?;
            }
            Ok(())
        });
        drop(work_tx);
        if let Err(e) = &chunked {
            // The pack being written must not be committed as if the stream were complete.
            let _ = done_tx.send(Err(SnapshotError::Other(format!("aborted: {e}"))));
        }
        drop(done_tx);
        let written = writer
            .join()
            .map_err(|_| SnapshotError::Other("the snapshot store writer panicked".into()))?;
        // The writer's error (e.g. ENOSPC with the path) explains its stop best, the source's
        // error anything else.
        let (added_bytes, new_chunks) = match (chunked, written) {
            (Err(_), Err(w)) if writer_stopped => return Err(w),
            (Err(e), _) => return Err(e),
            (Ok(()), w) => w?,
        };
        super::crash_point("chunks-stored");
        let bytes = chunklist::encode(&items);
        write_new_file(list_path, &bytes).map_err(|e| SnapshotError::io(list_path, e))?;
        Ok(Written {
            raw_bytes: counting.bytes,
            chunks: items.len() as u64,
            new_chunks,
            added_bytes,
            list_sha256: hex::encode(Sha256::digest(&bytes)),
            head: counting.head,
            level,
        })
    })
}

/// Fills the format, archive and store fields of `m` for a store-backed snapshot.
pub fn fill_manifest(m: &mut Manifest, cas: &Cas, w: &Written) -> Result<()> {
    m.format = FORMAT_STORE;
    m.archive.file = CHUNKS_FILE.into();
    m.archive.compression = "zstd".into();
    m.archive.level = w.level;
    m.archive.min_level = None;
    m.archive.raw_bytes = w.raw_bytes;
    m.archive.compressed_bytes = w.added_bytes;
    m.archive.sha256 = w.list_sha256.clone();
    if m.archive.top.is_empty() {
        m.archive.top = crate::snapshot::create::tar_top(&w.head).ok_or_else(|| {
            SnapshotError::Other(format!(
                "snapshot {}: the tar stream is empty or unreadable",
                m.id
            ))
        })?;
    }
    let path = std::path::absolute(cas.dir()).map_err(|e| SnapshotError::io(cas.dir(), e))?;
    m.store = Some(StoreRef {
        path: path.to_string_lossy().into_owned(),
        store_id: cas.id().to_string(),
        chunks: w.chunks,
        new_chunks: w.new_chunks,
        added_bytes: w.added_bytes,
        chunker: chunker::describe(),
    });
    Ok(())
}

/// [`crate::snapshot::import_tar`].
pub fn import_blocking(
    store: &SnapshotStore,
    mut m: Manifest,
    tar: &mut (dyn Read + Send),
) -> Result<Manifest> {
    if !crate::snapshot::manifest::is_snapshot_id(&m.id) {
        return Err(SnapshotError::Other(format!(
            "{:?} is not a snapshot id",
            m.id
        )));
    }
    crate::state::ensure_private_dir(store.dir()).map_err(|e| SnapshotError::io(store.dir(), e))?;
    if store.dir().join(&m.id).exists() {
        return Err(SnapshotError::Other(format!(
            "snapshot {} already exists in {}",
            m.id,
            store.dir().display()
        )));
    }
    let (cas, _lock) = open_for_write(store)?;
    let partial = store.begin(&m.id)?;
    let w = write_chunks(&cas, &partial.dir().join(CHUNKS_FILE), tar, chunk_level())?;
    fill_manifest(&mut m, &cas, &w)?;
    super::crash_point("before-manifest");
    partial.commit(&m)?;
    Ok(m)
}

/// `Read` over the chunks the async side forwards.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Msg>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Msg::Data(d)) => {
                    self.buf = d;
                    self.pos = 0;
                }
                Some(Msg::Abort(why)) => return Err(io::Error::other(why)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Streams an engine archive into the store (chunking, hashing and compression on blocking
/// threads) and writes the chunk list to `list_path`. Advances `progress` by raw bytes.
pub async fn write_from_stream(
    stream: ByteStream,
    cas: Cas,
    list_path: std::path::PathBuf,
    level: i32,
    progress: &ProgressBar,
) -> Result<Written> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(8);
    let worker = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        };
        write_chunks(&cas, &list_path, &mut reader, level)
    });
    let source_error = crate::snapshot::pipeline::feed(stream, tx, progress)
        .await
        .source_error;
    let written = worker
        .await
        .map_err(|e| SnapshotError::Other(format!("snapshot store thread failed: {e}")))?;
    if let Some(e) = source_error {
        return Err(e.into());
    }
    written
}
