//! The live guard of `nodus watch`: two censuses of a running stack with no transition between
//! them. Tables, databases or collections that vanished are a loss at once; row counts move
//! while apps run and are only recorded. The comparison is the guard's own ([`diff::compare`]);
//! a loss is recorded in the ledger as outstanding, so `nodus verify` and the next transition
//! report it until `nodus verify --accept` or a restore.

use super::census::{Census, ServiceCensus};
use super::diff::{self, ServiceDiff};
use super::ledger::{Entry, Phase};
use super::GuardConfig;
use crate::output::Ui;

/// Services whose databases, tables or collections are in `before` and not in `now` (both
/// counted). The caller makes sure no transition happened in between.
pub fn vanished(before: &Census, now: &Census) -> Vec<(String, ServiceDiff)> {
    let mut out = Vec::new();
    for (name, b) in &before.services {
        let Some(n) = now.services.get(name) else {
            continue;
        };
        if !b.is_available() || !n.is_available() {
            continue;
        }
        let d = diff::compare(b, n);
        if d.is_structural_loss() {
            out.push((name.clone(), d));
        }
    }
    out
}

/// Total rows (or keys/points) per service, for the record.
pub fn rows(c: &Census) -> std::collections::BTreeMap<String, i64> {
    c.services
        .iter()
        .filter_map(|(n, s)| {
            let v = match s {
                ServiceCensus::Postgres(p) => p.databases.values().map(|d| d.rows()).sum(),
                ServiceCensus::Redis(r) => r.keys.values().map(|k| *k as i64).sum(),
                ServiceCensus::Qdrant(q) => q.collections.values().map(|p| *p as i64).sum(),
                ServiceCensus::Unavailable { .. } => return None,
            };
            Some((n.clone(), v))
        })
        .collect()
}

/// Records the losses as outstanding in the ledger, with `before` as the baseline (the state
/// before the loss) and `before.taken_at` as the time a snapshot must predate.
pub fn record(
    cfg: &GuardConfig,
    ui: &Ui,
    before: &Census,
    losses: &[(String, ServiceDiff)],
) -> anyhow::Result<()> {
    let mut ledger = super::open_ledger(&cfg.ledger_path(), &cfg.project, ui)?;
    let entry = Entry {
        session: super::new_session_id(),
        transition: "watch".into(),
        phase: Phase::PostSettled,
        time: before.taken_at.clone(),
        project: cfg.project.clone(),
        nodus_version: env!("CARGO_PKG_VERSION").to_string(),
        engine_id: None,
        volumes_removed: false,
        census: before.clone(),
        services: Default::default(),
    };
    for (service, d) in losses {
        ledger.set_outstanding(
            service,
            &entry,
            "watch (live guard)",
            &d.summary(),
            None,
            Some(before.taken_at.clone()),
        );
    }
    ledger.save()?;
    Ok(())
}

/// Whether `service` still has an outstanding loss in the ledger (until `nodus verify --accept`
/// or a restore clears it).
pub fn outstanding(cfg: &GuardConfig, service: &str) -> bool {
    super::ledger::Ledger::peek(&cfg.ledger_path())
        .is_some_and(|l| l.outstanding(service).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::census::{DbCensus, PgCensus, TableCensus};

    fn pg(tables: &[(&str, i64)]) -> ServiceCensus {
        let mut db = DbCensus::default();
        for (t, n) in tables {
            db.tables.insert(
                t.to_string(),
                TableCensus {
                    persistence: crate::guard::census::Persistence::Permanent,
                    rows: *n,
                    estimated: false,
                },
            );
        }
        let mut p = PgCensus::default();
        p.databases.insert("app".into(), db);
        ServiceCensus::Postgres(p)
    }

    fn census(s: ServiceCensus) -> Census {
        Census {
            taken_at: "2026-01-01T00:00:00Z".into(),
            services: [("db".to_string(), s)].into_iter().collect(),
        }
    }

    #[test]
    fn a_vanished_table_is_a_loss_and_fewer_rows_are_not() {
        let before = census(pg(&[("public.users", 10), ("public.orders", 5)]));
        let fewer_rows = census(pg(&[("public.users", 3), ("public.orders", 5)]));
        assert!(vanished(&before, &fewer_rows).is_empty());
        let dropped = census(pg(&[("public.users", 10)]));
        let v = vanished(&before, &dropped);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].1.lost_tables(),
            vec![("app".to_string(), "public.orders".to_string())]
        );
        let unavailable = census(ServiceCensus::Unavailable {
            reason: "down".into(),
        });
        assert!(vanished(&before, &unavailable).is_empty());
        assert_eq!(rows(&before)["db"], 15);
    }
}
