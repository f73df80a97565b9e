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
    mut f: impl FnMut(Vec<u8>) -> Result<(), crate::snapshot::SnapshotError>,
) -> Result<(), crate::snapshot::SnapshotError> {
    let cdc = fastcdc::v2020::StreamCDC::new(input, MIN_SIZE, AVG_SIZE, MAX_SIZE);
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
