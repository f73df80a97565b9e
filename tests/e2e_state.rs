//! End-to-end tests of the state dir and of what a service is: `x-nodus.state_dir`, several stacks
//! in one folder, read-only commands leaving the remembered project name alone, database images
//! used as clients.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Runs nodus on `file` (in the stack's directory) as `project`.
fn nodus_file(s: &TestStack, file: &Path, project: &str, args: &[&str]) -> Res {
    if project != s.project {
        s.also_clean.borrow_mut().push(project.to_string());
    }
    let out = run(Command::new(env!("CARGO_BIN_EXE_nodus"))
        .current_dir(s.path())
        .env("NO_COLOR", "1")
        .env_remove("NODUS_STACK")
        .env_remove("NODUS_STATE_DIR")
        .env_remove("COMPOSE_PROJECT_NAME")
        .args(["-f", file.to_str().unwrap(), "-p", project])
        .args(args));
    Res {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn redis_stack() -> String {
    format!("services:\n  cache:\n    image: {REDIS_IMAGE}\nx-nodus:\n  settle: 0s\n")
}

#[test]
fn read_only_commands_do_not_record_the_project_name() {
    let s = TestStack::new("ro-name", &redis_stack());
    s.nodus(&["up"]).ok();
    let other = format!("{}-typo", s.project);
    // Read-only commands under another name: they may warn, they must not record it.
    for args in [
        &["status"][..],
        &["census"],
        &["verify"],
        &["snapshot", "list"],
        &["render", "-o", "-"],
    ] {
        let r = s.nodus_as(&other, args);
        assert!(
            r.stderr.contains("project name changed"),
            "{args:?} under a new name warns:\n{}",
            r.all()
        );
    }
    // Back to the real name: no rename warning, nothing about new, empty volumes.
    let r = s.nodus(&["status"]);
    r.ok();
    assert!(
        !r.stderr.contains("project name changed") && !r.stderr.contains("NEW, EMPTY"),
        "status under the real name after read-only commands under another one:\n{}",
        r.all()
    );
    // No container was ever created under the other name.
    let f = format!("label=com.docker.compose.project={other}");
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &f]), "");
    s.nodus(&["down", "--no-snapshot"]).ok();
}

#[test]
fn x_nodus_state_dir_is_honoured() {
    let yaml = format!(
        "services:\n  db:\n    image: {PG_IMAGE}\n    environment:\n      POSTGRES_PASSWORD: pw\nx-nodus:\n  state_dir: state/app\n"
    );
    let s = TestStack::new("statedir", &yaml);
    s.nodus(&["render"]).ok();
    let rendered = s.path().join("state/app/compose.yaml");
    assert!(rendered.is_file(), "rendered into x-nodus.state_dir");
    assert!(
        !s.path().join(".nodus").exists(),
        "the default state dir is not used"
    );
    // --state-dir wins over the stack file
    let other = s.path().join("flagged");
    s.nodus(&["--state-dir", other.to_str().unwrap(), "render"])
        .ok();
    assert!(other.join("compose.yaml").is_file());
}

#[test]
fn two_stacks_in_one_folder_keep_their_own_state() {
    // The dev stack (postgres) and a second stack file in the same folder, default state dir.
    let s = TestStack::new("two-stacks", &pg_stack("", "x-nodus:\n  settle: 0s\n"));
    let adk = s.path().join("adk.yaml");
    std::fs::write(&adk, redis_stack()).unwrap();
    let adk_project = format!("{}-adk", s.project);

    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 3, 10);
    s.nodus(&["verify", "--accept"]).ok();
    let dev_rendered = std::fs::read_to_string(s.path().join(".nodus/compose.yaml")).unwrap();

    // The other stack: its own project, ledger and rendered file; no word about the dev stack.
    let r = nodus_file(&s, &adk, &adk_project, &["up"]);
    r.ok();
    assert!(
        !r.stderr.contains("project name changed")
            && !r.all().contains("app_db")
            && !r.all().contains("LOSS"),
        "up of the second stack mixed with the first:\n{}",
        r.all()
    );
    nodus_file(&s, &adk, &adk_project, &["render"]).ok();
    assert_eq!(
        std::fs::read_to_string(s.path().join(".nodus/compose.yaml")).unwrap(),
        dev_rendered,
        "rendering the second stack must not overwrite the first's file"
    );
    let adk_rendered =
        std::fs::read_to_string(s.path().join(".nodus/stacks/adk.yaml/compose.yaml")).unwrap();
    assert!(adk_rendered.contains("adk.yaml") && adk_rendered.contains("cache:"));

    // The dev stack still knows its tables and its name.
    let v = s.nodus(&["verify"]);
    v.ok();
    assert!(!v.stderr.contains("project name changed"), "{}", v.all());
    nodus_file(&s, &adk, &adk_project, &["down", "--no-snapshot"]).ok();
    s.nodus(&["down", "--no-snapshot"]).ok();
    // Snapshots are kept apart too.
    s.nodus(&["snapshot", "list"]).ok();
}

#[test]
fn a_database_image_used_as_a_client_is_not_a_database() {
    let yaml = format!(
        "services:
  db:
    image: {PG_IMAGE}
    environment:
      POSTGRES_PASSWORD: pw
      POSTGRES_DB: app
  migrate:
    image: {PG_IMAGE}
    environment:
      PGPASSWORD: pw
    depends_on:
      db:
        condition: service_healthy
    command: sh -c 'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do psql -h db -U postgres -d app -v ON_ERROR_STOP=1 -c \"create table migrated(i int)\" && exit 0; sleep 1; done; exit 1'
x-nodus:
  settle: 0s
"
    );
    let s = TestStack::new("client-img", &yaml);
    let r = s.nodus(&["up"]);
    r.ok();
    // the client runs to its end (exit 0), like any one-shot service
    let mut state = String::new();
    for _ in 0..120 {
        state = docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            &s.container("migrate"),
        ]);
        if state.starts_with("exited") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(state, "exited 0");
    assert_eq!(s.table_count("db", "app"), 1, "the migration ran");
    // no data volume for the client, no health check
    let vols = docker_ok(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.project),
    ]);
    assert!(!vols.contains("migrate"), "volumes: {vols}");
    let hc = docker_ok(&[
        "inspect",
        "-f",
        "{{json .Config.Healthcheck}}",
        &s.container("migrate"),
    ]);
    assert!(hc == "null" || !hc.contains("pg_isready"), "{hc}");
    s.nodus(&["down", "--no-snapshot"]).ok();
}
