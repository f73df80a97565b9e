//! Stack lifecycle over the [`Engine`] trait: up, down, stop, start, restart, status.
//!
//! Plans come from `stack::plan` (pure); this module executes them and calls [`Hooks`] at the
//! points the guard and snapshots need. It never touches a resource without the stack's labels.

pub mod adopt;
mod crash;
mod orphans;
mod ports;
mod probe;
mod resources;
pub mod spec;
mod status;
mod stop;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_build;
#[cfg(test)]
mod tests_fail;
#[cfg(test)]
mod tests_flags;
#[cfg(test)]
mod tests_perf;
#[cfg(test)]
mod tests_stop;
mod up;
mod wait;
pub use crash::crash_recovery_ran;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::engine::{ContainerInfo, Engine, EngineError, RunState};
use crate::labels;
use crate::output::Ui;
use crate::project::Project;
use crate::stack::{ComposeFile, Hardened, Service, StackError, StatefulService};
use spec::{BuiltSpec, SpecError};

pub use status::format_port;
pub use stop::postgres_shutdown;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Stack(#[from] crate::stack::StackError),
    #[error("service {service} (container {container}) did not become healthy within {waited_secs}s; last log lines:\n{logs}")]
    NotHealthy {
        service: String,
        container: String,
        waited_secs: u64,
        logs: String,
    },
    #[error("service {service} (container {container}) exited with code {exit_code} while starting; last log lines:\n{logs}")]
    Exited {
        service: String,
        container: String,
        exit_code: i64,
        logs: String,
    },
    #[error("service {service} has neither an `image:` nor a `build:` section")]
    NoImage { service: String },
    #[error("{kind} {name} exists but does not carry the labels of project {project}; nodus will not touch it (remove or rename it yourself)")]
    Foreign {
        kind: &'static str,
        name: String,
        project: String,
    },
    #[error("{kind} {name} is declared external but does not exist; create it first (docker {kind} create {name})")]
    ExternalMissing { kind: &'static str, name: String },
    #[error("service {service} has no container yet; run `nodus up {service}` first")]
    NoContainer { service: String },
    #[error("container {container} of service {service} cannot start: its network {network} was removed since it stopped; `nodus up` recreates the container (its volumes are kept)")]
    NetworkGone {
        service: String,
        container: String,
        network: String,
    },
    #[error(transparent)]
    Spec(SpecError),
    #[error(transparent)]
    Build(#[from] crate::build::BuildError),
    #[error("{0}")]
    Hook(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A published host port is taken (by another container or a program).
    #[error("{message}")]
    PortTaken {
        service: String,
        port: u16,
        message: String,
        /// The engine's own words, kept for `-v`/debugging (not shown by default).
        engine: EngineError,
    },
}

impl From<SpecError> for LifecycleError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::NoImage { service } => LifecycleError::NoImage { service },
            other => LifecycleError::Spec(other),
        }
    }
}

impl LifecycleError {
    /// Wraps a hook's error, keeping a [`crate::error::DataLossDetected`] reachable for the exit
    /// code mapping.
    pub fn hook(e: anyhow::Error) -> LifecycleError {
        match e.downcast::<crate::error::DataLossDetected>() {
            Ok(d) => LifecycleError::Hook(Box::new(d)),
            Err(e) => LifecycleError::Hook(e.into()),
        }
    }
}

/// How a container stopped: the evidence the guard records and warns about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct StopEvidence {
    pub exit_code: Option<i64>,
    /// Postgres: the log says "database system is shut down".
    pub clean_shutdown: Option<bool>,
    /// The matching log line, when found.
    pub log_line: Option<String>,
    /// Exit 137 / SIGKILL after the grace period, or OOM.
    pub killed: bool,
    pub oom_killed: bool,
}

/// A service container that is running (or was, for `before_stop`).
#[derive(Debug, Clone)]
pub struct RunningService {
    pub service: String,
    pub container: ContainerInfo,
    pub stateful: Option<StatefulService>,
}

/// A service container that was just stopped and is not removed yet.
#[derive(Debug, Clone)]
pub struct StoppedService {
    pub service: String,
    pub container: ContainerInfo,
    pub stateful: Option<StatefulService>,
    pub evidence: StopEvidence,
    /// Whatever `before_stop` returned for this service (the guard's census, as JSON).
    pub pre_stop: Option<serde_json::Value>,
}

