//! The guard's conclusion for one command: per service what was compared with what, what is
//! missing, why, and how to put it back; printed for humans (stderr) or as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use super::cause::{self, Cause, CauseInput};
use super::census::{plural, Persistence, ServiceCensus, Totals};
use super::diff::{RowDrops, ServiceDiff};
use super::ledger::{Phase, ServiceIdentity};
use crate::lifecycle::StopEvidence;
use crate::output::Ui;
use crate::stack::ServiceKind;

/// How the guard's note on a stack's first census starts (the verdict line says it instead).
const FIRST_CENSUS: &str = "first census of this stack";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Compared, nothing lost.
    Ok,
    /// Data went missing.
    Loss,
    /// Nothing to compare with: this census is the new baseline.
    Baseline,
    /// Only recorded (before stopping).
    Recorded,
    /// Could not be compared (the service could not be counted).
    Unverified,
    /// `verify --accept`: recorded as the new baseline.
    Accepted,
}

/// The census a service was compared with.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineRef {
    pub phase: Phase,
    pub time: String,
    pub transition: String,
    /// Taken right before nodus stopped the service (or the expected census of a restore): every
    /// difference counts. Otherwise the service ran after it, and plain row drops are only
    /// warnings (except for `verify`).
    pub guarded: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceVerdict {
    pub kind: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<ServiceDiff>,
    /// Comparison right after the service became ready (before its dependents started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_diff: Option<ServiceDiff>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_command: Option<String>,
    /// For messages (sizes of missing databases).
    #[serde(skip)]
    pub baseline_census: Option<ServiceCensus>,
    /// Overrides [`Verdict::restore_point_before`] for this service (a loss found earlier: the
    /// snapshot must predate that).
    #[serde(skip)]
    pub restore_before: Option<String>,
    /// Differences that are not a loss, said once (row counts that fell while the stack ran).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub info: Vec<String>,
    /// Why the restore command is missing or is not the newest snapshot (no snapshot holds every
    /// missing table; the newest one failed verification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_note: Option<String>,
}

/// What [`Verdict::fill_restore`]'s lookup found for one lost service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreHint {
    /// The exact command that puts the data back.
    pub command: Option<String>,
    /// Said beside it (or instead of it).
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub verdict: Status,
    /// `up`, `down`, ..., `verify`.
    pub transition: String,
    pub totals: Totals,
    pub services: BTreeMap<String, ServiceVerdict>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub restore_command: Option<String>,
    pub ledger: String,
    /// Snapshots taken before this moment predate the loss window (the restore hint looks for
    /// the latest one before it).
    #[serde(skip)]
    pub restore_point_before: String,
}

/// Everything needed to judge one service.
pub struct Judge<'a> {
    pub service: &'a str,
    pub kind: ServiceKind,
    pub baseline: Option<(
        BaselineRef,
        &'a ServiceCensus,
        Option<&'a ServiceIdentity>,
        &'a str,
    )>,
    pub now: &'a ServiceCensus,
    pub early: Option<ServiceDiff>,
    pub current_identity: Option<&'a ServiceIdentity>,
    pub current_project: &'a str,
    pub started_after_early: &'a [String],
    /// `verify`: every difference is a loss, whatever the baseline.
    pub strict: bool,
    /// The census `now` was taken while the stack still ran (before a stop, `verify`, a live
    /// guard), at this time: the services ran since the baseline, so vanished databases, tables
    /// and collections are a loss and fallen row counts are informational (unless `strict`).
    pub running_until: Option<&'a str>,
    /// Postgres was found stopped without a clean shutdown (killed outside nodus, crashed) and
    /// started again in this transition: crash recovery ran, which empties UNLOGGED tables.
    pub unclean_start: Option<&'a StopEvidence>,
}

/// The data volume is another one than at the baseline (a renamed project, a replaced volume):
/// whatever is missing is in the other volume, not removed by the services.
fn volume_changed(before: Option<&ServiceIdentity>, now: Option<&ServiceIdentity>) -> bool {
    match (
        before.and_then(|i| i.volume.as_ref()),
        now.and_then(|i| i.volume.as_ref()),
    ) {
        (Some(a), Some(b)) => a.name != b.name,
        _ => false,
    }
}

