use super::*;
use crate::snapshot::manifest::tests::sample;
use crate::snapshot::verify::tests::build_snapshot;
use crate::stack::ServiceKind;

fn pg(service: &str, volume: &str) -> StatefulService {
    StatefulService {
        service: service.into(),
        kind: ServiceKind::Postgres,
        data_dir: "/var/lib/postgresql/data".into(),
        volume_key: Some("pgdata".into()),
        volume_name: Some(volume.into()),
    }
}

/// A single-file snapshot committed in a fresh store; returns (tempdir, store, its tar bytes).
fn single_file_snapshot() -> (tempfile::TempDir, SnapshotStore, Manifest, Vec<u8>) {
    let d = tempfile::tempdir().unwrap();
    let (store, _) = SnapshotStore::open(d.path().join("snapshots/demo")).unwrap();
    let (path, m) = build_snapshot(d.path(), true);
    let p = store.begin(&m.id).unwrap();
    std::fs::copy(&path, p.data_path()).unwrap();
    p.commit(&m).unwrap();
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    (d, store, m, raw)
}

#[test]
fn export_of_a_single_file_snapshot_holds_its_manifest_and_tar() {
    let (d, store, m, raw) = single_file_snapshot();
    let entry = store.get(&m.id).unwrap();
    let out = d.path().join("x.tar.zst");
    let done = export_entry(&entry, &out, &[], false, None).unwrap();
    assert_eq!(done.path, out);
    assert_eq!(done.data_bytes, raw.len() as u64);
    let info = export::scan(&out, None, None).unwrap();
    assert_eq!(
        info.manifest_json,
        std::fs::read(entry.dir.join(MANIFEST_FILE)).unwrap()
    );
    let back = export::read_data(&out, None, &info, None, |r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        Ok(v)
    })
    .unwrap();
    assert_eq!(back, raw);
    // Again without --force: refused before anything is read.
    let err = export_entry(&entry, &out, &[], false, None).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[test]
fn a_damaged_snapshot_is_not_exported() {
    let (d, store, m, _) = single_file_snapshot();
    let entry = store.get(&m.id).unwrap();
    let data = entry.data_path();
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&data, bytes).unwrap();
    let out = d.path().join("x.tar.zst");
    let err = export_entry(&entry, &out, &[], false, None).unwrap_err();
    assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&m.id), "{err}");
    assert!(!out.exists());
    assert!(!export::sidecar_path(&out).exists());
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("x.tar.zst"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn export_import_round_trip_through_the_store() {
    let (d, store, m, raw) = single_file_snapshot();
    let entry = store.get(&m.id).unwrap();
    let id = age::x25519::Identity::generate();
    let out = d.path().join("x.tar.zst");
    let done = export_entry(&entry, &out, &[id.to_public()], false, None).unwrap();
    assert!(done.encrypted);
    let ids: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(id)];
    let info = export::scan(&done.path, Some(&ids), None).unwrap();

    // Another machine: another state dir, same project layout.
    let other = tempfile::tempdir().unwrap();
    let (dest, _) = SnapshotStore::open(other.path().join("snapshots/demo")).unwrap();
    let (mapped, changes) =
        map_manifest(&info.manifest, "demo", &[pg("db", "demo_pgdata")], None).unwrap();
    assert!(changes.is_empty(), "{changes:?}");
    let imported = import_file(&dest, &done.path, Some(&ids), &info, mapped, None).unwrap();
    assert_eq!(imported.id, m.id);
    let list = dest.list().unwrap();
    assert_eq!(list.len(), 1);
    let e = &list[0];
    let got = e.manifest.as_ref().unwrap();
    assert_eq!(got.census, m.census);
    assert_eq!(got.service, m.service);
    assert_eq!(got.archive.raw_bytes, m.archive.raw_bytes);
    let mut back = Vec::new();
    crate::snapshot::open_tar_reader(e)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, raw, "the same tar bytes come back");
    assert!(got.store.is_some(), "imported into the deduplicating store");
    // A store-backed snapshot exports too, with the same tar.
    let again = export_entry(e, &d.path().join("again.tar.zst"), &[], false, None).unwrap();
    let info2 = export::scan(&again.path, None, None).unwrap();
    assert_eq!(info2.data_sha256, info.data_sha256);
    // Twice: refused, the first one stays.
    let err = import_file(&dest, &done.path, Some(&ids), &info, got.clone(), None).unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");
    assert_eq!(dest.list().unwrap().len(), 1);
}

