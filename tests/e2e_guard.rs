//! End-to-end persistence-guard tests: real engine, real PostgreSQL. Every loss scenario must exit 3,
//! name the missing tables and the right cause; clean cycles must never raise a false alarm.

mod common;

use common::*;

const DBS_X_NODUS: &str = "x-nodus:
  settle: 1s
  services:
    db:
      databases:
        - name: nodus_db
        - name: langfuse_db
          extensions: [uuid-ossp, pg_trgm]
        - name: infisical_compat149
          owner: infisical_service
      roles:
        - name: infisical_service
          password_env: NT_INFISICAL_PW
";

fn with_pw(s: &TestStack, args: &[&str]) -> Res {
    s.nodus_env(&s.project, &[("NT_INFISICAL_PW", "infisical-pw")], args)
}

/// Start a plain (non-nodus) postgres container on a volume, run SQL, remove it.
fn sql_on_volume_behind_nodus_back(project: &str, volume: &str, db: &str, sql: &str) {
    let name = format!("{project}-intruder");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("com.docker.compose.project={project}"),
        "-e",
        "POSTGRES_PASSWORD=x",
        "-v",
        &format!("{volume}:/var/lib/postgresql/data"),
        PG_IMAGE,
    ]);
    let mut ready = false;
    for _ in 0..120 {
        if docker(&["exec", &name, "pg_isready", "-h", "127.0.0.1"])
            .status
            .success()
        {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(ready, "intruder postgres never became ready");
    docker_ok(&[
        "exec",
        &name,
        "psql",
        "-U",
        "postgres",
        "-d",
        db,
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    ]);
    docker_ok(&["stop", &name]);
    docker_ok(&["rm", &name]);
}

#[test]
fn clean_cycles_never_raise_a_false_alarm() {
    let s = TestStack::new("cycles", &pg_stack("", DBS_X_NODUS));
    let first = with_pw(&s, &["-v", "up"]);
    first.ok();
    // One engine connection per command: `up`'s doctor block and the transition share it.
    assert_eq!(
        first.stderr.matches("engine: ").count(),
        1,
        "{}",
        first.stderr
    );
    s.create_tables("db", "app", 12, 50);
    s.create_tables("db", "nodus_db", 8, 20);
    s.create_tables("db", "langfuse_db", 5, 5);
    for i in 0..20 {
        let d = with_pw(&s, &["down", "--no-snapshot"]);
        d.ok();
        let u = with_pw(&s, &["up"]);
        u.ok();
        let all = u.all().to_lowercase();
        assert!(
            !all.contains("warning") && !all.contains("loss") && !all.contains("missing"),
            "cycle {i}: unexpected warning:\n{}",
            u.all()
        );
    }
    with_pw(&s, &["verify"]).ok();
    assert_eq!(s.table_count("db", "nodus_db"), 8);
}

#[test]
fn provisioning_is_idempotent_and_fills_an_existing_data_dir() {
    // First without any x-nodus databases: data dir gets initialised with tables.
    let s = TestStack::new("prov", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 3, 3);
    s.nodus(&["down", "--no-snapshot"]).ok();
    // Now declare databases: the non-empty data dir lacks them; up must create them.
    s.write_stack(&pg_stack("", DBS_X_NODUS));
    let u = with_pw(&s, &["up"]);
    u.ok();
    let dbs = s.psql(
        "db",
        "app",
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
    );
    for want in ["nodus_db", "langfuse_db", "infisical_compat149"] {
        assert!(dbs.contains(want), "{want} missing: {dbs}");
    }
    assert_eq!(
        s.psql(
            "db",
            "app",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname='infisical_compat149'"
        ),
        "infisical_service"
    );
    let exts = s.psql(
        "db",
        "langfuse_db",
        "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension",
    );
    assert!(
        exts.contains("pg_trgm") && exts.contains("uuid-ossp"),
        "{exts}"
    );
    assert!(
        !u.stderr.contains("infisical-pw"),
        "password printed:\n{}",
        u.stderr
    );
    // Again: nothing to create, nothing lost.
    let again = with_pw(&s, &["restart"]);
    again.ok();
    assert!(
        !again.stderr.contains("created database"),
        "{}",
        again.stderr
    );
    assert_eq!(s.table_count("db", "app"), 3);
}

#[test]
fn tables_dropped_while_down_are_reported_with_cause() {
    let s = TestStack::new("dropdown", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 10, 5);
    s.nodus(&["down", "--no-snapshot"]).ok();
    sql_on_volume_behind_nodus_back(
        &s.project,
        &s.volume("db_data"),
        "app",
        "DROP TABLE t3; DROP TABLE t7;",
    );
    let u = s.nodus(&["up"]);
    u.code(3);
    assert!(
        u.stderr.contains("t3") && u.stderr.contains("t7"),
        "{}",
        u.stderr
    );
    assert!(
        u.stderr.contains("while the stack was down"),
        "cause missing:\n{}",
        u.stderr
    );
    // the loss is said once: the verdict block, then the summary; no duplicate lines
    assert_eq!(u.stderr.matches("error:").count(), 1, "{}", u.stderr);
    assert_eq!(u.stderr.matches("snapshot list").count(), 1, "{}", u.stderr);
    // verify (what CI calls) agrees, also as one JSON document; --accept records the intended state
    let v = s.nodus(&["--json", "verify"]);
    v.code(3);
    let doc = v.one_json();
    assert_eq!(doc["verdict"], "loss", "{doc}");
    let missing = doc["services"]["db"]["diff"]["missing_tables"]["app"].to_string();
    assert!(
        missing.contains("public.t3") && missing.contains("public.t7"),
        "{doc}"
    );
    s.nodus(&["verify", "--accept"]).ok();
    s.nodus(&["verify"]).ok();
}

#[test]
fn removed_and_recreated_volume_is_named_as_cause() {
    let s = TestStack::new("recreate", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 4, 1);
    s.nodus(&["down", "--no-snapshot"]).ok();
    let vol = s.volume("db_data");
    let labels = docker_ok(&["volume", "inspect", "-f", "{{json .Labels}}", &vol]);
    let labels: std::collections::BTreeMap<String, String> = serde_json::from_str(&labels).unwrap();
    docker_ok(&["volume", "rm", &vol]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut args = vec!["volume".to_string(), "create".to_string()];
    for (k, v) in &labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    args.push(vol.clone());
    docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let u = s.nodus(&["up"]);
    u.code(3);
    assert!(
        u.stderr.contains("t1") && u.stderr.contains("t4"),
        "{}",
        u.stderr
    );
    assert!(
        u.stderr.contains("recreated"),
        "cause missing:\n{}",
        u.stderr
    );
}

#[test]
fn renamed_project_is_named_as_cause() {
    let s = TestStack::new("rename", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 5, 1);
    s.nodus(&["down", "--no-snapshot"]).ok();
    let renamed = format!("{}-renamed", s.project);
    let u = s.nodus_as(&renamed, &["up"]);
    u.code(3);
    assert!(u.stderr.contains("t5"), "{}", u.stderr);
    assert!(
        u.stderr.contains("project name changed"),
        "rename warning missing:\n{}",
        u.stderr
    );
    assert!(u.stderr.contains("renamed"), "cause missing:\n{}", u.stderr);
}

#[test]
fn anonymous_pgdata_without_hardening_is_named_as_cause() {
    let yaml = format!(
        "services:\n  db:\n    image: {PG_IMAGE}\n    environment:\n      POSTGRES_PASSWORD: pw\n      POSTGRES_DB: app\nx-nodus:\n  harden: false\n"
    );
    let s = TestStack::new("anonloss", &yaml);
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 6, 1);
    let first_anon = docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{if eq .Destination \"/var/lib/postgresql/data\"}}{{.Name}}{{end}}{{end}}",
        &s.container("db"),
    ]);
    assert!(!first_anon.is_empty());
    let d = s.nodus(&["down", "--no-snapshot"]);
    d.ok();
    assert!(
        d.stderr.contains(&first_anon) && d.stderr.contains("EMPTY"),
        "down must warn that the data is orphaned on the anonymous volume:\n{}",
        d.stderr
    );
    let u = s.nodus(&["up"]);
    u.code(3);
    assert!(u.stderr.contains("t6"), "{}", u.stderr);
    assert!(
        u.stderr.contains("anonymous volume"),
        "cause missing:\n{}",
        u.stderr
    );
    // down --volumes removes the current anonymous volume; the orphaned first one is removed here
    s.nodus(&["down", "--no-snapshot", "--volumes", "--yes"])
        .ok();
    docker_ok(&["volume", "rm", &first_anon]);
}

