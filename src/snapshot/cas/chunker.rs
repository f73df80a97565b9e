//! Content-defined chunking (FastCDC 2020) and chunk ids (BLAKE3).
//!
//! Sizes: PostgreSQL writes scattered 8 KiB pages, so smaller chunks dedup better after
//! updates, while larger ones keep the index and per-chunk costs low. 64 KiB average was chosen
//! by measurement on a PGDATA tar ([`tests::measure`]; figures in README.md, "Snapshot store"):
//! between 16 and 128 KiB the sizes differ by less than 10 %, 64 KiB needs a quarter of the
//! chunks of 16 KiB.

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

/// Cuts `input` into chunks, calling `f` with each (in order). The slice is only valid during
/// the call: a caller that keeps a chunk copies it (most chunks of a snapshot are known to the
/// store and are only hashed).
pub fn for_each_chunk<R: std::io::Read>(
    input: R,
    f: impl FnMut(&[u8]) -> Result<(), crate::snapshot::SnapshotError>,
) -> Result<(), crate::snapshot::SnapshotError> {
    for_each_chunk_sized(input, MIN_SIZE, AVG_SIZE, MAX_SIZE, f)
}

/// Bytes of input cut per pass.
const BLOCK: usize = 8 << 20;

/// Cuts with the slice chunker of `fastcdc` over 8 MiB blocks: the last chunk of a block (which
/// the block's end may have cut short) is carried over to the next one, so the cuts are those of
/// a stream. (The crate's `StreamCDC` moves its buffer for every chunk and is generic over the
/// reader, so it is compiled without optimisation in debug builds: several times slower.)
fn for_each_chunk_sized<R: std::io::Read>(
    mut input: R,
    min: u32,
    avg: u32,
    max: u32,
    mut f: impl FnMut(&[u8]) -> Result<(), crate::snapshot::SnapshotError>,
) -> Result<(), crate::snapshot::SnapshotError> {
    let mut buf = vec![0u8; BLOCK];
    let mut len = 0usize;
    let mut eof = false;
    loop {
        while !eof && len < BLOCK {
            match input.read(&mut buf[len..]) {
                Ok(0) => eof = true,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(crate::snapshot::SnapshotError::Other(format!(
                        "reading the archive stream: {e}"
                    )))
                }
            }
        }
        if len == 0 {
            return Ok(());
        }
        let mut consumed = 0usize;
        for c in fastcdc::v2020::FastCDC::new(&buf[..len], min, avg, max) {
            let end = c.offset + c.length;
            if !eof && end == len {
                break;
            }
            f(&buf[c.offset..end])?;
            consumed = end;
        }
        if eof {
            return Ok(());
        }
        buf.copy_within(consumed..len, 0);
        len -= consumed;
    }
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
