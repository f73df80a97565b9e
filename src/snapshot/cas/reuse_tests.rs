//! Taking unchanged files from the previous snapshot gives the chunk list a full cut gives, and
//! never takes a file that may have changed.

use std::path::Path;

use super::chunker::{self, Input};
use super::chunklist::{self, Item};
use super::reuse::{full_cut, Previous, FILES_FILE};
use super::tarscan::FileSpan;
use super::tests::{noise, tar_of};
use super::{write, Cas};

struct Store {
    _d: tempfile::TempDir,
    cas: Cas,
    n: usize,
}

impl Store {
    fn new() -> Store {
        let d = tempfile::tempdir().unwrap();
        let cas = Cas::open(&d.path().join("store")).unwrap();
        Store { _d: d, cas, n: 0 }
    }

    /// Writes `tar` (through `input`, or a plain reader) with `prev`; returns what was written,
    /// its chunk list and the files it recorded.
    fn write(
        &mut self,
        tar: &[u8],
        prev: Option<&Previous>,
        input: Option<&mut dyn Input>,
    ) -> (write::Written, Vec<Item>, Vec<FileSpan>) {
        self.n += 1;
        let dir = self._d.path().join(format!("snap{}", self.n));
        std::fs::create_dir(&dir).unwrap();
        let list = dir.join("chunks");
        let _lock = self.cas.lock_shared().unwrap();
        let mut plain = chunker::Plain(tar);
        let input: &mut dyn Input = match input {
            Some(i) => i,
            None => &mut plain,
        };
        let w = write::write_chunks(&self.cas, &list, input, 1, prev).unwrap();
        let items = chunklist::read(&list).unwrap();
        let files: Vec<FileSpan> =
            serde_json::from_slice(&std::fs::read(dir.join(FILES_FILE)).unwrap()).unwrap();
        (w, items, files)
    }
}

fn prev_of(items: Vec<Item>, files: Vec<FileSpan>, cutoff: i64) -> Previous {
    Previous::new("prev".into(), files, items, cutoff)
}

const T0: u64 = 1_700_000_000;

#[test]
fn an_unchanged_stream_is_listed_from_the_previous_snapshot() {
    let big = noise(1, 20 << 20); // over two blocks: the stream is skipped past a block's end
    let rel = noise(2, 3 << 20);
    let small = noise(3, 100_000);
    let tar = tar_of(&[
        ("PG_VERSION", b"15\n", T0),
        ("base/1/16384", &big, T0 + 5),
        ("base/1/1259", &small, T0 + 6),
        ("base/1/16390", &rel, T0 + 7),
    ]);
    let mut s = Store::new();
    let (w1, items1, files1) = s.write(&tar, None, None);
    assert_eq!(w1.reused_bytes, 0);
    assert_eq!(items1, full_cut(&tar));
    assert_eq!(
        files1.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        ["data/base/1/16384", "data/base/1/16390"]
    );
    let prev = prev_of(items1.clone(), files1, (T0 + 100) as i64);
    let (w2, items2, _) = s.write(&tar, Some(&prev), None);
    assert_eq!(items2, items1, "the same chunk list as a full cut");
    assert_eq!(w2.raw_bytes, tar.len() as u64);
    assert_eq!(w2.new_chunks, 0);
    assert!(
        w2.reused_bytes > (big.len() + rel.len()) as u64 * 9 / 10,
        "{} of {} reused",
        w2.reused_bytes,
        big.len() + rel.len()
    );
    assert_eq!(w2.reused_from.as_deref(), Some("prev"));
}