#[test]
fn service_dropping_tables_at_startup_is_named() {
    let orm = format!(
        "  orm:\n    image: {PG_IMAGE}\n    depends_on:\n      db:\n        condition: service_healthy\n    entrypoint: [\"sh\", \"-c\", \"psql postgresql://postgres:secret-pw@db/app -c 'DROP TABLE IF EXISTS t2' ; sleep 3600\"]\n"
    );
    let x = "x-nodus:\n  settle: 4s\n  services:\n    orm:\n      stateful: false\n";
    // first up without the ORM service to create data
    let s = TestStack::new("orm", &pg_stack("", "x-nodus:\n  settle: 4s\n"));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 3, 2);
    s.nodus(&["down", "--no-snapshot"]).ok();
    s.write_stack(&pg_stack(&orm, x));
    let u = s.nodus(&["up"]);
    u.code(3);
    assert!(u.stderr.contains("t2"), "{}", u.stderr);
    assert!(
        u.stderr.contains("dropped by SQL"),
        "cause missing:\n{}",
        u.stderr
    );
    assert!(u.stderr.contains("orm"), "service not named:\n{}", u.stderr);
}

#[test]
fn census_json_lists_tables_and_rows() {
    let s = TestStack::new("census", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 2, 7);
    let c = s.nodus(&["census", "--json"]);
    c.ok();
    let v: serde_json::Value = serde_json::from_str(&c.stdout).expect("census --json");
    let text = v.to_string();
    assert!(
        text.contains("public.t1") && text.contains("public.t2"),
        "{text}"
    );
    assert!(text.contains("system_identifier"), "{text}");
    assert!(!text.contains("secret-pw"));
}
