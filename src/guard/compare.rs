//! Comparing a census with the ledger — one code path for `nodus verify`, the census the guard
//! takes before every stop, and (later) a live guard between transitions — and the bookkeeping of
//! outstanding losses that follows a comparison.

use std::collections::BTreeMap;

use super::census::{Census, ServiceCensus};
use super::diff::{self, ServiceDiff};
use super::ledger::{Entry, Ledger, Phase, ServiceIdentity};
use super::verdict::{self, BaselineRef, Judge, Status, Verdict};
use crate::stack::ServiceKind;

/// How differences from the last recorded census are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `nodus verify`: every difference is a loss.
    Strict,
    /// A census of a running stack between transitions (before a stop, a live guard): the
    /// services ran since the last census, so a database, table or collection that vanished is a
    /// loss, fallen row counts are informational. A service with an outstanding (unaccepted) loss
    /// is judged strictly against the census that loss was found against.
    Running,
}

/// A census judged against the ledger.
#[derive(Debug, Clone)]
pub struct LedgerComparison {
    pub verdict: Verdict,
    /// The entry (narrowed to the service) each service was compared with.
    pub baselines: BTreeMap<String, Entry>,
}

/// What one comparison needs besides the ledger and the census.
pub struct Context<'a> {
    /// `verify`, `down`, `stop`, `restart`, `watch`...
    pub transition: &'a str,
    pub project: &'a str,
    /// Kind of each service counted (others are judged as `ServiceKind::Other`).
    pub kinds: &'a BTreeMap<String, ServiceKind>,
    /// Identities of the services as they are now.
    pub identities: &'a BTreeMap<String, ServiceIdentity>,
    /// Entries of this session are not baselines (a transition compares with what was there
    /// before it started).
    pub session: Option<&'a str>,
    pub mode: Mode,
}

/// Compares every service of `now` with the latest census the ledger recorded of it (or the
/// census an outstanding loss was found against). Pure: the ledger is not changed.
pub fn with_ledger(ledger: &Ledger, now: &Census, cx: &Context) -> LedgerComparison {
    let mut v = Verdict::new(
        cx.transition,
        now.totals(),
        ledger.path().display().to_string(),
        now.taken_at.clone(),
    );
    let mut baselines = BTreeMap::new();
    for (name, c) in &now.services {
        let kind = cx.kinds.get(name).copied().unwrap_or(ServiceKind::Other);
        let entry = ledger.baseline(name, cx.session);
        let strict = match cx.mode {
            Mode::Strict => true,
            Mode::Running => ledger.outstanding(name).is_some(),
        };
        let running_until = (cx.mode == Mode::Running).then_some(now.taken_at.as_str());
        let mut sv = verdict::judge(Judge {
            service: name,
            kind,
            baseline: entry.as_ref().and_then(|e| {
                Some((
                    BaselineRef {
                        phase: e.phase,
                        time: e.time.clone(),
                        transition: e.transition.clone(),
                        guarded: e.phase == Phase::Pre,
                    },
                    e.census_of(name)?,
                    e.services.get(name),
                    e.project.as_str(),
                ))
            }),
            now: c,
            early: None,
            current_identity: cx.identities.get(name),
            current_project: cx.project,
            started_after_early: &[],
            strict,
            running_until,
            unclean_start: None,
        });
        if let Some(base) = &entry {
            // The data was there at the baseline and until the services started after it: a
            // snapshot from before that start can undo the loss.
            sv.restore_before = ledger
                .entries()
                .iter()
                .find(|e| {
                    e.time > base.time && e.phase != Phase::Pre && e.census_of(name).is_some()
                })
                .map(|e| e.time.clone());
            baselines.insert(name.clone(), base.clone());
        }
        v.services.insert(name.clone(), sv);
    }
    v.conclude();
    LedgerComparison {
        verdict: v,
        baselines,
    }
}

/// What `before` held that `now` lacks: databases, `database.schema.table`s and collections
/// (row and key counts are not compared). Empty when `now` holds everything `before` did.
pub fn missing_in(before: &ServiceCensus, now: &ServiceCensus) -> Vec<String> {
    let d = diff::compare(before, now);
    if d.not_verified.is_some() {
        return vec!["(the census could not be compared)".into()];
    }
    structural_items(&d)
}

