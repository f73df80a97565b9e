//! Comparing two censuses.

use std::collections::BTreeMap;

use serde::Serialize;

use super::census::{PgCensus, QdrantCensus, RedisCensus, ServiceCensus};

/// database → (`schema.table`, rows before, rows after).
pub type RowDrops = BTreeMap<String, Vec<(String, i64, i64)>>;

/// Differences for one service; `is_loss()` decides exit code 3.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ServiceDiff {
    pub missing_databases: Vec<String>,
    /// database → missing `schema.table`s (all of them).
    pub missing_tables: BTreeMap<String, Vec<String>>,
    /// database → (`schema.table`, rows before, rows after) where rows dropped.
    pub row_drops: RowDrops,
    pub new_databases: Vec<String>,
    pub new_tables: BTreeMap<String, Vec<String>>,
    pub system_identifier_changed: Option<(String, String)>,
    /// Redis dbs (`db0`) / qdrant collections (`collection docs`) that lost keys/points:
    /// (name, before, after).
    pub other_drops: Vec<(String, u64, u64)>,
    /// Qdrant collections that are gone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_collections: Vec<String>,
    /// The two censuses could not be compared (the service could not be counted now, or the kind
    /// changed): the reason. Not a loss, but nothing was verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_verified: Option<String>,
    /// Row counts were estimates on one side, so row drops were not checked.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rows_unchecked: bool,
}

impl ServiceDiff {
    pub fn is_loss(&self) -> bool {
        !self.missing_databases.is_empty()
            || self.missing_tables.values().any(|v| !v.is_empty())
            || self.row_drops.values().any(|v| !v.is_empty())
            || !self.other_drops.is_empty()
            || !self.missing_collections.is_empty()
    }

    /// Losses that are not plain row-count drops (databases, tables, collections, keys).
    pub fn is_structural_loss(&self) -> bool {
        !self.missing_databases.is_empty()
            || self.missing_tables.values().any(|v| !v.is_empty())
            || !self.missing_collections.is_empty()
    }

    pub fn missing_table_count(&self) -> usize {
        self.missing_tables.values().map(Vec::len).sum()
    }

    pub fn row_drop_count(&self) -> usize {
        self.row_drops.values().map(Vec::len).sum()
    }

    /// Everything that was there before and is gone or smaller, as (database, table) pairs for
    /// postgres (missing tables and row drops).
    pub fn lost_tables(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (db, ts) in &self.missing_tables {
            out.extend(ts.iter().map(|t| (db.clone(), t.clone())));
        }
        for (db, ts) in &self.row_drops {
            out.extend(ts.iter().map(|(t, _, _)| (db.clone(), t.clone())));
        }
        out
    }

    /// A short human summary: "2 tables missing in app, 1 table lost rows".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing_databases.is_empty() {
            parts.push(format!(
                "databases missing: {}",
                self.missing_databases.join(", ")
            ));
        }
        for (db, ts) in &self.missing_tables {
            if !ts.is_empty() {
                parts.push(format!(
                    "{} {} missing in {db}",
                    ts.len(),
                    if ts.len() == 1 { "table" } else { "tables" }
                ));
            }
        }
        let drops = self.row_drop_count();
        if drops > 0 {
            parts.push(format!(
                "{drops} {} lost rows",
                if drops == 1 { "table" } else { "tables" }
            ));
        }
        if !self.missing_collections.is_empty() {
            parts.push(format!(
                "collections missing: {}",
                self.missing_collections.join(", ")
            ));
        }
        for (name, b, a) in &self.other_drops {
            parts.push(format!("{name}: {b} → {a}"));
        }
        parts.join(", ")
    }
}

pub fn compare(before: &ServiceCensus, after: &ServiceCensus) -> ServiceDiff {
    match (before, after) {
        (ServiceCensus::Postgres(b), ServiceCensus::Postgres(a)) => compare_pg(b, a),
        (ServiceCensus::Redis(b), ServiceCensus::Redis(a)) => compare_redis(b, a),
        (ServiceCensus::Qdrant(b), ServiceCensus::Qdrant(a)) => compare_qdrant(b, a),
        (_, ServiceCensus::Unavailable { reason }) => ServiceDiff {
            not_verified: Some(format!("could not count it now: {reason}")),
            ..Default::default()
        },
        (ServiceCensus::Unavailable { reason }, _) => ServiceDiff {
            not_verified: Some(format!("no census to compare with ({reason})")),
            ..Default::default()
        },
        (b, a) => ServiceDiff {
            not_verified: Some(format!(
                "the service was {} and is now {}",
                b.kind_name(),
                a.kind_name()
            )),
            ..Default::default()
        },
    }
}

