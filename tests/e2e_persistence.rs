//! `nodus test-persistence` against the real engine: a clean stack passes (sentinels written,
//! checked and removed), a stack whose app service drops tables at start fails with exit 3 and a
//! JUnit report naming the tables and the service, `--ephemeral` leaves nothing behind (on
//! failure and on Ctrl-C too).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn redis_service() -> String {
    format!("  cache:\n    image: {REDIS_IMAGE}\n    command: [\"redis-server\", \"--appendonly\", \"yes\"]\n")
}

/// The common JUnit schema (the one CI report actions read): `testsuites` > `testsuite` (name,
/// tests, failures, errors, time) > `testcase` (name, classname, time) > optional `failure`
/// (message, type). Returns (suite names, testcase names, failure messages).
fn check_junit(xml: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let (mut suites, mut cases, mut failures) = (vec![], vec![], vec![]);
    let mut stack: Vec<String> = vec![];
    loop {
        let ev = r.read_event().expect("well-formed XML");
        let (e, empty) = match &ev {
            Event::Start(e) => (e.clone(), false),
            Event::Empty(e) => (e.clone(), true),
            Event::End(_) => {
                stack.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = String::from_utf8_lossy(e.name().as_ref()).to_string();
        let attrs: std::collections::BTreeMap<String, String> = e
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                (
                    String::from_utf8_lossy(a.key.as_ref()).to_string(),
                    String::from_utf8_lossy(&a.value).to_string(),
                )
            })
            .collect();
        let need = |keys: &[&str]| {
            for k in keys {
                assert!(
                    attrs.contains_key(*k),
                    "<{name}> lacks {k}: {attrs:?}\n{xml}"
                );
            }
        };
        let parent = stack.last().map(String::as_str);
        match name.as_str() {
            "testsuites" => assert!(parent.is_none()),
            "testsuite" => {
                assert_eq!(parent, Some("testsuites"));
                need(&["name", "tests", "failures", "errors", "time"]);
                suites.push(attrs["name"].clone());
            }
            "testcase" => {
                assert_eq!(parent, Some("testsuite"));
                need(&["name", "classname", "time"]);
                attrs["time"].parse::<f64>().expect("time is a number");
                cases.push(attrs["name"].clone());
            }
            "failure" => {
                assert_eq!(parent, Some("testcase"));
                need(&["message", "type"]);
                failures.push(attrs["message"].clone());
            }
            "properties" | "property" | "system-out" | "system-err" => {}
            other => panic!("unexpected element <{other}> in\n{xml}"),
        }
        if !empty {
            stack.push(name);
        }
    }
    (suites, cases, failures)
}

