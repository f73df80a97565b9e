//! End-to-end `snapshot export` / `snapshot import`: real engine, stand-in PostgreSQL.

mod common;

use age::secrecy::ExposeSecret;
use common::*;

fn snapshot_ids(s: &TestStack) -> Vec<String> {
    let r = s.nodus(&["--json", "snapshot", "list"]);
    r.ok();
    let v = r.one_json();
    let list = match &v {
        serde_json::Value::Array(a) => a.clone(),
        serde_json::Value::Object(o) if o.contains_key("snapshots") => {
            o["snapshots"].as_array().cloned().unwrap_or_default()
        }
        other => panic!("unexpected snapshot list JSON: {other}"),
    };
    list.iter()
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn encrypted_export_survives_deletion_and_restores_the_same_census_elsewhere_too() {
    let s = TestStack::new("exportrt", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 6, 40);
    s.nodus(&["down"]).ok();
    let ids = snapshot_ids(&s);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids[0].clone();

    // Export, encrypted to a fresh age key.
    let key = age::x25519::Identity::generate();
    let out_dir = tempfile::tempdir().unwrap();
    let key_file = out_dir.path().join("key.txt");
    std::fs::write(&key_file, format!("{}\n", key.to_string().expose_secret())).unwrap();
    let target = out_dir.path().join("db.tar.zst");
    let r = s.nodus(&[
        "--json",
        "snapshot",
        "export",
        &id,
        "-o",
        target.to_str().unwrap(),
        "--age-recipient",
        &key.to_public().to_string(),
    ]);
    r.ok();
    let doc = r.one_json();
    assert_eq!(doc["snapshot"], id.as_str(), "{doc}");
    assert_eq!(doc["encrypted"], true, "{doc}");
    let file = out_dir.path().join("db.tar.zst.age");
    assert_eq!(doc["path"], file.to_str().unwrap(), "{doc}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let sidecar = std::fs::read_to_string(out_dir.path().join("db.tar.zst.age.sha256")).unwrap();
    assert!(sidecar.ends_with("  db.tar.zst.age\n"), "{sidecar}");
    // Not again without --force.
    let again = s.nodus(&[
        "snapshot",
        "export",
        &id,
        "-o",
        file.to_str().unwrap(),
        "--age-recipient",
        &key.to_public().to_string(),
    ]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);

    // The snapshot goes away; the volume is wiped.
    s.nodus(&["snapshot", "delete", &id, "--yes"]).ok();
    assert!(snapshot_ids(&s).is_empty());
    docker_ok(&[
        "run",
        "--rm",
        "--label",
        &format!("com.docker.compose.project={}", s.project),
        "--entrypoint",
        "sh",
        "-v",
        &format!("{}:/v", s.volume("db_data")),
        PG_IMAGE,
        "-c",
        "rm -rf /v/* /v/.[!.]* 2>/dev/null; true",
    ]);

    // Without the identity: refused, nothing listed.
    let r = s.nodus(&["snapshot", "import", file.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("encrypted; pass --identity"),
        "{}",
        r.stderr
    );
    assert!(snapshot_ids(&s).is_empty());

    // With it: the same id is listed again and restores the same census.
    let r = s.nodus(&[
        "--json",
        "snapshot",
        "import",
        file.to_str().unwrap(),
        "--identity",
        key_file.to_str().unwrap(),
    ]);
    r.ok();
    let doc = r.one_json();
    assert_eq!(doc["imported"], id.as_str(), "{doc}");
    assert_eq!(doc["sha256_checked"], true, "{doc}");
    assert_eq!(snapshot_ids(&s), vec![id.clone()]);
    s.nodus(&["snapshot", "verify", &id]).ok();
    s.nodus(&["up"]).code(3); // the wiped volume: loss detected
    let r = s.nodus(&["--json", "snapshot", "restore", &id, "--yes"]);
    r.ok();
    let v = r.one_json();
    assert_eq!(v["restored"][0]["census"], "match", "{v}");
    assert_eq!(s.table_count("db", "app"), 6);
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM t5"), "40");
    s.nodus(&["down"]).ok();

    // Another machine (its own state dir) and another project name: mapped, and restorable.
    let other = TestStack::new("exportrt2", &pg_stack("", ""));
    other.nodus(&["up"]).ok();
    let r = other.nodus(&[
        "--json",
        "snapshot",
        "import",
        file.to_str().unwrap(),
        "-i",
        key_file.to_str().unwrap(),
    ]);
    r.ok();
    let doc = r.one_json();
    let mapped = doc["mapped"].to_string();
    assert!(mapped.contains(&other.project), "{doc}");
    let r = other.nodus(&["--json", "snapshot", "restore", &id, "--yes"]);
    r.ok();
    let v = r.one_json();
    assert_ne!(v["restored"][0]["census"], "mismatch", "{v}");
    assert_eq!(other.table_count("db", "app"), 6);
    assert_eq!(other.psql("db", "app", "SELECT count(*) FROM t5"), "40");
}

#[test]
fn plain_export_with_a_damaged_byte_is_refused_by_import() {
    let s = TestStack::new("exportbad", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 2, 5);
    s.nodus(&["down"]).ok();
    let id = snapshot_ids(&s)[0].clone();
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("x.tar.zst");
    s.nodus(&["snapshot", "export", &id, "-o", file.to_str().unwrap()])
        .ok();
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    std::fs::write(&file, &bytes).unwrap();
    s.nodus(&["snapshot", "delete", &id, "--yes"]).ok();
    let r = s.nodus(&["snapshot", "import", file.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("does not match"), "{}", r.stderr);
    assert!(snapshot_ids(&s).is_empty());
}
