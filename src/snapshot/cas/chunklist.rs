//! The ordered chunk list of a snapshot (`<id>/chunks`): magic, count, (id, raw length) per
//! chunk, and a BLAKE3 of everything before it (a torn or altered list is detected).

use std::path::Path;

use super::Hash;

const MAGIC: &[u8; 8] = b"NDXCHL01";
const ITEM: usize = 36;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub id: Hash,
    pub raw_len: u32,
}

pub fn encode(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + items.len() * ITEM + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for i in items {
        out.extend_from_slice(&i.id);
        out.extend_from_slice(&i.raw_len.to_le_bytes());
    }
    let seal = blake3::hash(&out);
    out.extend_from_slice(seal.as_bytes());
    out
}

pub fn decode(b: &[u8]) -> Result<Vec<Item>, String> {
    if b.len() < 48 || &b[..8] != MAGIC {
        return Err("not a chunk list (bad header)".into());
    }
    let (body, seal) = b.split_at(b.len() - 32);
    if blake3::hash(body).as_bytes() != seal {
        return Err("chunk list checksum mismatch (torn or altered)".into());
    }
    let n = u64::from_le_bytes(body[8..16].try_into().expect("8")) as usize;
    if body.len() != 16 + n * ITEM {
        return Err(format!(
            "chunk list says {n} chunks but holds {} bytes",
            body.len()
        ));
    }
    Ok(body[16..]
        .chunks_exact(ITEM)
        .map(|c| Item {
            id: c[..32].try_into().expect("32"),
            raw_len: u32::from_le_bytes(c[32..36].try_into().expect("4")),
        })
        .collect())
}

pub fn read(path: &Path) -> Result<Vec<Item>, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    decode(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let items = vec![
            Item {
                id: [1; 32],
                raw_len: 5,
            },
            Item {
                id: [2; 32],
                raw_len: 70000,
            },
        ];
        let b = encode(&items);
        assert_eq!(decode(&b).unwrap(), items);
        let mut bad = b.clone();
        bad[20] ^= 1;
        assert!(decode(&bad).unwrap_err().contains("checksum"));
        assert!(decode(&b[..b.len() - 1]).is_err());
    }
}
