//! End-to-end snapshot and backup tests: real engine, real PostgreSQL.

mod common;

use std::path::PathBuf;

use common::*;

fn snapshots(s: &TestStack) -> Vec<serde_json::Value> {
    let r = s.nodus(&["snapshot", "list", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("snapshot list --json");
    match v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(ref o) if o.contains_key("snapshots") => {
            o["snapshots"].as_array().cloned().unwrap_or_default()
        }
        other => panic!("unexpected snapshot list JSON: {other}"),
    }
}

fn snapshot_dirs(s: &TestStack) -> Vec<PathBuf> {
    let root = s.path().join(".nodus/snapshots").join(&s.project);
    match std::fs::read_dir(&root) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => vec![],
    }
}

/// The snapshot's data file: its chunk list (store-backed) or `data.tar.zst` (single file).
fn data_file(dir: &std::path::Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let s = p.to_string_lossy();
            s.ends_with(".zst") || s.ends_with("/chunks")
        })
        .expect("archive or chunk list in snapshot dir")
}

fn wipe_volume(project: &str, volume: &str) {
    docker_ok(&[
        "run",
        "--rm",
        "--label",
        &format!("com.docker.compose.project={project}"),
        "--entrypoint",
        "sh",
        "-v",
        &format!("{volume}:/v"),
        PG_IMAGE,
        "-c",
        "rm -rf /v/* /v/.[!.]* 2>/dev/null; true",
    ]);
}

