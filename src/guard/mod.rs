//! The persistence guard: provisioning, census, ledger, loss detection and cause inference.
//!
//! [`Guard`] implements [`Hooks`](crate::lifecycle::Hooks) (in `hooks.rs`): it counts what
//! every stateful service holds before a transition stops it (and CHECKPOINTs postgres),
//! provisions postgres and counts again right after each service is ready (before its
//! dependents start) and once everything settled, and compares with the ledger. The outcome
//! ([`verdict::Verdict`]) is left in a [`SharedOutcome`] for `commands::hooks::Session::finish`
//! to print and turn into exit code 3. `nodus verify` is in `verify.rs`.

pub mod cause;
pub mod census;
pub mod compare;
pub mod diff;
pub mod http;
pub mod identity;
pub mod ledger;
pub mod live;
pub mod pg;
pub mod provision;
pub mod redis;
pub mod verdict;

mod hooks;
pub mod settle;
mod verify;

pub use verify::verify;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use census::{Census, CensusOptions, ServiceCensus};
use ledger::{Entry, Ledger, LedgerError, Phase, ServiceIdentity};
use verdict::Verdict;

use crate::engine::Engine;
use crate::lifecycle::{RunningService, Transition};
use crate::output::Ui;
use crate::stack::{Env, StatefulService, XNodus};
use crate::state::StateDir;

/// Default longest wait between "every service is ready" and the settled census (see
/// `settle.rs`: it ends as soon as two consecutive censuses agree).
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

    /// `x-nodus.settle`, default 2s: the longest settle (see `settle.rs`).
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
    /// The census right after ready, and when it was taken: the settled census when no
    /// application service started in this transition (see `settle.rs`).
    census: ServiceCensus,
    taken_at: String,
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
    /// Postgres services found stopped without a clean shutdown before this start (killed
    /// outside nodus): their crash recovery empties UNLOGGED tables, a loss whatever ran since
    /// the baseline.
    unclean_start: BTreeMap<String, crate::lifecycle::StopEvidence>,
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
            unclean_start: BTreeMap::new(),
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

    fn publish(&self, v: Verdict) {
        if let Ok(mut o) = self.shared.lock() {
            o.verdict = Some(v);
        }
    }
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

#[cfg(test)]
mod tests_flow;
#[cfg(test)]
mod tests_local;
#[cfg(test)]
mod tests_settle;
#[cfg(test)]
mod tests_wave;
#[cfg(test)]
pub(crate) mod testutil;
