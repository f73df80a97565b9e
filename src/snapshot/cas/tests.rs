//! Store round trips, dedup, crash leftovers, GC and damage reports (no engine needed).

use std::collections::HashSet;
use std::io::Read;

use super::*;
use crate::snapshot::manifest::tests::sample;
use crate::snapshot::manifest::{Manifest, CHUNKS_FILE};
use crate::snapshot::{import_tar, open_tar_reader, SnapshotStore};

pub(super) fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// A PGDATA-like tar: (name, content, mtime) in order, after the top directory `data`.
pub(crate) fn tar_of(files: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let mut raw = Vec::new();
    {
        let mut b = tar::Builder::new(&mut raw);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o700);
        h.set_mtime(1_000);
        b.append_data(&mut h, "data/", std::io::empty()).unwrap();
        for (name, data, mtime) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(*mtime);
            b.append_data(&mut h, format!("data/{name}"), *data)
                .unwrap();
        }
        b.finish().unwrap();
    }
    raw
}

/// A tar like a tiny PGDATA (top entry `data`, PG_VERSION, then `files`).
fn pg_tar(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut all: Vec<(&str, &[u8], u64)> = vec![("PG_VERSION", b"16\n", 0)];
    all.extend(files.iter().map(|(n, d)| (*n, d.as_slice(), 0)));
    tar_of(&all)
}

fn base_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("base/1/1259", noise(1, 1 << 20)),
        ("base/1/2000", noise(2, 1 << 20)),
        ("base/1/3000", noise(3, 1 << 20)),
    ]
}

fn manifest(id: &str) -> Manifest {
    let mut m = sample(id);
    m.archive.top = String::new();
    m
}

fn import(store: &SnapshotStore, id: &str, tar: &[u8]) -> Manifest {
    import_tar(store, manifest(id), &mut &tar[..]).unwrap()
}

fn read_back(store: &SnapshotStore, id: &str) -> std::io::Result<Vec<u8>> {
    let e = store.get(id).unwrap();
    let mut out = Vec::new();
    open_tar_reader(&e).unwrap().read_to_end(&mut out)?;
    Ok(out)
}

fn setup() -> (tempfile::TempDir, SnapshotStore) {
    let d = tempfile::tempdir().unwrap();
    let (store, _) = SnapshotStore::open(d.path().join("snapshots/demo")).unwrap();
    (d, store)
}

fn cas_of(store: &SnapshotStore) -> Cas {
    Cas::open(store.cas_dir()).unwrap()
}

fn store_bytes(store: &SnapshotStore) -> u64 {
    gc::stats(&cas_of(store)).unwrap().store_bytes
}

const A: &str = "20250101T000000Z-db-aaaaaa";
const B: &str = "20250102T000000Z-db-bbbbbb";

/// B: base files with one 8 KiB page rewritten in the middle of one relation.
fn tar_b() -> Vec<u8> {
    let mut f = base_files();
    f[1].1[500_000..508_192].copy_from_slice(&noise(99, 8192));
    pg_tar(&f)
}

