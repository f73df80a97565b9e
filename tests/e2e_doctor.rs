//! `nodus doctor` and `nodus import` against the real engine (stand-in images).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A compose stack as people write it: postgres with PGDATA on an anonymous volume.
fn anon_compose() -> String {
    format!(
        "services:\n  db:\n    image: {PG_IMAGE}\n    environment:\n      POSTGRES_PASSWORD: secret-pw\n      POSTGRES_DB: app\n    volumes:\n      - /var/lib/postgresql/data\n"
    )
}

fn compose(s: &TestStack, args: &[&str]) {
    let out = run(Command::new("docker-compose")
        .current_dir(s.path())
        .env_remove("COMPOSE_PROJECT_NAME")
        .args(["-p", &s.project, "-f", s.stack_file().to_str().unwrap()])
        .args(args));
    assert!(
        out.status.success(),
        "docker-compose {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// compose v1 names containers `<project>_<service>_1`.
fn v1_container(s: &TestStack, service: &str) -> String {
    format!("{}_{service}_1", s.project)
}

fn wait_pg(container: &str) {
    let start = Instant::now();
    loop {
        let ok = docker(&[
            "exec",
            container,
            "pg_isready",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .status
        .success()
            && docker(&[
                "exec", container, "psql", "-U", "postgres", "-d", "app", "-Atc", "SELECT 1",
            ])
            .status
            .success();
        if ok {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{container} not ready"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn psql_in(container: &str, sql: &str) -> String {
    docker_ok(&[
        "exec",
        container,
        "psql",
        "-U",
        "postgres",
        "-d",
        "app",
        "-v",
        "ON_ERROR_STOP=1",
        "-Atq",
        "-c",
        sql,
    ])
}

const TABLES_SQL: &str = "DO $$ BEGIN FOR i IN 1..3 LOOP EXECUTE format('CREATE TABLE t%s (id int primary key, v text)', i); EXECUTE format('INSERT INTO t%s SELECT g, md5(g::text) FROM generate_series(1,%s) g', i, i * 7); END LOOP; END $$;";
const COUNT_SQL: &str = "SELECT string_agg(c, ',' ORDER BY c) FROM (SELECT 't1:' || count(*) c FROM t1 UNION ALL SELECT 't2:' || count(*) FROM t2 UNION ALL SELECT 't3:' || count(*) FROM t3) x";

fn data_volume(container: &str) -> String {
    docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{if eq .Destination \"/var/lib/postgresql/data\"}}{{.Name}}{{end}}{{end}}",
        container,
    ])
}

fn findings(r: &Res) -> Vec<serde_json::Value> {
    r.one_json()["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn dangling_pgdata_volume_after_raw_compose_down_up() {
    let s = TestStack::new("doc-dangling", &anon_compose());
    compose(&s, &["up", "-d"]);
    let c = v1_container(&s, "db");
    wait_pg(&c);
    psql_in(&c, TABLES_SQL);
    let first = data_volume(&c);
    assert!(!first.is_empty());
    compose(&s, &["down"]);
    compose(&s, &["up", "-d"]);
    wait_pg(&c);
    let second = data_volume(&c);
    assert_ne!(
        first, second,
        "compose gave the same anonymous volume again"
    );

    let r = s.nodus(&["doctor", "--json"]);
    r.code(1); // pgdata-anonymous is an error
    let f = findings(&r);
    assert!(f.iter().any(|f| f["id"] == "pgdata-anonymous"), "{f:#?}");
    let d = f
        .iter()
        .find(|f| {
            f["id"] == "dangling-pgdata-volume" && f["evidence"].as_str().unwrap().contains(&first)
        })
        .unwrap_or_else(|| panic!("old volume {first} not named: {f:#?}"));
    let ev = d["evidence"].as_str().unwrap();
    assert!(ev.contains("PostgreSQL 15"), "{ev}");
    assert!(ev.contains("created"), "{ev}");
    // The volume in use is not dangling.
    assert!(!f.iter().any(|f| f["id"] == "dangling-pgdata-volume"
        && f["evidence"].as_str().unwrap().contains(&second)));
    // The probe container is gone.
    let left = docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("name={}-nodus-doctor-probe", s.project),
    ]);
    assert!(left.is_empty(), "probe container left behind");

    compose(&s, &["down", "-v"]);
    docker(&["volume", "rm", &first]);
}

#[test]
fn project_rename_names_the_sibling_volume() {
    let s = TestStack::new("doc-rename", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 2, 3);
    s.nodus(&["down", "--no-snapshot"]).ok();
    let renamed = format!("{}-new", s.project);
    let r = s.nodus_as(&renamed, &["doctor", "--json"]);
    let f = findings(&r);
    let old_volume = s.volume("db_data");
    let hit = f
        .iter()
        .find(|f| {
            f["id"] == "project-rename" && f["evidence"].as_str().unwrap().contains(&old_volume)
        })
        .unwrap_or_else(|| panic!("no project-rename: {f:#?}\n{}", r.stderr));
    let ev = hit["evidence"].as_str().unwrap();
    assert!(ev.contains(&old_volume), "{ev}");
    assert!(ev.contains(&format!("{renamed}_db_data")), "{ev}");
    assert!(hit["fix"]
        .as_str()
        .unwrap()
        .contains(&format!("-p {}", s.project)));
}

#[test]
fn last_loss_names_the_service_that_dropped_tables() {
    let orm = format!(
        "  orm:\n    image: {PG_IMAGE}\n    depends_on:\n      db:\n        condition: service_healthy\n    entrypoint: [\"sh\", \"-c\", \"psql postgresql://postgres:secret-pw@db/app -c 'DROP TABLE IF EXISTS t2' ; sleep 3600\"]\n"
    );
    let x = "x-nodus:\n  settle: 4s\n  services:\n    db:\n      ddl_log: true\n    orm:\n      stateful: false\n";
    let s = TestStack::new(
        "doc-lastloss",
        &pg_stack(
            "",
            "x-nodus:\n  settle: 4s\n  services:\n    db:\n      ddl_log: true\n",
        ),
    );
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 3, 2);
    s.nodus(&["down", "--no-snapshot"]).ok();
    s.write_stack(&pg_stack(&orm, x));
    s.nodus(&["up"]).code(3);

    let r = s.nodus(&["doctor", "--last-loss"]);
    r.ok();
    assert!(r.stdout.contains("DROP TABLE IF EXISTS t2"), "{}", r.all());
    assert!(r.stdout.contains("service orm"), "{}", r.all());
    let j = s.nodus(&["doctor", "--last-loss", "--json"]);
    let v = j.one_json();
    let l = &v["last_loss"];
    assert_eq!(l["service"], "db");
    assert!(l["lost"].to_string().contains("t2"), "{l:#}");
    let drops = l["drops"].as_array().unwrap();
    assert!(drops.iter().any(|d| d["service"] == "orm"), "{l:#}");
}

fn import_and_up(s: &TestStack, expected: &str) {
    let out = s.path().join("nodus.yaml");
    let original = std::fs::read_to_string(s.stack_file()).unwrap();
    let r = s.nodus(&[
        "import",
        s.stack_file().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--migrate-data",
    ]);
    r.ok();
    assert_eq!(
        std::fs::read_to_string(s.stack_file()).unwrap(),
        original,
        "original edited"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("What changed and why"), "{text}");
    assert!(text.contains("x-nodus:"), "{text}");
    assert!(text.contains("db_data"), "{text}");
    // The imported stack under nodus: every table and row is there.
    s.write_stack(&text);
    s.nodus(&["up"]).ok();
    assert_eq!(s.psql("db", "app", COUNT_SQL), expected);
    // And the data is on the named volume.
    let vol = data_volume(&s.container("db"));
    assert_eq!(vol, s.volume("db_data"));
}

#[test]
fn import_migrates_an_anonymous_volume() {
    let s = TestStack::new("doc-imp-anon", &anon_compose());
    compose(&s, &["up", "-d"]);
    let c = v1_container(&s, "db");
    wait_pg(&c);
    psql_in(&c, TABLES_SQL);
    let expected = psql_in(&c, COUNT_SQL);
    assert_eq!(expected, "t1:7,t2:14,t3:21");
    let anon = data_volume(&c);
    import_and_up(&s, &expected);
    docker(&["rm", "-f", "-v", &c]);
    docker(&["volume", "rm", &anon]);
}

#[test]
fn import_migrates_a_bind_mount() {
    let yaml = format!(
        "services:\n  db:\n    image: {PG_IMAGE}\n    environment:\n      POSTGRES_PASSWORD: secret-pw\n      POSTGRES_DB: app\n    volumes:\n      - ./pgdata:/var/lib/postgresql/data\n"
    );
    let s = TestStack::new("doc-imp-bind", &yaml);
    compose(&s, &["up", "-d"]);
    let c = v1_container(&s, "db");
    wait_pg(&c);
    psql_in(&c, TABLES_SQL);
    let expected = psql_in(&c, COUNT_SQL);
    import_and_up(&s, &expected);
    // The bind directory still holds the original.
    assert!(s.path().join("pgdata/PG_VERSION").exists());
    docker(&["rm", "-f", "-v", &c]);
}

#[test]
fn failed_import_leaves_the_original_running_and_writes_nothing() {
    let s = TestStack::new("doc-imp-fail", &anon_compose());
    compose(&s, &["up", "-d"]);
    let c = v1_container(&s, "db");
    wait_pg(&c);
    psql_in(&c, TABLES_SQL);
    let expected = psql_in(&c, COUNT_SQL);
    // The target volume exists already: nodus must not overwrite it.
    let label = format!("com.docker.compose.project={}", s.project);
    docker_ok(&["volume", "create", "--label", &label, &s.volume("db_data")]);
    let out = s.path().join("nodus.yaml");
    let r = s.nodus(&[
        "import",
        s.stack_file().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--migrate-data",
    ]);
    r.code(1);
    assert!(r.stderr.contains("already exists"), "{}", r.all());
    assert!(!out.exists(), "stack file written despite the failure");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &c]),
        "true"
    );
    assert_eq!(psql_in(&c, COUNT_SQL), expected);
    let anon = data_volume(&c);
    compose(&s, &["down", "-v"]);
    docker(&["volume", "rm", &anon]);
}