/// Which transition is running (recorded in the ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Up,
    Down,
    Stop,
    Start,
    Restart,
    Restore,
}

/// Extension points for the guard and snapshots. All default to doing nothing.
#[async_trait]
pub trait Hooks: Send {
    /// The services are running and about to be stopped (census, CHECKPOINT, warnings).
    /// Returns per-service data handed to `after_stop` as [`StoppedService::pre_stop`].
    async fn before_stop(
        &mut self,
        _transition: Transition,
        _running: &[RunningService],
    ) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
        Ok(BTreeMap::new())
    }
    /// Whether this hook's `after_stop` needs `service`'s container to stay stopped until it
    /// returns (a snapshot reads its volume). A restart starts a service no hook holds as soon
    /// as its own stop ended, before `after_stop` (see [`Lifecycle::restart`]).
    fn holds_stopped(&self, _transition: Transition, _service: &str) -> bool {
        false
    }
    /// The services stopped; their containers still exist (snapshots are taken here). In a
    /// restart, services no hook holds ([`Hooks::holds_stopped`]) may be running again.
    async fn after_stop(
        &mut self,
        _transition: Transition,
        _stopped: &[StoppedService],
    ) -> anyhow::Result<()> {
        Ok(())
    }
    /// [`Hooks::after_stop`], telling `release` each service it holds stopped as soon as it no
    /// longer needs it stopped (the snapshot of its volume ended while others are still taken),
    /// so a restart starts it at once. Everything is released when it returns; by default
    /// nothing earlier.
    async fn after_stop_releasing(
        &mut self,
        transition: Transition,
        stopped: &[StoppedService],
        _release: &Release,
    ) -> anyhow::Result<()> {
        self.after_stop(transition, stopped).await
    }
    /// A stopped postgres container about to be started did not shut down cleanly (killed
    /// outside nodus, crashed, OOM): it will run crash recovery, which empties UNLOGGED tables.
    async fn unclean_stop_found(
        &mut self,
        _transition: Transition,
        _service: &str,
        _evidence: &StopEvidence,
    ) -> anyhow::Result<()> {
        Ok(())
    }
    /// A service became ready (healthy, or started when it has no healthcheck); services that
    /// depend on it have not been started yet (provisioning, first census).
    async fn service_ready(
        &mut self,
        _transition: Transition,
        _svc: &RunningService,
    ) -> anyhow::Result<()> {
        Ok(())
    }
    /// Every service of a start wave is ready (they were started together and waited for
    /// together); none of their dependents has started yet. By default `service_ready` for each,
    /// in order; the guard counts them all at once.
    async fn wave_ready(&mut self, t: Transition, svcs: &[RunningService]) -> anyhow::Result<()> {
        for s in svcs {
            self.service_ready(t, s).await?;
        }
        Ok(())
    }
    /// Every service of the transition is up and ready (settled census, comparison).
    async fn all_ready(
        &mut self,
        _transition: Transition,
        _started: &[RunningService],
    ) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Where [`Hooks::after_stop_releasing`] says a service may start again. Services a later hook
/// of a [`HookChain`] still holds are withheld. Not `Clone`: the restart waits for releases
/// until every `Release` is gone, so a hook must not keep one beyond its call.
pub struct Release {
    tx: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    withheld: BTreeSet<String>,
}

impl Release {
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<String>) -> Release {
        Release {
            tx: Some(tx),
            withheld: BTreeSet::new(),
        }
    }
    /// Releases nothing (`after_stop` outside a restart).
    pub fn none() -> Release {
        Release {
            tx: None,
            withheld: BTreeSet::new(),
        }
    }
    /// `service` may start again as far as this hook is concerned.
    pub fn release(&self, service: &str) {
        if let Some(tx) = &self.tx {
            if !self.withheld.contains(service) {
                let _ = tx.send(service.to_string());
            }
        }
    }
    fn withholding(&self, withheld: BTreeSet<String>) -> Release {
        Release {
            tx: self.tx.clone(),
            withheld: self.withheld.union(&withheld).cloned().collect(),
        }
    }
}

/// Hooks that do nothing.
pub struct NoHooks;
impl Hooks for NoHooks {}

/// Runs several hooks in order.
pub struct HookChain(pub Vec<Box<dyn Hooks>>);