#[test]
fn import_reads_back_identically_and_dedups() {
    let (_d, store) = setup();
    let tar = pg_tar(&base_files());
    let m = import(&store, A, &tar);
    assert_eq!(m.format, crate::snapshot::manifest::FORMAT_STORE);
    assert_eq!(m.archive.file, CHUNKS_FILE);
    assert_eq!(m.archive.top, "data");
    assert_eq!(m.archive.raw_bytes, tar.len() as u64);
    let s = m.store.clone().unwrap();
    assert!(s.chunks > 10, "{s:?}");
    assert_eq!(s.new_chunks, s.chunks);
    assert!(store_bytes(&store) >= s.added_bytes && s.added_bytes > 0);
    assert_eq!(read_back(&store, A).unwrap(), tar);

    // The same data again: nothing new is stored.
    let again = import(&store, "20250101T000001Z-db-cccccc", &tar);
    assert_eq!(again.store.as_ref().unwrap().new_chunks, 0);
    assert_eq!(again.store.as_ref().unwrap().added_bytes, 0);

    // One page changed: a few chunks, a small fraction of the first.
    let b = import(&store, B, &tar_b());
    let sb = b.store.unwrap();
    assert!(sb.new_chunks >= 1 && sb.new_chunks <= 3, "{sb:?}");
    assert!(sb.added_bytes * 10 < s.added_bytes, "{sb:?} vs {s:?}");
    assert_eq!(read_back(&store, B).unwrap(), tar_b());

    // Files are private; the entry verifies with read_data.
    use std::os::unix::fs::PermissionsExt;
    for p in std::fs::read_dir(cas_of(&store).packs_dir()).unwrap() {
        let mode = p.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let e = store.get(B).unwrap();
    let r =
        crate::snapshot::verify::verify_chunked(&e, e.manifest.as_ref().unwrap(), None, true, None)
            .unwrap();
    assert!(r.entries >= 5, "{r:?}");
}

#[test]
fn existing_id_is_refused_and_nothing_half_written_is_listed() {
    let (_d, store) = setup();
    let tar = pg_tar(&base_files());
    import(&store, A, &tar);
    assert!(import_tar(&store, manifest(A), &mut &tar[..]).is_err());
    // A stream that breaks off: nothing listed, no partial dir left.
    struct Broken(usize);
    impl Read for Broken {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("connection reset"));
            }
            let n = b.len().min(self.0);
            b[..n].fill(7);
            self.0 -= n;
            Ok(n)
        }
    }
    let err = import_tar(&store, manifest(B), &mut Broken(3 << 20)).unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    let ids: Vec<_> = store.list().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![A]);
    assert!(!store.dir().join(format!("{B}.partial")).exists());
}

/// What a writer killed before the manifest rename leaves: a `.partial` dir with its (unlocked)
/// lock and chunk list, and packs + indexes nothing references.
#[test]
fn crash_before_manifest_rename_is_not_listed_and_is_collected() {
    let (_d, store) = setup();
    import(&store, A, &pg_tar(&base_files()));
    let before = store_bytes(&store);
    {
        let cas = cas_of(&store);
        let _lock = cas.lock_shared().unwrap();
        let partial = store.dir().join(format!("{B}.partial"));
        std::fs::create_dir(&partial).unwrap();
        std::fs::write(partial.join(".lock"), "").unwrap();
        let w = write::write_chunks(
            &cas,
            &partial.join(CHUNKS_FILE),
            &mut chunker::Plain(&tar_b()[..]),
            1,
            None,
        )
        .unwrap();
        assert!(w.new_chunks >= 1);
        // "Killed" here: no manifest, no rename.
    }
    assert!(store_bytes(&store) > before, "the new chunks were stored");
    let ids: Vec<_> = store.list().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![A], "a half-written snapshot is never listed");
    // The next open removes the partial dir, the next GC the unreferenced chunks.
    let (store, cleaned) = SnapshotStore::open(store.dir()).unwrap();
    assert_eq!(cleaned, vec![format!("{B}.partial")]);
    let r = gc::gc(&cas_of(&store)).unwrap();
    assert!(!r.busy);
    assert_eq!(store_bytes(&store), before, "{r:?}");
    assert_eq!(read_back(&store, A).unwrap(), pg_tar(&base_files()));
}

#[test]
fn a_pack_without_index_and_tmp_files_are_removed_by_gc() {
    let (_d, store) = setup();
    import(&store, A, &pg_tar(&base_files()));
    let cas = cas_of(&store);
    let before = store_bytes(&store);
    std::fs::write(cas.packs_dir().join("123-abcdef.tmp"), b"half").unwrap();
    std::fs::write(cas.pack_path(&[7; 32]), b"orphan pack").unwrap();
    let r = gc::gc(&cas).unwrap();
    assert_eq!(r.packs_deleted, 1, "{r:?}");
    assert!(!cas.packs_dir().join("123-abcdef.tmp").exists());
    assert_eq!(store_bytes(&store), before);
    assert_eq!(read_back(&store, A).unwrap(), pg_tar(&base_files()));
}