#[test]
fn up_prints_the_static_findings_first_unless_told_not_to() {
    // fsync=off is a hazard nodus cannot fix; the short grace period and the anonymous PGDATA of
    // the file as written are fixed by the hardening, so `up` does not repeat them.
    let yaml = format!(
        "services:\n  db:\n    image: {PG_IMAGE}\n    command: [\"postgres\", \"-c\", \"fsync=off\"]\n    environment:\n      POSTGRES_PASSWORD: secret-pw\n      POSTGRES_DB: app\n"
    );
    let s = TestStack::new("doc-up", &yaml);
    let u = s.nodus(&["up"]);
    u.ok();
    assert!(u.stderr.contains("nodus doctor:"), "{}", u.stderr);
    assert!(u.stderr.contains("unsafe-durability"), "{}", u.stderr);
    assert!(!u.stderr.contains("stop-grace-short"), "{}", u.stderr);
    assert!(!u.stderr.contains("pgdata-anonymous"), "{}", u.stderr);
    // `nodus doctor` still names them: the file as written has them.
    let d = s.nodus(&["doctor", "--no-live"]);
    assert!(d.stdout.contains("stop-grace-short"), "{}", d.all());
    let u = s.nodus(&["up", "--no-doctor"]);
    u.ok();
    assert!(!u.stderr.contains("nodus doctor:"), "{}", u.stderr);
}
