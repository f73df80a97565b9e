//! `nodus test-persistence`: bring the stack up (guarded), write sentinels, run N guarded
//! transitions (down/up, restart, or SIGKILL then up), and after each one check that the guard
//! found nothing missing and every sentinel is intact. The transitions themselves are run by the
//! command through [`Driver`] (the guarded lifecycle with its hook session); this module decides
//! what to run, what to check and what it means, and builds the reports (`report.rs`).

pub mod report;
pub mod sentinel;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::{Engine, RunState};
use crate::guard::verdict::{Status, Verdict};
use crate::output::Ui;
use crate::stack::{ServiceKind, StatefulService};
use sentinel::Place;

/// `--restart-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartKind {
    /// Guarded down (snapshot unless `--no-snapshot`), then up.
    DownUp,
    /// Guarded restart.
    Restart,
    /// SIGKILL the database containers, then a guarded up.
    Kill,
}

impl RestartKind {
    pub fn name(self) -> &'static str {
        match self {
            RestartKind::DownUp => "down-up",
            RestartKind::Restart => "restart",
            RestartKind::Kill => "kill",
        }
    }
}

/// What the run is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub project: String,
    pub cycles: u32,
    pub kind: RestartKind,
    pub stateful: Vec<StatefulService>,
}

/// One guarded transition the driver ran: the guard's verdict and the command's JSON document.
pub struct Step {
    pub transition: &'static str,
    pub verdict: Option<Verdict>,
    pub doc: serde_json::Value,
}

/// The guarded lifecycle, as the command runs it (session, lock, hooks).
#[async_trait::async_trait(?Send)]
pub trait Driver {
    /// Guarded up of the cycled services (the stateful ones, or all with `--with-services`).
    async fn up(&mut self) -> anyhow::Result<Step>;
    /// Guarded down (with snapshots unless `--no-snapshot`).
    async fn down(&mut self) -> anyhow::Result<Step>;
    /// Guarded restart of the cycled services.
    async fn restart(&mut self) -> anyhow::Result<Step>;
}

/// One testcase: a database (postgres) or a redis.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub service: String,
    pub kind: &'static str,
    pub database: String,
    pub ok: bool,
    /// What is wrong (missing sentinel, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// `schema.table`s that are gone or lost rows, as the guard found them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_tables: Vec<String>,
    /// The guard's cause, when it found a loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub seconds: f64,
}

/// One cycle (cycle 0 is the initial up).
#[derive(Debug, Clone, Serialize)]
pub struct Cycle {
    pub index: u32,
    pub transition: String,
    pub ok: bool,
    pub tables_checked: usize,
    pub seconds: f64,
    /// When the cycle started (RFC 3339).
    pub started: String,
    pub cases: Vec<Case>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The guarded commands' documents, in order.
    #[serde(skip)]
    pub steps: Vec<serde_json::Value>,
    /// The first lossy step's restore command and fix (see [`Verdict::fix`]).
    #[serde(skip)]
    pub restore: (Option<String>, Option<String>),
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub project: String,
    pub restart_kind: RestartKind,
    pub cycles_requested: u32,
    pub passed: bool,
    pub cycles: Vec<Cycle>,
    /// The guard's loss summary of the first failing cycle, with its cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<String>,
    /// The restore command the guard suggested, when a snapshot exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_command: Option<String>,
    /// What brings the data back without a restore (e.g. the old project name), when the guard
    /// knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    pub sentinels: Vec<Place>,
}

/// `--ephemeral` runs a copy of the stack under another project name: refused when that copy
/// would share data with the real project (a data dir on a bind mount or on a volume with a fixed
/// `name:`/`external`) or clash with it (`container_name`).
pub fn check_isolated(project: &crate::project::Project) -> anyhow::Result<()> {
    let mut shared = Vec::new();
    for s in &project.hardened.stateful {
        if s.volume_key.is_none() {
            shared.push(format!(
                "{}: its data dir {} is not on a named volume (bind mount)",
                s.service, s.data_dir
            ));
        }
    }
    let prefix = format!("{}_", project.name());
    for v in crate::lifecycle::spec::stack_volumes(project.name(), &project.hardened.compose) {
        if v.external || !v.name.starts_with(&prefix) {
            shared.push(format!(
                "volume {} has a fixed name ({}): the throwaway project would use the same volume",
                v.key, v.name
            ));
        }
    }
    for (name, svc) in &project.hardened.compose.services {
        if let Some(c) = &svc.container_name {
            shared.push(format!("service {name} has a fixed container_name {c}"));
        }
    }
    if shared.is_empty() {
        Ok(())
    } else {
        Err(crate::error::UsageError(format!(
            "--ephemeral cannot isolate this stack: {}. Run without --ephemeral",
            shared.join("; ")
        ))
        .into())
    }
}