#[test]
fn files_that_may_have_changed_are_read_again() {
    let big = noise(1, 6 << 20);
    let mut changed = big.clone();
    changed[3_000_000..3_008_192].copy_from_slice(&noise(9, 8192));
    let mut s = Store::new();
    let first = tar_of(&[("base/1/16384", &big, T0 + 5)]);
    let (_, items1, files1) = s.write(&first, None, None);

    // Same size and time but modified in the second the previous snapshot began: not trusted.
    let prev = prev_of(items1.clone(), files1.clone(), (T0 + 5) as i64);
    let racy = tar_of(&[("base/1/16384", &changed, T0 + 5)]);
    let (w, items, _) = s.write(&racy, Some(&prev), None);
    assert_eq!(w.reused_bytes, 0);
    assert_eq!(items, full_cut(&racy));
    assert!(w.new_chunks >= 1, "the changed page is stored");

    // A later time: read again.
    let prev = prev_of(items1.clone(), files1.clone(), (T0 + 100) as i64);
    let later = tar_of(&[("base/1/16384", &changed, T0 + 50)]);
    let (w, items, _) = s.write(&later, Some(&prev), None);
    assert_eq!(w.reused_bytes, 0);
    assert_eq!(items, full_cut(&later));

    // Another size: read again.
    let longer = [big.clone(), noise(4, 8192)].concat();
    let grown = tar_of(&[("base/1/16384", &longer, T0 + 5)]);
    let (w, items, _) = s.write(&grown, Some(&prev), None);
    assert_eq!(w.reused_bytes, 0);
    assert_eq!(items, full_cut(&grown));

    // Renamed: nothing to compare with.
    let moved = tar_of(&[("base/1/99999", &big, T0 + 5)]);
    let (w, items, _) = s.write(&moved, Some(&prev), None);
    assert_eq!(w.reused_bytes, 0);
    assert_eq!(items, full_cut(&moved));
}

#[test]
fn unchanged_files_after_changed_ones_are_taken_once_the_cuts_agree() {
    let a = noise(1, 2 << 20);
    let b = noise(2, 5 << 20);
    let mut s = Store::new();
    let first = tar_of(&[("base/1/100", &a, T0), ("base/1/200", &b, T0)]);
    let (_, items1, files1) = s.write(&first, None, None);
    let prev = prev_of(items1, files1, (T0 + 100) as i64);
    // The first file changed (new size and time), and a new small file shifts everything after
    // it: the second is still taken, from where the cuts line up again.
    let a2 = noise(5, (2 << 20) + 777);
    let second = tar_of(&[
        ("base/1/100", &a2, T0 + 200),
        ("base/1/150", b"new file", T0 + 200),
        ("base/1/200", &b, T0),
    ]);
    let (w, items, _) = s.write(&second, Some(&prev), None);
    assert_eq!(items, full_cut(&second));
    assert!(
        w.reused_bytes > (b.len() as u64) * 9 / 10,
        "{}",
        w.reused_bytes
    );
}

#[test]
fn chunks_the_store_lost_are_not_taken() {
    let big = noise(1, 3 << 20);
    let tar = tar_of(&[("base/1/16384", &big, T0)]);
    let mut s = Store::new();
    let (_, items1, files1) = s.write(&tar, None, None);
    // The previous snapshot lists chunks the store does not have (e.g. collected since).
    let mut fake = items1.clone();
    for it in fake.iter_mut() {
        it.id[0] ^= 0xff;
    }
    let prev = prev_of(fake, files1, (T0 + 100) as i64);
    let (w, items, _) = s.write(&tar, Some(&prev), None);
    assert_eq!(w.reused_bytes, 0);
    assert_eq!(items, items1);
}

