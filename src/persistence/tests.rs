use std::collections::BTreeMap;
use std::time::Duration;

use super::sentinel::{Checked, Place};
use super::*;
use crate::guard::cause::{Cause, CauseCode};
use crate::guard::census::Totals;
use crate::guard::diff::ServiceDiff;
use crate::guard::verdict::ServiceVerdict;

fn place(service: &str, kind: &'static str, db: &str) -> Place {
    Place {
        service: service.into(),
        kind,
        database: db.into(),
    }
}

fn sv(status: Status, diff: ServiceDiff, cause: Option<Cause>) -> ServiceVerdict {
    ServiceVerdict {
        kind: "postgres".into(),
        status,
        baseline: None,
        diff: Some(diff),
        early_diff: None,
        cause,
        warnings: vec![],
        restore_command: None,
        baseline_census: None,
        restore_before: None,
        info: vec![],
        restore_note: None,
    }
}

fn verdict(services: Vec<(&str, ServiceVerdict)>, tables: usize) -> Verdict {
    let totals = Totals {
        tables,
        ..Default::default()
    };
    let mut v = Verdict::new("up", totals, "ledger".into(), "now".into());
    for (n, s) in services {
        v.services.insert(n.into(), s);
    }
    v.conclude();
    v
}

fn step(v: Verdict) -> Step {
    Step {
        transition: "up",
        verdict: Some(v),
        doc: serde_json::json!({}),
    }
}

fn all_intact(places: &[Place]) -> Checked {
    places.iter().map(|p| (p.clone(), None)).collect()
}

#[test]
fn a_clean_cycle_passes_with_a_case_per_database_and_redis() {
    let places = [
        place("db", "postgres", "app"),
        place("db", "postgres", "postgres"),
        place("cache", "redis", "db0"),
    ];
    let v = verdict(
        vec![("db", sv(Status::Ok, ServiceDiff::default(), None))],
        7,
    );
    let c = judge(
        1,
        "down-up",
        "2026-01-01T00:00:00Z",
        vec![step(v)],
        &all_intact(&places),
        Duration::from_secs(3),
        vec![],
    );
    assert!(c.ok);
    assert_eq!(c.cases.len(), 3);
    assert_eq!(c.tables_checked, 7);
    assert!(c.cases.iter().all(|c| c.ok));
}

#[test]
fn tables_the_guard_found_missing_fail_their_database_with_the_cause() {
    let places = [
        place("db", "postgres", "app"),
        place("db", "postgres", "other"),
    ];
    let mut d = ServiceDiff::default();
    d.missing_tables.insert(
        "app".into(),
        vec!["public.t2".into(), "public.users".into()],
    );
    let cause = Cause {
        code: CauseCode::DroppedDuringStartup,
        summary: "dropped by SQL while orm was starting".into(),
        details: vec![],
        volume: None,
        fix: None,
    };
    let mut v = verdict(vec![("db", sv(Status::Loss, d, Some(cause)))], 5);
    v.restore_command = Some("nodus snapshot restore db --before T".into());
    let mut checked = all_intact(&places);
    checked.insert(
        places[0].clone(),
        Some("sentinel table _nodus_sentinel is missing".into()),
    );
    let c = judge(
        2,
        "down-up",
        "2026-01-01T00:00:00Z",
        vec![step(v)],
        &checked,
        Duration::from_secs(1),
        vec![],
    );
    assert!(!c.ok);
    let app = c.cases.iter().find(|c| c.database == "app").unwrap();
    assert!(!app.ok);
    assert_eq!(app.missing_tables, vec!["public.t2", "public.users"]);
    assert!(app.cause.as_deref().unwrap().contains("orm"));
    let other = c.cases.iter().find(|c| c.database == "other").unwrap();
    assert!(other.ok, "a database without loss passes: {other:?}");

    let mut out = Outcome {
        project: "p".into(),
        restart_kind: RestartKind::DownUp,
        cycles_requested: 3,
        passed: true,
        cycles: vec![],
        loss: None,
        restore_command: None,
        fix: None,
        sentinels: places.to_vec(),
    };
    record(&mut out, c);
    assert!(!out.passed);
    // the guard's restore command reaches the outcome (and so the exit's hint)
    assert_eq!(
        out.restore_command.as_deref(),
        Some("nodus snapshot restore db --before T")
    );
    assert_eq!(out.fix, None);
    let loss = out.loss.clone().unwrap();
    assert!(
        loss.contains("public.t2") && loss.contains("db/app"),
        "{loss}"
    );

    let xml = report::junit(&out).unwrap();
    assert!(
        xml.contains("<testsuite name=\"p: cycle 2/3 (down-up)\""),
        "{xml}"
    );
    assert!(
        xml.contains("<testcase name=\"db/app\" classname=\"p.db\""),
        "{xml}"
    );
    assert!(xml.contains("<failure"), "{xml}");
    assert!(xml.contains("public.t2, public.users"), "{xml}");
    assert!(
        xml.contains("dropped by SQL while orm was starting"),
        "{xml}"
    );
    assert!(xml.contains("time=\""), "{xml}");
    assert!(xml.contains("failures=\"1\""), "{xml}");
    schema_valid(&xml).unwrap();

    // a passing run (initial up + a clean cycle, notes in system-out) is valid too
    let places = [place("db", "postgres", "app")];
    let v = verdict(
        vec![("db", sv(Status::Ok, ServiceDiff::default(), None))],
        3,
    );
    let mut pass = Outcome {
        project: "p".into(),
        restart_kind: RestartKind::Restart,
        cycles_requested: 1,
        passed: true,
        cycles: vec![],
        loss: None,
        restore_command: None,
        fix: None,
        sentinels: places.to_vec(),
    };
    for i in 0..2 {
        let c = judge(
            i,
            "restart",
            "2026-01-01T00:00:00Z",
            vec![step(v.clone())],
            &all_intact(&places),
            Duration::from_millis(1500),
            vec!["a note <with> markup & quotes\"".into()],
        );
        record(&mut pass, c);
    }
    let xml = report::junit(&pass).unwrap();
    assert!(pass.passed);
    schema_valid(&xml).unwrap();
}