/// Runs the test. Stops after the first cycle that lost something (later cycles would compare
/// against the damaged state). The sentinels are left in place: [`sentinel::remove`] them.
pub async fn run(
    engine: &dyn Engine,
    ui: &Ui,
    plan: &Plan,
    driver: &mut dyn Driver,
    token: &str,
    places_out: &mut Vec<Place>,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome {
        project: plan.project.clone(),
        restart_kind: plan.kind,
        cycles_requested: plan.cycles,
        passed: true,
        cycles: Vec::new(),
        loss: None,
        restore_command: None,
        fix: None,
        sentinels: Vec::new(),
    };
    // Cycle 0: the initial up (a loss here is a loss against the stack's last census).
    let started = Instant::now();
    let at = crate::guard::census::now_rfc3339();
    let step = driver.up().await?;
    let places = sentinel::write(engine, &plan.project, &plan.stateful, token).await?;
    *places_out = places.clone();
    out.sentinels = places.clone();
    let checked = sentinel::check(engine, &plan.project, &plan.stateful, &places, token).await;
    let c0 = judge(
        0,
        "up",
        &at,
        vec![step],
        &checked,
        started.elapsed(),
        vec![],
    );
    progress(ui, &c0, plan.cycles);
    let failed = !c0.ok;
    record(&mut out, c0);
    if failed {
        return Ok(out);
    }
    for k in 1..=plan.cycles {
        let started = Instant::now();
        let at = crate::guard::census::now_rfc3339();
        let mut steps = Vec::new();
        let mut notes = Vec::new();
        match plan.kind {
            RestartKind::DownUp => {
                steps.push(driver.down().await?);
                steps.push(driver.up().await?);
            }
            RestartKind::Restart => steps.push(driver.restart().await?),
            RestartKind::Kill => {
                let killed = kill_databases(engine, &plan.project, &plan.stateful).await?;
                for (service, container) in &killed {
                    notes.push(format!(
                        "{service}: container {container} killed with SIGKILL (unclean shutdown)"
                    ));
                }
                steps.push(driver.up().await?);
                for (service, container) in &killed {
                    notes.extend(recovery_note(engine, &plan.stateful, service, container).await);
                }
            }
        }
        let checked = sentinel::check(engine, &plan.project, &plan.stateful, &places, token).await;
        let c = judge(
            k,
            plan.kind.name(),
            &at,
            steps,
            &checked,
            started.elapsed(),
            notes,
        );
        progress(ui, &c, plan.cycles);
        let failed = !c.ok;
        record(&mut out, c);
        if failed {
            if k < plan.cycles {
                ui.warn(format!(
                    "stopping after cycle {k}/{}: data was lost",
                    plan.cycles
                ));
            }
            break;
        }
    }
    Ok(out)
}

fn record(out: &mut Outcome, c: Cycle) {
    if !c.ok && out.passed {
        out.passed = false;
        let mut parts = Vec::new();
        for case in c.cases.iter().filter(|c| !c.ok) {
            let mut s = format!("{}/{}: ", case.service, case.database);
            let mut what = case.problems.clone();
            if !case.missing_tables.is_empty() {
                what.insert(0, format!("lost {}", case.missing_tables.join(", ")));
            }
            s.push_str(&what.join("; "));
            if let Some(cause) = &case.cause {
                s.push_str(&format!(" (cause: {cause})"));
            }
            parts.push(s);
        }
        (out.restore_command, out.fix) = c.restore.clone();
        out.loss = Some(format!(
            "cycle {} ({}): {}",
            c.index,
            c.transition,
            parts.join("; ")
        ));
    }
    out.cycles.push(c);
}

/// "cycle 2/3: down-up — 14 tables checked, 6.2s — ok".
fn progress(ui: &Ui, c: &Cycle, total: u32) {
    let what = if c.index == 0 {
        "initial up".to_string()
    } else {
        format!("cycle {}/{total}: {}", c.index, c.transition)
    };
    let line = format!(
        "{what} — {} tables checked, {:.1}s — {}",
        c.tables_checked,
        c.seconds,
        if c.ok { "ok" } else { "DATA LOST" }
    );
    if c.ok {
        ui.success(line);
    } else {
        ui.error(line);
    }
}

