//! Why data went missing: inferred from the census diffs, the cluster's system identifier, the
//! volume's identity and the moment the loss first showed up. Pure.

use serde::{Deserialize, Serialize};

use super::census::{Persistence, ServiceCensus};
use super::diff::ServiceDiff;
use super::ledger::{Phase, ServiceIdentity};
use crate::lifecycle::StopEvidence;
use crate::stack::ServiceKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseCode {
    /// New cluster; the data dir is not on a named volume (anonymous volume / container fs).
    DataDirOffVolume,
    /// New cluster because the project name changed and with it the volume name.
    ProjectRenamed,
    /// The data volume is another one (renamed in the stack, or replaced).
    VolumeReplaced,
    /// Same volume name, created after the last census: removed and recreated.
    VolumeRecreated,
    /// New cluster, nothing else known.
    NewCluster,
    /// UNLOGGED tables emptied by crash recovery after postgres was killed.
    UnloggedCrashRecovery,
    /// Gone between the early census and the settled one: the starting services did it.
    DroppedDuringStartup,
    /// Already gone right after start, same cluster and volume: done while the stack was down.
    DroppedWhileDown,
    /// Redis came back without keys on the same volume.
    RedisNotPersisted,
    /// The baseline was taken while the stack ran (it was stopped outside nodus, or this is
    /// `verify`): the services' own writes may explain it.
    ChangedSinceCensus,
    /// Gone between the last census and a census taken while the stack still ran (before a stop,
    /// `verify`): dropped while the stack ran, by its services or something outside nodus.
    DroppedWhileRunning,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    pub code: CauseCode,
    /// One sentence.
    pub summary: String,
    /// Supporting facts and what to do.
    pub details: Vec<String>,
    /// The data volume concerned, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// What brings the data back when it is not a restore (a renamed project: the old name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// What is known about the census the current one is compared with.
#[derive(Debug, Clone, Copy)]
pub struct BaselineFacts<'a> {
    pub phase: Phase,
    pub time: &'a str,
    pub transition: &'a str,
    pub project: &'a str,
    pub identity: Option<&'a ServiceIdentity>,
    pub census: Option<&'a ServiceCensus>,
}

#[derive(Debug, Clone, Copy)]
pub struct CauseInput<'a> {
    pub service: &'a str,
    pub kind: ServiceKind,
    /// The final comparison (settled census, or the census of `verify`).
    pub diff: &'a ServiceDiff,
    /// The comparison right after the service became ready (None when there was none).
    pub early: Option<&'a ServiceDiff>,
    pub baseline: BaselineFacts<'a>,
    pub current: Option<&'a ServiceIdentity>,
    pub current_project: &'a str,
    /// Services started after this service's early census (its dependents).
    pub started_after_early: &'a [String],
    /// The current census was taken while the stack still ran (before a stop, `verify`): its
    /// time, the end of the window in which the data went missing.
    pub running_until: Option<&'a str>,
    /// Postgres was found stopped without a clean shutdown and started in this transition.
    pub unclean_start: Option<&'a StopEvidence>,
}

fn newer(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => match (
            chrono::DateTime::parse_from_rfc3339(a),
            chrono::DateTime::parse_from_rfc3339(b),
        ) {
            (Ok(a), Ok(b)) => a > b,
            _ => false,
        },
        _ => false,
    }
}

fn off_volume(id: &ServiceIdentity) -> Option<String> {
    match &id.mount {
        None => Some(format!(
            "{} is in the container's own filesystem (no volume is mounted there): every new container starts empty",
            id.data_dir
        )),
        Some(m) if m.anonymous => Some(format!(
            "{} is on an anonymous volume ({}): every new container gets a new, empty one",
            id.data_dir,
            short(&m.source)
        )),
        Some(_) if id.volume_key.is_none() && id.volume.is_none() => Some(format!(
            "{} is not on a named volume of the stack",
            id.data_dir
        )),
        _ => None,
    }
}

fn short(s: &str) -> &str {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        &s[..12]
    } else {
        s
    }
}

