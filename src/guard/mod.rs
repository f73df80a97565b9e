//! The persistence guard: provisioning, census, ledger, loss detection and cause inference.
//!
//! [`Guard`] implements [`Hooks`]: it counts what every stateful service holds before a
//! transition stops it (and CHECKPOINTs postgres), provisions postgres and counts again right
//! after each service is ready (before its dependents start) and once everything settled, and
//! compares with the ledger. The outcome ([`verdict::Verdict`]) is left in a [`SharedOutcome`]
//! for `commands::hooks::Session::finish` to print and turn into exit code 3.

pub mod cause;
pub mod census;
pub mod diff;
pub mod http;
pub mod identity;
pub mod ledger;
pub mod pg;
pub mod provision;
pub mod verdict;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use census::{Census, CensusOptions, ServiceCensus};
use ledger::{Entry, Ledger, LedgerError, Phase, ServiceIdentity};
use verdict::{BaselineRef, Judge, Status, Verdict};

use crate::engine::Engine;
use crate::lifecycle::{Hooks, RunningService, StoppedService, Transition};
use crate::output::Ui;
use crate::stack::{Env, ServiceKind, StatefulService, XNodus};
use crate::state::StateDir;

/// Default wait between "every service is ready" and the settled census.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);
/// How long to retry connecting to a postgres that was just reported ready.
const READY_CONNECT_RETRY: Duration = Duration::from_secs(30);

/// What the guard needs to know about the stack.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    pub project: String,
    pub state: StateDir,
    pub stateful: Vec<StatefulService>,
    pub nodus: XNodus,
    /// For role passwords (`password_env`): the process environment over `.env`.
    pub env: Env,
}

impl GuardConfig {
    pub fn from_project(p: &crate::project::Project) -> GuardConfig {
        GuardConfig {
            project: p.name().to_string(),
            state: p.state.clone(),
            stateful: p.hardened.stateful.clone(),
            nodus: p.stack.nodus.clone(),
            env: p.env.clone(),
        }
    }

    pub fn ledger_path(&self) -> std::path::PathBuf {
        self.state.ledger_path(&self.project)
    }

    /// `x-nodus.settle`, default 2s.
    pub fn settle(&self) -> Duration {
        self.nodus
            .settle
            .as_deref()
            .and_then(|s| crate::stack::duration::parse_duration(s).ok())
            .unwrap_or(DEFAULT_SETTLE)
    }
}

/// Shared between the [`Guard`] inside the hook chain and the session that prints its outcome.
#[derive(Debug, Default)]
pub struct Outcome {
    pub verdict: Option<Verdict>,
    /// A restore sets the census it expects (the snapshot's): the settled census is compared
    /// with it instead of the ledger.
    pub expected: Option<Census>,
    /// `nodus down --volumes`: the data is removed on purpose; the next start is a new baseline.
    pub remove_volumes: bool,
}

pub type SharedOutcome = Arc<Mutex<Outcome>>;

struct Early {
    /// Comparison with the baseline right after ready (None: no baseline).
    diff: Option<diff::ServiceDiff>,
    /// Number of services that were ready when this census was taken.
    position: usize,
}

struct Baseline {
    entry: Entry,
    census: ServiceCensus,
    identity: Option<ServiceIdentity>,
    guarded: bool,
}

/// The guard of one transition.
pub struct Guard {
    engine: Arc<dyn Engine>,
    ui: Ui,
    cfg: GuardConfig,
    transition: Transition,
    session: String,
    shared: SharedOutcome,
    opts: CensusOptions,
    ledger: Option<Ledger>,
    ledger_opened: bool,
    engine_id: Option<Option<String>>,
    /// Services in the order they became ready.
    ready_order: Vec<String>,
    /// Stateful services that became ready, with their container.
    ready: Vec<RunningService>,
    early: BTreeMap<String, Early>,
    /// When the first service of the start phase became ready.
    start_time: Option<String>,
    /// When this guard was created (the command started).
    created: chrono::DateTime<chrono::Utc>,
    /// Stateful services that kept running through this transition (same container, same start
    /// time as their baseline): nothing to compare.
    kept_running: std::collections::BTreeSet<String>,
    notes: Vec<String>,
}

pub fn transition_name(t: Transition) -> &'static str {
    match t {
        Transition::Up => "up",
        Transition::Down => "down",
        Transition::Stop => "stop",
        Transition::Start => "start",
        Transition::Restart => "restart",
        Transition::Restore => "restore",
    }
}

fn new_session_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    )
}

fn countable(s: &RunningService) -> bool {
    s.stateful
        .as_ref()
        .is_some_and(|st| census::supports(st.kind))
}

