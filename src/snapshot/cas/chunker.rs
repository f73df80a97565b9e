//! Content-defined chunking (FastCDC 2020) and chunk ids (BLAKE3).
//!
//! Sizes: PostgreSQL writes scattered 8 KiB pages, so smaller chunks dedup better after
//! updates, while larger ones keep the index and per-chunk costs low. 64 KiB average was chosen
//! by measurement on a PGDATA tar ([`tests::measure`]; figures in README.md, "Snapshot store"):
//! between 16 and 128 KiB the sizes differ by less than 10 %, 64 KiB needs a quarter of the
//! chunks of 16 KiB.

use super::chunklist::Item;
use super::Hash;

pub const MIN_SIZE: u32 = 16 * 1024;
pub const AVG_SIZE: u32 = 64 * 1024;
pub const MAX_SIZE: u32 = 256 * 1024;

/// How the chunker is described in manifests.
pub fn describe() -> String {
    format!("fastcdc-v2020 {}/{}/{}", MIN_SIZE, AVG_SIZE, MAX_SIZE)
}

/// The id of a chunk: BLAKE3 of its raw bytes.
pub fn chunk_id(data: &[u8]) -> Hash {
    *blake3::hash(data).as_bytes()
}

/// Cuts `input` into chunks, calling `f` with each (in order); what a full cut gives, which the
/// store's writer ([`cut_blocks`]) must match (tests compare them). The slice is only valid during
/// the call: a caller that keeps a chunk copies it.
#[cfg(test)]
pub fn for_each_chunk<R: std::io::Read>(
    input: R,
    f: impl FnMut(&[u8]) -> Result<(), crate::snapshot::SnapshotError>,
) -> Result<(), crate::snapshot::SnapshotError> {
    for_each_chunk_sized(input, MIN_SIZE, AVG_SIZE, MAX_SIZE, f)
}

/// Bytes of input cut per pass (the size of a block of [`cut_blocks`]).
pub const BLOCK: usize = 8 << 20;

/// What a block holds, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A chunk to hash: `(offset in the block, length)`.
    Cut(usize, usize),
    /// A chunk known without reading it (an unchanged file's chunk from the previous snapshot;
    /// its bytes were skipped, or lie in the block unread).
    Known(Item),
}

/// The stream [`cut_blocks`] cuts.
pub trait Input: std::io::Read {
    /// Chunks known to follow at stream offset `at` (where a chunk starts), and the stream
    /// offset where they end; `None` when nothing is known there. Only runs that a full cut
    /// would produce may be returned: every chunk inside bytes known to be those of the
    /// previous snapshot, starting at one of its cuts (the cutter is memoryless after a cut).
    fn known_run(&mut self, _at: u64) -> Option<(Vec<Item>, u64)> {
        None
    }
    /// The run offered at `at` did not hold (its first chunk's bytes differ): offer nothing
    /// more inside that file.
    fn refuse(&mut self, _at: u64) {}
    /// Discards the next `n` bytes of the stream (the inside of a known run).
    fn skip(&mut self, n: u64) -> std::io::Result<()>;
}

/// Any reader, with nothing known.
pub struct Plain<R>(pub R);