/// The most likely cause of a loss. Call only when `input.diff` (or `input.early`) is a loss or
/// the system identifier changed.
pub fn infer(input: &CauseInput) -> Cause {
    let b = &input.baseline;
    let id_change = input.diff.system_identifier_changed.as_ref().or(input
        .early
        .and_then(|e| e.system_identifier_changed.as_ref()));
    let cur = input.current;
    let old = b.identity;
    let old_vol = old.and_then(|i| i.volume.as_ref());
    let cur_vol = cur.and_then(|i| i.volume.as_ref());
    let mut details = Vec::new();
    if let Some((was, now)) = id_change {
        details.push(format!("system identifier {was} → {now}"));
    }
    if let Some(ev) = old.and_then(|i| i.stop_evidence.as_ref()) {
        if ev.killed || ev.oom_killed {
            details.push(format!(
                "when it stopped last, {} was {} (exit {})",
                input.service,
                if ev.oom_killed {
                    "OOM-killed"
                } else {
                    "killed"
                },
                ev.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "?".into())
            ));
        }
    }

    // 1. Where the data lives changed.
    let volume_story = || -> Option<(CauseCode, String)> {
        if let Some(c) = cur {
            if let Some(msg) = off_volume(c) {
                return Some((CauseCode::DataDirOffVolume, msg));
            }
        }
        match (old_vol, cur_vol) {
            (Some(o), Some(n)) if o.name != n.name => {
                if b.project != input.current_project {
                    Some((
                        CauseCode::ProjectRenamed,
                        format!(
                            "the project was renamed (project name changed from {} to {}), so volume {} was used instead of {}; the old data is still in volume {} — run with `-p {}` (or set `name: {}` in the stack) to use it again",
                            b.project, input.current_project, n.name, o.name, o.name, b.project, b.project
                        ),
                    ))
                } else {
                    Some((
                        CauseCode::VolumeReplaced,
                        format!(
                            "the data volume is now {} instead of {} (renamed in the stack, or replaced); the old volume {} may still hold the data",
                            n.name, o.name, o.name
                        ),
                    ))
                }
            }
            _ => None,
        }
    };

    // A renamed project: the old name brings the old volume back (no restore needed).
    let fix = match (old_vol, cur_vol) {
        (Some(o), Some(n))
            if o.name != n.name
                && b.project != input.current_project
                && cur.is_none_or(|c| off_volume(c).is_none()) =>
        {
            Some(format!(
                "run with `-p {}` (or set `name: {}` in the stack) to use the data in volume {} again",
                b.project, b.project, o.name
            ))
        }
        _ => None,
    };

    if id_change.is_some() {
        let (code, msg) = volume_story().unwrap_or_else(|| match cur_vol {
            // The data dir is on this named volume (checked above), yet the cluster is new: the
            // volume's contents are not what they were. The engine's CreatedAt cannot tell a
            // recreated volume from a wiped one (for the local driver it follows the data dir's
            // modification time), so both are named.
            Some(n) if old_vol.is_some_and(|o| o.name == n.name) => (
                CauseCode::VolumeRecreated,
                format!(
                    "volume {} was removed and recreated, or its contents were wiped, since the last census",
                    n.name
                ),
            ),
            _ => (
                CauseCode::NewCluster,
                "nodus has no record of the volume it was on before".to_string(),
            ),
        });
        return Cause {
            code,
            summary: format!("a new cluster was initialised: {msg}"),
            details,
            volume: cur_vol.map(|v| v.name.clone()),
            fix,
        };
    }

    if let Some((code, msg)) = volume_story() {
        return Cause {
            code,
            summary: msg,
            details,
            volume: cur_vol.map(|v| v.name.clone()),
            fix,
        };
    }
    if let (Some(o), Some(n)) = (old_vol, cur_vol) {
        if newer(n.created_at.as_deref(), o.created_at.as_deref())
            && input.kind != ServiceKind::Postgres
        {
            details.push(format!(
                "volume {} reports a newer creation time ({} → {}); it may have been recreated",
                n.name,
                o.created_at.as_deref().unwrap_or("?"),
                n.created_at.as_deref().unwrap_or("?")
            ));
        }
    }

    // 2. Same cluster, same volume: when did it go?
    if input.kind == ServiceKind::Postgres && unlogged_crash(input) {
        if let Some(ev) = input.unclean_start {
            details.push(format!(
                "{} was found stopped without a clean shutdown before this start ({}), so postgres ran crash recovery",
                input.service,
                describe_unclean(ev)
            ));
        }
        return Cause {
            code: CauseCode::UnloggedCrashRecovery,
            summary: "the lost rows were in UNLOGGED tables, which crash recovery empties: postgres did not shut down cleanly (unclean shutdown)".into(),
            details: {
                details.push("UNLOGGED tables never survive a crash: `ALTER TABLE … SET LOGGED` if their rows matter, and stop postgres with nodus (SIGINT, a long enough grace period) rather than `docker kill`".into());
                details
            },
            volume: None,
            fix: None,
        };
    }
    if let Some(now) = input.running_until {
        return Cause {
            code: CauseCode::DroppedWhileRunning,
            summary: format!(
                "removed while the stack was running, between the census {} at {} (nodus {}) and the census at {now}: by the services themselves or by something outside nodus (a manual psql or redis-cli, another client)",
                b.phase.describe(),
                b.time,
                b.transition
            ),
            details,
            volume: None,
            fix: None,
        };
    }
    let early_loss = input.early.map(|e| e.is_loss());
    match (early_loss, b.phase) {
        (Some(false), _) => {
            let who = if input.started_after_early.is_empty() {
                "while the stack settled".to_string()
            } else {
                format!("by {}", input.started_after_early.join(", "))
            };
            Cause {
                code: CauseCode::DroppedDuringStartup,
                summary: format!(
                    "dropped by SQL while the services started ({who}): it was all there right after {} became ready",
                    input.service
                ),
                details,
                volume: None,
                fix: None,
            }
        }
        (Some(true), Phase::Pre) if input.kind == ServiceKind::Redis => Cause {
            code: CauseCode::RedisNotPersisted,
            summary: "redis came back without the keys on the same volume: persistence (appendonly / save) is off or failed, or they were flushed while it was down".into(),
            details,
            volume: None,
            fix: None,
        },
        (Some(true), Phase::Pre) => Cause {
            code: CauseCode::DroppedWhileDown,
            summary: "dropped while the stack was down (by something outside nodus: a container on the volume, a manual psql), or the volume's files were changed: it was already gone right after start, with the same cluster and volume".into(),
            details,
            volume: None,
            fix: None,
        },
        _ => Cause {
            code: CauseCode::ChangedSinceCensus,
            summary: format!(
                "changed since the census {} at {} ({}); the services ran after it, so their own SQL (or something outside nodus) may have removed it",
                b.phase.describe(),
                b.time,
                b.transition
            ),
            details,
            volume: None,
            fix: None,
        },
    }
}

