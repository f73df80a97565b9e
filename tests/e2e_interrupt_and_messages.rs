//! End-to-end tests for issue 8 items 5, 10, 11 and 12: interruptions, logical restores into a
//! running cluster, census connection fallbacks and messages. Real engine, real PostgreSQL.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn partials(root: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(root) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .collect(),
        Err(_) => vec![],
    }
}

/// Ctrl-C while `down` snapshots: the snapshot is slowed to 1 MB/s (NODUS_TEST_RATE_LIMIT), so
/// the signal lands mid-snapshot whatever the machine's speed.
#[test]
fn ctrl_c_during_downs_snapshot_removes_the_partial_and_says_how_to_finish() {
    let s = TestStack::new("sigint", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 3, 100);
    let child = Command::new(env!("CARGO_BIN_EXE_nodus"))
        .current_dir(s.path())
        .env("NO_COLOR", "1")
        .env("NODUS_TEST_RATE_LIMIT", "1000000")
        .args([
            "-f",
            s.stack_file().to_str().unwrap(),
            "-p",
            &s.project,
            "down",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let root = s.path().join(".nodus/snapshots").join(&s.project);
    // Wait until the archive is being written (a partial snapshot exists and the snapshot
    // store's pack being written, or the partial itself, holds data).
    let packs = s.path().join(".nodus/snapshots/.store/packs");
    let holds_data = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
            })
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let parts = partials(&root);
        let writing =
            !parts.is_empty() && (parts.iter().any(|p| holds_data(p)) || holds_data(&packs));
        if writing {
            break;
        }
        assert!(Instant::now() < deadline, "the snapshot never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    run(Command::new("kill").args(["-INT", &pid]));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("interrupted down said:\n{stderr}");
    assert_eq!(out.status.code(), Some(130), "exit code 130:\n{stderr}");
    assert!(
        stderr.contains("interrupted by Ctrl-C (SIGINT) during the snapshot of db"),
        "{stderr}"
    );
    assert!(stderr.contains("state left: db stopped"), "{stderr}");
    assert!(
        stderr.contains("removed the unfinished snapshot"),
        "{stderr}"
    );
    assert!(stderr.contains("snapshot create"), "{stderr}");
    // Removed by the interrupted process itself, not by a later command's cleanup.
    assert!(partials(&root).is_empty(), "{:?}", partials(&root));
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Status}}", &s.container("db")]),
        "exited"
    );
    // The commands it points to complete the work.
    s.nodus(&["snapshot", "create"]).ok();
    s.nodus(&["down"]).ok();
    s.nodus(&["up"]).ok();
    assert_eq!(s.table_count("db", "app"), 3);
}

#[test]
fn an_unknown_service_on_the_command_line_is_a_usage_error() {
    let s = TestStack::new("badsvc", &pg_stack("", ""));
    let r = s.nodus(&["stop", "dbb"]);
    r.code(2);
    assert!(r.stderr.contains("no such service: dbb"), "{}", r.stderr);
}

/// postgres listening only on localhost inside its container: the published port never answers.
/// The first census finds it out (said once at -v) and remembers it per container; later
/// commands go straight to psql in the container.
#[test]
fn a_port_that_does_not_answer_is_tried_once_and_remembered() {
    let extra = "    command: [\"postgres\", \"-c\", \"listen_addresses=localhost\"]\n";
    let yaml = format!(
        "services:\n  db:\n    image: {PG_IMAGE}\n    environment:\n      POSTGRES_PASSWORD: secret-pw\n      POSTGRES_DB: app\n{extra}"
    );
    let s = TestStack::new("pglocal", &yaml);
    let up = s.nodus(&["-v", "up"]);
    up.ok();
    assert_eq!(
        up.stderr.matches("does not answer on 127.0.0.1:").count(),
        1,
        "said exactly once:\n{}",
        up.stderr
    );
    s.create_tables("db", "app", 2, 10);
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", &s.container("db")]);
    let memo = std::fs::read_to_string(s.path().join(".nodus/pg-exec-only.json")).unwrap();
    assert!(memo.contains(&id), "{memo}");
    let c = s.nodus(&["-v", "census", "--json"]);
    c.ok();
    assert!(!c.stderr.contains("does not answer"), "{}", c.stderr);
    assert_eq!(c.one_json()["totals"]["tables"], 2, "{}", c.stdout);
}

