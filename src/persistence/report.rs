//! The reports of `nodus test-persistence`: JUnit XML (a testsuite per cycle, a testcase per
//! database and per redis, `<failure>` naming the lost tables and the guard's cause) through
//! `quick-junit`, and the `--json` summary.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{Cycle, Outcome};

/// JUnit XML of a run.
pub fn junit(o: &Outcome) -> anyhow::Result<String> {
    let mut report = Report::new("nodus test-persistence");
    let mut total = 0.0;
    for c in &o.cycles {
        report.add_test_suite(suite(o, c));
        total += c.seconds;
    }
    report.set_time(Duration::from_secs_f64(total));
    Ok(report.to_string()?)
}

fn suite(o: &Outcome, c: &Cycle) -> TestSuite {
    let name = if c.index == 0 {
        format!("{}: initial up", o.project)
    } else {
        format!(
            "{}: cycle {}/{} ({})",
            o.project, c.index, o.cycles_requested, c.transition
        )
    };
    let mut s = TestSuite::new(name);
    s.set_time(Duration::from_secs_f64(c.seconds));
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&c.started) {
        s.set_timestamp(t);
    }
    s.add_property(Property::new("transition", c.transition.as_str()));
    s.add_property(Property::new(
        "tables_checked",
        c.tables_checked.to_string(),
    ));
    for case in &c.cases {
        let status = if case.ok {
            TestCaseStatus::success()
        } else {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
            let mut msg = Vec::new();
            if !case.missing_tables.is_empty() {
                msg.push(format!(
                    "tables lost in {}: {}",
                    case.database,
                    case.missing_tables.join(", ")
                ));
            }
            msg.extend(case.problems.iter().cloned());
            let mut message = format!("{}: {}", case.service, msg.join("; "));
            if let Some(cause) = &case.cause {
                message.push_str(&format!(" — cause: {cause}"));
            }
            st.set_type("data-loss");
            st.set_description(message.clone());
            st.set_message(message);
            st
        };
        let mut tc = TestCase::new(format!("{}/{}", case.service, case.database), status);
        tc.set_classname(format!("{}.{}", o.project, case.service));
        tc.set_time(Duration::from_secs_f64(case.seconds));
        s.add_test_case(tc);
    }
    if !c.notes.is_empty() {
        s.set_system_out(c.notes.join("\n"));
    }
    s
}

/// The `--json` document: the outcome plus every guarded command's own document.
pub fn json(
    o: &Outcome,
    junit_path: Option<&str>,
    cleanup: &serde_json::Value,
) -> serde_json::Value {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    if let Some(cycles) = v.get_mut("cycles").and_then(|c| c.as_array_mut()) {
        for (doc, c) in cycles.iter_mut().zip(&o.cycles) {
            doc["transitions"] = serde_json::Value::Array(c.steps.clone());
        }
    }
    v["junit"] = junit_path
        .map(Into::into)
        .unwrap_or(serde_json::Value::Null);
    v["cleanup"] = cleanup.clone();
    v
}