/// Validates `xml` against `tests/fixtures/junit.xsd` (the JUnit format CI report readers take)
/// with `xmllint` (Debian `libxml2-utils`, installed by `scripts/ensure-env.sh`).
fn schema_valid(xml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.xml");
    std::fs::write(&file, xml).unwrap();
    let xsd = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/junit.xsd");
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&xsd)
        .arg(&file)
        .output()
        .expect("xmllint runs (apt-get install libxml2-utils; scripts/ensure-env.sh does)");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}\n{xml}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The validator can fail: documents that CI readers would misread are rejected.
#[test]
fn the_junit_schema_rejects_what_readers_misread() {
    let ok = r#"<testsuites><testsuite name="s" tests="1"><testcase name="c" classname="k" time="0.1"/></testsuite></testsuites>"#;
    schema_valid(ok).unwrap();
    for bad in [
        // a testcase without its time
        r#"<testsuites><testsuite name="s" tests="1"><testcase name="c" classname="k"/></testsuite></testsuites>"#,
        // a count that is not a number
        r#"<testsuites><testsuite name="s" tests="one"><testcase name="c" classname="k" time="1"/></testsuite></testsuites>"#,
        // a failure without a type
        r#"<testsuites><testsuite name="s" tests="1"><testcase name="c" classname="k" time="1"><failure message="m"/></testcase></testsuite></testsuites>"#,
        // a testcase outside a testsuite
        r#"<testsuites><testcase name="c" classname="k" time="1"/></testsuites>"#,
        // a timestamp that is not a date
        r#"<testsuites><testsuite name="s" tests="0" timestamp="yesterday"/></testsuites>"#,
    ] {
        assert!(schema_valid(bad).is_err(), "accepted: {bad}");
    }
}

#[test]
fn redis_key_drops_fail_the_redis_case() {
    let places = [place("cache", "redis", "db0")];
    let mut d = ServiceDiff::default();
    d.other_drops.push(("db0".into(), 10, 0));
    let v = verdict(vec![("cache", sv(Status::Loss, d, None))], 0);
    let c = judge(
        1,
        "restart",
        "x",
        vec![step(v)],
        &all_intact(&places),
        Duration::ZERO,
        vec![],
    );
    assert!(!c.ok);
    assert!(c.cases[0].problems.iter().any(|p| p.contains("10 → 0")));
}

#[test]
fn a_loss_in_a_service_without_sentinel_still_fails_the_cycle() {
    let mut d = ServiceDiff::default();
    d.missing_collections.push("docs".into());
    let v = verdict(vec![("qdrant", sv(Status::Loss, d, None))], 0);
    let c = judge(
        1,
        "down-up",
        "x",
        vec![step(v)],
        &BTreeMap::new(),
        Duration::ZERO,
        vec![],
    );
    assert!(!c.ok);
    assert_eq!(c.cases[0].service, "qdrant");
}
