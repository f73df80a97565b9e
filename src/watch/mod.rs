//! `nodus watch`: file-watch driven restarts, recreations and syncs through the guarded
//! lifecycle, plus a live guard between transitions.
//!
//! Rules ([`rules`]) come from compose's `develop.watch`, `x-nodus.watch` and the implicit
//! stack-file rules. File events ([`fswatch`]: notify, or polling) are batched by a quiet period
//! ([`batch`]) into one plan per batch: one action per service. Transitions run through a
//! [`Driver`] (the command layer: stack lock, guard, snapshots, verdict), so every restart is
//! counted before and after; `sync` copies files with the Engine archive upload ([`sync`]).
//! Between transitions a census runs every `--verify-every`; tables that vanish with no
//! transition in between are alerted at once (`guard::live`). A loss pauses the service until
//! `nodus verify --accept` or a restore clears it, and makes the command exit 3.

pub mod batch;
pub mod event;
pub mod fswatch;
pub mod ignore;
pub mod rules;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::engine::{ContainerInfo, Engine, RunState};
use crate::error::DataLossDetected;
use crate::guard::census::{self, Census, CensusOptions};
use crate::guard::GuardConfig;
use crate::lifecycle::Report;
use crate::output::Ui;
use crate::project::Project;
use crate::state::StackLock;
use batch::{Batcher, Plan, ServicePlan};
use event::{Event, Out};
use fswatch::{FsWatcher, WatchError};
use rules::{Inputs, RuleSet};

/// `nodus watch` options (parsed by the command).
#[derive(Debug, Clone)]
pub struct Options {
    /// Only these services (empty = the default selection).
    pub services: Vec<String>,
    pub debounce: Duration,
    /// Poll at this interval instead of inotify.
    pub poll: Option<Duration>,
    /// Live census interval; None = off.
    pub verify_every: Option<Duration>,
    pub down_on_exit: bool,
}

/// A guarded lifecycle transition.
#[derive(Debug, Clone)]
pub enum Op {
    Up(Vec<String>),
    Recreate(Vec<String>),
    Restart(Vec<String>),
    Down,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Up(_) => "up",
            Op::Recreate(_) => "recreate",
            Op::Restart(_) => "restart",
            Op::Down => "down",
        }
    }
}

/// What a guarded transition ended with.
pub struct Done {
    pub report: Report,
    /// `{"transition", "report", "guard"}`.
    pub json: serde_json::Value,
    /// Services with lost data, and the loss (already printed for humans).
    pub lost: Vec<String>,
    pub loss: Option<DataLossDetected>,
}

/// What the watch needs from the command layer.
#[async_trait(?Send)]
pub trait Driver {
    fn ui(&self) -> &Ui;
    /// Loads the stack files again (errors carry file:line:col).
    fn load(&self) -> anyhow::Result<Project>;
    async fn engine(&self) -> anyhow::Result<Arc<dyn Engine>>;
    /// Runs a guarded transition, taking the stack lock for its duration.
    async fn transition(&self, project: &Project, op: Op) -> anyhow::Result<Done>;
    /// The stack lock if it is free right now (None: another nodus command holds it).
    fn try_lock(&self, project: &Project) -> Option<StackLock>;
    /// The restore command for `service` from a snapshot taken before `before` (RFC 3339).
    /// The restore command for `service`: the newest snapshot from before `before` that holds
    /// what `missing` lacks.
    fn restore_command(
        &self,
        project: &Project,
        service: &str,
        before: &str,
        missing: Option<&crate::guard::diff::ServiceDiff>,
    ) -> Option<String>;
}

/// The services a plain `nodus up` would start (profiles honoured), or the named ones.
pub fn selection(project: &Project, named: &[String]) -> Vec<String> {
    project.selection(named)
}

/// The rules of a loaded project.
pub fn rules_for(project: &Project, only: &[String]) -> Result<RuleSet, rules::RuleError> {
    let files: Vec<PathBuf> = project
        .stack
        .files
        .iter()
        .map(|f| {
            if f.is_absolute() {
                f.clone()
            } else {
                std::env::current_dir().unwrap_or_default().join(f)
            }
        })
        .map(|f| std::fs::canonicalize(&f).unwrap_or(f))
        .collect();
    let state = std::fs::canonicalize(project.state.root())
        .unwrap_or_else(|_| project.state.root().to_path_buf());
    RuleSet::build(&Inputs {
        stack_dir: &project.dir,
        stack_files: &files,
        state_dir: &state,
        compose: &project.stack.compose,
        nodus_rules: &project.stack.nodus.watch,
        only,
    })
}