impl<R: std::io::Read> std::io::Read for Plain<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: std::io::Read> Input for Plain<R> {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let mut part = <&mut R as std::io::Read>::take(&mut self.0, n);
        let got = std::io::copy(&mut part, &mut std::io::sink())?;
        if got < n {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// Cuts `input` block by block, with the cuts of a stream: each block of up to [`BLOCK`] bytes
/// is filled from `input` and cut with the slice chunker of `fastcdc`; the last chunk of a block
/// (which the block's end may have cut short) is carried over to the start of the next one.
/// At every cut, `input` may say which chunks follow ([`Input::known_run`]): they are emitted
/// as known, and the cutter continues after them (skipping the stream past them when they end
/// beyond the block). The first chunk of a run is checked against the bytes first (a file
/// rewritten with its old time is caught when its start changed): a run is taken only once
/// its first chunk is in the block, and refused when that chunk's id differs. `emit` gets every filled block with its pieces (in order) and returns the
/// block to fill next: the same one when it is done with it, or another (a caller hashing on
/// another thread hands the block over and takes a free one from a pool). Blocks must be
/// [`BLOCK`] bytes long. (The crate's `StreamCDC` moves its buffer for every chunk and is
/// generic over the reader, so it is compiled without optimisation in debug builds: several
/// times slower.)
pub fn cut_blocks(
    input: &mut dyn Input,
    first: Vec<u8>,
    emit: impl FnMut(Vec<u8>, Vec<Piece>) -> Result<Vec<u8>, crate::snapshot::SnapshotError>,
) -> Result<(), crate::snapshot::SnapshotError> {
    cut_blocks_sized(input, first, MIN_SIZE, AVG_SIZE, MAX_SIZE, emit)
}

fn cut_blocks_sized(
    input: &mut dyn Input,
    first: Vec<u8>,
    min: u32,
    avg: u32,
    max: u32,
    mut emit: impl FnMut(Vec<u8>, Vec<Piece>) -> Result<Vec<u8>, crate::snapshot::SnapshotError>,
) -> Result<(), crate::snapshot::SnapshotError> {
    let read_err = |e: std::io::Error| {
        crate::snapshot::SnapshotError::Other(format!("reading the archive stream: {e}"))
    };
    let mut buf = first;
    debug_assert_eq!(buf.len(), BLOCK);
    let mut tail: Vec<u8> = Vec::with_capacity(max as usize);
    // Stream offset of buf[0].
    let mut base = 0u64;
    let mut len = 0usize;
    let mut eof = false;
    loop {
        while !eof && len < buf.len() {
            match input.read(&mut buf[len..]) {
                Ok(0) => eof = true,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_err(e)),
            }
        }
        if len == 0 {
            return Ok(());
        }
        let mut pieces = Vec::with_capacity(len / avg as usize * 2 + 1);
        // Where the next chunk starts (in the block), and how far past the block a known run
        // reaches.
        let mut pos = 0usize;
        let mut beyond = 0u64;
        while pos < len {
            let at = base + pos as u64;
            if let Some((run, end)) = input.known_run(at) {
                let first = run.first().map(|f| (f.id, f.raw_len as usize));
                let checked = match first {
                    None => false,
                    // Its bytes are not all here yet: carried over, checked in the next block.
                    Some((_, n)) if pos + n > len && !eof => break,
                    Some((_, n)) if pos + n > len => false,
                    Some((id, n)) => {
                        let same = chunk_id(&buf[pos..pos + n]) == id;
                        if !same {
                            tracing::warn!(
                                "a file at stream offset {at} has the size and modification time it had in the previous snapshot, but not its bytes: it is read in full"
                            );
                            input.refuse(at);
                        }
                        same
                    }
                };
                if checked && end > at {
                    pieces.extend(run.into_iter().map(Piece::Known));
                    if end <= base + len as u64 {
                        pos = (end - base) as usize;
                    } else {
                        beyond = end - (base + len as u64);
                        pos = len;
                    }
                    continue;
                }
            }
            let Some(c) = fastcdc::v2020::FastCDC::new(&buf[pos..len], min, avg, max).next() else {
                break;
            };
            if !eof && pos + c.length == len {
                // Maybe cut short by the block's end: carried over.
                break;
            }
            pieces.push(Piece::Cut(pos, c.length));
            pos += c.length;
        }
        if eof && beyond == 0 {
            emit(buf, pieces)?;
            return Ok(());
        }
        tail.clear();
        tail.extend_from_slice(&buf[pos..len]);
        buf = emit(buf, pieces)?;
        debug_assert_eq!(buf.len(), BLOCK);
        if beyond > 0 {
            input.skip(beyond).map_err(read_err)?;
            base += len as u64 + beyond;
            len = 0;
            // A run never ends past the stream: the end of input comes later, if at all.
            eof = false;
        } else {
            base += pos as u64;
            buf[..tail.len()].copy_from_slice(&tail);
            len = tail.len();
        }
    }
}

/// [`for_each_chunk`] with other sizes (the measurement of [`AVG_SIZE`]).
#[cfg(test)]
fn for_each_chunk_sized<R: std::io::Read>(
    input: R,
    min: u32,
    avg: u32,
    max: u32,
    mut f: impl FnMut(&[u8]) -> Result<(), crate::snapshot::SnapshotError>,
) -> Result<(), crate::snapshot::SnapshotError> {
    cut_blocks_sized(
        &mut Plain(input),
        vec![0u8; BLOCK],
        min,
        avg,
        max,
        |block, pieces| {
            for p in pieces {
                if let Piece::Cut(o, l) = p {
                    f(&block[o..o + l])?;
                }
            }
            Ok(block)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The measurement behind [`AVG_SIZE`]: `NODUS_CDC_TARS=a.tar,b.tar,...` (PGDATA archives
    /// of the same cluster over time); prints, per average size, what each tar adds to a store
    /// holding the previous ones. `cargo test --lib chunker::tests::measure -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn measure() {
        let tars: Vec<String> = std::env::var("NODUS_CDC_TARS")
            .expect("NODUS_CDC_TARS")
            .split(',')
            .map(String::from)
            .collect();
        for avg in [16u32 << 10, 32 << 10, 64 << 10, 128 << 10] {
            let mut seen = std::collections::HashSet::new();
            let mut line = format!("avg {:>3} KiB:", avg >> 10);
            for t in &tars {
                let f = std::io::BufReader::new(std::fs::File::open(t).unwrap());
                let (mut total, mut new, mut n) = (0u64, 0u64, 0u64);
                for_each_chunk_sized(f, avg / 4, avg, avg * 4, |c| {
                    total += c.len() as u64;
                    n += 1;
                    if seen.insert(chunk_id(c)) {
                        new += zstd::bulk::compress(c, 1).unwrap().len() as u64;
                    }
                    Ok(())
                })
                .unwrap();
                line += &format!(
                    "  {} chunks, adds {:.1} MiB ({:.2}% of raw)",
                    n,
                    new as f64 / 1048576.0,
                    new as f64 * 100.0 / total as f64
                );
            }
            println!("{line}");
        }
    }

    #[test]
    fn block_cuts_are_the_cuts_of_the_stream() {
        let mut x: u64 = 11;
        let data: Vec<u8> = (0..(2 * BLOCK + 123_457))
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 56) as u8
            })
            .collect();
        let mut ours = Vec::new();
        for_each_chunk(&data[..], |c| {
            ours.push(c.len());
            Ok(())
        })
        .unwrap();
        let reference: Vec<usize> =
            fastcdc::v2020::StreamCDC::new(&data[..], MIN_SIZE, AVG_SIZE, MAX_SIZE)
                .map(|c| c.unwrap().length)
                .collect();
        assert_eq!(ours, reference);
        // A reader returning a few bytes at a time cuts the same way.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                let n = b.len().min(self.0.len()).min(70_001);
                b[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut trickled = Vec::new();
        for_each_chunk(Trickle(&data), |c| {
            trickled.push(c.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(trickled, reference);
    }

    #[test]
    fn chunks_reassemble_and_resync_after_an_insert() {
        let mut x: u64 = 7;
        let data: Vec<u8> = (0..2_000_000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 56) as u8
            })
            .collect();
        let mut a = Vec::new();
        for_each_chunk(&data[..], |c| {
            a.push(c.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(a.concat(), data);
        assert!(a.len() > 10 && a.iter().all(|c| c.len() <= MAX_SIZE as usize));
        // Insert bytes near the start: all but the first few chunks are the same.
        let mut changed = data.clone();
        changed.splice(1000..1000, [1u8, 2, 3]);
        let mut b = Vec::new();
        for_each_chunk(&changed[..], |c| {
            b.push(chunk_id(c));
            Ok(())
        })
        .unwrap();
        let ids_a: std::collections::HashSet<_> = a.iter().map(|c| chunk_id(c)).collect();
        let shared = b.iter().filter(|id| ids_a.contains(*id)).count();
        assert!(shared + 3 >= b.len(), "{shared} of {}", b.len());
    }
}