#[test]
fn gc_after_delete_keeps_what_is_referenced_and_repacks() {
    let (_d, store) = setup();
    import(&store, A, &pg_tar(&base_files()));
    // B shares nothing of A's third file: a different relation.
    let mut fb = base_files();
    fb[2].1 = noise(33, 1 << 20);
    let tar_c = pg_tar(&fb);
    import(&store, B, &tar_c);
    let full = store_bytes(&store);
    let collected = crate::snapshot::delete_snapshots(&store, &[A.to_string()]).unwrap();
    assert_eq!(collected.len(), 1);
    let r = collected[0].result.as_ref().unwrap();
    assert!(!r.busy);
    // A's pack held the two shared files and A's own third file: a third unused, so it is
    // kept as it is (above the repack threshold) or repacked; either way B reads back.
    assert_eq!(read_back(&store, B).unwrap(), tar_c);
    let e = store.get(B).unwrap();
    crate::snapshot::verify::verify_chunked(&e, e.manifest.as_ref().unwrap(), None, true, None)
        .unwrap();
    assert!(store_bytes(&store) <= full);
    // Delete B too: everything goes.
    crate::snapshot::delete_snapshots(&store, &[B.to_string()]).unwrap();
    assert_eq!(store_bytes(&store), 0);
    let st = gc::stats(&cas_of(&store)).unwrap();
    assert_eq!((st.packs, st.snapshots), (0, 0));
}

#[test]
fn gc_repacks_a_mostly_unused_pack() {
    let (_d, store) = setup();
    // A: 3 MiB of noise in one pack; B: only a small file shared with A plus its own data.
    let small = ("base/1/9", noise(1, 1 << 20)[..200_000].to_vec());
    let a = pg_tar(&[
        ("base/1/1259", noise(1, 1 << 20)),
        ("base/1/2000", noise(2, 1 << 20)),
        ("base/1/3000", noise(3, 1 << 20)),
    ]);
    import(&store, A, &a);
    let b = pg_tar(&[("base/1/1259", noise(1, 1 << 20)), small]);
    import(&store, B, &b);
    let r = crate::snapshot::delete_snapshots(&store, &[A.to_string()]).unwrap();
    let r = r[0].result.as_ref().unwrap();
    assert_eq!(r.packs_repacked, 1, "{r:?}");
    assert!(r.freed() > 1 << 20, "{r:?}");
    assert_eq!(read_back(&store, B).unwrap(), b);
    let st = gc::stats(&cas_of(&store)).unwrap();
    assert!(st.reclaimable_bytes < 1000, "{st:?}");
}

/// Flips one byte inside chunk `id`'s compressed bytes.
fn flip(cas: &Cas, id: &Hash) {
    let idx = index::load(cas, true).unwrap();
    let loc = idx.get(id).unwrap();
    let path = cas.pack_path(idx.pack_of(&loc));
    let mut b = std::fs::read(&path).unwrap();
    b[(loc.offset + loc.len as u64 / 2) as usize] ^= 0x20;
    std::fs::write(&path, b).unwrap();
}

