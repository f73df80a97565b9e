//! Choosing the snapshot to restore: the newest one of a service (taken before a time, holding
//! what a loss lacks). When that newest one cannot be used (its archive failed verification or is
//! gone), it is named beside the newest good one — never skipped silently for an older one.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::manifest::{Manifest, Reason};
use super::store::{SnapshotEntry, SnapshotStore};
use crate::output::Ui;

/// The snapshots of `service` that could be restored, newest first: readable manifest, not a
/// safety snapshot (those are restored by id only), taken at or before `before` (any time when
/// None) and accepted by `want`. Unusable ones (see [`unusable`]) are included.
pub fn candidates(
    snapshots_dir: &Path,
    service: &str,
    before: Option<DateTime<Utc>>,
    want: impl Fn(&Manifest) -> bool,
) -> Vec<SnapshotEntry> {
    let Ok(list) = SnapshotStore::at(snapshots_dir).list() else {
        return Vec::new();
    };
    list.into_iter()
        .rev()
        .filter(|e| {
            let Ok(m) = &e.manifest else { return false };
            m.service == service
                && m.reason != Reason::Safety
                && before.is_none_or(|b| e.created().is_some_and(|c| c <= b))
                && want(m)
        })
        .collect()
}

/// Why `e` cannot be restored, as far as is known without reading its archive: a verification
/// recorded a failure, or the archive file is gone.
pub fn unusable(e: &SnapshotEntry) -> Option<String> {
    if e.verified_bad() {
        let why = e
            .verification
            .as_ref()
            .and_then(|v| v.error.clone())
            .unwrap_or_else(|| "no reason recorded".into());
        return Some(format!("failed verification ({why})"));
    }
    if !e.data_path().is_file() {
        return Some(format!(
            "has no archive ({} is missing)",
            e.data_path().display()
        ));
    }
    None
}

/// The newest candidate and, when it cannot be used, why and which one is the newest good one.
#[derive(Debug, Clone, Default)]
pub struct Pick {
    /// The newest candidate, usable or not.
    pub newest: Option<SnapshotEntry>,
    /// Why `newest` cannot be used (None: it can).
    pub problem: Option<String>,
    /// The newest usable candidate (`newest` itself when it can be used).
    pub good: Option<SnapshotEntry>,
}

impl Pick {
    /// From candidates, newest first, judged by what is recorded (no archive is read).
    pub fn recorded(candidates: Vec<SnapshotEntry>) -> Pick {
        let mut it = candidates.into_iter();
        let Some(newest) = it.next() else {
            return Pick::default();
        };
        let problem = unusable(&newest);
        let good = if problem.is_none() {
            Some(newest.clone())
        } else {
            it.find(|e| unusable(e).is_none())
        };
        Pick {
            newest: Some(newest),
            problem,
            good,
        }
    }

    /// From candidates, newest first, verifying archives (and recording the outcome) until one
    /// passes: the newest good one is known to pass verification now.
    pub async fn verified(store: &SnapshotStore, candidates: Vec<SnapshotEntry>, ui: &Ui) -> Pick {
        let mut pick = Pick::default();
        for e in candidates {
            let problem = match unusable(&e) {
                Some(p) => Some(p),
                None => {
                    let total = e.manifest.as_ref().ok().map(|m| m.archive.compressed_bytes);
                    let pb = ui.bytes_progress(format!("verify {}", e.id), total);
                    match super::verify::verify_entry(store, &e, pb).await {
                        Ok(_) => None,
                        Err(err) => Some(format!("failed verification ({err})")),
                    }
                }
            };
            let first = pick.newest.is_none();
            if first {
                pick.newest = Some(e.clone());
                pick.problem = problem.clone();
            }
            if problem.is_none() {
                pick.good = Some(e);
                break;
            }
        }
        pick
    }

