//! Store-level checks: every chunk a snapshot references is indexed and inside an existing pack,
//! every pack holding such chunks has the checksum its name says; with `read_data`, chunks of a
//! damaged pack are decompressed and re-hashed one by one to name exactly the damaged ones. Each
//! damaged chunk is reported with every snapshot (of any project using the store) that uses it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;

use super::{hex32, index, pack, referrers_lenient, Cas, Hash};
use crate::snapshot::Result;

/// One damaged or missing chunk (or a damaged pack no snapshot needs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Damage {
    pub chunk: Option<String>,
    pub pack: Option<String>,
    pub reason: String,
    /// Every snapshot using the chunk.
    pub snapshots: Vec<String>,
}

/// The outcome of [`check`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StoreCheck {
    pub packs_checked: u64,
    pub chunks_checked: u64,
    pub damage: Vec<Damage>,
    /// Index files that could not be read.
    pub problems: Vec<String>,
}

impl StoreCheck {
    /// Why `id` is unusable, if it is: one line per damaged chunk it uses.
    pub fn problems_of(&self, id: &str) -> Vec<String> {
        self.damage
            .iter()
            .filter(|d| d.snapshots.iter().any(|s| s == id))
            .map(|d| {
                let what = match (&d.chunk, &d.pack) {
                    (Some(c), Some(p)) => format!("chunk {} in pack {}", &c[..16], &p[..16]),
                    (Some(c), None) => format!("chunk {}", &c[..16]),
                    (None, Some(p)) => format!("pack {}", &p[..16]),
                    (None, None) => "?".into(),
                };
                let others: Vec<&str> = d
                    .snapshots
                    .iter()
                    .map(String::as_str)
                    .filter(|s| *s != id)
                    .collect();
                format!(
                    "{what}: {}{}",
                    d.reason,
                    if others.is_empty() {
                        String::new()
                    } else {
                        format!(" (also used by {})", others.join(", "))
                    }
                )
            })
            .collect()
    }
}

/// Checks the chunks of the snapshots `ids` (all snapshots using the store when None).
pub fn check(cas: &Cas, ids: Option<&[String]>, read_data: bool) -> Result<StoreCheck> {
    let _lock = cas.lock_shared()?;
    let all = referrers_lenient(cas)?;
    let mut owners: HashMap<Hash, BTreeSet<String>> = HashMap::new();
    for r in &all {
        for c in &r.chunks {
            owners.entry(c.id).or_default().insert(r.id.clone());
        }
    }
    let selected: Vec<_> = all
        .iter()
        .filter(|r| ids.is_none_or(|ids| ids.contains(&r.id)))
        .collect();
    let idx = index::load(cas, false)?;
    let mut out = StoreCheck {
        problems: idx.problems.clone(),
        ..Default::default()
    };
    let owners_of = |id: &Hash| -> Vec<String> {
        owners
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    };

    // Needed chunks, grouped by pack.
    let mut needed: BTreeMap<u32, Vec<(Hash, index::Loc)>> = BTreeMap::new();
    let mut seen: HashSet<Hash> = HashSet::new();
    for r in &selected {
        for c in &r.chunks {
            if !seen.insert(c.id) {
                continue;
            }
            out.chunks_checked += 1;
            match idx.get(&c.id) {
                Some(loc) if loc.raw_len == c.raw_len => {
                    needed.entry(loc.pack).or_default().push((c.id, loc))
                }
                Some(loc) => out.damage.push(Damage {
                    chunk: Some(hex32(&c.id)),
                    pack: Some(hex32(idx.pack_of(&loc))),
                    reason: format!(
                        "has {} bytes in the index, {} in the chunk list",
                        loc.raw_len, c.raw_len
                    ),
                    snapshots: owners_of(&c.id),
                }),
                None => out.damage.push(Damage {
                    chunk: Some(hex32(&c.id)),
                    pack: None,
                    reason: "is missing from the store".into(),
                    snapshots: owners_of(&c.id),
                }),
            }
        }
    }

    for (p, chunks) in needed {
        let pack_id = idx.packs[p as usize];
        let path = cas.pack_path(&pack_id);
        out.packs_checked += 1;
        let pack_problem = match pack::hash_file(&path) {
            Ok(h) if h == pack_id => None,
            Ok(h) => Some(format!(
                "pack checksum mismatch (BLAKE3 {}, name says {})",
                &hex32(&h)[..16],
                &hex32(&pack_id)[..16]
            )),
            Err(e) => Some(format!("pack unreadable: {e}")),
        };
        let Some(why) = pack_problem else { continue };
        if !read_data {
            // One line per pack: which of its chunks are damaged takes reading them.
            let mut users: BTreeSet<String> = BTreeSet::new();
            for (id, _) in &chunks {
                users.extend(owners_of(id));
            }
            out.damage.push(Damage {
                chunk: None,
                pack: Some(hex32(&pack_id)),
                reason: format!(
                    "{why}; {} chunks in use are in this damaged pack (--read-data names the damaged ones)",
                    chunks.len()
                ),
                snapshots: users.into_iter().collect(),
            });
            continue;
        }
        let file = File::open(&path).ok();
        let mut any = false;
        for (id, loc) in chunks {
            let chunk_problem = match &file {
                Some(f) => pack::read_chunk(f, &loc, &id).err(),
                None => Some(why.clone()),
            };
            if let Some(reason) = chunk_problem {
                any = true;
                out.damage.push(Damage {
                    chunk: Some(hex32(&id)),
                    pack: Some(hex32(&pack_id)),
                    reason: format!("is damaged ({why}): {reason}"),
                    snapshots: owners_of(&id),
                });
            }
        }
        if !any {
            out.damage.push(Damage {
                chunk: None,
                pack: Some(hex32(&pack_id)),
                reason: format!("{why}; every chunk a snapshot uses in it is intact"),
                snapshots: vec![],
            });
        }
    }
    Ok(out)
}