fn chunk_ids(store: &SnapshotStore, id: &str) -> Vec<Hash> {
    chunklist::read(&store.dir().join(id).join(CHUNKS_FILE))
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

#[test]
fn a_flipped_byte_is_found_and_the_snapshots_using_it_are_named() {
    let (_d, store) = setup();
    import(&store, A, &pg_tar(&base_files()));
    import(&store, B, &tar_b());
    let cas = cas_of(&store);
    let a: HashSet<Hash> = chunk_ids(&store, A).into_iter().collect();
    let only_b = *chunk_ids(&store, B)
        .iter()
        .find(|c| !a.contains(*c))
        .unwrap();
    flip(&cas, &only_b);

    let c = verify::check(&cas, None, true).unwrap();
    assert_eq!(c.damage.len(), 1, "{c:?}");
    assert_eq!(c.damage[0].snapshots, vec![B.to_string()]);
    assert!(c.problems_of(A).is_empty());
    // Without read_data the pack checksum still catches it (and names B).
    let c = verify::check(&cas, None, false).unwrap();
    assert!(
        c.problems_of(B).iter().any(|p| p.contains("damaged pack")),
        "{c:?}"
    );
    // One line for the pack, naming every snapshot that has chunks in it (only B here).
    assert_eq!(c.damage.len(), 1, "{c:?}");
    assert!(c.problems_of(A).is_empty(), "{c:?}");

    // B refuses (before anything would be streamed); A verifies and reads back.
    let eb = store.get(B).unwrap();
    let err = crate::snapshot::verify::verify_chunked(
        &eb,
        eb.manifest.as_ref().unwrap(),
        None,
        true,
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains(&hex32(&only_b)[..16]), "{err}");
    let ea = store.get(A).unwrap();
    crate::snapshot::verify::verify_chunked(&ea, ea.manifest.as_ref().unwrap(), None, true, None)
        .unwrap();
    assert!(
        read_back(&store, B).is_err(),
        "a damaged chunk fails the read"
    );
    assert_eq!(read_back(&store, A).unwrap(), pg_tar(&base_files()));

    // A chunk both use: both are named.
    let shared = chunk_ids(&store, A)[3];
    flip(&cas, &shared);
    let c = verify::check(&cas, None, true).unwrap();
    let d = c
        .damage
        .iter()
        .find(|d| d.chunk.as_deref() == Some(hex32(&shared).as_str()))
        .unwrap();
    assert_eq!(d.snapshots, vec![A.to_string(), B.to_string()]);
}

#[test]
fn gc_waits_for_nobody_and_skips_while_the_store_is_in_use() {
    let (_d, store) = setup();
    import(&store, A, &pg_tar(&base_files()));
    let cas = cas_of(&store);
    let held = cas.lock_shared().unwrap();
    assert!(gc::gc(&cas).unwrap().busy);
    drop(held);
    assert!(!gc::gc(&cas).unwrap().busy);
}

#[test]
fn old_single_file_snapshots_stay_readable() {
    let d = tempfile::tempdir().unwrap();
    let (store, _) = SnapshotStore::open(d.path().join("snaps")).unwrap();
    let (path, m) = crate::snapshot::verify::tests::build_snapshot(d.path(), true);
    let p = store.begin(&m.id).unwrap();
    std::fs::copy(&path, p.data_path()).unwrap();
    p.commit(&m).unwrap();
    let e = store.get(&m.id).unwrap();
    let mut out = Vec::new();
    open_tar_reader(&e).unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out.len() as u64, m.archive.raw_bytes);
    assert_eq!(e.data_path(), e.dir.join("data.tar.zst"));
}

#[test]
fn a_damaged_chunk_list_fails_only_its_snapshot_and_stops_gc() {
    let (_d, store) = setup();
    import(&store, A, &pg_tar(&base_files()));
    import(&store, B, &tar_b());
    let list = store.dir().join(B).join(CHUNKS_FILE);
    let mut b = std::fs::read(&list).unwrap();
    b[40] ^= 1;
    std::fs::write(&list, b).unwrap();
    let ea = store.get(A).unwrap();
    crate::snapshot::verify::verify_chunked(&ea, ea.manifest.as_ref().unwrap(), None, true, None)
        .unwrap();
    let eb = store.get(B).unwrap();
    assert!(crate::snapshot::verify::verify_chunked(
        &eb,
        eb.manifest.as_ref().unwrap(),
        None,
        false,
        None
    )
    .is_err());
    // GC cannot know what B references: it refuses rather than guess.
    let before = store_bytes(&store);
    assert!(gc::gc(&cas_of(&store)).is_err());
    assert_eq!(store_bytes(&store), before);
    assert!(gc::stats(&cas_of(&store)).is_ok());
}