#[test]
fn clean_stack_passes_and_sentinels_are_removed() {
    let s = TestStack::new("ptclean", &pg_stack(&redis_service(), ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 3, 5);
    s.nodus(&["down", "--no-snapshot"]).ok();
    let junit = s.path().join("reports/persistence.xml");
    let r = s.nodus(&[
        "--json",
        "test-persistence",
        "--cycles",
        "2",
        "--no-snapshot",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    r.ok();
    let doc = r.one_json();
    assert_eq!(doc["passed"], true, "{doc}");
    assert_eq!(doc["cycles"].as_array().unwrap().len(), 3, "{doc}");
    assert_eq!(doc["cleanup"]["sentinels_removed"], true, "{doc}");
    assert_eq!(doc["cycles"][1]["transition"], "down-up");
    assert!(
        doc["cycles"][1]["tables_checked"].as_u64().unwrap() >= 4,
        "{doc}"
    );
    // a progress line per cycle
    assert!(r.stderr.contains("cycle 1/2: down-up"), "{}", r.stderr);
    assert!(r.stderr.contains("cycle 2/2: down-up"), "{}", r.stderr);

    let xml = std::fs::read_to_string(&junit).expect("JUnit report written");
    let (suites, cases, failures) = check_junit(&xml);
    assert_eq!(suites.len(), 3, "{xml}");
    assert!(failures.is_empty(), "{xml}");
    for c in ["db/app", "db/postgres", "cache/db0"] {
        assert!(cases.iter().any(|x| x == c), "no testcase {c}: {xml}");
    }

    // the sentinels are gone, the user's data is there, and the next check is clean
    assert_eq!(
        s.psql(
            "db",
            "app",
            "SELECT count(*) FROM pg_tables WHERE tablename = '_nodus_sentinel'"
        ),
        "0"
    );
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM t2"), "5");
    let key = docker_ok(&[
        "exec",
        &s.container("cache"),
        "redis-cli",
        "EXISTS",
        "_nodus_sentinel",
    ]);
    assert_eq!(key, "0");
    s.nodus(&["verify"]).ok();

    // restart and kill cycles pass too; kill reports the unclean shutdown and crash recovery
    s.nodus(&[
        "test-persistence",
        "--cycles",
        "1",
        "--restart-kind",
        "restart",
    ])
    .ok();
    let k = s.nodus(&[
        "test-persistence",
        "--cycles",
        "1",
        "--restart-kind",
        "kill",
    ]);
    k.ok();
    assert!(k.stderr.contains("cycle 1/1: kill"), "{}", k.stderr);
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM t3"), "5");
    s.nodus(&["verify"]).ok();
}

#[test]
fn app_service_dropping_tables_at_start_fails_with_junit_naming_them() {
    let orm = format!(
        "  orm:\n    image: {PG_IMAGE}\n    depends_on:\n      db:\n        condition: service_healthy\n    entrypoint: [\"sh\", \"-c\", \"psql postgresql://postgres:secret-pw@db/app -c 'DROP TABLE IF EXISTS t2' ; sleep 3600\"]\n"
    );
    let x = "x-nodus:\n  settle: 4s\n  services:\n    orm:\n      stateful: false\n";
    let s = TestStack::new("ptorm", &pg_stack("", "x-nodus:\n  settle: 4s\n"));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 3, 2);
    s.nodus(&["down", "--no-snapshot"]).ok();
    s.write_stack(&pg_stack(&orm, x));

    // only stateful services cycled: the ORM never starts, nothing is lost
    s.nodus(&["test-persistence", "--cycles", "1", "--no-snapshot"])
        .ok();
    assert_eq!(s.table_count("db", "app"), 3);
    // test-persistence leaves the stack running; from a stopped stack the initial up is guarded
    // against the census taken before that stop
    s.nodus(&["down", "--no-snapshot"]).ok();

    let junit = s.path().join("junit.xml");
    let r = s.nodus(&[
        "test-persistence",
        "--with-services",
        "--cycles",
        "2",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    r.code(3);
    assert!(r.stderr.contains("t2"), "{}", r.stderr);
    let xml = std::fs::read_to_string(&junit).expect("JUnit report written on failure");
    let (_, _, failures) = check_junit(&xml);
    assert_eq!(failures.len(), 1, "{xml}");
    assert!(failures[0].contains("public.t2"), "{}", failures[0]);
    assert!(
        failures[0].contains("db:"),
        "service not named: {}",
        failures[0]
    );
    assert!(
        failures[0].contains("orm"),
        "cause (orm) not named: {}",
        failures[0]
    );
}

#[test]
fn ephemeral_run_removes_its_project_even_when_data_is_lost() {
    // The app drops every table it does not know at each start (a schema sync): the sentinel too.
    let orm = format!(
        "  orm:\n    image: {PG_IMAGE}\n    depends_on:\n      db:\n        condition: service_healthy\n    entrypoint: [\"sh\", \"-c\", \"psql postgresql://postgres:secret-pw@db/app -c 'DROP TABLE IF EXISTS _nodus_sentinel' ; sleep 3600\"]\n"
    );
    let x = "x-nodus:\n  settle: 4s\n  services:\n    orm:\n      stateful: false\n";
    let s = TestStack::new("ptephem", &pg_stack(&orm, x));
    let r = s.nodus(&[
        "--json",
        "test-persistence",
        "--ephemeral",
        "--with-services",
        "--no-snapshot",
        "--cycles",
        "2",
    ]);
    r.code(3);
    let doc = r.one_json();
    assert_eq!(doc["passed"], false);
    let name = doc["project"].as_str().unwrap().to_string();
    assert!(name.starts_with(&format!("{}-ptest-", s.project)), "{name}");
    s.also_clean.borrow_mut().push(name.clone());
    assert!(
        doc["loss"].as_str().unwrap().contains("_nodus_sentinel"),
        "{doc}"
    );
    assert_eq!(doc["cleanup"]["project_removed"], name.as_str(), "{doc}");
    assert!(r.stderr.contains(&name), "the project name is printed");
    let filter = format!("label=com.docker.compose.project={name}");
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &filter]), "");
    assert_eq!(docker_ok(&["volume", "ls", "-q", "--filter", &filter]), "");
    assert_eq!(docker_ok(&["network", "ls", "-q", "--filter", &filter]), "");
}

#[test]
fn ephemeral_run_cleans_up_on_ctrl_c() {
    let s = TestStack::new("ptint", &pg_stack("", ""));
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodus"))
        .current_dir(s.path())
        .env("NO_COLOR", "1")
        .args(["-f", s.stack_file().to_str().unwrap(), "-p", &s.project])
        .args([
            "test-persistence",
            "--ephemeral",
            "--no-snapshot",
            "--cycles",
            "50",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // wait until the throwaway project's database runs
    let prefix = format!("{}-ptest-", s.project);
    let start = Instant::now();
    let name = loop {
        let out = docker_ok(&[
            "ps",
            "--format",
            "{{.Label \"com.docker.compose.project\"}}",
        ]);
        if let Some(n) = out.lines().find(|l| l.starts_with(&prefix)) {
            break n.to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(180), "never started");
        std::thread::sleep(Duration::from_millis(500));
    };
    s.also_clean.borrow_mut().push(name.clone());
    std::thread::sleep(Duration::from_secs(3));
    let pid = child.id().to_string();
    run(Command::new("kill").args(["-INT", &pid]));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "interrupted run exits 1");
    let filter = format!("label=com.docker.compose.project={name}");
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &filter]), "");
    assert_eq!(docker_ok(&["volume", "ls", "-q", "--filter", &filter]), "");
}