/// The live guard's last census, with the container (id, start time) of each service counted.
struct LastCensus {
    census: Census,
    containers: BTreeMap<String, (String, Option<String>)>,
}

struct Watch<'a> {
    d: &'a dyn Driver,
    o: Options,
    out: Out,
    project: Project,
    rules: RuleSet,
    engine: Arc<dyn Engine>,
    fs: FsWatcher,
    /// Services with an unresolved loss: watch does not act on them.
    paused: BTreeSet<String>,
    losses: Vec<DataLossDetected>,
    /// The stack was found down (brought down outside watch).
    down: bool,
    last: Option<LastCensus>,
}

fn watch_error(e: WatchError) -> anyhow::Error {
    let hint = e.hint();
    let mut err = anyhow::Error::new(e);
    if let Some(h) = hint {
        err = err.context(format!("file watching failed; {h}"));
    }
    err
}

/// Runs `nodus watch` until SIGINT/SIGTERM.
pub async fn run(d: &dyn Driver, o: Options) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered first: a Ctrl-C during the first `up` ends the watch after it, not mid-way.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    let ui = d.ui().clone();
    let project = d.load()?;
    project.stack.check_services(&o.services)?;
    let rules = rules_for(&project, &o.services)?;
    for w in &rules.warnings {
        ui.warn(w);
    }
    let engine = d.engine().await?;
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel();
    let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
    let mut fs = FsWatcher::new(o.poll, ptx, etx).map_err(watch_error)?;
    fs.set_roots(&rules.roots()).map_err(watch_error)?;
    let out = Out {
        ui: ui.clone(),
        base: project.dir.clone(),
    };
    let mut w = Watch {
        d,
        out,
        project,
        rules,
        engine,
        fs,
        paused: BTreeSet::new(),
        losses: Vec::new(),
        down: false,
        last: None,
        o,
    };

    let sel = selection(&w.project, &w.o.services);
    w.transition(Op::Up(sel), &[], "up").await?;
    let mut watching = Event::new("watching", "info")
        .services(w.rules.services())
        .message(format!(
            "{} rule(s), debounce {}ms{}, live guard {}; Ctrl-C stops watching (the stack keeps running{})",
            w.rules.rules.len(),
            w.o.debounce.as_millis(),
            match w.o.poll {
                Some(p) => format!(", polling every {}ms", p.as_millis()),
                None => String::new(),
            },
            match w.o.verify_every {
                Some(v) => format!("every {}s", v.as_secs_f64()),
                None => "off".into(),
            },
            if w.o.down_on_exit { " unless --down-on-exit" } else { "" },
        ));
    watching.paths = w.rules.roots().iter().map(|(p, _)| w.out.rel(p)).collect();
    w.out.emit(&watching);

    // The quiet period counts from the last change, which reaches us `fswatch::DELAY` late.
    let mut batcher = Batcher::new(w.o.debounce.saturating_sub(fswatch::DELAY));
    let verify_every = w.o.verify_every.unwrap_or(Duration::from_secs(86400 * 365));
    let mut live = tokio::time::interval(verify_every);
    live.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(Duration::from_secs(2));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            Some(e) = erx.recv() => {
                let mut ev = Event::new("error", "failed").message(e.to_string());
                if let Some(h) = e.hint() {
                    ev.message = Some(format!("{e}; {h}"));
                }
                w.out.emit(&ev);
            }
            b = batcher.next_batch(&mut prx) => match b {
                Some(batch) => {
                    let plan = batch::plan(&w.rules, &batch);
                    if !plan.is_empty() {
                        w.apply(plan).await;
                    }
                }
                None => break,
            },
            _ = live.tick(), if w.o.verify_every.is_some() => w.live_guard().await,
            _ = check.tick() => w.check_stack().await,
        }
    }

    if w.o.down_on_exit {
        w.transition(Op::Down, &[], "down").await?;
    }
    w.out
        .emit(&Event::new("exit", "ok").message(if w.losses.is_empty() {
            "stopped watching".to_string()
        } else {
            format!("stopped watching; {} loss(es) found", w.losses.len())
        }));
    match w.losses.len() {
        0 => Ok(()),
        _ => Err(merge_losses(std::mem::take(&mut w.losses)).into()),
    }
}

