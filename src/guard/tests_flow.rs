//! The whole guard over a local postgres (see `tests_local.rs`): pre census, loss while
//! down, loss during startup, outstanding loss, verify/accept.

use super::*;
use crate::lifecycle::{Hooks, StopEvidence};
use crate::stack::ServiceKind;

fn setup() -> Option<(u16, String)> {
    let v = std::env::var("NODUS_TEST_PG").ok()?;
    let mut it = v.splitn(3, ':');
    Some((it.next()?.parse().ok()?, it.next()?.to_string()))
}

use crate::guard::testutil::psql;

fn svc(port: u16, pw: &str) -> RunningService {
    let mut container = testutil::container(
        &[&format!("POSTGRES_PASSWORD={pw}"), "POSTGRES_DB=nt_flow"],
        &[(5432, port)],
    );
    container.mounts.push(crate::engine::MountInfo {
        kind: crate::engine::MountKind::Volume,
        name_or_source: "p_db_data".into(),
        target: "/var/lib/postgresql/data".into(),
    });
    RunningService {
        service: "db".into(),
        container,
        stateful: Some(StatefulService {
            service: "db".into(),
            kind: ServiceKind::Postgres,
            data_dir: "/var/lib/postgresql/data".into(),
            volume_key: Some("db_data".into()),
            volume_name: Some("p_db_data".into()),
        }),
    }
}

fn guard(dir: &std::path::Path, t: Transition) -> (Guard, SharedOutcome) {
    let cfg = GuardConfig {
        project: "nt-flow".into(),
        state: StateDir::open(dir).unwrap(),
        stateful: vec![],
        nodus: serde_yaml::from_str("settle: 0s").unwrap(),
        env: Env::new(),
    };
    let shared = SharedOutcome::default();
    let engine: Arc<dyn Engine> = Arc::new(testutil::LocalExecEngine { env: vec![] });
    (
        Guard::new(engine, Ui::plain(), cfg, t, shared.clone()),
        shared,
    )
}

async fn down(dir: &std::path::Path, s: &RunningService) {
    let (mut g, shared) = guard(dir, Transition::Down);
    let pre = g
        .before_stop(Transition::Down, std::slice::from_ref(s))
        .await
        .unwrap();
    assert!(pre["db"]["databases"]["nt_flow"].is_object(), "{pre:?}");
    let stopped = crate::lifecycle::StoppedService {
        service: "db".into(),
        container: s.container.clone(),
        stateful: s.stateful.clone(),
        evidence: StopEvidence {
            exit_code: Some(0),
            clean_shutdown: Some(true),
            ..Default::default()
        },
        pre_stop: pre.get("db").cloned(),
    };
    g.after_stop(Transition::Down, &[stopped]).await.unwrap();
    assert_eq!(
        shared.lock().unwrap().verdict.as_ref().unwrap().verdict,
        Status::Recorded
    );
}

/// `up`: service_ready(db), then `between` (what dependents do), then all_ready.
async fn up(dir: &std::path::Path, s: &RunningService, between: impl FnOnce()) -> Verdict {
    let (mut g, shared) = guard(dir, Transition::Up);
    g.service_ready(Transition::Up, s).await.unwrap();
    let mut web = s.clone();
    web.service = "web".into();
    web.stateful = None;
    g.service_ready(Transition::Up, &web).await.unwrap();
    between();
    g.all_ready(Transition::Up, &[s.clone(), web])
        .await
        .unwrap();
    let v = shared.lock().unwrap().verdict.take().unwrap();
    v
}