impl Guard {
    pub fn new(
        engine: Arc<dyn Engine>,
        ui: Ui,
        cfg: GuardConfig,
        transition: Transition,
        shared: SharedOutcome,
    ) -> Guard {
        Guard {
            engine,
            ui,
            cfg,
            transition,
            session: new_session_id(),
            shared,
            opts: CensusOptions::default(),
            ledger: None,
            ledger_opened: false,
            engine_id: None,
            ready_order: Vec::new(),
            ready: Vec::new(),
            early: BTreeMap::new(),
            start_time: None,
            created: chrono::Utc::now(),
            kept_running: Default::default(),
            notes: Vec::new(),
        }
    }

    /// The container was started by this command (unknown start times count as started). The
    /// margin absorbs a small clock difference between this host and the engine; this only
    /// decides which services a cause names, never whether data is compared.
    fn started_now(&self, c: &crate::engine::ContainerInfo) -> bool {
        match c
            .started_at
            .as_deref()
            .map(chrono::DateTime::parse_from_rfc3339)
        {
            Some(Ok(t)) => {
                t.with_timezone(&chrono::Utc) >= self.created - chrono::Duration::seconds(2)
            }
            _ => true,
        }
    }

    fn ledger(&mut self) -> Option<&mut Ledger> {
        if !self.ledger_opened {
            self.ledger_opened = true;
            let path = self.cfg.ledger_path();
            match open_ledger(&path, &self.cfg.project, &self.ui) {
                Ok(l) => {
                    if l.untrusted().is_some() {
                        self.notes.push(
                            "the census history before the corrupt ledger was set aside is unknown"
                                .into(),
                        );
                    }
                    self.ledger = Some(l);
                }
                Err(e) => self.ui.warn(format!(
                    "{e}; this transition is not checked against earlier censuses"
                )),
            }
        }
        self.ledger.as_mut()
    }

    fn save_ledger(&mut self) {
        if let Some(l) = self.ledger.as_mut() {
            if let Err(e) = l.save() {
                self.ui.warn(format!("could not record the census: {e}"));
            }
        }
    }

    async fn engine_id(&mut self) -> Option<String> {
        if self.engine_id.is_none() {
            self.engine_id = Some(match self.engine.info().await {
                Ok(i) => Some(i.id),
                Err(e) => {
                    tracing::debug!("engine info: {e}");
                    None
                }
            });
        }
        self.engine_id.clone().flatten()
    }

    async fn new_entry(
        &mut self,
        phase: Phase,
        census: Census,
        services: BTreeMap<String, ServiceIdentity>,
    ) -> Entry {
        Entry {
            session: self.session.clone(),
            transition: transition_name(self.transition).to_string(),
            phase,
            time: census::now_rfc3339(),
            project: self.cfg.project.clone(),
            nodus_version: env!("CARGO_PKG_VERSION").to_string(),
            engine_id: self.engine_id().await,
            volumes_removed: false,
            census,
            services,
        }
    }

    /// Adds `census` (and identities) to this session's entry of `phase`, creating it.
    async fn record(
        &mut self,
        phase: Phase,
        census: Census,
        ids: BTreeMap<String, ServiceIdentity>,
    ) {
        let fresh = self
            .new_entry(phase, Census::default(), BTreeMap::new())
            .await;
        let Some(l) = self.ledger() else { return };
        let entry = match l.find_mut(&fresh.session, phase) {
            Some(e) => e,
            None => {
                l.push(fresh.clone());
                l.find_mut(&fresh.session, phase).expect("just pushed")
            }
        };
        entry.time = census.taken_at.clone();
        entry.census.taken_at = census.taken_at.clone();
        entry.census.services.extend(census.services);
        entry.services.extend(ids);
        self.save_ledger();
    }

    fn baseline_for(&mut self, service: &str) -> Option<Baseline> {
        let expected = self.shared.lock().ok().and_then(|o| o.expected.clone());
        if let Some(exp) = expected {
            let census = exp
                .services
                .get(service)
                .filter(|c| c.is_available())?
                .clone();
            let mut only = Census {
                taken_at: exp.taken_at.clone(),
                services: BTreeMap::new(),
            };
            only.services.insert(service.to_string(), census.clone());
            return Some(Baseline {
                entry: Entry {
                    session: self.session.clone(),
                    transition: "snapshot".into(),
                    phase: Phase::Pre,
                    time: exp.taken_at.clone(),
                    project: self.cfg.project.clone(),
                    nodus_version: String::new(),
                    engine_id: None,
                    volumes_removed: false,
                    census: only,
                    services: BTreeMap::new(),
                },
                census,
                identity: None,
                guarded: true,
            });
        }
        if self.transition == Transition::Restore {
            return None;
        }
        let session = self.session.clone();
        let l = self.ledger()?;
        let from_outstanding = l.outstanding(service).is_some();
        let e = l.baseline(service, Some(&session))?;
        if e.volumes_removed && !from_outstanding {
            let msg = format!(
                "{service}: its volume was removed with `nodus down --volumes` at {}; this census is the new baseline",
                e.time
            );
            if !self.notes.contains(&msg) {
                self.notes.push(msg);
            }
            return None;
        }
        Some(Baseline {
            census: e.census_of(service)?.clone(),
            identity: e.services.get(service).cloned(),
            guarded: e.phase == Phase::Pre,
            entry: e,
        })
    }

