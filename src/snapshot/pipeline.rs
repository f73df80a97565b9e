//! Streaming plumbing shared by snapshots and backups: engine byte stream → compressor → file
//! (SHA-256 and byte counts computed on the way), and file → decompressor → engine byte stream.
//!
//! Compression and decompression run on a blocking thread fed through a bounded channel, so
//! the async runtime keeps serving the engine connection and a whole archive is never held in
//! memory (at most a few 1 MiB chunks are in flight).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::store::create_private_file;
use super::{Result, SnapshotError};
use crate::engine::{ByteStream, EngineError};

/// Size of the chunks handed between the async side and the blocking thread.
pub const CHUNK: usize = 1 << 20;
/// Chunks in flight in each direction.
const DEPTH: usize = 8;

/// zstd level used for snapshots.
pub const ZSTD_LEVEL: i32 = 3;
/// The level an adaptive snapshot may drop to when compression cannot keep up with the engine.
pub const ZSTD_MIN_LEVEL: i32 = 1;
/// Fewer cores than this: snapshots use [`ZSTD_MIN_LEVEL`] throughout (see
/// [`Codec::snapshot_default`]).
pub const ADAPT_MIN_CORES: usize = 4;
/// Chunks (MiB) between two adaptation decisions: long enough to average out the bursts of a
/// multi-threaded encoder, which takes whole jobs (several MiB) at a time.
const ADAPT_EVERY: usize = 32;
/// Below this share of the time spent waiting for data, the compressor is the bottleneck.
const ADAPT_BUSY: f64 = 0.05;
/// Above this share, the engine is the bottleneck and a higher level costs nothing.
const ADAPT_IDLE: f64 = 0.30;

/// How to compress.
#[derive(Debug, Clone, Copy)]
pub enum Codec {
    /// zstd with `threads` worker threads (0 = single-threaded) and a frame checksum. With
    /// `min_level < level` the level adapts while streaming (like `zstd --adapt`): it steps down
    /// when the compressor falls behind the engine's stream (the queue in front of it is full)
    /// and back up when it waits for data, so a snapshot is not slower than the engine can
    /// produce the archive on a small machine, and as compact as possible on a big one.
    Zstd {
        level: i32,
        threads: u32,
        min_level: i32,
    },
    Gzip {
        level: u32,
    },
}

impl Codec {
    /// zstd on every available core: at [`ZSTD_LEVEL`], adapting down to [`ZSTD_MIN_LEVEL`],
    /// on machines with [`ADAPT_MIN_CORES`] cores or more; at [`ZSTD_MIN_LEVEL`] on smaller ones.
    ///
    /// Why: receiving the engine's archive costs CPU too. On 1–2 cores, level 3 workers take the
    /// CPU the download needs and the snapshot runs at half the engine's speed, while there the
    /// "compressor waits for data" signal the adaptation relies on cannot tell starvation from a
    /// slow engine. Level 1 compresses PGDATA about as well (0.34 vs 0.35 of raw on the benchmark
    /// data) at half the CPU.
    pub fn snapshot_default() -> Codec {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Self::snapshot_for_cores(cores)
    }

    pub fn snapshot_for_cores(cores: usize) -> Codec {
        let level = if cores >= ADAPT_MIN_CORES {
            ZSTD_LEVEL
        } else {
            ZSTD_MIN_LEVEL
        };
        Codec::Zstd {
            level,
            threads: cores as u32,
            min_level: ZSTD_MIN_LEVEL,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteStats {
    /// Uncompressed bytes received.
    pub raw_bytes: u64,
    /// Bytes written to the file.
    pub compressed_bytes: u64,
    /// SHA-256 of the file (hex).
    pub sha256: String,
    /// The first 512 bytes of the raw stream (the first tar header, for archives).
    pub head: Vec<u8>,
    /// The lowest compression level used (adaptive zstd), else the configured one.
    pub min_level_used: i32,
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what passes through it, optionally advancing a progress bar.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    progress: Option<ProgressBar>,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, progress: Option<ProgressBar>) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            progress,
        }
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// Reads the rest of the input (so the hash covers all of it) and returns (hash, bytes).
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((hex::encode(self.hasher.finalize()), self.bytes))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if let Some(pb) = &self.progress {
            pb.inc(n as u64);
        }
        Ok(n)
    }
}