#[test]
fn a_failing_export_reader_lists_nothing() {
    let (d, store, m, _) = single_file_snapshot();
    let entry = store.get(&m.id).unwrap();
    let out = d.path().join("x.tar.zst");
    export_entry(&entry, &out, &[], false, None).unwrap();
    let mut info = export::scan(&out, None, None).unwrap();
    info.data_sha256 = "0".repeat(64); // as if the file changed after the scan
    let other = tempfile::tempdir().unwrap();
    let (dest, _) = SnapshotStore::open(other.path().join("snapshots/demo")).unwrap();
    let mapped = info.manifest.clone();
    assert!(import_file(&dest, &out, None, &info, mapped, None).is_err());
    assert!(dest.list().unwrap().is_empty());
}

#[test]
fn channel_reader_fails_instead_of_ending() {
    let (tx, rx) = mpsc::sync_channel(4);
    tx.send(Msg::Data(b"abc".to_vec())).unwrap();
    tx.send(Msg::Fail("bad".into())).unwrap();
    let mut r = ChannelReader {
        rx,
        buf: Vec::new(),
        pos: 0,
        done: false,
    };
    let mut v = Vec::new();
    assert!(r.read_to_end(&mut v).is_err());
    assert_eq!(v, b"abc");
    // A sender that vanishes without End is an error too.
    let (tx, rx) = mpsc::sync_channel(4);
    tx.send(Msg::Data(b"x".to_vec())).unwrap();
    drop(tx);
    let mut r = ChannelReader {
        rx,
        buf: Vec::new(),
        pos: 0,
        done: false,
    };
    assert!(r.read_to_end(&mut Vec::new()).is_err());
}

#[test]
fn manifests_map_to_this_project_or_are_refused() {
    let m = sample("20250101T000000Z-db-abcdef");
    // Same layout: unchanged.
    let (same, changes) = map_manifest(&m, "demo", &[pg("db", "demo_pgdata")], None).unwrap();
    assert_eq!(same, m);
    assert!(changes.is_empty());
    // Another project name and volume: mapped, and said.
    let (other, changes) = map_manifest(&m, "shop", &[pg("db", "shop_pgdata")], None).unwrap();
    assert_eq!(other.project, "shop");
    assert_eq!(other.volume.name.as_deref(), Some("shop_pgdata"));
    assert_eq!(other.retention_key(), "volume:shop_pgdata");
    assert_eq!(changes.len(), 2, "{changes:?}");
    // No such service: refused, naming --service.
    let err = map_manifest(&m, "demo", &[pg("postgres", "demo_pg")], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--service"), "{err}");
    // --service maps it.
    let (mapped, _) =
        map_manifest(&m, "demo", &[pg("postgres", "demo_pg")], Some("postgres")).unwrap();
    assert_eq!(mapped.service, "postgres");
    // Another kind: refused.
    let mut redis = pg("cache", "demo_redis");
    redis.kind = ServiceKind::Redis;
    redis.data_dir = "/data".into();
    let err = map_manifest(&m, "demo", &[redis], Some("cache"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("redis"), "{err}");
    // Another data dir name: refused (it could not be restored there).
    let mut moved = pg("db", "demo_pgdata");
    moved.data_dir = "/var/lib/postgresql/pgdata".into();
    let err = map_manifest(&m, "demo", &[moved], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("could not be restored"), "{err}");
}