#[test]
fn down_snapshots_and_restore_undoes_a_wiped_volume() {
    let s = TestStack::new("snaprestore", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 15, 100);
    s.nodus(&["down"]).ok();

    let list = snapshots(&s);
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().expect("id").to_string();
    s.nodus(&["snapshot", "verify", &id]).ok();
    // files 0600, dirs 0700
    use std::os::unix::fs::PermissionsExt;
    let dir = &snapshot_dirs(&s)[0];
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(data_file(dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    wipe_volume(&s.project, &s.volume("db_data"));
    let u = s.nodus(&["up"]);
    u.code(3);
    assert!(u.stderr.contains("t15"), "{}", u.stderr);
    assert!(
        u.stderr.contains("snapshot restore"),
        "restore command missing:\n{}",
        u.stderr
    );

    let r = s.nodus(&["--json", "snapshot", "restore", "--latest", "--yes"]);
    r.ok();
    // one document: the restore's outcome with the guarded lifecycle's nested in it
    let v = r.one_json();
    assert_eq!(v["restored"][0]["service"], "db", "{v}");
    assert_eq!(v["restored"][0]["census"], "match", "{v}");
    assert_eq!(v["lifecycle"]["transition"], "restore", "{v}");
    assert_ne!(v["lifecycle"]["guard"]["verdict"], "loss", "{v}");
    assert_eq!(s.table_count("db", "app"), 15);
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM t9"), "100");
    // a safety snapshot of the wiped state was taken first
    assert!(snapshots(&s).len() >= 2);
    s.nodus(&["verify"]).ok();
}

#[test]
fn corrupted_or_truncated_snapshot_is_refused_without_touching_the_volume() {
    let s = TestStack::new("snapcorrupt", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 3, 10);
    s.nodus(&["down"]).ok();
    let id = snapshots(&s)[0]["id"].as_str().unwrap().to_string();
    let file = data_file(&snapshot_dirs(&s)[0]);
    let original = std::fs::read(&file).unwrap();

    // one byte flipped
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    assert_ne!(s.nodus(&["snapshot", "verify", &id]).code, 0);
    s.nodus(&["up"]).ok();
    s.psql("db", "app", "CREATE TABLE marker(x int)");
    let r = s.nodus(&["snapshot", "restore", &id, "--yes"]);
    assert_ne!(r.code, 0, "restore of a corrupted snapshot must fail");
    assert!(r.stderr.to_lowercase().contains("checksum"), "{}", r.stderr);
    // untouched: still running, marker still there
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM marker"), "0");

    // truncated
    std::fs::write(&file, &original[..original.len() / 3]).unwrap();
    assert_ne!(s.nodus(&["snapshot", "verify", &id]).code, 0);
    let r = s.nodus(&["snapshot", "restore", &id, "--yes"]);
    assert_ne!(r.code, 0);
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM marker"), "0");
}

#[test]
fn killed_mid_snapshot_leaves_nothing_valid_and_is_cleaned_next_time() {
    let s = TestStack::new("snapkill", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    // ~250 MB of poorly compressible data so the snapshot takes a while
    s.psql(
        "db",
        "app",
        "CREATE TABLE big AS SELECT g, md5(g::text)||md5((g*7)::text)||md5((g*13)::text) AS v FROM generate_series(1, 1800000) g",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nodus"))
        .current_dir(s.path())
        .args([
            "-f",
            s.stack_file().to_str().unwrap(),
            "-p",
            &s.project,
            "down",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let root = s.path().join(".nodus/snapshots").join(&s.project);
    let mut saw_partial = false;
    for _ in 0..1200 {
        if let Ok(rd) = std::fs::read_dir(&root) {
            if rd
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("partial"))
            {
                saw_partial = true;
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(saw_partial, "snapshot never started");
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let list = snapshots(&s); // also cleans up partials
    assert!(list.is_empty(), "no snapshot may look valid: {list:?}");
    let leftovers: Vec<_> = snapshot_dirs(&s)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "partial not cleaned: {leftovers:?}");
    // the stack can still be brought down
    s.nodus(&["down", "--no-snapshot"]).ok();
}

#[test]
fn full_state_filesystem_gives_clear_error_and_keeps_volume() {
    let s = TestStack::new("snapfull", &pg_stack("", ""));
    let state = s.path().join("tiny-state");
    std::fs::create_dir_all(&state).unwrap();
    let m = run(std::process::Command::new("mount").args([
        "-t",
        "tmpfs",
        "-o",
        "size=512k",
        "tmpfs",
        state.to_str().unwrap(),
    ]));
    assert!(
        m.status.success(),
        "mount tmpfs: {}",
        String::from_utf8_lossy(&m.stderr)
    );
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Umount(state.clone());
    let st = state.to_str().unwrap();
    s.nodus(&["--state-dir", st, "up"]).ok();
    s.create_tables("db", "app", 5, 2000);
    let d = s.nodus(&["--state-dir", st, "down"]);
    let all = d.all().to_lowercase();
    assert!(
        all.contains("no space") || all.contains("full"),
        "must say the filesystem is full:\n{}",
        d.all()
    );
    // containers are removable, the volume is untouched
    s.nodus(&["--state-dir", st, "down", "--no-snapshot"]).ok();
    assert!(docker(&["inspect", &s.container("db")]).status.code() != Some(0));
    docker_ok(&["volume", "inspect", &s.volume("db_data")]);
    s.nodus(&["--state-dir", st, "up"]).ok();
    assert_eq!(s.table_count("db", "app"), 5);
}

#[test]
fn logical_backup_round_trip_restores_every_database() {
    let x = "x-nodus:\n  services:\n    db:\n      databases:\n        - name: second_db\n";
    let s = TestStack::new("backup", &pg_stack("", x));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 4, 30);
    s.create_tables("db", "second_db", 2, 5);
    let out = s.path().join("dump.sql.gz");
    s.nodus(&["backup", "-o", out.to_str().unwrap()]).ok();
    assert!(out.exists());
    // A backup in the state dir's backups/ is listed, under a header.
    s.nodus(&["backup"]).ok();
    let l = s.nodus(&["backup", "list"]);
    l.ok();
    let mut lines = l.stdout.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("FILE") && header.contains("SERVICE"),
        "{}",
        l.stdout
    );
    assert!(
        lines.next().is_some_and(|r| r.contains(".sql.gz")),
        "{}",
        l.stdout
    );

    s.psql("db", "app", "DROP TABLE t1; DROP TABLE t4;");
    s.psql("db", "postgres", "DROP DATABASE second_db");
    s.nodus(&["backup", "restore", out.to_str().unwrap(), "--yes"])
        .ok();
    assert_eq!(s.table_count("db", "app"), 4);
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM t4"), "30");
    assert_eq!(s.table_count("db", "second_db"), 2);
}

#[test]
fn snapshot_of_a_stopped_service_carries_the_census_of_its_clean_stop() {
    // The password comes from `.env` through a bare `environment` entry, as compose allows.
    let s = TestStack::new(
        "snapatrest",
        &format!(
            "services:\n  db:\n    image: {PG_IMAGE}\n    environment:\n      - POSTGRES_PASSWORD\n      - POSTGRES_DB=app\n"
        ),
    );
    std::fs::write(s.path().join(".env"), "POSTGRES_PASSWORD=secret-pw\n").unwrap();
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 4, 10);
    s.nodus(&["stop", "--no-snapshot"]).ok();

    // At rest since nodus stopped it: the snapshot records the census taken before that stop.
    s.nodus(&["snapshot", "create", "db"]).ok();
    let first = snapshots(&s)[0]["id"].as_str().unwrap().to_string();
    let m: serde_json::Value =
        serde_json::from_str(&s.nodus(&["--json", "snapshot", "show", &first]).stdout).unwrap();
    assert!(!m["census"].is_null(), "census missing: {m}");
    // As text by default, saying what it holds; the listing too.
    let text = s.nodus(&["snapshot", "show", &first]);
    text.ok();
    assert!(
        text.stdout.contains(&format!("snapshot:   {first}")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("holds:      2 databases, 4 tables, 40 rows"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("public.t3  10 rows"),
        "{}",
        text.stdout
    );
    let list = s.nodus(&["snapshot", "list"]);
    assert!(
        list.stdout.lines().next().unwrap().ends_with("HOLDS"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains("2 databases, 4 tables, 40 rows"),
        "{}",
        list.stdout
    );
    assert!(m["census"].to_string().contains("t3"), "{m}");
    assert_eq!(m["clean"], true, "{m}");

    // Started and stopped behind nodus' back: the old census no longer describes the data.
    let c = s.container("db");
    docker_ok(&["start", &c]);
    docker_ok(&["stop", &c]);
    s.nodus(&["snapshot", "create", "db"]).ok();
    let list = snapshots(&s);
    let second = list
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .find(|id| *id != first)
        .expect("second snapshot");
    let m2: serde_json::Value =
        serde_json::from_str(&s.nodus(&["--json", "snapshot", "show", &second]).stdout).unwrap();
    assert!(m2["census"].is_null(), "stale census carried: {m2}");

    // The carried census is what a restore is checked against.
    let r = s.nodus(&["--json", "snapshot", "restore", &first, "--yes"]);
    r.ok();
    assert_eq!(
        r.one_json()["restored"][0]["census"],
        "match",
        "{}",
        r.all()
    );
    assert_eq!(s.table_count("db", "app"), 4);
}