/// The diff's row drops split into those in tables that were UNLOGGED at the baseline and the
/// others (postgres only; everything is "other" for other kinds).
fn split_unlogged_drops(d: &ServiceDiff, before: &ServiceCensus) -> (RowDrops, RowDrops) {
    let (mut unlogged, mut other) = (RowDrops::new(), RowDrops::new());
    for (db, drops) in &d.row_drops {
        for drop in drops {
            let was_unlogged = match before {
                ServiceCensus::Postgres(pg) => pg
                    .databases
                    .get(db)
                    .and_then(|x| x.tables.get(&drop.0))
                    .is_some_and(|t| t.persistence == Persistence::Unlogged),
                _ => false,
            };
            let side = if was_unlogged {
                &mut unlogged
            } else {
                &mut other
            };
            side.entry(db.clone()).or_default().push(drop.clone());
        }
    }
    (unlogged, other)
}

pub fn judge(j: Judge) -> ServiceVerdict {
    let kind = super::census::kind_str(j.kind).to_string();
    let Some((bref, bcensus, bident, bproject)) = j.baseline else {
        let mut v = ServiceVerdict {
            kind,
            status: Status::Baseline,
            baseline: None,
            diff: None,
            early_diff: None,
            cause: None,
            warnings: Vec::new(),
            restore_command: None,
            baseline_census: None,
            restore_before: None,
            info: Vec::new(),
            restore_note: None,
        };
        if let ServiceCensus::Unavailable { reason } = j.now {
            v.status = Status::Unverified;
            v.warnings.push(format!("could not count it: {reason}"));
        }
        return v;
    };
    let mut diff = super::diff::compare(bcensus, j.now);
    let mut warnings = Vec::new();
    let mut info = Vec::new();
    // Rows gone from UNLOGGED tables after an unclean shutdown: crash recovery emptied them.
    // That is a loss whatever ran since the baseline; the drops in other tables keep their
    // usual judgement below.
    let mut recovery_emptied = None;
    if j.unclean_start.is_some() {
        let (unlogged, other) = split_unlogged_drops(&diff, bcensus);
        if !unlogged.is_empty() {
            recovery_emptied = Some((unlogged, other));
        }
    }
    let moved = volume_changed(bident, j.current_identity);
    let guarded = bref.guarded && j.running_until.is_none();
    let counts_as_loss = |d: &ServiceDiff| {
        d.is_loss()
            && (guarded
                || j.strict
                || moved
                || d.is_structural_loss()
                || d.system_identifier_changed.is_some())
    };
    let mut loss = counts_as_loss(&diff)
        || j.early
            .as_ref()
            .is_some_and(|e| counts_as_loss(e) && e.is_structural_loss());
    if let Some((unlogged, other)) = recovery_emptied {
        if !loss {
            // Only the tables crash recovery emptied are the loss; other fallen counts may be
            // the services' own deletes, as without the crash.
            let mut rest = diff.clone();
            rest.row_drops = other;
            if rest.is_loss() {
                let named: Vec<String> = rest
                    .row_drops
                    .iter()
                    .flat_map(|(db, v)| {
                        v.iter().map(move |(t, a, b)| format!("{db}.{t} {a} → {b}"))
                    })
                    .collect();
                warnings.push(format!(
                    "{} ({}) since the census {} at {}; the services ran after that census, so this may be their own doing",
                    rest.summary(),
                    named.join(", "),
                    bref.phase.describe(),
                    bref.time
                ));
            }
            diff.row_drops = unlogged;
            loss = true;
        }
    }
    let status = if loss {
        Status::Loss
    } else if let Some(r) = &diff.not_verified {
        warnings.push(format!("not verified: {r}"));
        Status::Unverified
    } else {
        if diff.is_loss() && j.running_until.is_some() {
            info.push(format!(
                "{} since the census {} at {}, while the stack ran (informational: the services may delete rows)",
                diff.summary(),
                bref.phase.describe(),
                bref.time
            ));
        } else if diff.is_loss() {
            warnings.push(format!(
                "{} since the census {} at {}; the services ran after that census, so this may be their own doing — if not, `nodus snapshot list`",
                diff.summary(),
                bref.phase.describe(),
                bref.time
            ));
        }
        if diff.rows_unchecked {
            warnings.push("row counts are estimates (--fast): row drops were not checked".into());
        }
        Status::Ok
    };
    if let Some((a, b)) = &diff.system_identifier_changed {
        if !loss {
            warnings.push(format!(
                "the cluster is a different one (system identifier {a} → {b}), but everything counted before is there"
            ));
        }
    }
    let cause = (status == Status::Loss).then(|| {
        cause::infer(&CauseInput {
            service: j.service,
            kind: j.kind,
            diff: &diff,
            early: j.early.as_ref(),
            baseline: cause::BaselineFacts {
                phase: bref.phase,
                time: &bref.time,
                transition: &bref.transition,
                project: bproject,
                identity: bident,
                census: Some(bcensus),
            },
            current: j.current_identity,
            current_project: j.current_project,
            started_after_early: j.started_after_early,
            running_until: j.running_until,
            unclean_start: j.unclean_start,
        })
    });
    ServiceVerdict {
        kind,
        status,
        baseline: Some(bref),
        diff: Some(diff),
        early_diff: j.early,
        cause,
        warnings,
        restore_command: None,
        baseline_census: Some(bcensus.clone()),
        restore_before: None,
        info,
        restore_note: None,
    }
}