#[test]
fn a_failing_pack_writer_ends_the_write_with_its_error_instead_of_hanging() {
    let (_d, store) = setup();
    let cas = cas_of(&store);
    // Packs cannot be created: the writer fails at its first chunk, every worker stops.
    std::fs::write(cas.dir().join("fail-pack-create"), b"").unwrap();
    let tar = pg_tar(&[("big", noise(5, 8 << 20))]);
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = store.dir().to_path_buf();
    std::thread::spawn(move || {
        let list = dir.join("list");
        let _ = tx.send(
            write::write_chunks(&cas, &list, &mut chunker::Plain(&tar[..]), 1, None).map(|_| ()),
        );
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the write must not hang");
    assert!(r.unwrap_err().to_string().contains("pack creation fails"));
}

#[test]
fn a_store_shared_by_two_projects_keeps_what_the_other_one_uses() {
    let d = tempfile::tempdir().unwrap();
    let shared = d.path().join("shared-store");
    let (p1, _) = SnapshotStore::open(d.path().join("one/snapshots/p1")).unwrap();
    let (p2, _) = SnapshotStore::open(d.path().join("two/snapshots/p2")).unwrap();
    let (p1, p2) = (p1.with_cas(&shared), p2.with_cas(&shared));
    let tar = pg_tar(&base_files());
    import(&p1, A, &tar);
    let m2 = import(&p2, B, &tar);
    assert_eq!(
        m2.store.as_ref().unwrap().new_chunks,
        0,
        "deduplicated across projects"
    );
    let collected = crate::snapshot::delete_snapshots(&p1, &[A.to_string()]).unwrap();
    assert!(!collected[0].result.as_ref().unwrap().busy);
    assert_eq!(read_back(&p2, B).unwrap(), tar);
    assert!(gc::stats(&Cas::open(&shared).unwrap()).unwrap().store_bytes > 0);
    crate::snapshot::delete_snapshots(&p2, &[B.to_string()]).unwrap();
    assert_eq!(
        gc::stats(&Cas::open(&shared).unwrap()).unwrap().store_bytes,
        0
    );
}

/// Found by `scripts/bench-restart.sh`: `down` snapshots db and cache at once into a store that
/// does not exist yet; both created the store's config through the same temporary name and one
/// snapshot failed with "File exists".
#[test]
fn a_new_store_opened_by_several_writers_at_once_is_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let ids: Vec<String> = (0..8)
        .map(|_| {
            let (root, barrier) = (root.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Cas::open(&root).map(|c| c.id().to_string())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap().expect("every writer opens the store"))
        .collect();
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn read_ahead_hands_out_chunks_in_order_and_stops_at_a_damaged_one() {
    let (_d, store) = setup();
    // Many more chunks than the reader keeps in flight.
    let tar = pg_tar(&[("base/1/9000", noise(7, 12 << 20))]);
    let m = import(&store, A, &tar);
    let items = chunklist::read(&store.dir().join(A).join(CHUNKS_FILE)).unwrap();
    assert!(items.len() > 100, "{} chunks", items.len());
    let e = store.get(A).unwrap();
    let mut whole = Vec::new();
    read::ChunkReader::open(&e, &m)
        .unwrap()
        .copy_to(&mut whole)
        .unwrap();
    assert!(whole == tar, "copy_to reads the tar back");

    let k = 77;
    flip(&cas_of(&store), &items[k].id);
    let before: usize = items[..k].iter().map(|i| i.raw_len as usize).sum();
    let name = &hex32(&items[k].id)[..16];
    // Small reads: every byte before the damaged chunk, in order, then its error.
    let mut r = read::ChunkReader::open(&e, &m).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1000];
    let err = loop {
        match r.read(&mut buf) {
            Ok(0) => panic!("the damaged chunk was not noticed"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert!(got == tar[..before], "{} bytes before the error", got.len());
    assert!(err.to_string().contains(name), "{err}");
    let again = r.read(&mut buf).unwrap_err();
    assert!(
        again.to_string().contains(name),
        "no clean end after an error: {again}"
    );
    // Whole chunks: the same.
    let mut got = Vec::new();
    let err = read::ChunkReader::open(&e, &m)
        .unwrap()
        .copy_to(&mut got)
        .unwrap_err();
    assert!(got == tar[..before], "{} bytes before the error", got.len());
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn chunks_carry_a_frame_checksum_that_an_upload_read_relies_on() {
    let (_d, store) = setup();
    let tar = pg_tar(&base_files());
    let m = import(&store, A, &tar);
    let cas = cas_of(&store);
    let idx = index::load(&cas, true).unwrap();
    let ids = chunk_ids(&store, A);
    for id in &ids {
        let loc = idx.get(id).unwrap();
        let f = std::fs::File::open(cas.pack_path(idx.pack_of(&loc))).unwrap();
        let c = pack::read_compressed(&f, &loc).unwrap();
        assert!(pack::frame_has_checksum(&c), "every new chunk has one");
    }
    let e = store.get(A).unwrap();
    let mut back = Vec::new();
    read::ChunkReader::open(&e, &m)
        .unwrap()
        .after_verification()
        .copy_to(&mut back)
        .unwrap();
    assert!(back == tar);
    // Damage after the verification is still caught, by the frame checksum.
    flip(&cas, &ids[2]);
    let err = read::ChunkReader::open(&e, &m)
        .unwrap()
        .after_verification()
        .copy_to(&mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains(&hex32(&ids[2])[..16]), "{err}");
}
