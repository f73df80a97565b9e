//! Tests of judging one service and the overall verdict.

use super::*;
use crate::guard::cause::{Cause, CauseCode};

fn lost(code: CauseCode, volume: &str) -> ServiceVerdict {
    ServiceVerdict {
        kind: "postgres".into(),
        status: Status::Loss,
        baseline: None,
        diff: Some(ServiceDiff {
            missing_databases: vec!["app".into()],
            ..Default::default()
        }),
        early_diff: None,
        cause: Some(Cause {
            code,
            summary: "a new cluster was initialised: x".into(),
            details: vec![],
            volume: Some(volume.into()),
            fix: None,
        }),
        warnings: vec![],
        restore_command: None,
        baseline_census: None,
        restore_before: None,
        info: vec![],
        restore_note: None,
    }
}

#[test]
fn a_volume_nodus_had_to_create_was_removed_unless_renamed() {
    let mut v = Verdict::new("up", Totals::default(), "l".into(), "t".into());
    v.services
        .insert("db".into(), lost(CauseCode::VolumeRecreated, "p_db"));
    v.services
        .insert("old".into(), lost(CauseCode::ProjectRenamed, "p_old"));
    v.services
        .insert("other".into(), lost(CauseCode::VolumeRecreated, "p_other"));
    v.note_created_volumes(&["p_db".into(), "p_old".into()]);
    let c = |n: &str| v.services[n].cause.clone().unwrap();
    assert!(
        c("db").summary.contains("had been removed"),
        "{}",
        c("db").summary
    );
    assert_eq!(c("old").code, CauseCode::ProjectRenamed);
    assert!(!c("other").summary.contains("had been removed"));
}

#[test]
fn overall_verdict_and_restore_commands() {
    let mut v = Verdict::new(
        "up",
        Totals::default(),
        "l".into(),
        "2025-01-01T00:00:00Z".into(),
    );
    assert_eq!(
        {
            v.conclude();
            v.verdict
        },
        Status::Recorded
    );
    v.services
        .insert("db".into(), lost(CauseCode::VolumeRecreated, "p_db"));
    let mut ok = lost(CauseCode::VolumeRecreated, "p_c");
    ok.status = Status::Ok;
    v.services.insert("cache".into(), ok);
    v.conclude();
    assert_eq!(v.verdict, Status::Loss);
    v.fill_restore(|svc, before, _| {
        assert_eq!(before, "2025-01-01T00:00:00Z", "{svc}");
        RestoreHint {
            command: Some(format!("nodus snapshot restore {svc}-1")),
            note: None,
        }
    });
    // only lost services get one
    assert_eq!(
        v.restore_command.as_deref(),
        Some("nodus snapshot restore db-1")
    );
    // a loss found earlier needs a snapshot from before it was found
    v.services.get_mut("db").unwrap().restore_before = Some("2024-06-01T00:00:00Z".into());
    v.fill_restore(|svc, before, _| RestoreHint {
        command: Some(format!("restore {svc} before {before}")),
        note: None,
    });
    assert_eq!(
        v.restore_command.as_deref(),
        Some("restore db before 2024-06-01T00:00:00Z")
    );
    assert_eq!(v.loss_summary(), "db: databases missing: app");
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["verdict"], "loss");
    assert_eq!(json["services"]["db"]["cause"]["code"], "volume_recreated");
}
#[test]
fn a_loss_says_each_thing_once() {
    let mut s = lost(CauseCode::VolumeRecreated, "p_db");
    let mut d = ServiceDiff {
        system_identifier_changed: Some(("A".into(), "B".into())),
        ..Default::default()
    };
    d.missing_tables.insert(
        "postgres".into(),
        vec!["public.a".into(), "public.b".into()],
    );
    d.row_drops
        .insert("app".into(), vec![("public.c".into(), 10, 2)]);
    s.diff = Some(d);
    s.cause.as_mut().unwrap().details = vec!["system identifier A → B".into()];
    let text = loss_lines("db", &s, false).join("\n");
    assert_eq!(text.matches("A → B").count(), 1, "{text}");
    assert!(text.contains("public.a, public.b"), "{text}");
    assert!(text.contains("public.c 10 → 2"), "{text}");
    assert!(text.contains("cause: a new cluster"), "{text}");
    assert!(!text.contains("restore"), "the hint says it:\n{text}");
    assert!(!text.contains("error"), "{text}");

    // without a cause detail naming it, the diff's cluster line stays
    s.cause.as_mut().unwrap().details.clear();
    let text = loss_lines("db", &s, false).join("\n");
    assert!(text.contains("system identifier A → B"), "{text}");

    // another lost service has a snapshot, this one none: said here, once
    let text = loss_lines("db", &s, true).join("\n");
    assert_eq!(text.matches("no snapshot of db").count(), 1, "{text}");
    s.restore_command = Some("nodus snapshot restore x".into());
    assert!(!loss_lines("db", &s, true).join("\n").contains("restore"));
}