/// The databases, tables and collections a diff lists as missing, one string each.
pub fn structural_items(d: &ServiceDiff) -> Vec<String> {
    let mut out: Vec<String> = d
        .missing_databases
        .iter()
        .map(|db| format!("database {db}"))
        .collect();
    for (db, ts) in &d.missing_tables {
        out.extend(ts.iter().map(|t| format!("{db}.{t}")));
    }
    out.extend(
        d.missing_collections
            .iter()
            .map(|c| format!("collection {c}")),
    );
    out
}

/// Whether `census` (a snapshot's) holds every database, table and collection that `missing`
/// lists as gone: a restore from it would bring them back. A loss of rows or keys only is
/// covered by any census of the same kind.
pub fn covers(census: &ServiceCensus, missing: &ServiceDiff) -> bool {
    match census {
        ServiceCensus::Postgres(pg) => {
            missing
                .missing_databases
                .iter()
                .all(|db| pg.databases.contains_key(db))
                && missing.missing_tables.iter().all(|(db, ts)| {
                    pg.databases
                        .get(db)
                        .is_some_and(|d| ts.iter().all(|t| d.tables.contains_key(t)))
                })
                && missing.missing_collections.is_empty()
        }
        ServiceCensus::Qdrant(q) => {
            missing
                .missing_collections
                .iter()
                .all(|c| q.collections.contains_key(c))
                && missing.missing_databases.is_empty()
                && missing.missing_tables.values().all(Vec::is_empty)
        }
        ServiceCensus::Redis(_) => structural_items(missing).is_empty(),
        ServiceCensus::Unavailable { .. } => false,
    }
}

/// Remembers losses found by `v` against `baselines` (their baseline stays pinned until
/// accepted) and forgets those whose data is back. A loss is only forgotten when `now` holds
/// every database, table and collection of the census it was found against; otherwise (a
/// restore from a snapshot that lacks them) the service stays a loss, naming what is still
/// missing. With `fresh_baseline` (a restore without an expected census) the current state
/// becomes the baseline, under the same condition. Returns notes for the user.
pub fn update_outstanding(
    l: &mut Ledger,
    v: &mut Verdict,
    now: &Census,
    baselines: &BTreeMap<String, Entry>,
    fresh_baseline: bool,
) -> Vec<String> {
    let mut notes = Vec::new();
    let transition = v.transition.clone();
    for (name, sv) in v.services.iter_mut() {
        match sv.status {
            Status::Loss => {
                if let Some(o) = l.outstanding(name) {
                    // What was inferred when it happened beats a vague cause found later.
                    let vague = sv.cause.as_ref().is_none_or(|c| {
                        matches!(
                            c.code,
                            super::cause::CauseCode::ChangedSinceCensus
                                | super::cause::CauseCode::DroppedWhileRunning
                        )
                    });
                    if let (true, Some(c)) = (vague, &o.cause) {
                        sv.cause = Some(c.clone());
                    }
                    if o.restore_before.is_some() {
                        sv.restore_before = o.restore_before.clone();
                    }
                    sv.warnings.push(format!(
                        "data of {name} was first found missing at {} (nodus {}) and that is not accepted yet; `nodus verify --accept` accepts the current state",
                        o.detected_at, o.detected_by
                    ));
                } else if let Some(base) = baselines.get(name) {
                    let summary = sv.diff.as_ref().map(|d| d.summary()).unwrap_or_default();
                    let before = sv
                        .restore_before
                        .clone()
                        .unwrap_or_else(|| v.restore_point_before.clone());
                    l.set_outstanding(
                        name,
                        base,
                        &transition,
                        &summary,
                        sv.cause.clone(),
                        Some(before),
                    );
                }
            }
            Status::Ok | Status::Baseline => {
                let Some(o) = l.outstanding(name) else {
                    continue;
                };
                let still = match (o.baseline.census_of(name), now.services.get(name)) {
                    (Some(b), Some(c)) => missing_in(b, c),
                    _ => Vec::new(),
                };
                if still.is_empty() {
                    let o = l.clear_outstanding(name).expect("outstanding");
                    notes.push(if fresh_baseline {
                        format!("{name}: restored; this census is the new baseline")
                    } else {
                        format!(
                            "{name}: the data found missing at {} (nodus {}) is back",
                            o.detected_at, o.detected_by
                        )
                    });
                } else {
                    still_missing(sv, o, name, &still, now);
                }
            }
            _ => {}
        }
    }
    notes
}