/// A reader that counts bytes.
pub struct CountingReader<R> {
    pub inner: R,
    pub bytes: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// SHA-256 (hex) and size of a file.
pub fn sha256_file(path: &Path, progress: Option<ProgressBar>) -> io::Result<(String, u64)> {
    let f = File::open(path)?;
    HashingReader::new(io::BufReader::with_capacity(CHUNK, f), progress).finish()
}

/// What the async side hands a blocking consumer of an engine archive.
pub(crate) enum Msg {
    /// The engine's buffers as they came (about [`CHUNK`] bytes together), not copied.
    Data(Vec<bytes::Bytes>),
    /// The source failed (why): do not finish the result as if it were complete.
    Abort(String),
}

/// How [`feed`] ended.
pub(crate) struct Fed {
    /// The stream's first 512 bytes (the tar's first header).
    pub head: Vec<u8>,
    /// The engine stream broke off (the consumer was sent [`Msg::Abort`]).
    pub source_error: Option<EngineError>,
}

/// Forwards `stream` to a blocking consumer through `tx` in buffers of [`CHUNK`] bytes,
/// advancing `progress` (and pacing by [`test_rate_limit`]). When the stream breaks off, the
/// consumer gets [`Msg::Abort`]; when the consumer is gone, forwarding stops (its own error
/// explains why). Drops `tx` at the end.
pub(crate) async fn feed(
    mut stream: ByteStream,
    tx: mpsc::Sender<Msg>,
    progress: &ProgressBar,
) -> Fed {
    let mut head = Vec::with_capacity(512);
    let mut batch: Vec<bytes::Bytes> = Vec::new();
    let mut batched = 0usize;
    let mut source_error: Option<EngineError> = None;
    let mut consumer_gone = false;
    let throttle = test_rate_limit();
    let started = std::time::Instant::now();
    let mut received: u64 = 0;
    while let Some(item) = stream.next().await {
        let chunk = match item {
            Ok(c) => c,
            Err(e) => {
                source_error = Some(e);
                break;
            }
        };
        if head.len() < 512 {
            let take = (512 - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        progress.inc(chunk.len() as u64);
        received += chunk.len() as u64;
        pace(throttle, received, started).await;
        batched += chunk.len();
        batch.push(chunk);
        if batched >= CHUNK {
            batched = 0;
            if tx
                .send(Msg::Data(std::mem::take(&mut batch)))
                .await
                .is_err()
            {
                consumer_gone = true;
                break;
            }
        }
    }
    if let Some(e) = &source_error {
        let _ = tx
            .send(Msg::Abort(format!("archive stream broke off: {e}")))
            .await;
    } else if !consumer_gone && !batch.is_empty() {
        let _ = tx.send(Msg::Data(batch)).await;
    }
    Fed { head, source_error }
}

/// `NODUS_TEST_RATE_LIMIT` (bytes per second): slows archive reception down so that tests can
/// interrupt a snapshot deterministically mid-way. Not meant for users.
pub(crate) fn test_rate_limit() -> Option<u64> {
    std::env::var("NODUS_TEST_RATE_LIMIT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|r| *r > 0)
}

/// With [`test_rate_limit`]'s `rate`: waits until `received` bytes are due since `started`.
pub(crate) async fn pace(rate: Option<u64>, received: u64, started: std::time::Instant) {
    if let Some(rate) = rate {
        let due = std::time::Duration::from_secs_f64(received as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Streams `stream` into a new file at `path` (0600, must not exist), compressed with `codec`
/// on a blocking thread, and fsyncs it. Advances `progress` by raw bytes. On any error the file
/// is left for the caller to remove (it sits in a `.partial` location).
pub async fn compress_to_file(
    stream: ByteStream,
    path: PathBuf,
    codec: Codec,
    progress: &ProgressBar,
) -> Result<WriteStats> {
    let (tx, rx) = mpsc::channel::<Msg>(DEPTH);
    let writer_path = path.clone();
    let writer = tokio::task::spawn_blocking(move || write_compressed(rx, &writer_path, codec));
    let Fed { head, source_error } = feed(stream, tx, progress).await;
    // The writer's error (e.g. ENOSPC with the path) explains a send failure best.
    let written = writer
        .await
        .map_err(|e| SnapshotError::Other(format!("compression thread failed: {e}")))?;
    if let Some(e) = source_error {
        return Err(e.into());
    }
    let (raw_bytes, compressed_bytes, sha256, min_level_used) = written?;
    Ok(WriteStats {
        raw_bytes,
        compressed_bytes,
        sha256,
        head,
        min_level_used,
    })
}

fn write_compressed(
    mut rx: mpsc::Receiver<Msg>,
    path: &Path,
    codec: Codec,
) -> Result<(u64, u64, String, i32)> {
    let io_err = |e: io::Error| SnapshotError::io(path, e);
    let file = create_private_file(path).map_err(io_err)?;
    let out = HashingWriter::new(BufWriter::with_capacity(CHUNK, file));
    let mut raw = 0u64;
    let aborted = || {
        SnapshotError::Other(format!(
            "archive stream broke off; {} discarded",
            path.display()
        ))
    };
    let (out, min_used) = match codec {
        Codec::Zstd {
            level,
            threads,
            min_level,
        } => {
            let mut enc = zstd::stream::write::Encoder::new(out, level).map_err(io_err)?;
            if threads > 1 {
                enc.multithread(threads).map_err(io_err)?;
            }
            enc.include_checksum(true).map_err(io_err)?;
            let mut adapt = Adapt::new(level, min_level);
            loop {
                let waited = std::time::Instant::now();
                let Some(msg) = rx.blocking_recv() else { break };
                adapt.waited(waited.elapsed());
                match msg {
                    Msg::Data(batch) => {
                        for d in batch {
                            raw += d.len() as u64;
                            enc.write_all(&d).map_err(io_err)?;
                        }
                        if let Some(next) = adapt.chunk_done() {
                            enc.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(next))
                                .map_err(io_err)?;
                        }
                    }
                    Msg::Abort(_) => return Err(aborted()),
                }
            }
            (enc.finish().map_err(io_err)?, adapt.lowest)
        }
        Codec::Gzip { level } => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    Msg::Data(batch) => {
                        for d in batch {
                            raw += d.len() as u64;
                            enc.write_all(&d).map_err(io_err)?;
                        }
                    }
                    Msg::Abort(_) => return Err(aborted()),
                }
            }
            (enc.finish().map_err(io_err)?, level as i32)
        }
    };
    let (buffered, sha, compressed) = out.finish();
    let file = buffered.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    Ok((raw, compressed, sha, min_used))
}

/// Adaptive compression level from how much of its time the compressor spends waiting for the
/// engine's stream (like `zstd --adapt`).
#[derive(Debug, Clone)]
struct Adapt {
    max: i32,
    min: i32,
    current: i32,
    lowest: i32,
    chunks: usize,
    window_start: std::time::Instant,
    waiting: std::time::Duration,
}

impl Adapt {
    fn new(max: i32, min: i32) -> Adapt {
        Adapt {
            max,
            min: min.min(max),
            current: max,
            lowest: max,
            chunks: 0,
            window_start: std::time::Instant::now(),
            waiting: std::time::Duration::ZERO,
        }
    }

    /// Time spent waiting for the next chunk.
    fn waited(&mut self, d: std::time::Duration) {
        self.waiting += d;
    }

    /// Called after each chunk was handed to the encoder; returns a new level when it should
    /// change.
    fn chunk_done(&mut self) -> Option<i32> {
        self.chunks += 1;
        if self.min == self.max || self.chunks < ADAPT_EVERY {
            return None;
        }
        let elapsed = self.window_start.elapsed().as_secs_f64().max(1e-9);
        let idle = self.waiting.as_secs_f64() / elapsed;
        self.chunks = 0;
        self.waiting = std::time::Duration::ZERO;
        self.window_start = std::time::Instant::now();
        let d = self.decide(idle);
        tracing::debug!(
            idle = format!("{:.0}%", idle * 100.0),
            mib_per_s = format!("{:.0}", ADAPT_EVERY as f64 / elapsed),
            level = self.current,
            "snapshot compression"
        );
        d
    }

    fn decide(&mut self, idle: f64) -> Option<i32> {
        let next = if idle < ADAPT_BUSY {
            self.current - 1
        } else if idle > ADAPT_IDLE {
            self.current + 1
        } else {
            self.current
        }
        .clamp(self.min, self.max);
        if next == self.current {
            return None;
        }
        self.current = next;
        self.lowest = self.lowest.min(next);
        Some(next)
    }
}

/// A `Write` that forwards 1 MiB chunks into an engine byte stream from a blocking thread.
pub struct ChannelWriter {
    tx: mpsc::Sender<std::result::Result<bytes::Bytes, EngineError>>,
    buf: Vec<u8>,
    progress: Option<ProgressBar>,
}

impl ChannelWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let n = full.len() as u64;
        self.tx.blocking_send(Ok(full.into())).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine stopped reading the upload",
            )
        })?;
        if let Some(pb) = &self.progress {
            pb.inc(n);
        }
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// Runs `produce` on a blocking thread, turning what it writes into a [`ByteStream`] (advancing
/// `progress` by the bytes sent). If `produce` fails, the stream ends with an error (so the
/// engine aborts the upload) and the handle returns the real error.
pub fn stream_from_blocking<F>(
    progress: Option<ProgressBar>,
    produce: F,
) -> (ByteStream, tokio::task::JoinHandle<Result<()>>)
where
    F: FnOnce(&mut ChannelWriter) -> Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(DEPTH);
    let handle = tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
            progress,
        };
        let result = produce(&mut w).and_then(|()| {
            w.flush()
                .map_err(|e| SnapshotError::Other(format!("upload stream: {e}")))
        });
        if let Err(e) = &result {
            let _ = tx.blocking_send(Err(EngineError::api("stream archive", "upload", e)));
        }
        result
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (Box::pin(stream), handle)
}

