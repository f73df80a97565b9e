//! Content-defined chunking (FastCDC 2020) and chunk ids (BLAKE3).
//!
//! Sizes: PostgreSQL writes scattered 8 KiB pages, so smaller chunks dedup better after
//! updates, while larger ones keep the index and per-chunk costs low. 64 KiB average was chosen
//! by measurement on a PGDATA tar (see ARCHITECTURE.md, "Snapshot store").

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

/// Cuts `input` into chunks, calling `f` with each (in order).
pub fn for_each_chunk<R: std::io::Read>(
    input: R,
    f: impl FnMut(Vec<u8>) -> Result<(), crate::snapshot::SnapshotError>,
) -> Result<(), crate::snapshot::SnapshotError> {
    for_each_chunk_sized(input, MIN_SIZE, AVG_SIZE, MAX_SIZE, f)
}

fn for_each_chunk_sized<R: std::io::Read>(
    input: R,
    min: u32,
    avg: u32,
    max: u32,
    mut f: impl FnMut(Vec<u8>) -> Result<(), crate::snapshot::SnapshotError>,
) -> Result<(), crate::snapshot::SnapshotError> {
    let cdc = fastcdc::v2020::StreamCDC::new(input, min, avg, max);
    for chunk in cdc {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => {
                crate::snapshot::SnapshotError::Other(format!("reading the archive stream: {e}"))
            }
            other => crate::snapshot::SnapshotError::Other(format!("chunking: {other}")),
        })?;
        f(chunk.data)?;
    }
    Ok(())
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
                    if seen.insert(chunk_id(&c)) {
                        new += zstd::bulk::compress(&c, 1).unwrap().len() as u64;
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
            a.push(c);
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
            b.push(chunk_id(&c));
            Ok(())
        })
        .unwrap();
        let ids_a: std::collections::HashSet<_> = a.iter().map(|c| chunk_id(c)).collect();
        let shared = b.iter().filter(|id| ids_a.contains(*id)).count();
        assert!(shared + 3 >= b.len(), "{shared} of {}", b.len());
    }
}