#[async_trait]
impl Hooks for HookChain {
    async fn before_stop(
        &mut self,
        t: Transition,
        running: &[RunningService],
    ) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
        let mut out = BTreeMap::new();
        for h in &mut self.0 {
            out.extend(h.before_stop(t, running).await?);
        }
        Ok(out)
    }
    fn holds_stopped(&self, t: Transition, service: &str) -> bool {
        self.0.iter().any(|h| h.holds_stopped(t, service))
    }
    async fn after_stop(
        &mut self,
        t: Transition,
        stopped: &[StoppedService],
    ) -> anyhow::Result<()> {
        for h in &mut self.0 {
            h.after_stop(t, stopped).await?;
        }
        Ok(())
    }
    /// Each hook in turn; a service one hook releases is released if no later hook holds it,
    /// and when a hook returns, whatever no later hook holds.
    async fn after_stop_releasing(
        &mut self,
        t: Transition,
        stopped: &[StoppedService],
        release: &Release,
    ) -> anyhow::Result<()> {
        for i in 0..self.0.len() {
            let (head, tail) = self.0.split_at_mut(i + 1);
            let later: BTreeSet<String> = stopped
                .iter()
                .map(|s| s.service.clone())
                .filter(|s| tail.iter().any(|h| h.holds_stopped(t, s)))
                .collect();
            let inner = release.withholding(later);
            head[i].after_stop_releasing(t, stopped, &inner).await?;
            for s in stopped {
                inner.release(&s.service);
            }
        }
        Ok(())
    }
    async fn unclean_stop_found(
        &mut self,
        t: Transition,
        service: &str,
        evidence: &StopEvidence,
    ) -> anyhow::Result<()> {
        for h in &mut self.0 {
            h.unclean_stop_found(t, service, evidence).await?;
        }
        Ok(())
    }
    async fn service_ready(&mut self, t: Transition, svc: &RunningService) -> anyhow::Result<()> {
        for h in &mut self.0 {
            h.service_ready(t, svc).await?;
        }
        Ok(())
    }
    async fn wave_ready(&mut self, t: Transition, svcs: &[RunningService]) -> anyhow::Result<()> {
        for h in &mut self.0 {
            h.wave_ready(t, svcs).await?;
        }
        Ok(())
    }
    async fn all_ready(&mut self, t: Transition, started: &[RunningService]) -> anyhow::Result<()> {
        for h in &mut self.0 {
            h.all_ready(t, started).await?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Empty = all services.
    pub services: Vec<String>,
    /// How long to wait for each service to become healthy.
    pub timeout: Duration,
    /// Recreate existing containers even when their configuration did not change.
    pub force_recreate: bool,
    /// Keep existing containers even when their configuration changed.
    pub no_recreate: bool,
    /// Only the named services, not their dependencies.
    pub no_deps: bool,
    /// When to pull images.
    pub pull: ImagePull,
    /// Stop (guarded) and remove containers of services no longer in the stack.
    pub remove_orphans: bool,
    /// Building `build:` services' images (`--build`, `--no-build`).
    pub build: crate::build::Options,
}

/// `up --pull`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImagePull {
    /// Pull every image of the services brought up.
    Always,
    /// Pull images that are not present (the default).
    #[default]
    Missing,
    /// Never pull: a missing image is an error.
    Never,
}

#[derive(Debug, Clone)]
pub struct DownOptions {
    /// Remove the stack's volumes too (the command has already confirmed).
    pub remove_volumes: bool,
    /// Override of every service's grace period.
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    pub container: Option<String>,
    pub state: String,
    pub health: String,
    pub image: String,
    pub volumes: Vec<String>,
    pub ports: Vec<String>,
    /// The container belongs to a service that is no longer in the stack.
    pub orphan: bool,
}

/// What happened to each service, for output and `--json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Images built for `build:` services (by image name).
    pub built: Vec<String>,
    pub created: Vec<String>,
    pub recreated: Vec<String>,
    pub started: Vec<String>,
    pub unchanged: Vec<String>,
    pub stopped: Vec<String>,
    pub removed: Vec<String>,
    pub volumes_created: Vec<String>,
    pub volumes_removed: Vec<String>,
    pub evidence: BTreeMap<String, StopEvidence>,
    /// Seconds per phase of the command (stop, snapshot, remove, create, start, ready, census,
    /// settle; see `timing.rs`).
    pub timings: BTreeMap<String, f64>,
}

