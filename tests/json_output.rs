//! `--json`: every command prints exactly one JSON document on stdout and nothing else there —
//! also when it fails (then `{"error", "exit_code", "hint"}`). These cases need no Docker: the
//! engine is pointed at a socket that does not exist where a command would connect.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

const STACK: &str = "services:
  db:
    image: nodus/postgres-standin:15
    environment:
      POSTGRES_PASSWORD: secret-pw
      POSTGRES_DB: app
";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs nodus in `dir` on its stack.yaml with project `jt`, with no engine reachable.
fn nodus(dir: &Path, args: &[&str]) -> Out {
    let out = Command::cargo_bin("nodus")
        .expect("nodus binary")
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("DOCKER_HOST", "unix:///nonexistent/nodus-json-test.sock")
        .env_remove("NODUS_STACK")
        .env_remove("NODUS_STATE_DIR")
        .env_remove("COMPOSE_PROJECT_NAME")
        .args(["-f", "stack.yaml", "-p", "jt"])
        .args(args)
        .output()
        .expect("run nodus");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Parses stdout as exactly one JSON document (whitespace around it allowed, nothing else).
#[track_caller]
fn one_json(o: &Out) -> Value {
    let mut docs = serde_json::Deserializer::from_str(&o.stdout).into_iter::<Value>();
    let first = match docs.next() {
        Some(Ok(v)) => v,
        other => panic!(
            "no JSON document on stdout ({other:?})\nstdout:\n{}\nstderr:\n{}",
            o.stdout, o.stderr
        ),
    };
    if let Some(next) = docs.next() {
        panic!(
            "more than one document on stdout (next: {next:?})\nstdout:\n{}\nstderr:\n{}",
            o.stdout, o.stderr
        );
    }
    first
}

fn stack_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("stack.yaml"), STACK).expect("write stack");
    d
}

#[track_caller]
fn code(o: &Out, want: i32) {
    assert_eq!(
        o.code, want,
        "exit code\nstdout:\n{}\nstderr:\n{}",
        o.stdout, o.stderr
    );
}

#[test]
fn render_json_is_one_document() {
    let d = stack_dir();
    let o = nodus(d.path(), &["--json", "render"]);
    code(&o, 0);
    let v = one_json(&o);
    assert_eq!(v["project"], "jt");
    assert!(v["path"].as_str().unwrap().ends_with("compose.yaml"), "{v}");
    assert_eq!(v["stateful"][0]["service"], "db", "{v}");
    assert!(v.get("yaml").is_none(), "{v}");
    assert!(!o.stdout.contains("secret-pw"));

    // `-o -` puts the YAML inside the document, not beside it.
    let o = nodus(d.path(), &["--json", "render", "-o", "-"]);
    code(&o, 0);
    let v = one_json(&o);
    assert_eq!(v["path"], "-");
    assert!(v["yaml"].as_str().unwrap().contains("services:"), "{v}");

    // Without --json, `-o -` prints the YAML itself.
    let o = nodus(d.path(), &["render", "-o", "-"]);
    code(&o, 0);
    assert!(o.stdout.starts_with("name: jt") || o.stdout.contains("\nservices:"));
    assert!(serde_json::from_str::<Value>(&o.stdout).is_err());
}

#[test]
fn listings_without_anything_stored_are_empty_documents() {
    let d = stack_dir();
    for args in [
        &["--json", "snapshot", "list"][..],
        &["--json", "snapshot", "verify", "--all"],
        &["--json", "backup", "list"],
    ] {
        let o = nodus(d.path(), args);
        code(&o, 0);
        assert_eq!(one_json(&o), serde_json::json!([]), "{args:?}");
    }
    let o = nodus(d.path(), &["--json", "snapshot", "prune", "--dry-run"]);
    code(&o, 0);
    let v = one_json(&o);
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["decisions"], serde_json::json!([]));
}

#[test]
fn failures_print_one_error_document() {
    let d = stack_dir();
    // Engine unreachable: exit 4, for lifecycle, guard and snapshot commands alike.
    for args in [
        &["--json", "status"][..],
        &["--json", "up"],
        &["--json", "down"],
        &["--json", "stop"],
        &["--json", "start"],
        &["--json", "restart"],
        &["--json", "census"],
        &["--json", "verify"],
        &["--json", "snapshot", "create"],
        &["--json", "snapshot", "restore", "--latest", "--yes"],
        &["--json", "backup"],
    ] {
        let o = nodus(d.path(), args);
        code(&o, 4);
        let v = one_json(&o);
        assert_eq!(v["exit_code"], 4, "{args:?}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("nodus-json-test.sock"),
            "{args:?}: {v}"
        );
        assert!(v["hint"].as_str().unwrap().contains("docker info"), "{v}");
    }

    // Usage errors: exit 2.
    let o = nodus(d.path(), &["--json", "snapshot", "restore"]);
    code(&o, 2);
    assert_eq!(one_json(&o)["exit_code"], 2);
    // An unknown service on the command line is a usage error (issue 8).
    let o = nodus(d.path(), &["--json", "backup", "nope"]);
    code(&o, 2);
    assert_eq!(one_json(&o)["exit_code"], 2);
    // A confirmation without a terminal names the command to run instead.
    let o = nodus(d.path(), &["--json", "down", "--volumes"]);
    code(&o, 2);
    let v = one_json(&o);
    assert!(v["hint"].as_str().unwrap().contains("--yes"), "{v}");

    // Plain errors: exit 1.
    for args in [
        &["--json", "snapshot", "show", "nope"][..],
        &["--json", "snapshot", "delete", "nope", "--yes"],
    ] {
        let o = nodus(d.path(), args);
        code(&o, 1);
        let v = one_json(&o);
        assert_eq!(v["exit_code"], 1, "{args:?}: {v}");
        assert!(!v["error"].as_str().unwrap().is_empty());
    }

    // A stack that does not load.
    std::fs::write(d.path().join("stack.yaml"), "services: [").unwrap();
    let o = nodus(d.path(), &["--json", "render"]);
    code(&o, 1);
    assert_eq!(one_json(&o)["exit_code"], 1);
}

#[test]
fn export_import_and_migrate_give_one_document_without_an_engine() {
    let d = stack_dir();
    // Nothing to migrate: an empty report.
    let o = nodus(d.path(), &["--json", "snapshot", "migrate"]);
    code(&o, 0);
    let v = one_json(&o);
    assert_eq!(v["migrated"], serde_json::json!([]), "{v}");
    assert_eq!(v["already_in_store"], 0, "{v}");
    // No such snapshot / no such file / not an export: exit 1, one error document.
    let junk = d.path().join("junk.tar.zst");
    std::fs::write(&junk, b"not an export").unwrap();
    for args in [
        &["--json", "snapshot", "export", "nope"][..],
        &["--json", "snapshot", "import", "/nonexistent/x.tar.zst"],
        &["--json", "snapshot", "import", junk.to_str().unwrap()],
    ] {
        let o = nodus(d.path(), args);
        code(&o, 1);
        let v = one_json(&o);
        assert_eq!(v["exit_code"], 1, "{args:?}: {v}");
        assert!(!v["error"].as_str().unwrap().is_empty(), "{v}");
    }
    // A bad recipient is refused before anything is read.
    let o = nodus(
        d.path(),
        &[
            "--json",
            "snapshot",
            "export",
            "x",
            "--age-recipient",
            "ssh-ed25519 AAAA",
        ],
    );
    code(&o, 1);
    let v = one_json(&o);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("age X25519 recipient"),
        "{v}"
    );
}