/// Whether the zstd file at `path` starts with a frame carrying a content checksum (an xxh64 of
/// the decompressed data that the decoder checks at the end of the frame; nodus writes its
/// archives as one such frame).
pub fn frame_has_checksum(path: &Path) -> io::Result<bool> {
    frame_has_checksum_in(&mut File::open(path)?)
}

/// [`frame_has_checksum`] of an open file, read from its start; leaves it at its start.
fn frame_has_checksum_in(file: &mut File) -> io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut head = [0u8; 5];
    file.seek(SeekFrom::Start(0))?;
    let read = file.read_exact(&mut head);
    file.seek(SeekFrom::Start(0))?;
    read?;
    Ok(header_has_checksum(&head))
}

/// Whether bytes starting a zstd frame say it carries a content checksum: the magic 0xFD2FB528
/// (little endian), then the frame header descriptor, whose bit 2 is the Content_Checksum_flag.
pub fn header_has_checksum(frame: &[u8]) -> bool {
    frame.len() > 4 && frame[..4] == [0x28, 0xB5, 0x2F, 0xFD] && frame[4] & 0x04 != 0
}

/// Decompresses a zstd file into a stream for an upload. Callers verify the file's SHA-256
/// before (nothing is touched before that); while streaming, integrity is checked again so a
/// file changed or damaged since cannot pass silently: by the frame's content checksum when it
/// has one (checked by the decoder, at no extra cost), else by hashing the file and comparing
/// with `expected_sha256` at the end. Either way a mismatch ends the stream with an error
/// instead of a clean end, and the handle says why.
pub fn zstd_file_stream(
    path: PathBuf,
    expected_sha256: String,
    id: String,
    progress: Option<ProgressBar>,
) -> (ByteStream, tokio::task::JoinHandle<Result<()>>) {
    stream_from_blocking(progress, move |w| {
        let io_err = |e: io::Error| SnapshotError::io(&path, e);
        let corrupt = |e: io::Error| SnapshotError::Corrupt {
            id: id.clone(),
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut file = File::open(&path).map_err(io_err)?;
        if frame_has_checksum_in(&mut file).map_err(corrupt)? {
            let mut dec = zstd::stream::read::Decoder::new(file).map_err(io_err)?;
            io::copy(&mut dec, w).map_err(corrupt)?;
            return Ok(());
        }
        let mut hashing = HashingReader::new(io::BufReader::with_capacity(CHUNK, file), None);
        {
            let mut dec = zstd::stream::read::Decoder::new(&mut hashing).map_err(io_err)?;
            io::copy(&mut dec, w).map_err(corrupt)?;
        }
        let (sha, _) = hashing.finish().map_err(io_err)?;
        if sha != expected_sha256 {
            return Err(SnapshotError::ChecksumMismatch {
                id,
                path,
                expected: expected_sha256,
                actual: sha,
            });
        }
        Ok(())
    })
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