    async fn identities(
        &self,
        svcs: &[RunningService],
        census: &Census,
    ) -> BTreeMap<String, ServiceIdentity> {
        let mut out = BTreeMap::new();
        for s in svcs {
            if let Some(id) =
                identity::identify(self.engine.as_ref(), s, census.services.get(&s.service)).await
            {
                out.insert(s.service.clone(), id);
            }
        }
        out
    }

    /// CHECKPOINT, sessions idle in transaction, UNLOGGED tables.
    async fn pg_before_stop(&self, svc: &RunningService, c: Option<&ServiceCensus>) {
        let engine = self.engine.as_ref();
        let name = &svc.service;
        if let Some(ServiceCensus::Postgres(p)) = c {
            let unlogged: Vec<String> = p
                .databases
                .iter()
                .flat_map(|(db, d)| {
                    d.tables
                        .iter()
                        .filter(|(_, t)| t.persistence == census::Persistence::Unlogged)
                        .map(move |(t, tc)| {
                            format!(
                                "{db}.{t} ({} {})",
                                tc.rows,
                                census::plural(tc.rows as usize, "row", "rows")
                            )
                        })
                })
                .collect();
            if !unlogged.is_empty() {
                self.ui.warn(format!(
                    "{name}: UNLOGGED tables (emptied by crash recovery if postgres is killed): {}",
                    unlogged.join(", ")
                ));
            }
        }
        let mut target = match pg::target_for(engine, name, &svc.container).await {
            Ok(t) => t,
            Err(e) => {
                self.ui.warn(format!(
                    "{name}: cannot connect for CHECKPOINT: {}",
                    e.message
                ));
                return;
            }
        };
        let session =
            match pg::connect_maintenance(engine, &mut target, Duration::from_secs(5)).await {
                Ok((s, _)) => s,
                Err(e) => {
                    self.ui.warn(format!(
                        "{name}: cannot connect for CHECKPOINT: {}",
                        e.message
                    ));
                    return;
                }
            };
        match session.query(pg::IDLE_IN_TX_QUERY).await {
            Ok(rows) if !rows.is_empty() => {
                self.ui.warn(format!(
                    "{name}: {} {} idle in transaction; their uncommitted work will be rolled back:",
                    rows.len(),
                    census::plural(rows.len(), "session is", "sessions are")
                ));
                for r in rows {
                    let f = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
                    let app = if f(2).is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", f(2))
                    };
                    eprintln!(
                        "    {}@{} from {}{app}, idle since {}: {}",
                        f(1),
                        f(0),
                        f(3),
                        f(4),
                        f(5)
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("{name}: pg_stat_activity: {}", e.message),
        }
        let spinner = self.ui.spinner(format!("{name}: CHECKPOINT"));
        let r = session.execute("CHECKPOINT").await;
        spinner.finish_and_clear();
        match r {
            Ok(()) => self.ui.detail(format!("{name}: CHECKPOINT done")),
            Err(e) => self
                .ui
                .warn(format!("{name}: CHECKPOINT failed: {}", e.message)),
        }
    }

    fn started_after(&self, service: &str, started: &[RunningService]) -> Vec<String> {
        let Some(e) = self.early.get(service) else {
            return Vec::new();
        };
        let mut out: Vec<String> = self.ready_order.iter().skip(e.position).cloned().collect();
        for s in started {
            if self.started_now(&s.container)
                && !self.ready_order.contains(&s.service)
                && !out.contains(&s.service)
            {
                out.push(s.service.clone());
            }
        }
        out.retain(|s| s != service);
        out
    }

    fn publish(&self, v: Verdict) {
        if let Ok(mut o) = self.shared.lock() {
            o.verdict = Some(v);
        }
    }
}

/// Remembers losses found by `v` against `baselines` (their baseline stays pinned until
/// accepted) and forgets those whose data is back. With `fresh_baseline` (a restore without an
/// expected census), the current state becomes the baseline. Returns notes for the user.
fn update_outstanding(
    l: &mut Ledger,
    v: &mut Verdict,
    baselines: &BTreeMap<String, Entry>,
    fresh_baseline: bool,
) -> Vec<String> {
    let mut notes = Vec::new();
    let transition = v.transition.clone();
    for (name, sv) in v.services.iter_mut() {
        match sv.status {
            Status::Loss => {
                if let Some(o) = l.outstanding(name) {
                    // What was inferred when it happened beats "changed since the census".
                    let vague = sv
                        .cause
                        .as_ref()
                        .is_none_or(|c| c.code == cause::CauseCode::ChangedSinceCensus);
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
                if let Some(o) = l.clear_outstanding(name) {
                    notes.push(format!(
                        "{name}: the data found missing at {} (nodus {}) is back",
                        o.detected_at, o.detected_by
                    ));
                }
            }
            _ => {}
        }
        if fresh_baseline && l.clear_outstanding(name).is_some() {
            notes.push(format!("{name}: restored; this census is the new baseline"));
        }
    }
    notes
}

/// Opens the ledger, reporting a torn one (kept aside, not trusted).
pub fn open_ledger(path: &std::path::Path, project: &str, ui: &Ui) -> Result<Ledger, LedgerError> {
    let (l, problem) = Ledger::open(path, project)?;
    if let Some(p) = problem {
        ui.warn(p.to_string());
    } else if let Some(u) = l.untrusted() {
        ui.warn(format!(
            "ledger {} is not trusted since {}: the one before it was corrupt ({}; kept as {}); run `nodus verify --accept` to start a new baseline",
            path.display(),
            u.since,
            u.reason,
            u.corrupt_copy
        ));
    }
    Ok(l)
}

#[async_trait]
impl Hooks for Guard {
    async fn before_stop(
        &mut self,
        t: Transition,
        running: &[RunningService],
    ) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
        let svcs: Vec<RunningService> = running.iter().filter(|s| countable(s)).cloned().collect();
        if svcs.is_empty() {
            return Ok(BTreeMap::new());
        }
        let names: Vec<&str> = svcs.iter().map(|s| s.service.as_str()).collect();
        let spinner = self
            .ui
            .spinner(format!("census of {} before stopping", names.join(", ")));
        let census = census::take_many(self.engine.as_ref(), &svcs, &self.opts).await;
        spinner.finish_and_clear();
        for (name, c) in &census.services {
            if let ServiceCensus::Unavailable { reason } = c {
                self.ui.warn(format!(
                    "{name}: no census before stopping ({reason}); a loss at the next start cannot be told apart from earlier changes"
                ));
            }
        }
        for s in &svcs {
            if s.stateful.as_ref().map(|st| st.kind) == Some(ServiceKind::Postgres) {
                self.pg_before_stop(s, census.services.get(&s.service))
                    .await;
            }
        }
        let ids = self.identities(&svcs, &census).await;
        let remove_volumes = self
            .shared
            .lock()
            .map(|o| o.remove_volumes)
            .unwrap_or(false);
        let mut entry = self.new_entry(Phase::Pre, census.clone(), ids).await;
        entry.volumes_removed = remove_volumes && t == Transition::Down;
        let wipe = entry.volumes_removed;
        if let Some(l) = self.ledger() {
            if wipe {
                // Deleting the data on purpose supersedes losses not accepted yet.
                for s in &svcs {
                    l.clear_outstanding(&s.service);
                }
            }
            l.push(entry);
        }
        self.save_ledger();

        let mut v = Verdict::new(
            transition_name(t),
            census.totals(),
            self.cfg.ledger_path().display().to_string(),
            census::now_rfc3339(),
        );
        v.notes = self.notes.clone();
        v.conclude();
        self.publish(v);

        Ok(census
            .services
            .iter()
            .filter_map(|(k, c)| serde_json::to_value(c).ok().map(|v| (k.clone(), v)))
            .collect())
    }

    async fn after_stop(
        &mut self,
        _t: Transition,
        stopped: &[StoppedService],
    ) -> anyhow::Result<()> {
        let session = self.session.clone();
        let mut changed = false;
        if let Some(l) = self.ledger() {
            if let Some(e) = l.find_mut(&session, Phase::Pre) {
                for s in stopped {
                    if let Some(id) = e.services.get_mut(&s.service) {
                        id.stop_evidence = Some(s.evidence.clone());
                        changed = true;
                    }
                }
            }
        }
        for s in stopped {
            let killed = s.evidence.killed || s.evidence.oom_killed;
            if killed
                && s.stateful
                    .as_ref()
                    .is_some_and(|st| st.kind == ServiceKind::Postgres)
            {
                self.ui.warn(format!(
                    "{}: postgres did not shut down cleanly (killed); it will run crash recovery at the next start, which empties UNLOGGED tables",
                    s.service
                ));
            }
        }
        if changed {
            self.save_ledger();
        }
        Ok(())
    }

    async fn service_ready(&mut self, _t: Transition, svc: &RunningService) -> anyhow::Result<()> {
        if self.start_time.is_none() {
            self.start_time = Some(census::now_rfc3339());
        }
        if self.started_now(&svc.container) {
            self.ready_order.push(svc.service.clone());
        }
        if !countable(svc) {
            return Ok(());
        }
        let kind = svc.stateful.as_ref().map(|s| s.kind);
        let engine = self.engine.clone();
        if kind == Some(ServiceKind::Postgres) {
            if let Some(spec) = self.cfg.nodus.services.get(&svc.service) {
                let created = provision::provision(
                    engine.as_ref(),
                    svc,
                    spec,
                    &self.cfg.env,
                    READY_CONNECT_RETRY,
                )
                .await?;
                for c in created {
                    self.ui.success(format!("{}: {c}", svc.service));
                }
            }
        }
        let kept_running = self.baseline_for(&svc.service).is_some_and(|b| {
            b.identity.as_ref().is_some_and(|id| {
                id.container_id.as_deref() == Some(svc.container.id.as_str())
                    && id.started_at.is_some()
                    && id.started_at == svc.container.started_at
            })
        });
        if kept_running {
            self.kept_running.insert(svc.service.clone());
            return Ok(());
        }
        let opts = CensusOptions {
            connect_retry: READY_CONNECT_RETRY,
            ..self.opts
        };
        let c = match census::take_service(engine.as_ref(), svc, &opts).await {
            Ok(c) => c,
            Err(e) => ServiceCensus::Unavailable {
                reason: e.to_string(),
            },
        };
        if let ServiceCensus::Unavailable { reason } = &c {
            self.ui.warn(format!(
                "{}: no census right after start: {reason}",
                svc.service
            ));
        }
        let mut one = Census {
            taken_at: census::now_rfc3339(),
            services: BTreeMap::new(),
        };
        one.services.insert(svc.service.clone(), c.clone());
        let ids = self.identities(std::slice::from_ref(svc), &one).await;
        let diff = self
            .baseline_for(&svc.service)
            .map(|b| diff::compare(&b.census, &c));
        if let (Some(d), Some(b)) = (&diff, self.baseline_for(&svc.service)) {
            if d.is_loss() && (b.guarded || d.is_structural_loss()) {
                self.ui.warn(format!(
                    "{}: right after start, {} compared with the census {} at {} (details when all services are up)",
                    svc.service,
                    d.summary(),
                    b.entry.phase.describe(),
                    b.entry.time
                ));
            }
        }
        self.record(Phase::PostReady, one, ids).await;
        self.early.insert(
            svc.service.clone(),
            Early {
                diff,
                position: self.ready_order.len(),
            },
        );
        self.ready.retain(|r| r.service != svc.service);
        self.ready.push(svc.clone());
        Ok(())
    }

    async fn all_ready(&mut self, t: Transition, started: &[RunningService]) -> anyhow::Result<()> {
        let mut check: Vec<RunningService> = self.ready.clone();
        for s in started {
            if countable(s)
                && !self.kept_running.contains(&s.service)
                && !check.iter().any(|c| c.service == s.service)
            {
                check.push(s.clone());
            }
        }
        if check.is_empty() {
            return Ok(());
        }
        let settle = self.cfg.settle();
        if !settle.is_zero() {
            let spinner = self.ui.spinner(format!(
                "letting the stack settle ({}s)",
                settle.as_secs_f32()
            ));
            tokio::time::sleep(settle).await;
            spinner.finish_and_clear();
        }
        let spinner = self.ui.spinner("census after start");
        let settled = census::take_many(self.engine.as_ref(), &check, &self.opts).await;
        spinner.finish_and_clear();
        let ids = self.identities(&check, &settled).await;
        let restore_point = self.start_time.clone().unwrap_or_else(census::now_rfc3339);

        let mut v = Verdict::new(
            transition_name(t),
            settled.totals(),
            self.cfg.ledger_path().display().to_string(),
            restore_point,
        );
        let mut baselines = BTreeMap::new();
        for s in &check {
            let Some(now) = settled.services.get(&s.service) else {
                continue;
            };
            let kind = s
                .stateful
                .as_ref()
                .map(|st| st.kind)
                .unwrap_or(ServiceKind::Other);
            let baseline = self.baseline_for(&s.service);
            if let Some(b) = &baseline {
                baselines.insert(s.service.clone(), b.entry.clone());
            }
            let early = self.early.get(&s.service).and_then(|e| e.diff.clone());
            let after = self.started_after(&s.service, started);
            let sv = verdict::judge(Judge {
                service: &s.service,
                kind,
                baseline: baseline.as_ref().map(|b| {
                    (
                        BaselineRef {
                            phase: b.entry.phase,
                            time: b.entry.time.clone(),
                            transition: b.entry.transition.clone(),
                            guarded: b.guarded,
                        },
                        &b.census,
                        b.identity.as_ref(),
                        b.entry.project.as_str(),
                    )
                }),
                now,
                early,
                current_identity: ids.get(&s.service),
                current_project: &self.cfg.project,
                started_after_early: &after,
                strict: false,
            });
            v.services.insert(s.service.clone(), sv);
        }
        v.conclude();
        if v.verdict == Status::Baseline {
            let first = self
                .ledger
                .as_ref()
                .is_some_and(|l| l.entries().iter().all(|e| e.session == self.session));
            if first
                && self
                    .ledger
                    .as_ref()
                    .is_some_and(|l| l.untrusted().is_none())
            {
                self.notes
                    .push("first census of this stack: recorded as the baseline".into());
            }
        }
        let fresh = t == Transition::Restore
            && self
                .shared
                .lock()
                .map(|o| o.expected.is_none())
                .unwrap_or(true);
        if let Some(l) = self.ledger.as_mut() {
            let notes = update_outstanding(l, &mut v, &baselines, fresh);
            self.notes.extend(notes);
        }
        v.notes = self.notes.clone();
        self.record(Phase::PostSettled, settled, ids).await;
        self.publish(v);
        Ok(())
    }
}

/// `nodus verify`: the census now against the latest recorded census of each service (any
/// phase; every difference counts). With `accept`, the census is recorded as the new baseline.
pub async fn verify(
    engine: &dyn Engine,
    cfg: &GuardConfig,
    ui: &Ui,
    accept: bool,
    fast: bool,
) -> anyhow::Result<Verdict> {
    let path = cfg.ledger_path();
    let mut ledger = open_ledger(&path, &cfg.project, ui)?;
    let opts = CensusOptions {
        fast,
        ..Default::default()
    };
    let countable: Vec<StatefulService> = cfg
        .stateful
        .iter()
        .filter(|s| census::supports(s.kind))
        .cloned()
        .collect();
    let spinner = ui.spinner("census");
    let running = census::running_stateful(engine, &cfg.project, &countable).await?;
    let live: Vec<RunningService> = running.values().flatten().cloned().collect();
    let mut now = census::take_many(engine, &live, &opts).await;
    spinner.finish_and_clear();
    for (name, rs) in &running {
        if rs.is_none() {
            now.services.insert(
                name.clone(),
                ServiceCensus::Unavailable {
                    reason: "not running (start the stack with `nodus up`)".into(),
                },
            );
        }
    }
    let mut ids = BTreeMap::new();
    for s in &live {
        if let Some(id) = identity::identify(engine, s, now.services.get(&s.service)).await {
            ids.insert(s.service.clone(), id);
        }
    }
    let mut v = Verdict::new(
        "verify",
        now.totals(),
        path.display().to_string(),
        census::now_rfc3339(),
    );
    let mut baselines = BTreeMap::new();
    for (name, c) in &now.services {
        let kind = countable
            .iter()
            .find(|s| &s.service == name)
            .map(|s| s.kind)
            .unwrap_or(ServiceKind::Other);
        let entry = ledger.baseline(name, None);
        if let Some(e) = &entry {
            baselines.insert(name.clone(), e.clone());
        }
        let entry = entry.as_ref();
        let sv = verdict::judge(Judge {
            service: name,
            kind,
            baseline: entry.and_then(|e| {
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
            current_identity: ids.get(name),
            current_project: &cfg.project,
            started_after_early: &[],
            strict: true,
        });
        let mut sv = sv;
        if let Some(base) = entry {
            // The data was there at the baseline and until the services started after it: a
            // snapshot from before that start can undo the loss.
            sv.restore_before = ledger
                .entries()
                .iter()
                .find(|e| {
                    e.time > base.time && e.phase != Phase::Pre && e.census_of(name).is_some()
                })
                .map(|e| e.time.clone());
        }
        v.services.insert(name.clone(), sv);
    }
    v.conclude();
    if !accept {
        let notes = update_outstanding(&mut ledger, &mut v, &baselines, false);
        v.notes.extend(notes);
    }
    if accept {
        let unavailable: Vec<&String> = now
            .services
            .iter()
            .filter(|(_, c)| !c.is_available())
            .map(|(n, _)| n)
            .collect();
        if !unavailable.is_empty() {
            anyhow::bail!(
                "cannot accept a census in which {} could not be counted; start the stack first",
                unavailable
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let entry = Entry {
            session: new_session_id(),
            transition: "verify".into(),
            phase: Phase::Accepted,
            time: now.taken_at.clone(),
            project: cfg.project.clone(),
            nodus_version: env!("CARGO_PKG_VERSION").to_string(),
            engine_id: engine.info().await.ok().map(|i| i.id),
            volumes_removed: false,
            census: now.clone(),
            services: ids,
        };
        ledger.push(entry);
        ledger.mark_trusted();
        for name in now.services.keys() {
            ledger.clear_outstanding(name);
        }
        ledger.save()?;
        if v.verdict == Status::Loss {
            v.notes
                .push(format!("accepted these differences: {}", v.loss_summary()));
        }
        for s in v.services.values_mut() {
            s.status = Status::Accepted;
        }
        v.verdict = Status::Accepted;
    } else {
        if ledger.entries().is_empty() {
            v.notes.push(format!(
                "no census recorded for project {} yet; run `nodus verify --accept` to record one",
                cfg.project
            ));
        }
        ledger.save()?;
    }
    Ok(v)
}

#[cfg(test)]
pub(crate) mod testutil;

/// Against a local postgres (`NODUS_TEST_PG=port:password:socketdir`, superuser `postgres`) and a
/// local redis (`NODUS_TEST_REDIS=1`, redis-cli on PATH talking to the default port): the census
/// and provisioning SQL, over TCP and over the exec (psql) path. Docker-based tests of the whole
/// guard live in tests/guard_*.rs.
#[cfg(test)]
mod local_server_tests {
    use super::census::*;
    use super::testutil::*;
    use crate::lifecycle::RunningService;
    use crate::stack::{ServiceKind, StatefulService};

    fn pg_env() -> Option<(u16, String, String)> {
        let v = std::env::var("NODUS_TEST_PG").ok()?;
        let mut it = v.splitn(3, ':');
        Some((
            it.next()?.parse().ok()?,
            it.next()?.to_string(),
            it.next()?.to_string(),
        ))
    }

    fn svc(kind: ServiceKind, c: crate::engine::ContainerInfo) -> RunningService {
        RunningService {
            service: "db".into(),
            container: c,
            stateful: Some(StatefulService {
                service: "db".into(),
                kind,
                data_dir: "/var/lib/postgresql/data".into(),
                volume_key: Some("db_data".into()),
                volume_name: Some("p_db_data".into()),
            }),
        }
    }

    use crate::guard::testutil::psql;

    #[tokio::test]
    #[ignore = "needs NODUS_TEST_PG=port:password:socketdir (a local postgres)"]
    async fn pg_census_and_provisioning_tcp_and_exec() {
        let (port, pw, sockdir) = pg_env().expect("NODUS_TEST_PG");
        let engine = LocalExecEngine {
            env: vec![
                ("PGHOST".into(), sockdir),
                ("PGPORT".into(), port.to_string()),
            ],
        };
        let pwenv = format!("POSTGRES_PASSWORD={pw}");
        for db in ["nt_a", "nt b", "nt_prov"] {
            psql(
                port,
                &pw,
                "postgres",
                &format!("DROP DATABASE IF EXISTS \"{db}\""),
            );
        }
        psql(port, &pw, "postgres", "DROP ROLE IF EXISTS nt_owner");
        psql(port, &pw, "postgres", "CREATE DATABASE nt_a");
        psql(port, &pw, "postgres", "CREATE DATABASE \"nt b\"");
        psql(
            port,
            &pw,
            "nt_a",
            "CREATE SCHEMA \"Odd\"\"Schema\"; CREATE TABLE \"Odd\"\"Schema\".\"T 1\"(x int); INSERT INTO \"Odd\"\"Schema\".\"T 1\" SELECT generate_series(1,5); \
             CREATE UNLOGGED TABLE public.cache(x int); INSERT INTO public.cache VALUES (1),(2); \
             CREATE TABLE public.ev(d int) PARTITION BY RANGE (d); CREATE TABLE public.ev_1 PARTITION OF public.ev FOR VALUES FROM (0) TO (10); \
             CREATE TABLE public.ev_2 PARTITION OF public.ev FOR VALUES FROM (10) TO (20); INSERT INTO public.ev SELECT generate_series(0,19); \
             CREATE TEMP TABLE tmp(x int)",
        );
        psql(
            port,
            &pw,
            "nt b",
            "CREATE TABLE t(x int); INSERT INTO t VALUES (1)",
        );

        // TCP
        let tcp = svc(ServiceKind::Postgres, container(&[&pwenv], &[(5432, port)]));
        let c = take_service(&engine, &tcp, &CensusOptions::default())
            .await
            .unwrap();
        let ServiceCensus::Postgres(p) = &c else {
            panic!("{c:?}")
        };
        assert!(p.system_identifier.len() > 10, "{}", p.system_identifier);
        let a = &p.databases["nt_a"].tables;
        assert_eq!(a["Odd\"Schema.T 1"].rows, 5);
        assert_eq!(a["public.cache"].persistence, Persistence::Unlogged);
        assert_eq!(a["public.cache"].rows, 2);
        assert_eq!(a["public.ev"].rows, 20);
        assert!(p.databases["nt_a"].partitioned.contains("public.ev"));
        assert_eq!(a["public.ev_1"].rows, 10);
        assert!(!a.keys().any(|k| k.contains("tmp")));
        assert_eq!(p.databases["nt b"].tables["public.t"].rows, 1);
        assert!(!p.databases.contains_key("template0") && !p.databases.contains_key("template1"));

        // exec (psql in the "container"): same answer
        let ex = svc(ServiceKind::Postgres, container(&[&pwenv], &[]));
        let c2 = take_service(&engine, &ex, &CensusOptions::default())
            .await
            .unwrap();
        // (only this test's databases: other tests may use the same server concurrently)
        let (ServiceCensus::Postgres(p1), ServiceCensus::Postgres(p2)) = (&c, &c2) else {
            panic!("exec census is not postgres")
        };
        assert_eq!(p1.system_identifier, p2.system_identifier);
        for db in ["nt_a", "nt b"] {
            assert!(
                p1.databases[db] == p2.databases[db],
                "{db} differs over exec"
            );
        }

        // fast
        let f = take_service(
            &engine,
            &tcp,
            &CensusOptions {
                fast: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let ServiceCensus::Postgres(fp) = f else {
            panic!()
        };
        assert!(fp.databases["nt_a"].tables["public.ev_1"].estimated);

        // a dropped table is reported missing
        psql(port, &pw, "nt b", "DROP TABLE t");
        let after = take_service(&engine, &tcp, &CensusOptions::default())
            .await
            .unwrap();
        let d = super::diff::compare(&c, &after);
        assert_eq!(d.missing_tables["nt b"], vec!["public.t"]);

        // POSTGRES_DB pointing at a database that is gone: falls back to postgres
        let gone = svc(
            ServiceKind::Postgres,
            container(&[&pwenv, "POSTGRES_DB=nope_gone"], &[(5432, port)]),
        );
        assert!(matches!(
            take_service(&engine, &gone, &CensusOptions::default())
                .await
                .unwrap(),
            ServiceCensus::Postgres(_)
        ));

        // provisioning, over both paths, twice (idempotent)
        let spec: crate::stack::xnodus::ServiceOptions = serde_yaml::from_str(
            "databases:\n  - name: nt_prov\n    owner: nt_owner\n    extensions: [pg_trgm, uuid-ossp]\nroles:\n  - name: nt_owner\n    password_env: NT_OWNER_PW\n",
        )
        .unwrap();
        let mut env = crate::stack::Env::new();
        env.insert("NT_OWNER_PW".into(), "o'wner\\pw".into());
        let created = super::provision::provision(
            &engine,
            &ex,
            &spec,
            &env,
            std::time::Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert_eq!(
            created,
            vec![
                "created role nt_owner",
                "created database nt_prov (owner nt_owner)",
                "created extension pg_trgm in nt_prov",
                "created extension uuid-ossp in nt_prov"
            ]
        );
        let again = super::provision::provision(
            &engine,
            &tcp,
            &spec,
            &env,
            std::time::Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert!(again.is_empty(), "{again:?}");
        // the role can log in with the password it was given
        let out = std::process::Command::new("psql")
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "nt_owner",
                "-d",
                "nt_prov",
                "-c",
                "select 1",
            ])
            .env("PGPASSWORD", "o'wner\\pw")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[tokio::test]
    #[ignore = "needs NODUS_TEST_REDIS=1 (a local redis-server on the default port)"]
    async fn redis_census_via_exec() {
        let engine = LocalExecEngine { env: vec![] };
        let flush = std::process::Command::new("redis-cli")
            .args(["-n", "7", "FLUSHDB"])
            .output()
            .unwrap();
        assert!(flush.status.success());
        for k in ["a", "b", "c"] {
            std::process::Command::new("redis-cli")
                .args(["-n", "7", "SET", k, "1"])
                .output()
                .unwrap();
        }
        std::process::Command::new("redis-cli")
            .args(["-n", "7", "SET", "t", "1", "EX", "100"])
            .output()
            .unwrap();
        let r = svc(ServiceKind::Redis, container(&[], &[]));
        let c = take_service(&engine, &r, &CensusOptions::default())
            .await
            .unwrap();
        let ServiceCensus::Redis(rc) = c else {
            panic!("{c:?}")
        };
        assert_eq!(rc.keys[&7], 4);
        assert_eq!(rc.expires[&7], 1);
    }
}

#[cfg(test)]
mod local_bench {
    #[tokio::test]
    #[ignore = "timing against NODUS_TEST_PG (see local_server_tests)"]
    async fn census_timing() {
        let v = std::env::var("NODUS_TEST_PG").unwrap();
        let mut it = v.splitn(3, ':');
        let port: u16 = it.next().unwrap().parse().unwrap();
        let pw = it.next().unwrap().to_string();
        let engine = super::testutil::LocalExecEngine { env: vec![] };
        let c = super::testutil::container(&[&format!("POSTGRES_PASSWORD={pw}")], &[(5432, port)]);
        let svc = crate::lifecycle::RunningService {
            service: "db".into(),
            container: c,
            stateful: Some(crate::stack::StatefulService {
                service: "db".into(),
                kind: crate::stack::ServiceKind::Postgres,
                data_dir: "/d".into(),
                volume_key: None,
                volume_name: None,
            }),
        };
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let c = super::census::take_service(&engine, &svc, &Default::default())
                .await
                .unwrap();
            let mut cen = super::census::Census::default();
            cen.services.insert("db".into(), c);
            eprintln!("{:?} {}", t.elapsed(), cen.totals().summary());
        }
    }
}

/// The whole guard over a local postgres (see `local_server_tests`): pre census, loss while
/// down, loss during startup, outstanding loss, verify/accept.
#[cfg(test)]
mod guard_flow_tests {
    use super::*;
    use crate::lifecycle::StopEvidence;

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
}