/// The losses found while watching, as one: summaries joined, restore commands and fixes (the
/// old project name, ...) each kept once.
fn merge_losses(losses: Vec<DataLossDetected>) -> DataLossDetected {
    let mut summary: Vec<String> = Vec::new();
    let (mut cmds, mut fixes): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for l in losses {
        summary.push(l.summary);
        for (list, item) in [(&mut cmds, l.restore_command), (&mut fixes, l.fix)] {
            if let Some(i) = item.filter(|i| !list.contains(i)) {
                list.push(i);
            }
        }
    }
    DataLossDetected {
        summary: summary.join("; "),
        restore_command: (!cmds.is_empty()).then(|| cmds.join(" && ")),
        fix: (!fixes.is_empty()).then(|| fixes.join("; ")),
    }
}

fn running(c: &ContainerInfo) -> bool {
    matches!(c.state, RunState::Running | RunState::Restarting)
}

impl Watch<'_> {
    fn service_of(c: &ContainerInfo) -> Option<&str> {
        c.labels.get(crate::labels::SERVICE).map(String::as_str)
    }

    async fn containers(&self) -> anyhow::Result<Vec<ContainerInfo>> {
        Ok(self
            .engine
            .list_containers(&crate::labels::project_filter(self.project.name()))
            .await?
            .into_iter()
            .filter(|c| {
                !c.labels.contains_key(crate::labels::HELPER)
                    && c.labels.get(crate::labels::ONEOFF).map(String::as_str) != Some("True")
            })
            .collect())
    }

    /// Runs a guarded transition and reports it as one event (a loss pauses the services).
    async fn transition(
        &mut self,
        op: Op,
        paths: &[PathBuf],
        event: &'static str,
    ) -> anyhow::Result<Option<Report>> {
        let services = match &op {
            Op::Up(s) | Op::Recreate(s) | Op::Restart(s) => s.clone(),
            Op::Down => Vec::new(),
        };
        let started = Instant::now();
        let action = if event == "reload" {
            "reload"
        } else {
            op.name()
        };
        let r = self.d.transition(&self.project, op).await;
        let took = started.elapsed();
        // Whatever happened, the live guard starts over: this was a transition.
        self.last = None;
        match r {
            Ok(done) => {
                let result = if done.loss.is_some() { "loss" } else { "ok" };
                let mut ev = self
                    .out
                    .paths(Event::new(event, result), paths)
                    .services(services)
                    .action(action)
                    .took(took)
                    .detail(done.json);
                if let Some(l) = &done.loss {
                    ev.message = Some(format!(
                        "DATA LOSS: {}; watch stops acting on {} until `nodus verify --accept` or a restore{}",
                        l.summary,
                        done.lost.join(", "),
                        l.restore_command
                            .as_ref()
                            .map(|c| format!(" (to put the data back: {c})"))
                            .unwrap_or_default()
                    ));
                    self.paused.extend(done.lost.iter().cloned());
                } else {
                    ev.message = Some(summary(&done.report));
                }
                self.out.emit(&ev);
                if let Some(l) = done.loss {
                    self.losses.push(l);
                }
                Ok(Some(done.report))
            }
            Err(e) => {
                let code = crate::error::classify(&e).0;
                let ev = self
                    .out
                    .paths(Event::new(event, "failed"), paths)
                    .services(services)
                    .action(action)
                    .took(took)
                    .message(format!("{e:#}"));
                self.out.emit(&ev);
                if code == crate::error::EXIT_DATA_LOSS || code == crate::error::EXIT_ENGINE {
                    return Err(e);
                }
                if event == "up" || event == "down" {
                    return Err(e);
                }
                Ok(None)
            }
        }
    }

    async fn apply(&mut self, plan: Plan) {
        let mut recreated: BTreeSet<String> = BTreeSet::new();
        if plan.reload {
            recreated = self.reload(&plan.stack_paths).await;
        }
        if plan.services.is_empty() {
            return;
        }
        if self.down {
            for (svc, sp) in &plan.services {
                let ev = self
                    .out
                    .paths(Event::new("change", "skipped"), &sp.paths)
                    .services([svc.clone()])
                    .action(sp.action())
                    .message("the stack is down; waiting for `nodus up`");
                self.out.emit(&ev);
            }
            return;
        }
        for (svc, sp) in plan.services {
            if self.paused.contains(&svc) {
                let ev = self
                    .out
                    .paths(Event::new("change", "skipped"), &sp.paths)
                    .services([svc.clone()])
                    .action(sp.action())
                    .message(format!(
                        "{svc} is paused after a data loss; run `nodus verify --accept` or restore it"
                    ));
                self.out.emit(&ev);
                continue;
            }
            self.apply_service(&svc, sp, recreated.contains(&svc)).await;
        }
    }

    async fn apply_service(&mut self, svc: &str, sp: ServicePlan, just_recreated: bool) {
        let started = Instant::now();
        let action = sp.action();
        let mut notes = Vec::new();
        if !sp.sync.is_empty() || !sp.exec.is_empty() {
            let items: Vec<_> = sp.sync.iter().cloned().collect();
            match self.sync_and_exec(svc, &items, &sp.exec).await {
                Ok(n) => notes.push(n),
                Err(e) => {
                    let ev = self
                        .out
                        .paths(Event::new("change", "failed"), &sp.paths)
                        .services([svc.to_string()])
                        .action(action)
                        .took(started.elapsed())
                        .message(format!("{e:#}"));
                    self.out.emit(&ev);
                    return;
                }
            }
        }
        let paths: Vec<PathBuf> = sp.paths.iter().cloned().collect();
        if sp.recreate && !just_recreated {
            let _ = self
                .transition(Op::Recreate(vec![svc.to_string()]), &paths, "change")
                .await;
        } else if sp.restart && !just_recreated {
            let _ = self
                .transition(Op::Restart(vec![svc.to_string()]), &paths, "change")
                .await;
        } else {
            let ev = self
                .out
                .paths(Event::new("change", "ok"), &paths)
                .services([svc.to_string()])
                .action(action)
                .took(started.elapsed())
                .message(notes.join("; "));
            self.out.emit(&ev);
        }
    }

    async fn sync_and_exec(
        &mut self,
        svc: &str,
        items: &[batch::SyncItem],
        exec: &[rules::ExecHook],
    ) -> anyhow::Result<String> {
        let containers = self.containers().await?;
        let c = containers
            .iter()
            .find(|c| Self::service_of(c) == Some(svc) && running(c))
            .ok_or_else(|| anyhow::anyhow!("service {svc} has no running container"))?;
        let mut note = String::new();
        if !items.is_empty() {
            let s = sync::sync(&*self.engine, &c.id, items).await?;
            note = format!("{} file(s) copied, {} deleted", s.copied, s.deleted);
        }
        for e in exec {
            let mut cmd = e.command.clone();
            if let Some(wd) = &e.working_dir {
                let mut wrapped: Vec<String> = vec![
                    "sh".into(),
                    "-c".into(),
                    "cd \"$0\" && exec \"$@\"".into(),
                    wd.clone(),
                ];
                wrapped.append(&mut cmd);
                cmd = wrapped;
            }
            let r = self
                .engine
                .exec(&c.id, &cmd, &e.env, e.user.as_deref())
                .await?;
            if r.exit_code != 0 {
                anyhow::bail!(
                    "exec {:?} in {} exited with {}: {}",
                    e.command,
                    c.name,
                    r.exit_code,
                    String::from_utf8_lossy(&r.stderr).trim()
                );
            }
            note.push_str(&format!(
                "{}ran {}",
                if note.is_empty() { "" } else { ", " },
                e.command.join(" ")
            ));
        }
        Ok(note)
    }

    /// A stack file or `.env` changed: load it again; when valid, converge the stack (only
    /// services whose definition changed are recreated; provisioning runs at `service_ready`).
    /// Returns the services recreated.
    async fn reload(&mut self, paths: &[PathBuf]) -> BTreeSet<String> {
        let started = Instant::now();
        let invalid = |w: &Self, msg: String| {
            let ev = w
                .out
                .paths(Event::new("reload", "invalid"), paths)
                .took(started.elapsed())
                .message(format!(
                    "{msg} — the running stack is left as it is; the next valid save is applied"
                ));
            w.out.emit(&ev);
        };
        let project = match self.d.load() {
            Ok(p) => p,
            Err(e) => {
                invalid(self, format!("{e:#}"));
                return BTreeSet::new();
            }
        };
        if let Err(e) = project.stack.check_services(&self.o.services) {
            invalid(self, e.to_string());
            return BTreeSet::new();
        }
        let rules = match rules_for(&project, &self.o.services) {
            Ok(r) => r,
            Err(e) => {
                invalid(self, e.to_string());
                return BTreeSet::new();
            }
        };
        for w in &rules.warnings {
            self.out.ui.warn(w);
        }
        if let Err(e) = self.fs.set_roots(&rules.roots()) {
            let ev = Event::new("error", "failed").message(format!(
                "{e}{}",
                e.hint().map(|h| format!("; {h}")).unwrap_or_default()
            ));
            self.out.emit(&ev);
        }
        self.project = project;
        self.rules = rules;
        if self.down {
            return BTreeSet::new();
        }
        let sel: Vec<String> = selection(&self.project, &self.o.services)
            .into_iter()
            .filter(|s| !self.paused.contains(s))
            .collect();
        if sel.is_empty() {
            return BTreeSet::new();
        }
        match self.transition(Op::Up(sel), paths, "reload").await {
            Ok(Some(r)) => r.recreated.into_iter().chain(r.created).collect(),
            _ => BTreeSet::new(),
        }
    }

    /// Notices a stack brought down (or up again) outside watch, and losses that were accepted
    /// or restored.
    async fn check_stack(&mut self) {
        let Ok(containers) = self.containers().await else {
            return;
        };
        let sel = selection(&self.project, &self.o.services);
        let any_running = containers
            .iter()
            .any(|c| running(c) && Self::service_of(c).is_some_and(|s| sel.iter().any(|x| x == s)));
        if !any_running && !self.down {
            self.down = true;
            self.last = None;
            self.out.emit(&Event::new("stack-down", "info").message(
                "the stack was stopped outside watch; waiting (changes are not applied) until it is started again with `nodus up`",
            ));
        } else if any_running && self.down {
            self.down = false;
            self.last = None;
            self.out
                .emit(&Event::new("stack-up", "info").message("the stack runs again; watching"));
        }
        if self.paused.is_empty() {
            return;
        }
        let cfg = GuardConfig::from_project(&self.project);
        let resolved: Vec<String> = self
            .paused
            .iter()
            .filter(|s| !crate::guard::live::outstanding(&cfg, s))
            .cloned()
            .collect();
        for s in resolved {
            self.paused.remove(&s);
            self.out.emit(
                &Event::new("resumed", "info")
                    .services([s.clone()])
                    .message(format!(
                        "the loss of {s} was accepted or restored; watching it again"
                    )),
            );
        }
    }

    /// A census while the stack runs, compared with the previous one when no transition
    /// happened in between (same containers, same start times).
    async fn live_guard(&mut self) {
        if self.down {
            return;
        }
        // Another nodus command acts on the stack: that is a transition; count after it.
        let Some(lock) = self.d.try_lock(&self.project) else {
            self.last = None;
            return;
        };
        let cfg = GuardConfig::from_project(&self.project);
        let countable: Vec<_> = cfg
            .stateful
            .iter()
            .filter(|s| census::supports(s.kind))
            .cloned()
            .collect();
        if countable.is_empty() {
            return;
        }
        let started = Instant::now();
        let Ok(running) =
            census::running_stateful(&*self.engine, self.project.name(), &countable).await
        else {
            return;
        };
        let live: Vec<_> = running.values().flatten().cloned().collect();
        let now = census::take_many(&*self.engine, &live, &CensusOptions::default()).await;
        drop(lock);
        let containers: BTreeMap<String, (String, Option<String>)> = live
            .iter()
            .map(|s| {
                (
                    s.service.clone(),
                    (s.container.id.clone(), s.container.started_at.clone()),
                )
            })
            .collect();
        let current = LastCensus {
            census: now,
            containers,
        };
        let mut rows_event = Event::new("census", "ok")
            .action("census")
            .took(started.elapsed())
            .detail(serde_json::json!({ "rows": crate::guard::live::rows(&current.census) }));
        rows_event.services = current.containers.keys().cloned().collect();
        let Some(prev) = self.last.replace(current) else {
            self.out.emit(&rows_event);
            return;
        };
        let current = self.last.as_ref().expect("just set");
        // Only services whose container kept running, and that are not paused already.
        let same: BTreeSet<&String> = prev
            .containers
            .iter()
            .filter(|(s, c)| current.containers.get(*s) == Some(c) && !self.paused.contains(*s))
            .map(|(s, _)| s)
            .collect();
        let narrow = |c: &Census| Census {
            taken_at: c.taken_at.clone(),
            services: c
                .services
                .iter()
                .filter(|(s, _)| same.contains(s))
                .map(|(s, v)| (s.clone(), v.clone()))
                .collect(),
        };
        let losses = crate::guard::live::vanished(&narrow(&prev.census), &narrow(&current.census));
        if losses.is_empty() {
            self.out.emit(&rows_event);
            return;
        }
        let window_start = chrono::DateTime::parse_from_rfc3339(&prev.census.taken_at).ok();
        let started_in_window: Vec<String> = match self.containers().await {
            Ok(cs) => cs
                .into_iter()
                .filter(|c| {
                    let t = c
                        .started_at
                        .as_deref()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                    matches!((t, window_start), (Some(t), Some(w)) if t > w)
                })
                .map(|c| format!("{} ({})", c.name, Self::service_of(&c).unwrap_or("?")))
                .collect(),
            Err(_) => Vec::new(),
        };
        if let Err(e) = crate::guard::live::record(&cfg, &self.out.ui, &prev.census, &losses) {
            self.out
                .ui
                .warn(format!("could not record the loss in the ledger: {e:#}"));
        }
        for (svc, diff) in &losses {
            let mut what: Vec<String> = diff
                .missing_databases
                .iter()
                .map(|d| format!("database {d}"))
                .collect();
            for (db, tables) in &diff.missing_tables {
                for t in tables {
                    what.push(format!("table {t} (database {db})"));
                }
            }
            for c in &diff.missing_collections {
                what.push(format!("collection {c}"));
            }
            let restore =
                self.d
                    .restore_command(&self.project, svc, &prev.census.taken_at, Some(diff));
            let msg = format!(
                "DATA LOSS in {svc} while the stack was running (no transition since the census at {}): {} vanished; containers started or restarted in that window: {}; watch stops acting on {svc} until `nodus verify --accept` or a restore{}",
                prev.census.taken_at,
                what.join(", "),
                if started_in_window.is_empty() {
                    "none".to_string()
                } else {
                    started_in_window.join(", ")
                },
                restore
                    .as_ref()
                    .map(|c| format!("; to put the data back: {c}"))
                    .unwrap_or_default()
            );
            let ev = Event::new("loss", "loss")
                .services([svc.clone()])
                .action("live-guard")
                .message(msg)
                .detail(serde_json::json!({
                    "diff": diff,
                    "since": prev.census.taken_at,
                    "started_in_window": started_in_window,
                    "restore_command": restore,
                }));
            self.out.emit(&ev);
            self.paused.insert(svc.clone());
            self.losses.push(DataLossDetected {
                summary: format!("{svc}: {} (found by the live guard)", diff.summary()),
                restore_command: restore,
                fix: None,
            });
        }
    }
}

/// "api recreated, db unchanged".
fn summary(r: &Report) -> String {
    let mut parts = Vec::new();
    for (list, label) in [
        (&r.created, "created"),
        (&r.recreated, "recreated"),
        (&r.started, "started"),
        (&r.stopped, "stopped"),
        (&r.removed, "removed"),
    ] {
        if !list.is_empty() {
            parts.push(format!("{} {label}", list.join(", ")));
        }
    }
    if parts.is_empty() {
        "nothing changed".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests;