fn compare_pg(b: &PgCensus, a: &PgCensus) -> ServiceDiff {
    let mut d = ServiceDiff::default();
    if !b.system_identifier.is_empty()
        && !a.system_identifier.is_empty()
        && b.system_identifier != a.system_identifier
    {
        d.system_identifier_changed =
            Some((b.system_identifier.clone(), a.system_identifier.clone()));
    }
    for (name, bdb) in &b.databases {
        let Some(adb) = a.databases.get(name) else {
            d.missing_databases.push(name.clone());
            continue;
        };
        let mut missing = Vec::new();
        let mut drops = Vec::new();
        for (t, bt) in &bdb.tables {
            match adb.tables.get(t) {
                None => missing.push(t.clone()),
                Some(at) => {
                    if bt.estimated || at.estimated {
                        d.rows_unchecked = true;
                    } else if at.rows < bt.rows {
                        drops.push((t.clone(), bt.rows, at.rows));
                    }
                }
            }
        }
        let new: Vec<String> = adb
            .tables
            .keys()
            .filter(|t| !bdb.tables.contains_key(*t))
            .cloned()
            .collect();
        if !missing.is_empty() {
            d.missing_tables.insert(name.clone(), missing);
        }
        if !drops.is_empty() {
            d.row_drops.insert(name.clone(), drops);
        }
        if !new.is_empty() {
            d.new_tables.insert(name.clone(), new);
        }
    }
    d.new_databases = a
        .databases
        .keys()
        .filter(|n| !b.databases.contains_key(*n))
        .cloned()
        .collect();
    d
}

fn compare_redis(b: &RedisCensus, a: &RedisCensus) -> ServiceDiff {
    let mut d = ServiceDiff::default();
    for (db, &keys) in &b.keys {
        let volatile = b.expires.get(db).copied().unwrap_or(0);
        let now = a.keys.get(db).copied().unwrap_or(0);
        // Keys with a TTL may expire on their own; more keys than that going away is a loss.
        if now < keys.saturating_sub(volatile) {
            d.other_drops.push((format!("db{db}"), keys, now));
        }
    }
    d
}