/// Executes lifecycle operations for one project.
pub struct Lifecycle<'a> {
    pub engine: &'a dyn Engine,
    pub project: &'a str,
    pub hardened: &'a Hardened,
    pub ui: &'a Ui,
    /// Directory of the stack (for relative bind mounts and the working_dir label).
    pub working_dir: &'a std::path::Path,
    /// Paths of the stack files (config_files label).
    pub config_files: Vec<String>,
    /// The project's environment (the process environment over `.env`): resolves `environment`
    /// entries without a value, as compose does, when container specs are built (the stack model
    /// keeps them unresolved, so the rendered compose file never holds their values).
    pub env: &'a crate::stack::Env,
}

fn is_running(c: &ContainerInfo) -> bool {
    matches!(
        c.state,
        RunState::Running | RunState::Restarting | RunState::Paused
    )
}

fn service_label(c: &ContainerInfo) -> Option<&str> {
    c.labels.get(labels::SERVICE).map(String::as_str)
}

/// One container per service (preferring a running one, then container number 1).
fn by_service(containers: Vec<ContainerInfo>) -> BTreeMap<String, ContainerInfo> {
    let mut out: BTreeMap<String, ContainerInfo> = BTreeMap::new();
    for c in containers {
        let Some(svc) = service_label(&c).map(str::to_string) else {
            continue;
        };
        let better = match out.get(&svc) {
            None => true,
            Some(old) => {
                (is_running(&c) && !is_running(old))
                    || (is_running(&c) == is_running(old)
                        && c.labels.get(labels::CONTAINER_NUMBER).map(String::as_str) == Some("1"))
            }
        };
        if better {
            out.insert(svc, c);
        }
    }
    out
}

impl<'a> Lifecycle<'a> {
    /// A lifecycle for a loaded project.
    pub fn for_project(engine: &'a dyn Engine, project: &'a Project, ui: &'a Ui) -> Lifecycle<'a> {
        Lifecycle {
            engine,
            project: project.name(),
            hardened: &project.hardened,
            ui,
            working_dir: &project.dir,
            config_files: project
                .stack
                .files
                .iter()
                .map(|f| {
                    std::path::absolute(f)
                        .unwrap_or_else(|_| f.clone())
                        .to_string_lossy()
                        .into_owned()
                })
                .collect(),
            env: &project.env,
        }
    }

    fn compose(&self) -> &ComposeFile {
        &self.hardened.compose
    }

    fn service(&self, name: &str) -> Result<&Service, LifecycleError> {
        self.compose().services.get(name).ok_or_else(|| {
            LifecycleError::Stack(StackError::UnknownService {
                name: name.to_string(),
                available: self.compose().services.keys().cloned().collect(),
            })
        })
    }

    fn stateful(&self, service: &str) -> Option<StatefulService> {
        self.hardened
            .stateful
            .iter()
            .find(|s| s.service == service)
            .cloned()
    }

    /// The container spec of a service (warnings included).
    pub fn build_spec(&self, name: &str) -> Result<BuiltSpec, LifecycleError> {
        let svc = self.service(name)?;
        let wd = std::path::absolute(self.working_dir)
            .unwrap_or_else(|_| self.working_dir.to_path_buf());
        Ok(spec::container_spec(
            self.project,
            name,
            svc,
            self.hardened,
            &wd,
            &self.config_files,
            &|k| self.env.get(k).cloned().or_else(|| std::env::var(k).ok()),
        )?)
    }

    /// The project's service containers (all states), found by label: not nodus' helpers, not
    /// one-off containers.
    async fn project_containers(&self) -> Result<Vec<ContainerInfo>, LifecycleError> {
        let all = self
            .engine
            .list_containers(&labels::project_filter(self.project))
            .await?;
        Ok(all
            .into_iter()
            .filter(|c| {
                !c.labels.contains_key(labels::HELPER)
                    && c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
                    && service_label(c).is_some()
            })
            .collect())
    }

    /// `report` with the command's time per phase, which `-v` also prints.
    fn timed(&self, mut report: Report) -> Report {
        report.timings = crate::timing::snapshot();
        let summary = crate::timing::summary();
        if !summary.is_empty() {
            self.ui.detail(format!("time: {summary}"));
        }
        report
    }

    fn width(&self, names: &[String]) -> usize {
        names.iter().map(String::len).max().unwrap_or(0)
    }
}