/// `backup restore --yes` into the running cluster that still holds the data: the backup's
/// databases are replaced (after a safety backup), not loaded on top (which doubled the rows of
/// tables without a unique key); databases the backup does not hold are left alone.
#[test]
fn backup_restore_into_a_cluster_with_data_replaces_instead_of_duplicating() {
    let x = "x-nodus:\n  services:\n    db:\n      databases:\n        - name: second_db\n";
    let s = TestStack::new("bkdup", &pg_stack("", x));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 2, 30);
    s.psql(
        "db",
        "app",
        "CREATE TABLE nokey (v text); INSERT INTO nokey SELECT 'x' FROM generate_series(1, 50)",
    );
    s.create_tables("db", "second_db", 1, 5);
    let out = s.path().join("dump.sql.gz");
    s.nodus(&["backup", "-o", out.to_str().unwrap()]).ok();
    // Changed since the backup: rows added, and a database the backup does not have.
    s.psql("db", "app", "INSERT INTO nokey VALUES ('after')");
    s.psql("db", "postgres", "CREATE DATABASE later_db");
    s.create_tables("db", "later_db", 1, 3);

    // Without a terminal and without --yes: refused, nothing changed.
    let r = s.nodus(&["backup", "restore", out.to_str().unwrap()]);
    r.code(2);
    assert!(r.stderr.contains("already holds data"), "{}", r.stderr);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM nokey"), "51");

    let r = s.nodus(&["backup", "restore", out.to_str().unwrap(), "--yes"]);
    r.ok();
    assert!(r.stderr.contains("safety backup of db"), "{}", r.stderr);
    assert!(
        r.stderr.contains("the census matches the backup's"),
        "{}",
        r.stderr
    );
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM nokey"), "50");
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM t1"), "30");
    assert_eq!(s.table_count("db", "second_db"), 1);
    assert_eq!(s.psql("db", "later_db", "SELECT count(*) FROM t1"), "3");
    // The safety backup holds the state before the restore.
    let l = s.nodus(&["backup", "list"]);
    assert!(l.stdout.contains("before-restore"), "{}", l.stdout);
    // The census afterwards equals the backup's: verify finds nothing missing.
    s.nodus(&["verify"]).ok();
}

/// A published port held by another container: the error names the service, the port, the
/// container holding it and the fix, not the engine's "port is already allocated (HTTP 500)".
#[test]
fn a_taken_port_names_the_container_that_holds_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "services:\n  db:\n    image: {PG_IMAGE}\n    environment:\n      POSTGRES_PASSWORD: secret-pw\n    ports:\n      - \"127.0.0.1:{port}:5432\"\n"
    );
    let s = TestStack::new("portclash", &yaml);
    let other = format!("{}-other", s.project);
    s.also_clean.borrow_mut().push(other.clone());
    let holder = format!("{other}-web-1");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &holder,
        "--label",
        &format!("com.docker.compose.project={other}"),
        "--label",
        "com.docker.compose.service=web",
        "-p",
        &format!("127.0.0.1:{port}:80"),
        "--entrypoint",
        "sleep",
        PG_IMAGE,
        "600",
    ]);
    let r = s.nodus(&["up"]);
    r.code(1);
    let want = format!(
        "service db cannot publish 127.0.0.1:{port}: container {holder} (project {other}, service web) already holds it"
    );
    assert!(r.stderr.contains(&want), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("docker stop {holder}")),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("HTTP 500"), "{}", r.stderr);
}

/// A role password from an unset variable (stacks/nodus-adk.yaml's INFISICAL_DB_PASSWORD) is
/// reported before anything is created: no volume, no container, every missing variable named.
#[test]
fn missing_role_passwords_are_reported_before_anything_is_created() {
    let x = "x-nodus:\n  services:\n    db:\n      roles:\n        - name: infisical\n          password_env: NODUS_T_MISSING_ONE\n        - name: other\n          password_env: NODUS_T_MISSING_TWO\n";
    let s = TestStack::new("needenv", &pg_stack("", x));
    let r = s.nodus(&["up"]);
    r.code(1);
    assert!(r.stderr.contains("NODUS_T_MISSING_ONE"), "{}", r.stderr);
    assert!(r.stderr.contains("NODUS_T_MISSING_TWO"), "{}", r.stderr);
    let filter = format!("label=com.docker.compose.project={}", s.project);
    assert_eq!(docker_ok(&["volume", "ls", "-q", "--filter", &filter]), "");
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &filter]), "");
}