#[tokio::test]
#[ignore = "needs NODUS_TEST_PG=port:password:socketdir (a local postgres)"]
async fn guarded_transitions_over_a_local_postgres() {
    let (port, pw) = setup().expect("NODUS_TEST_PG");
    psql(port, &pw, "postgres", "DROP DATABASE IF EXISTS nt_flow");
    psql(port, &pw, "postgres", "CREATE DATABASE nt_flow");
    psql(port, &pw, "nt_flow", "CREATE TABLE a(x int); CREATE TABLE b(x int); CREATE TABLE c(x int); INSERT INTO a VALUES (1),(2)");
    let dir = tempfile::tempdir().unwrap();
    let s = svc(port, &pw);

    // first up: baseline
    let v = up(dir.path(), &s, || {}).await;
    assert_eq!(v.verdict, Status::Baseline);
    assert!(
        v.notes.iter().any(|n| n.contains("first census")),
        "{:?}",
        v.notes
    );

    // clean cycle
    down(dir.path(), &s).await;
    let v = up(dir.path(), &s, || {}).await;
    assert_eq!(v.verdict, Status::Ok, "{v:#?}");

    // dropped while down
    down(dir.path(), &s).await;
    psql(port, &pw, "nt_flow", "DROP TABLE b");
    let v = up(dir.path(), &s, || {}).await;
    assert_eq!(v.verdict, Status::Loss);
    let sv = &v.services["db"];
    assert_eq!(
        sv.diff.as_ref().unwrap().missing_tables["nt_flow"],
        vec!["public.b"]
    );
    assert_eq!(
        sv.cause.as_ref().unwrap().code,
        cause::CauseCode::DroppedWhileDown
    );

    // the loss stays until accepted, also after another cycle
    let cfg = guard(dir.path(), Transition::Up).0.cfg.clone();
    down(dir.path(), &s).await;
    let v = up(dir.path(), &s, || {}).await;
    assert_eq!(
        v.verdict,
        Status::Loss,
        "a second cycle must not forget the loss"
    );
    assert!(v.services["db"]
        .warnings
        .iter()
        .any(|w| w.contains("first found missing")));

    // data back → resolved
    psql(port, &pw, "nt_flow", "CREATE TABLE b(x int)");
    down(dir.path(), &s).await;
    let v = up(dir.path(), &s, || {}).await;
    assert_eq!(v.verdict, Status::Ok, "{v:#?}");
    assert!(
        v.notes.iter().any(|n| n.contains("is back")),
        "{:?}",
        v.notes
    );

    // dropped by a dependent during startup
    down(dir.path(), &s).await;
    let v = up(dir.path(), &s, || {
        psql(port, &pw, "nt_flow", "DROP TABLE c; DELETE FROM a")
    })
    .await;
    assert_eq!(v.verdict, Status::Loss);
    let sv = &v.services["db"];
    let c = sv.cause.as_ref().unwrap();
    assert_eq!(c.code, cause::CauseCode::DroppedDuringStartup);
    assert!(c.summary.contains("by web"), "{}", c.summary);
    let d = sv.diff.as_ref().unwrap();
    assert_eq!(d.row_drops["nt_flow"], vec![("public.a".to_string(), 2, 0)]);
    assert_eq!(
        v.loss_summary(),
        "db: 1 table missing in nt_flow, 1 table lost rows"
    );

    // the ledger holds pre entries with stop evidence
    let (l, problem) = Ledger::open(&cfg.ledger_path(), "nt-flow").unwrap();
    assert!(problem.is_none());
    let pre = l
        .entries()
        .iter()
        .rev()
        .find(|e| e.phase == Phase::Pre)
        .unwrap();
    assert_eq!(
        pre.services["db"]
            .stop_evidence
            .as_ref()
            .unwrap()
            .clean_shutdown,
        Some(true)
    );
    assert_eq!(pre.engine_id.as_deref(), Some("TEST:ENGINE"));
    assert!(l.outstanding("db").is_some());

    // `down --volumes`: deleting the data on purpose is no loss and supersedes the
    // outstanding one; the next start is a new baseline
    let (mut g, shared) = guard(dir.path(), Transition::Down);
    shared.lock().unwrap().remove_volumes = true;
    g.before_stop(Transition::Down, std::slice::from_ref(&s))
        .await
        .unwrap();
    psql(port, &pw, "nt_flow", "DROP TABLE a");
    let v = up(dir.path(), &s, || {}).await;
    assert_eq!(v.verdict, Status::Baseline, "{v:#?}");
    assert!(
        v.notes.iter().any(|n| n.contains("--volumes")),
        "{:?}",
        v.notes
    );
    let (l, _) = Ledger::open(&cfg.ledger_path(), "nt-flow").unwrap();
    assert!(l.outstanding("db").is_none());

    // `up` while it keeps running (same container, same start): nothing compared or said,
    // even though the data changed meanwhile (the application's doing)
    let mut running = s.clone();
    running.container.started_at = Some("2025-01-01T00:00:00Z".into());
    let v = up(dir.path(), &running, || {}).await;
    assert_eq!(v.verdict, Status::Ok, "{v:#?}");
    psql(port, &pw, "nt_flow", "DROP TABLE b");
    let (mut g, shared) = guard(dir.path(), Transition::Up);
    g.service_ready(Transition::Up, &running).await.unwrap();
    g.all_ready(Transition::Up, std::slice::from_ref(&running))
        .await
        .unwrap();
    assert!(shared.lock().unwrap().verdict.is_none());
    // restarted outside nodus (new start time): compared again, with the post-start census
    // as baseline (the services ran after it)
    let mut restarted = running.clone();
    restarted.container.started_at = Some("2025-01-02T00:00:00Z".into());
    let v = up(dir.path(), &restarted, || {}).await;
    assert_eq!(v.verdict, Status::Loss, "{v:#?}");
    assert_eq!(
        v.services["db"].cause.as_ref().unwrap().code,
        cause::CauseCode::ChangedSinceCensus
    );
}