/// `sv` was judged against another census (a restored snapshot's) but `now` still lacks what
/// the outstanding loss `o` found missing: it stays a loss, compared with the census it was
/// found against.
fn still_missing(
    sv: &mut verdict::ServiceVerdict,
    o: &super::ledger::Outstanding,
    name: &str,
    still: &[String],
    now: &Census,
) {
    let (Some(base), Some(c)) = (o.baseline.census_of(name), now.services.get(name)) else {
        return;
    };
    sv.status = Status::Loss;
    sv.diff = Some(diff::compare(base, c));
    sv.baseline = Some(BaselineRef {
        phase: o.baseline.phase,
        time: o.baseline.time.clone(),
        transition: o.baseline.transition.clone(),
        guarded: o.baseline.phase == Phase::Pre,
    });
    sv.baseline_census = Some(base.clone());
    sv.cause = o.cause.clone();
    sv.restore_before = o.restore_before.clone();
    sv.warnings.push(format!(
        "still missing: {} (first found missing at {} by nodus {}); the loss stays outstanding until that data is back or `nodus verify --accept`",
        still.join(", "),
        o.detected_at,
        o.detected_by
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::census::{DbCensus, Persistence, PgCensus, TableCensus};
    use crate::guard::ledger::Entry;

    fn pg(tables: &[(&str, i64)]) -> ServiceCensus {
        let mut db = DbCensus::default();
        for (t, r) in tables {
            db.tables.insert(
                t.to_string(),
                TableCensus {
                    persistence: Persistence::Permanent,
                    rows: *r,
                    estimated: false,
                },
            );
        }
        ServiceCensus::Postgres(PgCensus {
            system_identifier: "1".into(),
            databases: [("app".to_string(), db)].into(),
        })
    }

    fn census(at: &str, c: ServiceCensus) -> Census {
        Census {
            taken_at: at.into(),
            services: [("db".to_string(), c)].into(),
        }
    }

    fn entry(session: &str, phase: Phase, c: Census) -> Entry {
        Entry {
            session: session.into(),
            transition: "up".into(),
            phase,
            time: c.taken_at.clone(),
            project: "p".into(),
            nodus_version: "t".into(),
            engine_id: None,
            volumes_removed: false,
            census: c,
            services: Default::default(),
        }
    }

    fn ledger(dir: &std::path::Path) -> Ledger {
        let (mut l, _) = Ledger::open(&dir.join("ledger.json"), "p").unwrap();
        l.push(entry(
            "s1",
            Phase::PostSettled,
            census(
                "2025-01-01T00:00:00Z",
                pg(&[("public.a", 10), ("public.b", 5), ("public.c", 7)]),
            ),
        ));
        l
    }

    fn cx<'a>(
        kinds: &'a BTreeMap<String, ServiceKind>,
        ids: &'a BTreeMap<String, ServiceIdentity>,
        mode: Mode,
    ) -> Context<'a> {
        Context {
            transition: "down",
            project: "p",
            kinds,
            identities: ids,
            session: Some("s2"),
            mode,
        }
    }

    #[test]
    fn running_mode_reports_vanished_tables_and_not_fallen_rows() {
        let d = tempfile::tempdir().unwrap();
        let l = ledger(d.path());
        let kinds = [("db".to_string(), ServiceKind::Postgres)].into();
        let ids = BTreeMap::new();
        // rows fell: informational, not a loss
        let now = census(
            "2025-01-01T01:00:00Z",
            pg(&[("public.a", 1), ("public.b", 5), ("public.c", 7)]),
        );
        let r = with_ledger(&l, &now, &cx(&kinds, &ids, Mode::Running));
        assert_eq!(r.verdict.verdict, Status::Ok);
        assert!(r.verdict.services["db"].info[0].contains("informational"));
        assert!(r.verdict.services["db"].warnings.is_empty());
        // ...but verify (strict) counts them
        let r = with_ledger(&l, &now, &cx(&kinds, &ids, Mode::Strict));
        assert_eq!(r.verdict.verdict, Status::Loss);

        // two tables vanished: a loss naming them and the window
        let now = census("2025-01-01T02:00:00Z", pg(&[("public.a", 1)]));
        let r = with_ledger(&l, &now, &cx(&kinds, &ids, Mode::Running));
        assert_eq!(r.verdict.verdict, Status::Loss);
        let sv = &r.verdict.services["db"];
        assert_eq!(
            sv.diff.as_ref().unwrap().missing_tables["app"],
            vec!["public.b".to_string(), "public.c".to_string()]
        );
        let cause = sv.cause.as_ref().unwrap();
        assert_eq!(
            cause.code,
            crate::guard::cause::CauseCode::DroppedWhileRunning
        );
        assert!(
            cause.summary.contains("2025-01-01T00:00:00Z")
                && cause.summary.contains("2025-01-01T02:00:00Z"),
            "{}",
            cause.summary
        );
        assert_eq!(r.baselines["db"].time, "2025-01-01T00:00:00Z");
    }

    #[test]
    fn an_outstanding_loss_stays_until_the_data_is_really_back() {
        let d = tempfile::tempdir().unwrap();
        let mut l = ledger(d.path());
        let kinds = [("db".to_string(), ServiceKind::Postgres)].into();
        let ids = BTreeMap::new();
        let now = census("2025-01-01T02:00:00Z", pg(&[("public.a", 10)]));
        let mut r = with_ledger(&l, &now, &cx(&kinds, &ids, Mode::Running));
        update_outstanding(&mut l, &mut r.verdict, &now, &r.baselines, false);
        assert!(l.outstanding("db").is_some());

        // a restore from a snapshot lacking public.c: judged Ok against the snapshot's census,
        // but the loss stays and says what is still missing
        let restored = census(
            "2025-01-01T03:00:00Z",
            pg(&[("public.a", 10), ("public.b", 5)]),
        );
        let mut v = Verdict::new("restore", Default::default(), "l".into(), "t".into());
        let mut ok = with_ledger(&l, &restored, &cx(&kinds, &ids, Mode::Running))
            .verdict
            .services
            .remove("db")
            .unwrap();
        ok.status = Status::Ok;
        v.services.insert("db".into(), ok);
        let notes = update_outstanding(&mut l, &mut v, &restored, &BTreeMap::new(), true);
        v.conclude();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(v.verdict, Status::Loss);
        assert!(l.outstanding("db").is_some());
        let w = v.services["db"].warnings.join("\n");
        assert!(w.contains("still missing: app.public.c"), "{w}");
        assert!(!w.contains("public.b"), "{w}");

        // the data back: cleared
        let back = census(
            "2025-01-01T04:00:00Z",
            pg(&[("public.a", 10), ("public.b", 5), ("public.c", 7)]),
        );
        let mut v = Verdict::new("restore", Default::default(), "l".into(), "t".into());
        let mut ok = with_ledger(&l, &back, &cx(&kinds, &ids, Mode::Running))
            .verdict
            .services
            .remove("db")
            .unwrap();
        assert_eq!(ok.status, Status::Ok, "strict against the pinned census");
        ok.status = Status::Ok;
        v.services.insert("db".into(), ok);
        let notes = update_outstanding(&mut l, &mut v, &back, &BTreeMap::new(), true);
        assert_eq!(notes, vec!["db: restored; this census is the new baseline"]);
        assert!(l.outstanding("db").is_none());
    }

    #[test]
    fn coverage_needs_every_missing_table() {
        let missing = ServiceDiff {
            missing_tables: [(
                "app".to_string(),
                vec!["public.b".to_string(), "public.c".to_string()],
            )]
            .into(),
            row_drops: [("app".to_string(), vec![("public.a".to_string(), 10, 1)])].into(),
            ..Default::default()
        };
        assert!(covers(
            &pg(&[("public.a", 0), ("public.b", 0), ("public.c", 0)]),
            &missing
        ));
        assert!(!covers(&pg(&[("public.a", 10), ("public.b", 5)]), &missing));
        assert!(!covers(
            &ServiceCensus::Unavailable { reason: "x".into() },
            &missing
        ));
        // rows only: any census of the service covers it
        let rows = ServiceDiff {
            row_drops: missing.row_drops.clone(),
            ..Default::default()
        };
        assert!(covers(&pg(&[]), &rows));
        assert_eq!(
            missing_in(
                &pg(&[("public.a", 1), ("public.b", 1)]),
                &pg(&[("public.a", 0)])
            ),
            vec!["app.public.b"]
        );
    }
}