/// The channel the engine's archive comes through skips without copying; the result is the
/// same as through a plain reader.
#[test]
fn skipping_through_the_engine_channel() {
    use crate::snapshot::pipeline::Msg;
    let big = noise(1, 20 << 20);
    let tar = tar_of(&[("base/1/16384", &big, T0)]);
    let mut s = Store::new();
    let (_, items1, files1) = s.write(&tar, None, None);
    let prev = prev_of(items1.clone(), files1, (T0 + 100) as i64);
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1 << 12);
    // Uneven pieces, several per message.
    let pieces: Vec<bytes::Bytes> = tar
        .chunks(70_001)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    for batch in pieces.chunks(5) {
        tx.try_send(Msg::Data(batch.to_vec())).unwrap();
    }
    drop(tx);
    let mut reader = write::channel_reader(rx);
    let (w, items, _) = s.write(&tar, Some(&prev), Some(&mut reader));
    assert_eq!(items, items1);
    assert!(w.reused_bytes > big.len() as u64 * 9 / 10);
    assert_eq!(w.raw_bytes, tar.len() as u64);
}

#[test]
fn a_snapshot_without_a_files_record_offers_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut m = crate::snapshot::manifest::tests::sample("20250101T000000Z-db-aaaaaa");
    assert!(
        Previous::load(d.path(), &m).is_none(),
        "not a store snapshot"
    );
    m.store = Some(crate::snapshot::manifest::StoreRef {
        path: "/x".into(),
        store_id: "s".into(),
        chunks: 0,
        new_chunks: 0,
        added_bytes: 0,
        chunker: chunker::describe(),
        reused_bytes: 0,
        reused_from: None,
        mtime_cutoff: None,
    });
    std::fs::write(d.path().join("chunks"), chunklist::encode(&[])).unwrap();
    assert!(Previous::load(d.path(), &m).is_none(), "no files.json");
    std::fs::write(d.path().join(FILES_FILE), b"[]").unwrap();
    assert!(Previous::load(d.path(), &m).is_none(), "no cutoff");
    m.store.as_mut().unwrap().mtime_cutoff = Some(1_700_000_000);
    assert!(Previous::load(d.path(), &m).is_some());
    let _ = Path::new("");
}

#[test]
fn a_file_rewritten_with_its_old_time_is_caught_when_its_start_changed() {
    let big = noise(1, 4 << 20);
    let mut s = Store::new();
    let first = tar_of(&[("base/1/16384", &big, T0)]);
    let (_, items1, files1) = s.write(&first, None, None);
    // Bytes in the middle of the first chunk wholly inside the file change; size and time stay
    // (a tool that set the old time back). The cuts before it are the same, so the previous
    // snapshot's run is offered at the first cut inside the file, and its first chunk differs.
    let start = items1[0].raw_len as usize;
    let mid = start + items1[1].raw_len as usize / 2;
    let mut lying = first.clone();
    for b in &mut lying[mid..mid + 100] {
        *b ^= 0x5a;
    }
    let prev = prev_of(items1, files1, (T0 + 100) as i64);
    let (w, items, _) = s.write(&lying, Some(&prev), None);
    assert_eq!(w.reused_bytes, 0);
    assert_eq!(items, full_cut(&lying));
}

#[test]
fn a_restore_forgets_the_services_file_records() {
    use crate::snapshot::manifest::tests::sample;
    let d = tempfile::tempdir().unwrap();
    let mk = |id: &str, service: &str| {
        let dir = d.path().join(id);
        std::fs::create_dir(&dir).unwrap();
        let mut m = sample(id);
        m.service = service.into();
        std::fs::write(
            dir.join(crate::snapshot::manifest::MANIFEST_FILE),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join(FILES_FILE), b"[]").unwrap();
        dir
    };
    let a = mk("20250101T000000Z-db-aaaaaa", "db");
    let b = mk("20250102T000000Z-db-bbbbbb", "db");
    let c = mk("20250102T000000Z-cache-cccccc", "cache");
    super::reuse::forget_files(d.path(), "db").unwrap();
    assert!(!a.join(FILES_FILE).exists());
    assert!(!b.join(FILES_FILE).exists());
    assert!(
        c.join(FILES_FILE).exists(),
        "another service's records stay"
    );
    // Again: nothing to remove is fine.
    super::reuse::forget_files(d.path(), "db").unwrap();
    let _ = Path::new("");
}