impl Verdict {
    pub fn new(
        transition: &str,
        totals: Totals,
        ledger: String,
        restore_point_before: String,
    ) -> Verdict {
        Verdict {
            verdict: Status::Ok,
            transition: transition.to_string(),
            totals,
            services: BTreeMap::new(),
            notes: Vec::new(),
            restore_command: None,
            ledger,
            restore_point_before,
        }
    }

    /// Sets the overall status from the services': loss > unverified > baseline > ok.
    pub fn conclude(&mut self) {
        let st: Vec<Status> = self.services.values().map(|s| s.status).collect();
        self.verdict = if st.contains(&Status::Loss) {
            Status::Loss
        } else if st.contains(&Status::Unverified) {
            Status::Unverified
        } else if !st.is_empty() && st.iter().all(|s| *s == Status::Baseline) {
            Status::Baseline
        } else if st.is_empty() {
            Status::Recorded
        } else {
            Status::Ok
        };
    }

    pub fn is_loss(&self) -> bool {
        self.verdict == Status::Loss
    }

    /// Fills each lost service's restore command (and note) with `lookup(service, before, what
    /// is missing)` and joins the commands.
    pub fn fill_restore(
        &mut self,
        lookup: impl Fn(&str, &str, Option<&ServiceDiff>) -> RestoreHint,
    ) {
        let mut cmds: Vec<String> = Vec::new();
        for (name, s) in self.services.iter_mut() {
            if s.status == Status::Loss {
                let before = s
                    .restore_before
                    .as_deref()
                    .unwrap_or(&self.restore_point_before);
                let hint = lookup(name, before, s.diff.as_ref());
                s.restore_command = hint.command;
                s.restore_note = hint.note;
                if let Some(c) = &s.restore_command {
                    if !cmds.contains(c) {
                        cmds.push(c.clone());
                    }
                }
            }
        }
        self.restore_command = (!cmds.is_empty()).then(|| cmds.join(" && "));
    }

    /// What brings the lost data back other than a restore, when every lost service has such a
    /// fix (a renamed project: the old name); said as the error's hint.
    pub fn fix(&self) -> Option<String> {
        let mut fixes: Vec<String> = Vec::new();
        for s in self.services.values().filter(|s| s.status == Status::Loss) {
            let f = s.cause.as_ref().and_then(|c| c.fix.clone())?;
            if !fixes.contains(&f) {
                fixes.push(f);
            }
        }
        (!fixes.is_empty()).then(|| fixes.join("; "))
    }

    /// Sharpens the causes with what the lifecycle did: a lost service whose volume nodus had to
    /// create in this transition had its volume removed since the last census.
    pub fn note_created_volumes(&mut self, created: &[String]) {
        for s in self.services.values_mut() {
            let Some(c) = s.cause.as_mut() else { continue };
            let Some(vol) = c.volume.as_deref() else {
                continue;
            };
            use super::cause::CauseCode::*;
            // A renamed project or another volume explains the new volume better.
            if matches!(c.code, ProjectRenamed | VolumeReplaced) {
                continue;
            }
            if created.iter().any(|v| v == vol) {
                c.code = super::cause::CauseCode::VolumeRecreated;
                c.summary = format!(
                    "volume {vol} had been removed since the last census: nodus found it missing and created it empty{}",
                    if c.summary.starts_with("a new cluster") {
                        ", so a new cluster was initialised"
                    } else {
                        ""
                    }
                );
            }
        }
    }