fn compare_qdrant(b: &QdrantCensus, a: &QdrantCensus) -> ServiceDiff {
    let mut d = ServiceDiff::default();
    for (name, &points) in &b.collections {
        match a.collections.get(name) {
            None => d.missing_collections.push(name.clone()),
            Some(&now) if now < points => {
                d.other_drops
                    .push((format!("collection {name}"), points, now))
            }
            Some(_) => {}
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::census::{DbCensus, Persistence, TableCensus};

    fn table(rows: i64) -> TableCensus {
        TableCensus {
            persistence: Persistence::Permanent,
            rows,
            estimated: false,
        }
    }

    fn pg(id: &str, dbs: &[(&str, &[(&str, i64)])]) -> ServiceCensus {
        ServiceCensus::Postgres(PgCensus {
            system_identifier: id.into(),
            databases: dbs
                .iter()
                .map(|(db, ts)| {
                    (
                        db.to_string(),
                        DbCensus {
                            tables: ts.iter().map(|(t, r)| (t.to_string(), table(*r))).collect(),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
        })
    }

    #[test]
    fn identical_is_clean() {
        let c = pg(
            "1",
            &[("app", &[("public.users", 3), ("public.orders", 0)])],
        );
        let d = compare(&c, &c);
        assert!(!d.is_loss());
        assert_eq!(d, ServiceDiff::default());
    }

    #[test]
    fn missing_tables_are_all_listed() {
        let before = pg(
            "1",
            &[
                ("app", &[("public.a", 1), ("public.b", 2), ("public.c", 3)]),
                ("other", &[("public.x", 1)]),
            ],
        );
        let after = pg(
            "1",
            &[("app", &[("public.b", 2)]), ("other", &[("public.x", 1)])],
        );
        let d = compare(&before, &after);
        assert!(d.is_loss());
        assert!(d.is_structural_loss());
        assert_eq!(d.missing_tables["app"], vec!["public.a", "public.c"]);
        assert!(!d.missing_tables.contains_key("other"));
        assert_eq!(d.missing_table_count(), 2);
        assert_eq!(d.summary(), "2 tables missing in app");
    }

    #[test]
    fn missing_database_and_identifier_change() {
        let before = pg("1", &[("app", &[("public.a", 1)]), ("postgres", &[])]);
        let after = pg("2", &[("postgres", &[])]);
        let d = compare(&before, &after);
        assert_eq!(d.missing_databases, vec!["app"]);
        assert_eq!(d.system_identifier_changed, Some(("1".into(), "2".into())));
        assert!(d.is_loss());
    }

    #[test]
    fn row_drops_and_new_things() {
        let before = pg("1", &[("app", &[("public.a", 10), ("public.b", 5)])]);
        let after = pg(
            "1",
            &[
                ("app", &[("public.a", 4), ("public.b", 6), ("public.n", 1)]),
                ("new", &[]),
            ],
        );
        let d = compare(&before, &after);
        assert_eq!(d.row_drops["app"], vec![("public.a".to_string(), 10, 4)]);
        assert_eq!(d.new_tables["app"], vec!["public.n"]);
        assert_eq!(d.new_databases, vec!["new"]);
        assert!(d.is_loss());
        assert!(!d.is_structural_loss());
        assert_eq!(
            d.lost_tables(),
            vec![("app".to_string(), "public.a".to_string())]
        );
    }

    #[test]
    fn growth_only_is_not_loss() {
        let before = pg("1", &[("app", &[("public.a", 1)])]);
        let after = pg(
            "1",
            &[("app", &[("public.a", 100), ("public.b", 1)]), ("x", &[])],
        );
        assert!(!compare(&before, &after).is_loss());
    }

    #[test]
    fn estimates_do_not_report_row_drops() {
        let before = pg("1", &[("app", &[("public.a", 10)])]);
        let mut after = pg("1", &[("app", &[("public.a", 0)])]);
        if let ServiceCensus::Postgres(p) = &mut after {
            p.databases
                .get_mut("app")
                .unwrap()
                .tables
                .get_mut("public.a")
                .unwrap()
                .estimated = true;
        }
        let d = compare(&before, &after);
        assert!(!d.is_loss());
        assert!(d.rows_unchecked);
    }

    #[test]
    fn redis_ttl_keys_may_vanish_others_may_not() {
        let before = ServiceCensus::Redis(RedisCensus {
            keys: [(0, 10), (1, 5)].into(),
            expires: [(0, 4)].into(),
        });
        // 4 volatile keys expired in db0: fine.
        let after_ok = ServiceCensus::Redis(RedisCensus {
            keys: [(0, 6), (1, 5)].into(),
            expires: [].into(),
        });
        assert!(!compare(&before, &after_ok).is_loss());
        // db1 empty, db0 lost a persistent key.
        let after_bad = ServiceCensus::Redis(RedisCensus {
            keys: [(0, 5)].into(),
            expires: [].into(),
        });
        let d = compare(&before, &after_bad);
        assert_eq!(
            d.other_drops,
            vec![("db0".to_string(), 10, 5), ("db1".to_string(), 5, 0)]
        );
    }

    #[test]
    fn qdrant_collections() {
        let before = ServiceCensus::Qdrant(QdrantCensus {
            collections: [("docs".to_string(), 100), ("img".to_string(), 5)].into(),
        });
        let after = ServiceCensus::Qdrant(QdrantCensus {
            collections: [("docs".to_string(), 90)].into(),
        });
        let d = compare(&before, &after);
        assert_eq!(d.missing_collections, vec!["img"]);
        assert_eq!(
            d.other_drops,
            vec![("collection docs".to_string(), 100, 90)]
        );
        assert!(d.is_loss());
    }

    #[test]
    fn unavailable_is_not_verified_not_loss() {
        let before = pg("1", &[("app", &[("public.a", 1)])]);
        let after = ServiceCensus::Unavailable {
            reason: "not running".into(),
        };
        let d = compare(&before, &after);
        assert!(!d.is_loss());
        assert!(d.not_verified.unwrap().contains("not running"));
        let d = compare(&before, &ServiceCensus::Redis(RedisCensus::default()));
        assert!(d.not_verified.unwrap().contains("postgres"));
    }
}