/// How an unclean stop showed itself, for a cause's details.
fn describe_unclean(ev: &StopEvidence) -> String {
    if ev.oom_killed {
        "OOM-killed".into()
    } else if ev.killed {
        format!(
            "killed, exit {}",
            ev.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "?".into())
        )
    } else {
        format!(
            "exit {}, no clean shutdown in its log",
            ev.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "?".into())
        )
    }
}

/// All postgres losses are row drops in tables that were UNLOGGED, and the last stop was not
/// clean (by the baseline's stop evidence, or found so before this start).
fn unlogged_crash(input: &CauseInput) -> bool {
    let Some(ServiceCensus::Postgres(pg)) = input.baseline.census else {
        return false;
    };
    let d = input.diff;
    if d.is_structural_loss() || d.row_drops.values().all(|v| v.is_empty()) {
        return false;
    }
    let all_unlogged = d.row_drops.iter().all(|(db, drops)| {
        drops.iter().all(|(t, _, _)| {
            pg.databases
                .get(db)
                .and_then(|x| x.tables.get(t))
                .is_some_and(|t| t.persistence == Persistence::Unlogged)
        })
    });
    let unclean = input
        .baseline
        .identity
        .and_then(|i| i.stop_evidence.as_ref())
        .is_some_and(|e| e.killed || e.oom_killed || e.clean_shutdown == Some(false))
        || input.unclean_start.is_some();
    all_unlogged && unclean
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MountKind;
    use crate::guard::census::{DbCensus, PgCensus, TableCensus};
    use crate::guard::ledger::{MountIdentity, VolumeIdentity};
    use crate::lifecycle::StopEvidence;

    fn ident(volume: &str, created: &str) -> ServiceIdentity {
        ServiceIdentity {
            kind: ServiceKind::Postgres,
            container: Some("p-db-1".into()),
            container_id: None,
            started_at: None,
            data_dir: "/var/lib/postgresql/data".into(),
            volume_key: Some("db_data".into()),
            mount: Some(MountIdentity {
                kind: MountKind::Volume,
                source: volume.into(),
                target: "/var/lib/postgresql/data".into(),
                anonymous: false,
            }),
            volume: Some(VolumeIdentity {
                name: volume.into(),
                created_at: Some(created.into()),
                labels: Default::default(),
            }),
            system_identifier: Some("1".into()),
            stop_evidence: None,
        }
    }

    fn missing_table() -> ServiceDiff {
        ServiceDiff {
            missing_tables: [("app".to_string(), vec!["public.users".to_string()])].into(),
            ..Default::default()
        }
    }

    fn id_changed() -> ServiceDiff {
        ServiceDiff {
            system_identifier_changed: Some(("1".into(), "2".into())),
            missing_databases: vec!["app".into()],
            ..Default::default()
        }
    }

    struct Case {
        diff: ServiceDiff,
        early: Option<ServiceDiff>,
        phase: Phase,
        old: Option<ServiceIdentity>,
        cur: Option<ServiceIdentity>,
        old_project: &'static str,
        census: Option<ServiceCensus>,
        kind: ServiceKind,
        started: Vec<String>,
        running_until: Option<&'static str>,
        unclean_start: Option<StopEvidence>,
    }

    impl Case {
        fn new(diff: ServiceDiff) -> Case {
            Case {
                early: Some(diff.clone()),
                diff,
                phase: Phase::Pre,
                old: Some(ident("p_db_data", "2025-01-01T00:00:00Z")),
                cur: Some(ident("p_db_data", "2025-01-01T00:00:00Z")),
                old_project: "p",
                census: None,
                kind: ServiceKind::Postgres,
                started: vec![],
                running_until: None,
                unclean_start: None,
            }
        }
        fn run(&self) -> Cause {
            infer(&CauseInput {
                service: "db",
                kind: self.kind,
                diff: &self.diff,
                early: self.early.as_ref(),
                baseline: BaselineFacts {
                    phase: self.phase,
                    time: "2025-01-02T00:00:00Z",
                    transition: "down",
                    project: self.old_project,
                    identity: self.old.as_ref(),
                    census: self.census.as_ref(),
                },
                current: self.cur.as_ref(),
                current_project: "p",
                started_after_early: &self.started,
                running_until: self.running_until,
                unclean_start: self.unclean_start.as_ref(),
            })
        }
    }

    #[test]
    fn new_cluster_volume_recreated() {
        let mut c = Case::new(id_changed());
        c.cur = Some(ident("p_db_data", "2025-03-01T00:00:00.123456789Z"));
        let cause = c.run();
        assert_eq!(cause.code, CauseCode::VolumeRecreated);
        assert!(
            cause.summary.starts_with("a new cluster was initialised"),
            "{}",
            cause.summary
        );
        assert!(cause.summary.contains("removed and recreated"));
        assert!(cause.details[0].contains("1 → 2"));
    }

    #[test]
    fn new_cluster_project_renamed() {
        let mut c = Case::new(id_changed());
        c.old_project = "oldname";
        c.old = Some(ident("oldname_db_data", "2025-01-01T00:00:00Z"));
        let cause = c.run();
        assert_eq!(cause.code, CauseCode::ProjectRenamed);
        assert!(
            cause.summary.contains("from oldname to p"),
            "{}",
            cause.summary
        );
        assert!(cause.summary.contains("-p oldname"));
    }

    #[test]
    fn new_cluster_volume_replaced() {
        let mut c = Case::new(id_changed());
        c.old = Some(ident("p_pgdata", "2025-01-01T00:00:00Z"));
        assert_eq!(c.run().code, CauseCode::VolumeReplaced);
    }

    #[test]
    fn new_cluster_on_the_same_volume_means_recreated_or_wiped() {
        // The engine's CreatedAt may not move (or move for other reasons): same answer.
        let c = Case::new(id_changed());
        let cause = c.run();
        assert_eq!(cause.code, CauseCode::VolumeRecreated);
        assert!(
            cause
                .summary
                .contains("recreated, or its contents were wiped"),
            "{}",
            cause.summary
        );
        assert_eq!(cause.volume.as_deref(), Some("p_db_data"));
    }

    #[test]
    fn newer_created_at_alone_is_not_a_cause_for_postgres() {
        // The local driver's CreatedAt follows the data dir's mtime: any start moves it.
        let mut c = Case::new(missing_table());
        c.cur = Some(ident("p_db_data", "2025-03-01T00:00:00Z"));
        assert_eq!(c.run().code, CauseCode::DroppedWhileDown);
    }

    #[test]
    fn new_cluster_anonymous_volume() {
        let mut c = Case::new(id_changed());
        let mut cur = ident(&"a".repeat(64), "2025-03-01T00:00:00Z");
        cur.volume_key = None;
        cur.mount.as_mut().unwrap().anonymous = true;
        c.cur = Some(cur);
        let cause = c.run();
        assert_eq!(cause.code, CauseCode::DataDirOffVolume);
        assert!(
            cause.summary.contains("anonymous volume (aaaaaaaaaaaa)"),
            "{}",
            cause.summary
        );
    }

    #[test]
    fn new_cluster_container_filesystem() {
        let mut c = Case::new(id_changed());
        let mut cur = ident("x", "2025-03-01T00:00:00Z");
        cur.mount = None;
        cur.volume = None;
        c.cur = Some(cur);
        assert_eq!(c.run().code, CauseCode::DataDirOffVolume);
    }

    #[test]
    fn new_cluster_without_history() {
        let mut c = Case::new(id_changed());
        c.old = None;
        assert_eq!(c.run().code, CauseCode::NewCluster);
    }

    #[test]
    fn same_cluster_dropped_during_startup_names_dependents() {
        let mut c = Case::new(missing_table());
        c.early = Some(ServiceDiff::default());
        c.started = vec!["migrate".into(), "web".into()];
        let cause = c.run();
        assert_eq!(cause.code, CauseCode::DroppedDuringStartup);
        assert!(
            cause.summary.contains("by migrate, web"),
            "{}",
            cause.summary
        );
    }

    #[test]
    fn same_cluster_already_gone_at_start_means_while_down() {
        let cause = Case::new(missing_table()).run();
        assert_eq!(cause.code, CauseCode::DroppedWhileDown);
        assert!(cause.summary.contains("while the stack was down"));
    }

    #[test]
    fn unguarded_baseline_is_reported_as_changed_since() {
        let mut c = Case::new(missing_table());
        c.phase = Phase::PostSettled;
        assert_eq!(c.run().code, CauseCode::ChangedSinceCensus);
        // verify: no early census
        let mut c = Case::new(missing_table());
        c.early = None;
        c.phase = Phase::Accepted;
        let cause = c.run();
        assert_eq!(cause.code, CauseCode::ChangedSinceCensus);
        assert!(cause.summary.contains("verify --accept"));
    }

    #[test]
    fn redis_keys_gone_on_the_same_volume() {
        let mut c = Case::new(ServiceDiff {
            other_drops: vec![("db0".into(), 10, 0)],
            ..Default::default()
        });
        c.kind = ServiceKind::Redis;
        c.cur = Some(ident("p_db_data", "2025-02-01T00:00:00Z"));
        let cause = c.run();
        assert_eq!(cause.code, CauseCode::RedisNotPersisted);
        assert!(
            cause
                .details
                .iter()
                .any(|d| d.contains("may have been recreated")),
            "{:?}",
            cause.details
        );
        c.cur = c.old.clone();
        let cause = c.run();
        assert_eq!(cause.code, CauseCode::RedisNotPersisted);
        assert!(cause.details.is_empty());
    }

    #[test]
    fn unlogged_tables_after_a_kill() {
        let drops = ServiceDiff {
            row_drops: [("app".to_string(), vec![("public.cache".to_string(), 10, 0)])].into(),
            ..Default::default()
        };
        let mut c = Case::new(drops);
        let mut db = DbCensus::default();
        db.tables.insert(
            "public.cache".into(),
            TableCensus {
                persistence: Persistence::Unlogged,
                rows: 10,
                estimated: false,
            },
        );
        c.census = Some(ServiceCensus::Postgres(PgCensus {
            system_identifier: "1".into(),
            databases: [("app".to_string(), db)].into(),
        }));
        // clean stop: not the cause
        assert_eq!(c.run().code, CauseCode::DroppedWhileDown);
        let mut old = c.old.clone().unwrap();
        old.stop_evidence = Some(StopEvidence {
            exit_code: Some(137),
            killed: true,
            ..Default::default()
        });
        c.old = Some(old);
        let cause = c.run();
        assert_eq!(cause.code, CauseCode::UnloggedCrashRecovery);
        assert!(
            cause
                .details
                .iter()
                .any(|d| d.contains("killed (exit 137)")),
            "{:?}",
            cause.details
        );

        // killed outside nodus: the baseline (a census after the last start) has no stop
        // evidence; the unclean shutdown was found before this start
        let census = c.census.clone();
        let mut c = Case::new(c.diff.clone());
        c.census = census;
        c.phase = Phase::PostSettled;
        assert_eq!(c.run().code, CauseCode::ChangedSinceCensus);
        c.unclean_start = Some(StopEvidence {
            exit_code: Some(137),
            killed: true,
            ..Default::default()
        });
        let cause = c.run();
        assert_eq!(cause.code, CauseCode::UnloggedCrashRecovery);
        assert!(
            cause.summary.contains("unclean shutdown"),
            "{}",
            cause.summary
        );
        assert!(
            cause
                .details
                .iter()
                .any(|d| d.contains("found stopped without a clean shutdown")
                    && d.contains("killed, exit 137")),
            "{:?}",
            cause.details
        );
    }
}