/// Issue 11: postgres killed outside nodus after the last census (no stop evidence in the
/// baseline): the UNLOGGED tables crash recovery emptied are a loss, the rows the services
/// deleted from logged tables stay a warning.
#[test]
fn unlogged_tables_emptied_after_an_unclean_start_are_a_loss() {
    use crate::guard::census::{DbCensus, PgCensus, TableCensus};
    let pg = |cache: i64, users: i64| {
        let mut db = DbCensus::default();
        for (t, rows, p) in [
            ("public.cache", cache, Persistence::Unlogged),
            ("public.users", users, Persistence::Permanent),
        ] {
            db.tables.insert(
                t.into(),
                TableCensus {
                    persistence: p,
                    rows,
                    estimated: false,
                },
            );
        }
        ServiceCensus::Postgres(PgCensus {
            system_identifier: "1".into(),
            databases: [("app".to_string(), db)].into(),
        })
    };
    let (before, now) = (pg(50, 20), pg(0, 18));
    let killed = StopEvidence {
        exit_code: Some(137),
        killed: true,
        ..Default::default()
    };
    let judge_with = |now: &ServiceCensus, unclean: Option<&StopEvidence>| {
        judge(Judge {
            service: "db",
            kind: ServiceKind::Postgres,
            baseline: Some((
                BaselineRef {
                    phase: Phase::PostSettled,
                    time: "2025-01-01T00:00:00Z".into(),
                    transition: "up".into(),
                    guarded: false,
                },
                &before,
                None,
                "p",
            )),
            now,
            early: None,
            current_identity: None,
            current_project: "p",
            started_after_early: &[],
            strict: false,
            running_until: None,
            unclean_start: unclean,
        })
    };
    // without the unclean start: the services ran since the census, a warning
    let sv = judge_with(&now, None);
    assert_eq!(sv.status, Status::Ok);
    assert_eq!(sv.warnings.len(), 1, "{:?}", sv.warnings);

    let sv = judge_with(&now, Some(&killed));
    assert_eq!(sv.status, Status::Loss);
    assert_eq!(
        sv.cause.as_ref().unwrap().code,
        CauseCode::UnloggedCrashRecovery
    );
    let d = sv.diff.as_ref().unwrap();
    assert_eq!(
        d.row_drops["app"],
        vec![("public.cache".to_string(), 50, 0)]
    );
    assert!(
        sv.warnings.iter().any(|w| w.contains("public.users")),
        "{:?}",
        sv.warnings
    );
    let text = loss_lines("db", &sv, false).join("\n");
    assert!(text.contains("public.cache 50 → 0"), "{text}");
    assert!(!text.contains("public.users"), "{text}");

    // only logged tables fell: the unclean start changes nothing
    let sv = judge_with(&pg(50, 18), Some(&killed));
    assert_eq!(sv.status, Status::Ok);
    assert!(sv.cause.is_none());
}

fn redis_ident(volume: &str) -> ServiceIdentity {
    ServiceIdentity {
        kind: ServiceKind::Redis,
        container: None,
        container_id: None,
        started_at: None,
        data_dir: "/data".into(),
        volume_key: Some("cache_data".into()),
        mount: Some(crate::guard::ledger::MountIdentity {
            kind: crate::engine::MountKind::Volume,
            source: volume.into(),
            target: "/data".into(),
            anonymous: false,
        }),
        volume: Some(crate::guard::ledger::VolumeIdentity {
            name: volume.into(),
            created_at: None,
            labels: Default::default(),
        }),
        system_identifier: None,
        stop_evidence: None,
    }
}

fn redis(keys: u64) -> ServiceCensus {
    ServiceCensus::Redis(crate::guard::census::RedisCensus {
        keys: [(0, keys)].into(),
        expires: Default::default(),
    })
}

/// Issue 8: a renamed project while the old stack still ran (unguarded baseline): the redis
/// keys are in the old volume, not removed by the services.
#[test]
fn a_renamed_project_is_a_loss_for_redis_too_with_the_p_fix() {
    let before = redis(2);
    let now = redis(0);
    let old = redis_ident("old_cache_data");
    let new = redis_ident("new_cache_data");
    let judge_with = |cur: &ServiceIdentity, project: &'static str| {
        judge(Judge {
            service: "cache",
            kind: ServiceKind::Redis,
            baseline: Some((
                BaselineRef {
                    phase: Phase::PostSettled,
                    time: "2025-01-01T00:00:00Z".into(),
                    transition: "up".into(),
                    guarded: false,
                },
                &before,
                Some(&old),
                "old",
            )),
            now: &now,
            early: None,
            current_identity: Some(cur),
            current_project: project,
            started_after_early: &[],
            strict: false,
            running_until: None,
            unclean_start: None,
        })
    };
    let sv = judge_with(&new, "new");
    assert_eq!(sv.status, Status::Loss);
    let cause = sv.cause.clone().unwrap();
    assert_eq!(cause.code, CauseCode::ProjectRenamed);
    assert!(
        !cause.summary.contains("stopped outside nodus"),
        "{}",
        cause.summary
    );
    assert!(cause.summary.contains("-p old"), "{}", cause.summary);
    let mut v = Verdict::new("up", Totals::default(), "l".into(), "t".into());
    v.services.insert("cache".into(), sv);
    v.conclude();
    let fix = v.fix().unwrap();
    assert!(fix.contains("`-p old`"), "{fix}");
    let err = crate::error::DataLossDetected {
        summary: v.loss_summary(),
        restore_command: None,
        fix: v.fix(),
    };
    let (code, hint) = crate::error::classify(&anyhow::Error::new(err));
    assert_eq!(code, crate::error::EXIT_DATA_LOSS);
    let hint = hint.unwrap();
    assert!(
        hint.contains("-p old") && !hint.contains("no snapshot"),
        "{hint}"
    );

    // same volume, services ran after the census: a warning that does not claim the stack
    // was stopped outside nodus
    let sv = judge_with(&old, "old");
    assert_eq!(sv.status, Status::Ok);
    let w = sv.warnings.join("\n");
    assert!(
        w.contains("db0: 2 → 0") && !w.contains("stopped outside nodus"),
        "{w}"
    );
}