    /// When the newest cannot be used: one sentence naming it, why, and the newest good one
    /// with `restore_command(id)` (or that there is none). `what` names the candidates ("snapshot
    /// of db", "snapshot of db holding the missing tables").
    pub fn refusal(&self, what: &str, restore_command: impl Fn(&str) -> String) -> Option<String> {
        let newest = self.newest.as_ref()?;
        let problem = self.problem.as_ref()?;
        let good = match &self.good {
            Some(g) => format!(
                "the newest good one is {} (taken {}); to restore it, run: {}",
                g.id,
                taken(g),
                restore_command(&g.id)
            ),
            None => "no older one is usable".to_string(),
        };
        Some(format!(
            "the newest {what}, {} (taken {}), {problem}; it is not skipped silently: {good}",
            newest.id,
            taken(newest)
        ))
    }
}

/// "2025-01-02 03:04:05 UTC".
pub fn taken(e: &SnapshotEntry) -> String {
    e.created()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "at an unknown time".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::manifest;
    use crate::snapshot::store::write_new_file;

    fn store_with(ids: &[(&str, &str)]) -> (tempfile::TempDir, SnapshotStore) {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(d.path()).unwrap();
        for (id, created) in ids {
            let mut m = manifest::tests::sample(id);
            m.created_at = created.to_string();
            let p = store.begin(id).unwrap();
            write_new_file(&p.data_path(), b"x").unwrap();
            p.commit(&m).unwrap();
        }
        (d, store)
    }

    fn bad(store: &SnapshotStore, id: &str) {
        store
            .write_verification(
                id,
                &manifest::Verification {
                    ok: false,
                    verified_at: "2025-01-05T00:00:00Z".into(),
                    sha256: "x".into(),
                    entries: 0,
                    error: Some("checksum mismatch".into()),
                    nodus_version: "t".into(),
                },
            )
            .unwrap();
    }

    #[test]
    fn a_bad_newest_snapshot_is_named_with_the_newest_good_one() {
        let (d, store) = store_with(&[
            ("20250101T000000Z-db-aaaaa1", "2025-01-01T00:00:00Z"),
            ("20250102T000000Z-db-aaaaa2", "2025-01-02T00:00:00Z"),
            ("20250103T000000Z-db-aaaaa3", "2025-01-03T00:00:00Z"),
        ]);
        let service = manifest::tests::sample("x").service;
        let pick = Pick::recorded(candidates(d.path(), &service, None, |_| true));
        assert!(pick.problem.is_none());
        assert_eq!(pick.good.unwrap().id, "20250103T000000Z-db-aaaaa3");

        bad(&store, "20250103T000000Z-db-aaaaa3");
        let pick = Pick::recorded(candidates(d.path(), &service, None, |_| true));
        assert_eq!(
            pick.newest.as_ref().unwrap().id,
            "20250103T000000Z-db-aaaaa3"
        );
        assert_eq!(pick.good.as_ref().unwrap().id, "20250102T000000Z-db-aaaaa2");
        let msg = pick
            .refusal("snapshot of db", |id| {
                format!("nodus snapshot restore {id}")
            })
            .unwrap();
        assert!(
            msg.contains("20250103T000000Z-db-aaaaa3")
                && msg.contains("checksum mismatch")
                && msg.contains("run: nodus snapshot restore 20250102T000000Z-db-aaaaa2"),
            "{msg}"
        );

        // a filter (holding the missing tables) and a time limit narrow the candidates
        let pick = Pick::recorded(candidates(d.path(), &service, None, |m| {
            m.id != "20250102T000000Z-db-aaaaa2"
        }));
        assert_eq!(pick.good.unwrap().id, "20250101T000000Z-db-aaaaa1");
        let before = chrono::DateTime::parse_from_rfc3339("2025-01-02T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let pick = Pick::recorded(candidates(d.path(), &service, Some(before), |_| true));
        assert!(pick.problem.is_none());
        assert_eq!(pick.newest.unwrap().id, "20250102T000000Z-db-aaaaa2");

        // all bad: said so
        bad(&store, "20250102T000000Z-db-aaaaa2");
        bad(&store, "20250101T000000Z-db-aaaaa1");
        let pick = Pick::recorded(candidates(d.path(), &service, None, |_| true));
        assert!(pick.good.is_none());
        assert!(pick
            .refusal("snapshot of db", |id| id.to_string())
            .unwrap()
            .contains("no older one is usable"));
    }
}
