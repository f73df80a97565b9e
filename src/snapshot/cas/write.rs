//! Writing a snapshot into the store: the tar stream is cut and hashed on one thread, new chunks
//! are compressed (and checked by decompressing and re-hashing) on a small pool, and one thread
//! appends them to packs. All of it off the async runtime.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::chunker::Piece;
use super::chunklist::{self, Item};
use super::pack::{self, PackWriter};
use super::reuse::{self, Previous, TarInput};
use super::{chunker, index, Cas, CasLock, Hash};
use crate::engine::ByteStream;
use crate::snapshot::manifest::{Manifest, StoreRef, CHUNKS_FILE, FORMAT_STORE};
use crate::snapshot::pipeline::{Codec, Msg};
use crate::snapshot::store::{write_new_file, SnapshotStore};
use crate::snapshot::{Result, SnapshotError};

/// What a write stored.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Bytes listed from the previous snapshot's unchanged files without being read
    /// ([`super::reuse`]).
    pub reused_bytes: u64,
    /// The previous snapshot they came from.
    pub reused_from: Option<String>,
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

type Compressed = std::result::Result<(Hash, Vec<u8>, u32), SnapshotError>;

/// Blocks of [`chunker::BLOCK`] bytes circulating between the cutter and the hasher.
const BLOCKS: usize = 3;

/// Chunks `input`, stores the chunks the store lacks, and writes the ordered chunk list to
/// `list_path` (0600, fsynced) with the large files beside it ([`super::reuse`]). Unchanged
/// files of `prev` are taken from it without being cut or hashed. Blocking. The caller holds
/// the store's shared lock.
pub fn write_chunks(
    cas: &Cas,
    list_path: &Path,
    input: &mut dyn chunker::Input,
    level: i32,
    prev: Option<&Previous>,
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

        let known = &known;
        let mut tar = TarInput::new(input, prev, known);
        // Cutting (this thread) and hashing (a thread of its own) run side by side: filled
        // blocks go to the hasher with their cuts, and come back to be filled again.
        let (cut_tx, cut_rx) = mpsc::sync_channel::<(Vec<u8>, Vec<Piece>)>(1);
        let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(BLOCKS);
        for _ in 1..BLOCKS {
            free_tx
                .send(vec![0u8; chunker::BLOCK])
                .expect("room for the pool");
        }
        let hasher = s.spawn(move || {
            let mut items: Vec<Item> = Vec::new();
            let mut pending: HashSet<Hash> = HashSet::new();
            let mut reused = 0u64;
            for (block, pieces) in cut_rx {
                for p in pieces {
                    let (o, l) = match p {
                        Piece::Cut(o, l) => (o, l),
                        Piece::Known(item) => {
                            reused += u64::from(item.raw_len);
                            items.push(item);
                            continue;
                        }
                    };
                    let data = &block[o..o + l];
                    let id = chunker::chunk_id(data);
                    items.push(Item {
                        id,
                        raw_len: l as u32,
                    });
                    if !known.contains(&id)
                        && pending.insert(id)
                        && work_tx.send((id, data.to_vec())).is_err()
                    {
                        // The pack writer stopped (its error says why).
                        return (items, reused, true);
                    }
                }
                // The cutter may have stopped already.
                let _ = free_tx.send(block);
            }
            (items, reused, false)
        });
        let stopped = || SnapshotError::Other("the snapshot store writer stopped".into());
        let chunked = chunker::cut_blocks(&mut tar, vec![0u8; chunker::BLOCK], |block, pieces| {
            cut_tx.send((block, pieces)).map_err(|_| stopped())?;
            free_rx.recv().map_err(|_| stopped())
        });
        drop(cut_tx);
        let (items, reused, writer_stopped) = hasher
            .join()
            .map_err(|_| SnapshotError::Other("the snapshot store hasher panicked".into()))?;
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
        reuse::write_files(list_path, &tar.scan.spans)
            .map_err(|e| SnapshotError::io(list_path.with_file_name(reuse::FILES_FILE), e))?;
        Ok(Written {
            reused_bytes: reused,
            reused_from: prev.filter(|_| reused > 0).map(|p| p.id.clone()),
            raw_bytes: tar.bytes,
            chunks: items.len() as u64,
            new_chunks,
            added_bytes,
            list_sha256: hex::encode(Sha256::digest(&bytes)),
            head: tar.head,
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
        reused_bytes: w.reused_bytes,
        reused_from: w.reused_from.clone(),
        mtime_cutoff: None,
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
    let w = write_chunks(
        &cas,
        &partial.dir().join(CHUNKS_FILE),
        &mut chunker::Plain(tar),
        chunk_level(),
        None,
    )?;
    fill_manifest(&mut m, &cas, &w)?;
    super::crash_point("before-manifest");
    partial.commit(&m)?;
    Ok(m)
}

/// `Read` over the buffers the async side forwards.
pub(crate) struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Msg>,
    /// The current batch, reversed (the next buffer is last), and the position in its last.
    batch: Vec<bytes::Bytes>,
    pos: usize,
}

impl ChannelReader {
    /// The unread part of the current buffer (receiving the next batch when it is used up);
    /// empty at the end of the stream.
    fn current(&mut self) -> io::Result<&[u8]> {
        loop {
            match self.batch.last() {
                Some(b) if self.pos < b.len() => break,
                Some(_) => {
                    self.batch.pop();
                    self.pos = 0;
                }
                None => match self.rx.blocking_recv() {
                    Some(Msg::Data(mut d)) => {
                        d.reverse();
                        self.batch = d;
                        self.pos = 0;
                    }
                    Some(Msg::Abort(why)) => return Err(io::Error::other(why)),
                    None => return Ok(&[]),
                },
            }
        }
        let b = self.batch.last().expect("checked");
        Ok(&b[self.pos..])
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let cur = self.current()?;
        let n = out.len().min(cur.len());
        out[..n].copy_from_slice(&cur[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// A reader of what [`crate::snapshot::pipeline::feed`] sends (tests feed it directly).
pub(crate) fn channel_reader(rx: tokio::sync::mpsc::Receiver<Msg>) -> ChannelReader {
    ChannelReader {
        rx,
        batch: Vec::new(),
        pos: 0,
    }
}

impl chunker::Input for ChannelReader {
    /// Drops the next `n` bytes without copying them.
    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let have = self.current()?.len();
            if have == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let k = n.min(have as u64);
            self.pos += k as usize;
            n -= k;
        }
        Ok(())
    }
}

/// Streams an engine archive into the store (chunking, hashing and compression on blocking
/// threads) and writes the chunk list to `list_path`. Advances `progress` by raw bytes.
pub async fn write_from_stream(
    stream: ByteStream,
    cas: Cas,
    list_path: std::path::PathBuf,
    level: i32,
    prev: Option<Previous>,
    progress: &ProgressBar,
) -> Result<Written> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(8);
    let worker = tokio::task::spawn_blocking(move || {
        let mut reader = channel_reader(rx);
        write_chunks(&cas, &list_path, &mut reader, level, prev.as_ref())
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