/// Turns the steps' verdicts and the sentinel check into one cycle with a case per place.
pub fn judge(
    index: u32,
    transition: &str,
    started: &str,
    steps: Vec<Step>,
    checked: &sentinel::Checked,
    elapsed: Duration,
    notes: Vec<String>,
) -> Cycle {
    let tables_checked = steps
        .iter()
        .rev()
        .find_map(|s| s.verdict.as_ref())
        .map(|v| v.totals.tables)
        .unwrap_or(0);
    let mut cases = Vec::new();
    for (place, problem) in checked {
        let mut case = Case {
            service: place.service.clone(),
            kind: place.kind,
            database: place.database.clone(),
            ok: true,
            problems: problem.iter().cloned().collect(),
            missing_tables: Vec::new(),
            cause: None,
            seconds: 0.0,
        };
        for step in &steps {
            let Some(v) = &step.verdict else { continue };
            let Some(sv) = v.services.get(&place.service) else {
                continue;
            };
            if sv.status != Status::Loss {
                continue;
            }
            let Some(d) = &sv.diff else { continue };
            let mut hit = false;
            if place.kind == "postgres" {
                if d.missing_databases.contains(&place.database) {
                    case.problems
                        .push(format!("database {} is missing", place.database));
                    hit = true;
                }
                for (db, t) in d.lost_tables() {
                    if db == place.database && !case.missing_tables.contains(&t) {
                        case.missing_tables.push(t);
                        hit = true;
                    }
                }
                if let Some((a, b)) = &d.system_identifier_changed {
                    case.problems.push(format!(
                        "the cluster was re-initialised (system identifier {a} → {b})"
                    ));
                    hit = true;
                }
            } else {
                for (name, before, after) in &d.other_drops {
                    case.problems
                        .push(format!("{name}: {before} → {after} keys"));
                    hit = true;
                }
            }
            if hit {
                if let Some(c) = &sv.cause {
                    case.cause = Some(c.summary.clone());
                }
                case.problems
                    .push(format!("found by the guard after {}", step.transition));
            }
        }
        case.ok = case.problems.is_empty() && case.missing_tables.is_empty();
        cases.push(case);
    }
    // A loss the guard found in a service without a sentinel place (e.g. qdrant) fails too.
    let mut notes = notes;
    for step in &steps {
        let Some(v) = &step.verdict else { continue };
        for (name, sv) in &v.services {
            if sv.status == Status::Loss && !cases.iter().any(|c| &c.service == name) {
                let summary = sv.diff.as_ref().map(|d| d.summary()).unwrap_or_default();
                cases.push(Case {
                    service: name.clone(),
                    kind: "other",
                    database: "-".into(),
                    ok: false,
                    problems: vec![summary],
                    missing_tables: Vec::new(),
                    cause: sv.cause.as_ref().map(|c| c.summary.clone()),
                    seconds: 0.0,
                });
            }
        }
        notes.extend(v.notes.iter().cloned());
    }
    let restore = steps
        .iter()
        .filter_map(|s| s.verdict.as_ref())
        .find(|v| v.is_loss())
        .map(|v| (v.restore_command.clone(), v.fix()))
        .unwrap_or_default();
    let n = cases.len().max(1) as f64;
    for c in cases.iter_mut() {
        // The transition checks every database at once: each case gets its share of the time.
        c.seconds = elapsed.as_secs_f64() / n;
    }
    let ok = cases.iter().all(|c| c.ok);
    Cycle {
        index,
        transition: transition.to_string(),
        ok,
        tables_checked,
        seconds: elapsed.as_secs_f64(),
        started: started.to_string(),
        cases,
        notes,
        steps: steps.into_iter().map(|s| s.doc).collect(),
        restore,
    }
}

/// SIGKILLs the running postgres/redis containers of the project (only its labelled ones);
/// returns (service, container name).
async fn kill_databases(
    engine: &dyn Engine,
    project: &str,
    stateful: &[StatefulService],
) -> anyhow::Result<Vec<(String, String)>> {
    let dbs: Vec<StatefulService> = stateful
        .iter()
        .filter(|s| matches!(s.kind, ServiceKind::Postgres | ServiceKind::Redis))
        .cloned()
        .collect();
    let running = crate::guard::census::running_stateful(engine, project, &dbs).await?;
    let mut killed = Vec::new();
    for (service, rs) in running {
        let Some(rs) = rs else { continue };
        if rs.container.state != RunState::Running {
            continue;
        }
        engine.kill_container(&rs.container.id, "SIGKILL").await?;
        killed.push((service, rs.container.name.clone()));
    }
    Ok(killed)
}

/// After a kill and up: whether postgres' log shows the crash recovery.
async fn recovery_note(
    engine: &dyn Engine,
    stateful: &[StatefulService],
    service: &str,
    container: &str,
) -> Option<String> {
    let pg = stateful
        .iter()
        .any(|s| s.service == service && s.kind == ServiceKind::Postgres);
    if !pg {
        return None;
    }
    let logs = engine.logs(container, 200).await.ok()?;
    Some(if crash_recovery_ran(&logs) {
        format!("{service}: postgres ran crash recovery at start")
    } else {
        format!("{service}: no crash recovery found in the postgres log")
    })
}

pub use crate::lifecycle::crash_recovery_ran;

#[cfg(test)]
mod tests;