    /// "db: 3 tables missing in app; cache: db0: 10 → 0".
    pub fn loss_summary(&self) -> String {
        self.services
            .iter()
            .filter(|(_, s)| s.status == Status::Loss)
            .map(|(n, s)| {
                format!(
                    "{n}: {}",
                    s.diff.as_ref().map(|d| d.summary()).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Human output on stderr.
    pub fn print(&self, ui: &Ui) {
        // The first census says so on its verdict line, not on a note of its own as well.
        let first = self.verdict == Status::Baseline
            && self.transition != "verify"
            && self.notes.iter().any(|n| n.starts_with(FIRST_CENSUS));
        for n in &self.notes {
            if first && n.starts_with(FIRST_CENSUS) {
                continue;
            }
            ui.status(n);
        }
        for (name, s) in &self.services {
            for i in &s.info {
                ui.status(format!("{name}: {i}"));
            }
            for w in &s.warnings {
                ui.warn(format!("{name}: {w}"));
            }
        }
        match self.verdict {
            Status::Loss => {
                // The restore command (or its absence) is the error's hint; a service it does
                // not cover is named here.
                let some_restore = self.restore_command.is_some();
                for (name, s) in &self.services {
                    if s.status == Status::Loss {
                        for l in loss_lines(name, s, some_restore) {
                            eprintln!("{}", if l.starts_with(' ') { l } else { ui.red(&l) });
                        }
                    }
                }
            }
            Status::Ok => ui.success(format!("census: {} — nothing lost", self.totals.summary())),
            Status::Baseline if self.transition == "verify" => ui.status(format!(
                "census: {} — no earlier census to compare with",
                self.totals.summary()
            )),
            Status::Baseline => ui.success(format!(
                "census: {} — {}recorded as the baseline",
                self.totals.summary(),
                if first {
                    "first census of this stack, "
                } else {
                    ""
                }
            )),
            Status::Recorded => {
                ui.status(format!("census before stopping: {}", self.totals.summary()))
            }
            Status::Accepted => ui.success(format!(
                "census: {} — accepted as the new baseline",
                self.totals.summary()
            )),
            Status::Unverified => ui.warn(format!(
                "census: {} — some services could not be checked (see above)",
                self.totals.summary()
            )),
        }
    }
}

/// The lines describing one service's loss: what is missing (every table), the cause, and —
/// when other lost services have a snapshot to restore from but this one has none — that.
fn loss_lines(name: &str, s: &ServiceVerdict, some_restore: bool) -> Vec<String> {
    let mut out = Vec::new();
    let Some(d) = &s.diff else { return out };
    let since = s
        .baseline
        .as_ref()
        .map(|b| {
            format!(
                "the census {} at {} (nodus {})",
                b.phase.describe(),
                b.time,
                b.transition
            )
        })
        .unwrap_or_default();
    out.push(format!(
        "DATA LOSS in {name} ({}) compared with {since}:",
        s.kind
    ));
    let mut line = |t: String| out.push(format!("    {t}"));
    let base_pg = match &s.baseline_census {
        Some(ServiceCensus::Postgres(p)) => Some(p),
        _ => None,
    };
    // The cause names a changed system identifier itself.
    let cause_names_cluster = s
        .cause
        .as_ref()
        .is_some_and(|c| c.details.iter().any(|d| d.starts_with("system identifier")));
    if let Some((a, b)) = &d.system_identifier_changed {
        if !cause_names_cluster {
            line(format!(
                "cluster: a different cluster (system identifier {a} → {b})"
            ));
        }
    }
    for db in &d.missing_databases {
        let size = base_pg.and_then(|p| p.databases.get(db)).map(|x| {
            let rows = x.rows();
            format!(
                " (had {} {}, {rows} rows)",
                x.tables.len(),
                plural(x.tables.len(), "table", "tables")
            )
        });
        line(format!(
            "database {db}: missing{}",
            size.unwrap_or_default()
        ));
    }
    for (db, ts) in &d.missing_tables {
        let total = base_pg
            .and_then(|p| p.databases.get(db))
            .map(|x| x.tables.len());
        let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
        line(format!(
            "database {db}: {}{of} {} missing: {}",
            ts.len(),
            plural(total.unwrap_or(ts.len()), "table", "tables"),
            ts.join(", ")
        ));
    }
    for (db, drops) in &d.row_drops {
        let list: Vec<String> = drops
            .iter()
            .map(|(t, b, a)| format!("{t} {b} → {a}"))
            .collect();
        line(format!("database {db}: rows dropped: {}", list.join(", ")));
    }
    if !d.missing_collections.is_empty() {
        line(format!(
            "collections missing: {}",
            d.missing_collections.join(", ")
        ));
    }
    for (n, b, a) in &d.other_drops {
        line(format!("{n}: {b} → {a}"));
    }
    if let Some(c) = &s.cause {
        out.push(format!("  cause: {}", c.summary));
        for det in &c.details {
            out.push(format!("    {det}"));
        }
    }
    if let Some(n) = &s.restore_note {
        out.push(format!("  restore: {n}"));
    } else if some_restore && s.restore_command.is_none() {
        out.push(format!(
            "  restore: no snapshot of {name} from before this transition (see `nodus snapshot list`)"
        ));
    }
    out
}

#[cfg(test)]
mod tests;
