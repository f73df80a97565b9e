//! Stack lifecycle over the [`Engine`] trait: up, down, stop, start, restart, status.
//!
//! Plans come from `stack::plan` (pure); this module executes them and calls [`Hooks`] at the
//! points the guard and snapshots need. It never touches a resource without the stack's labels.

pub mod spec;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;

use crate::engine::{
    ContainerInfo, ContainerSpec, Engine, EngineError, Health, Labels, MountKind, MountSpec,
    PullProgress, RunState,
};
use crate::labels;
use crate::output::Ui;
use crate::project::Project;
use crate::stack::model::DependsCondition;
use crate::stack::{
    plan, ComposeFile, Hardened, Service, ServiceKind, StackError, StatefulService,
};
use spec::{BuiltSpec, SpecError};

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
    #[error("service {service} has no image (and building images is not supported yet: run `docker compose -f .nodus/compose.yaml build {service}` first)")]
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
    #[error(transparent)]
    Spec(SpecError),
    #[error("{0}")]
    Hook(#[source] Box<dyn std::error::Error + Send + Sync>),
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
    /// The services stopped; their containers still exist (snapshots are taken here).
    async fn after_stop(
        &mut self,
        _transition: Transition,
        _stopped: &[StoppedService],
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
    /// Every service of the transition is up and ready (settled census, comparison).
    async fn all_ready(
        &mut self,
        _transition: Transition,
        _started: &[RunningService],
    ) -> anyhow::Result<()> {
        Ok(())
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
    async fn service_ready(&mut self, t: Transition, svc: &RunningService) -> anyhow::Result<()> {
        for h in &mut self.0 {
            h.service_ready(t, svc).await?;
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

#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Empty = all services.
    pub services: Vec<String>,
    /// How long to wait for each service to become healthy.
    pub timeout: Duration,
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
    pub created: Vec<String>,
    pub recreated: Vec<String>,
    pub started: Vec<String>,
    pub unchanged: Vec<String>,
    pub stopped: Vec<String>,
    pub removed: Vec<String>,
    pub volumes_created: Vec<String>,
    pub volumes_removed: Vec<String>,
    pub evidence: BTreeMap<String, StopEvidence>,
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

/// What a wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Healthy when the container has a healthcheck, else running (or exited 0: a one-shot).
    Ready,
    /// `service_started`: running (or exited 0).
    Started,
    /// `service_healthy`.
    Healthy,
    /// `service_completed_successfully`: exited 0.
    Completed,
}

impl Want {
    fn describe(self) -> &'static str {
        match self {
            Want::Ready => "ready",
            Want::Started => "started",
            Want::Healthy => "healthy",
            Want::Completed => "completed",
        }
    }
}

enum Verdict {
    Done,
    /// `service_healthy` on a container without a healthcheck: accepted with a warning.
    NoHealthcheck,
    Wait,
    Unhealthy,
    Exited(i64),
}

fn judge(want: Want, info: &ContainerInfo) -> Verdict {
    match info.state {
        RunState::Running => match (want, info.health) {
            (Want::Completed, _) => Verdict::Wait,
            (Want::Started, _) => Verdict::Done,
            (_, Health::Starting) => Verdict::Wait,
            (_, Health::Unhealthy) => Verdict::Unhealthy,
            (_, Health::Healthy) => Verdict::Done,
            (Want::Ready, Health::None) => Verdict::Done,
            (Want::Healthy, Health::None) => Verdict::NoHealthcheck,
        },
        RunState::Exited | RunState::Dead => match (want, info.exit_code.unwrap_or(-1)) {
            (Want::Healthy, code) => Verdict::Exited(code),
            (_, 0) => Verdict::Done,
            (_, code) => Verdict::Exited(code),
        },
        _ => Verdict::Wait,
    }
}

enum Action {
    Unchanged(ContainerInfo),
    Start(ContainerInfo),
    Recreate(ContainerInfo),
    Create,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `up`: create what is missing, recreate what changed.
    Converge,
    /// `start`/`restart`: only start existing containers.
    StartOnly,
}

/// Clears a spinner however the wait ends.
struct Spin(indicatif::ProgressBar);
impl Drop for Spin {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A spinner that appears on the first `show()` (a service ready at once shows none) and is
/// cleared when dropped; its message can change while it spins.
struct Spinner<'a> {
    ui: &'a Ui,
    msg: std::sync::Mutex<String>,
    pb: std::sync::OnceLock<indicatif::ProgressBar>,
}

impl<'a> Spinner<'a> {
    fn new(ui: &'a Ui, msg: String) -> Self {
        Spinner {
            ui,
            msg: std::sync::Mutex::new(msg),
            pb: std::sync::OnceLock::new(),
        }
    }
    fn show(&self) {
        self.pb.get_or_init(|| {
            let msg = self.msg.lock().unwrap_or_else(|e| e.into_inner()).clone();
            self.ui.spinner(msg)
        });
    }
    fn set(&self, msg: String) {
        if let Some(pb) = self.pb.get() {
            pb.set_message(msg.clone());
        }
        *self.msg.lock().unwrap_or_else(|e| e.into_inner()) = msg;
    }
}

impl Drop for Spinner<'_> {
    fn drop(&mut self) {
        if let Some(pb) = self.pb.get() {
            pb.finish_and_clear();
        }
    }
}

const POSTGRES_SHUTDOWN: &str = "database system is shut down";
const POSTGRES_STARTUP: [&str; 2] = [
    "database system is ready to accept connections",
    "starting PostgreSQL",
];
const FAILURE_LOG_LINES: usize = 30;
const SHUTDOWN_LOG_LINES: usize = 50;

/// Whether the postgres log (tail) shows a clean shutdown after the last start; with the line.
pub fn postgres_shutdown(logs: &str) -> (bool, Option<String>) {
    let mut last_stop: Option<(usize, &str)> = None;
    let mut last_start: Option<usize> = None;
    for (i, line) in logs.lines().enumerate() {
        if line.contains(POSTGRES_SHUTDOWN) {
            last_stop = Some((i, line));
        } else if POSTGRES_STARTUP.iter().any(|m| line.contains(m)) {
            last_start = Some(i);
        }
    }
    match last_stop {
        Some((i, line)) if last_start.is_none_or(|s| s < i) => {
            (true, Some(line.trim().to_string()))
        }
        _ => (false, None),
    }
}

/// Like compose on recreation: anonymous volumes of the old container are mounted into the new
/// one at the same path (where the new spec has an anonymous volume there, or nothing: a VOLUME
/// of the image), so their data is not silently left behind. Returns (volume, target) carried.
fn carry_anonymous_volumes(spec: &mut ContainerSpec, old: &ContainerInfo) -> Vec<(String, String)> {
    let anonymous = |name: &str| name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit());
    let mut carried = Vec::new();
    for m in old
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Volume && anonymous(&m.name_or_source))
    {
        match spec.mounts.iter_mut().find(|n| n.target == m.target) {
            Some(n) if n.kind == MountKind::Volume && n.source.is_empty() => {
                n.source = m.name_or_source.clone();
            }
            Some(_) => continue,
            None => spec.mounts.push(MountSpec {
                kind: MountKind::Volume,
                source: m.name_or_source.clone(),
                target: m.target.clone(),
                read_only: false,
            }),
        }
        carried.push((m.name_or_source.clone(), m.target.clone()));
    }
    carried
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

fn describe(info: &ContainerInfo) -> String {
    match (info.state, info.health) {
        (RunState::Running, Health::None) => "running".into(),
        (RunState::Running, h) => health_str(h).into(),
        (RunState::Exited, _) => format!("exited {}", info.exit_code.unwrap_or(-1)),
        (s, _) => state_str(s).into(),
    }
}

fn state_str(s: RunState) -> &'static str {
    match s {
        RunState::Created => "created",
        RunState::Running => "running",
        RunState::Paused => "paused",
        RunState::Restarting => "restarting",
        RunState::Removing => "removing",
        RunState::Exited => "exited",
        RunState::Dead => "dead",
        RunState::Unknown => "unknown",
    }
}

fn health_str(h: Health) -> &'static str {
    match h {
        Health::None => "none",
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    }
}

/// "127.0.0.1:49153->5432/tcp"
pub fn format_port(p: &crate::engine::PublishedPort) -> String {
    let ip = if p.host_ip.contains(':') {
        format!("[{}]", p.host_ip)
    } else if p.host_ip.is_empty() {
        "0.0.0.0".to_string()
    } else {
        p.host_ip.clone()
    };
    format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
}

fn secs_ceil(d: Duration) -> i64 {
    d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0)
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

    fn width(&self, names: &[String]) -> usize {
        names.iter().map(String::len).max().unwrap_or(0)
    }

    fn note_orphans(&self, containers: &[ContainerInfo]) {
        for c in containers {
            if let Some(svc) = service_label(c) {
                if !self.compose().services.contains_key(svc) {
                    self.ui.status(format!(
                        "container {} belongs to service {svc}, which is no longer in the stack (orphan); `nodus down` removes it",
                        c.name
                    ));
                }
            }
        }
    }

    pub async fn up(
        &self,
        opts: &UpOptions,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        self.bring_up(opts, Transition::Up, Mode::Converge, hooks)
            .await
    }

    async fn bring_up(
        &self,
        opts: &UpOptions,
        transition: Transition,
        mode: Mode,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        let compose = self.compose();
        let order = plan::start_order(compose, &opts.services)?;
        let mut report = Report::default();

        // 1. Specs: every error about the stack comes before anything is touched.
        let mut specs: BTreeMap<String, BuiltSpec> = BTreeMap::new();
        let mut warned = BTreeSet::new();
        for name in &order {
            let built = self.build_spec(name)?;
            for w in &built.warnings {
                if warned.insert(w.clone()) {
                    self.ui.warn(w);
                }
            }
            specs.insert(name.clone(), built);
        }

        // 2. What exists, and what to do per service.
        let containers = self.project_containers().await?;
        if mode == Mode::Converge {
            self.note_orphans(&containers);
        }
        let mut existing = by_service(containers);
        let mut actions: BTreeMap<String, Action> = BTreeMap::new();
        for name in &order {
            let built = &specs[name];
            let action = match existing.remove(name) {
                Some(c) => {
                    let same = c.labels.get(labels::CONFIG_HASH) == Some(&built.config_hash);
                    match mode {
                        Mode::Converge if !same => Action::Recreate(c),
                        Mode::Converge | Mode::StartOnly => {
                            if !same {
                                self.ui.warn(format!(
                                    "service {name}: its definition changed since container {} was created; `nodus up` applies the change",
                                    c.name
                                ));
                            }
                            if is_running(&c) {
                                Action::Unchanged(c)
                            } else {
                                Action::Start(c)
                            }
                        }
                    }
                }
                None if mode == Mode::StartOnly => {
                    return Err(LifecycleError::NoContainer {
                        service: name.clone(),
                    });
                }
                None => {
                    match self.engine.inspect_container(&built.spec.name).await {
                        Ok(c) => {
                            return Err(LifecycleError::Foreign {
                                kind: "container",
                                name: c.name,
                                project: self.project.to_string(),
                            })
                        }
                        Err(EngineError::ContainerNotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                    Action::Create
                }
            };
            actions.insert(name.clone(), action);
        }

        // 3. Networks and volumes: check everything before creating anything.
        let (networks, volumes) = if mode == Mode::Converge {
            self.check_resources(&order).await?
        } else {
            (Vec::new(), Vec::new())
        };

        // 4. Images of the containers to create.
        let mut checked = BTreeSet::new();
        for name in &order {
            if matches!(actions[name], Action::Create | Action::Recreate(_)) {
                let image = &specs[name].spec.image;
                if checked.insert(image.clone()) {
                    self.ensure_image(image).await?;
                }
            }
        }

        // 5. Create networks and volumes.
        for (name, labels) in &networks {
            self.engine.create_network(name, labels).await?;
            self.ui.detail(format!("created network {name}"));
        }
        for (name, labels) in &volumes {
            self.engine.create_volume(name, labels).await?;
            self.ui.status(format!("created volume {name}"));
            report.volumes_created.push(name.clone());
        }

        // 6. Services in waves, like compose: a wave is every service whose dependencies are all
        //    in earlier waves. A wave's containers are started one after the other (quick engine
        //    calls), then waited for together; each is ready (and has had its `service_ready`
        //    census) before any of its dependents starts.
        let must_complete: BTreeSet<&str> = order
            .iter()
            .flat_map(|n| compose.services[n].depends_on.iter())
            .filter(|(_, d)| d.condition == DependsCondition::ServiceCompletedSuccessfully)
            .map(|(dep, _)| dep.as_str())
            .collect();
        let width = self.width(&order);
        let mut ids: BTreeMap<String, String> = BTreeMap::new();
        let mut ready = Vec::new();
        for wave in plan::waves(compose, &order) {
            let mut started: Vec<(String, String, &'static str, Want)> = Vec::new();
            for name in &wave {
                let svc = &compose.services[name];
                for (dep, d) in &svc.depends_on {
                    if let Some(id) = ids.get(dep) {
                        let want = match d.condition {
                            DependsCondition::ServiceStarted => Want::Started,
                            DependsCondition::ServiceHealthy => Want::Healthy,
                            DependsCondition::ServiceCompletedSuccessfully => Want::Completed,
                        };
                        self.wait_until(dep, id, want, opts.timeout).await?;
                    }
                }
                let built = &specs[name];
                let action = actions.remove(name).expect("an action per service");
                let (id, verb) = match action {
                    Action::Unchanged(c) => {
                        report.unchanged.push(name.clone());
                        (c.id, "running")
                    }
                    Action::Start(c) => {
                        self.engine.start_container(&c.id).await?;
                        report.started.push(name.clone());
                        (c.id, "started")
                    }
                    Action::Recreate(c) => {
                        let old = self.engine.inspect_container(&c.id).await?;
                        let mut spec = built.spec.clone();
                        let carried = carry_anonymous_volumes(&mut spec, &old);
                        self.retire(name, old, transition, hooks, &mut report)
                            .await?;
                        for (vol, target) in carried {
                            self.ui.detail(format!(
                                "{name}: keeping anonymous volume {vol} at {target}"
                            ));
                        }
                        let id = self.create_from(&spec).await?;
                        self.engine.start_container(&id).await?;
                        report.recreated.push(name.clone());
                        (id, "recreated")
                    }
                    Action::Create => {
                        let id = self.create(built).await?;
                        self.engine.start_container(&id).await?;
                        report.created.push(name.clone());
                        (id, "created")
                    }
                };
                let want = if must_complete.contains(name.as_str()) {
                    Want::Completed
                } else {
                    Want::Ready
                };
                started.push((name.clone(), id, verb, want));
            }

            let infos = self.wait_all(&started, opts.timeout).await?;
            for ((name, id, verb, _), info) in started.into_iter().zip(infos) {
                let rs = RunningService {
                    service: name.clone(),
                    container: info,
                    stateful: self.stateful(&name),
                };
                hooks
                    .service_ready(transition, &rs)
                    .await
                    .map_err(LifecycleError::hook)?;
                self.ui.success(format!(
                    "{name:<width$}  {verb} ({})",
                    describe(&rs.container)
                ));
                ids.insert(name, id);
                ready.push(rs);
            }
        }
        hooks
            .all_ready(transition, &ready)
            .await
            .map_err(LifecycleError::hook)?;
        Ok(report)
    }

    /// Networks and volumes the services in `order` need: errors for foreign or missing external
    /// ones; returns those to create (name, labels).
    #[allow(clippy::type_complexity)]
    async fn check_resources(
        &self,
        order: &[String],
    ) -> Result<(Vec<(String, Labels)>, Vec<(String, Labels)>), LifecycleError> {
        let compose = self.compose();
        let project = self.project;
        let foreign = |kind: &'static str, name: &str| LifecycleError::Foreign {
            kind,
            name: name.to_string(),
            project: project.to_string(),
        };
        let compose_made = |l: &Labels| l.get(labels::PROJECT).map(String::as_str) == Some(project);

        let mut keys: Vec<String> = Vec::new();
        for name in order {
            for k in spec::service_network_keys(&compose.services[name]) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        let mut networks = Vec::new();
        for key in keys {
            let net = spec::network(project, compose, &key).ok_or_else(|| {
                LifecycleError::Spec(SpecError::Invalid {
                    service: order.join(","),
                    field: "networks".into(),
                    message: format!("network `{key}` is not declared"),
                })
            })?;
            match self.engine.inspect_network(&net.name).await? {
                Some(info) => {
                    if net.external || labels::owned_by(&info.labels, project) {
                        continue;
                    }
                    if compose_made(&info.labels) {
                        self.ui.detail(format!(
                            "network {} was created by docker compose for project {project}; using it",
                            net.name
                        ));
                        continue;
                    }
                    return Err(foreign("network", &net.name));
                }
                None if net.external => {
                    return Err(LifecycleError::ExternalMissing {
                        kind: "network",
                        name: net.name,
                    })
                }
                None => {
                    let declared = compose
                        .networks
                        .get(&key)
                        .map(|d| d.labels.clone())
                        .unwrap_or_default();
                    networks.push((net.name, spec::network_labels(project, &key, &declared)));
                }
            }
        }

        let used: BTreeSet<String> = order
            .iter()
            .flat_map(|n| spec::service_volume_keys(&compose.services[n]))
            .collect();
        let mut volumes = Vec::new();
        for v in spec::stack_volumes(project, compose) {
            if !used.contains(&v.key) {
                continue;
            }
            match self.engine.inspect_volume(&v.name).await? {
                Some(info) => {
                    if v.external || labels::owned_by(&info.labels, project) {
                        continue;
                    }
                    if compose_made(&info.labels) {
                        self.ui.detail(format!(
                            "volume {} was created by docker compose for project {project}; nodus adopts it (its data is kept)",
                            v.name
                        ));
                        continue;
                    }
                    return Err(foreign("volume", &v.name));
                }
                None if v.external => {
                    return Err(LifecycleError::ExternalMissing {
                        kind: "volume",
                        name: v.name,
                    })
                }
                None => {
                    let declared = compose
                        .volumes
                        .get(&v.key)
                        .map(|d| d.labels.clone())
                        .unwrap_or_default();
                    volumes.push((v.name, spec::volume_labels(project, &v.key, &declared)));
                }
            }
        }
        Ok((networks, volumes))
    }

    /// Makes `image` present locally, pulling it with a progress line.
    async fn ensure_image(&self, image: &str) -> Result<(), LifecycleError> {
        if self.engine.image_exists(image).await? {
            return Ok(());
        }
        self.ui.status(format!("pulling {image}..."));
        let spin = Spin(self.ui.spinner(format!("pulling {image}")));
        let pb = spin.0.clone();
        let img = image.to_string();
        let progress = move |p: PullProgress| {
            let msg = match (p.current, p.total) {
                (Some(c), Some(t)) if t > 0 => {
                    format!("pulling {img}: {} {}%", p.status, c.saturating_mul(100) / t)
                }
                _ => format!("pulling {img}: {}", p.status),
            };
            pb.set_message(msg);
        };
        let res = self.engine.pull_image(image, &progress).await;
        drop(spin);
        match res {
            Ok(()) => {
                self.ui.success(format!("pulled {image}"));
                Ok(())
            }
            Err(e @ (EngineError::Unreachable { .. } | EngineError::ImageUnavailable { .. })) => {
                Err(e.into())
            }
            Err(e) => Err(EngineError::ImageUnavailable {
                image: image.to_string(),
                reason: e.to_string(),
            }
            .into()),
        }
    }

    async fn create(&self, built: &BuiltSpec) -> Result<String, LifecycleError> {
        self.create_from(&built.spec).await
    }

    async fn create_from(&self, spec: &ContainerSpec) -> Result<String, LifecycleError> {
        let id = self.engine.create_container(spec).await?;
        for att in spec.networks.iter().skip(1) {
            self.engine
                .connect_network(&att.network, &id, &att.aliases)
                .await?;
        }
        Ok(id)
    }

    /// Stops (with hooks, for stateful services) and removes a container that is replaced.
    async fn retire(
        &self,
        name: &str,
        c: ContainerInfo,
        transition: Transition,
        hooks: &mut dyn Hooks,
        report: &mut Report,
    ) -> Result<(), LifecycleError> {
        self.ui.status(format!(
            "{name}: its definition changed; recreating container {}",
            c.name
        ));
        let with_hooks = self.stateful(name).is_some();
        let targets = vec![(name.to_string(), c.clone())];
        self.stop_services(&targets, None, transition, hooks, with_hooks, report)
            .await?;
        self.engine.remove_container(&c.id, false).await?;
        Ok(())
    }

    /// Waits until the container of `service` is what `want` asks, up to `timeout`; fails fast
    /// when it exits or becomes unhealthy. Shows a spinner while it waits.
    async fn wait_until(
        &self,
        service: &str,
        id: &str,
        want: Want,
        timeout: Duration,
    ) -> Result<ContainerInfo, LifecycleError> {
        let spin = Spinner::new(
            self.ui,
            format!("{service}: waiting until {}", want.describe()),
        );
        self.poll_until(service, id, want, timeout, Some(&spin))
            .await
    }

    /// Waits for the services of a wave together, (service, container ID, _, want) each; one
    /// spinner names those still pending. The first failure ends the wait and is returned.
    async fn wait_all(
        &self,
        wave: &[(String, String, &'static str, Want)],
        timeout: Duration,
    ) -> Result<Vec<ContainerInfo>, LifecycleError> {
        if let [(service, id, _, want)] = wave {
            return Ok(vec![self.wait_until(service, id, *want, timeout).await?]);
        }
        let names: Vec<&str> = wave.iter().map(|(n, ..)| n.as_str()).collect();
        let spin = Spinner::new(
            self.ui,
            format!("{}: waiting until ready", names.join(", ")),
        );
        let pending = std::sync::Mutex::new(names.clone());
        futures_util::future::try_join_all(wave.iter().map(|(service, id, _, want)| {
            let spin = &spin;
            let pending = &pending;
            async move {
                let info = self
                    .poll_until(service, id, *want, timeout, Some(spin))
                    .await?;
                let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                p.retain(|n| n != service);
                if !p.is_empty() {
                    spin.set(format!("{}: waiting until ready", p.join(", ")));
                }
                Ok(info)
            }
        }))
        .await
    }

    /// Polls the container until `want` (see [`Lifecycle::wait_until`]); `spin` is shown once
    /// the first poll says to wait.
    async fn poll_until(
        &self,
        service: &str,
        id: &str,
        want: Want,
        timeout: Duration,
        spin: Option<&Spinner<'_>>,
    ) -> Result<ContainerInfo, LifecycleError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let info = self.engine.inspect_container(id).await?;
            match judge(want, &info) {
                Verdict::Done => return Ok(info),
                Verdict::NoHealthcheck => {
                    self.ui.warn(format!(
                        "a service waits for {service} to be healthy, but {service} has no healthcheck; going on since it is running"
                    ));
                    return Ok(info);
                }
                Verdict::Unhealthy => {
                    return Err(LifecycleError::NotHealthy {
                        service: service.to_string(),
                        container: info.name.clone(),
                        waited_secs: started.elapsed().as_secs(),
                        logs: self.tail_logs(id).await,
                    })
                }
                Verdict::Exited(code) => {
                    return Err(LifecycleError::Exited {
                        service: service.to_string(),
                        container: info.name.clone(),
                        exit_code: code,
                        logs: self.tail_logs(id).await,
                    })
                }
                Verdict::Wait => {}
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Err(LifecycleError::NotHealthy {
                    service: service.to_string(),
                    container: info.name.clone(),
                    waited_secs: timeout.as_secs(),
                    logs: self.tail_logs(id).await,
                });
            }
            if let Some(s) = spin {
                s.show();
            }
            tokio::time::sleep(delay.min(timeout - elapsed)).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    async fn tail_logs(&self, id: &str) -> String {
        match self.engine.logs(id, FAILURE_LOG_LINES).await {
            Ok(l) if l.trim().is_empty() => "(no output)".to_string(),
            Ok(l) => l.trim_end().to_string(),
            Err(e) => format!("(logs unavailable: {e})"),
        }
    }

    /// Stops the running containers among `targets` in the given order, collecting evidence;
    /// calls `before_stop`/`after_stop` around it when `with_hooks`.
    async fn stop_services(
        &self,
        targets: &[(String, ContainerInfo)],
        timeout: Option<Duration>,
        transition: Transition,
        hooks: &mut dyn Hooks,
        with_hooks: bool,
        report: &mut Report,
    ) -> Result<Vec<StoppedService>, LifecycleError> {
        let mut running = Vec::new();
        for (service, c) in targets.iter().filter(|(_, c)| is_running(c)) {
            // Fresh, complete information (a listing may lack env and mounts).
            let container = self.engine.inspect_container(&c.id).await?;
            running.push(RunningService {
                service: service.clone(),
                container,
                stateful: self.stateful(service),
            });
        }
        if running.is_empty() {
            return Ok(Vec::new());
        }
        let pre = if with_hooks {
            hooks
                .before_stop(transition, &running)
                .await
                .map_err(LifecycleError::hook)?
        } else {
            BTreeMap::new()
        };
        let width = self.width(
            &running
                .iter()
                .map(|r| r.service.clone())
                .collect::<Vec<_>>(),
        );
        let mut stopped = Vec::new();
        for rs in running {
            let secs = timeout.map(secs_ceil).or(rs.container.stop_timeout_secs);
            {
                let _spin = Spin(self.ui.spinner(format!(
                    "stopping {} (grace period {}s)",
                    rs.service,
                    secs.unwrap_or(10)
                )));
                self.engine.stop_container(&rs.container.id, secs).await?;
            }
            let (container, evidence) = self.evidence(&rs).await?;
            let clean = match evidence.clean_shutdown {
                Some(true) if !evidence.killed => ", postgres shut down cleanly",
                _ => "",
            };
            self.ui.success(format!(
                "{:<width$}  stopped (exit {}{clean})",
                rs.service,
                evidence
                    .exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "?".into())
            ));
            report.stopped.push(rs.service.clone());
            report.evidence.insert(rs.service.clone(), evidence.clone());
            stopped.push(StoppedService {
                pre_stop: pre.get(&rs.service).cloned(),
                service: rs.service,
                container,
                stateful: rs.stateful,
                evidence,
            });
        }
        if with_hooks {
            hooks
                .after_stop(transition, &stopped)
                .await
                .map_err(LifecycleError::hook)?;
        }
        Ok(stopped)
    }

    /// How a container stopped (and a warning when it was not clean).
    async fn evidence(
        &self,
        rs: &RunningService,
    ) -> Result<(ContainerInfo, StopEvidence), LifecycleError> {
        let info = self.engine.inspect_container(&rs.container.id).await?;
        let mut ev = StopEvidence {
            exit_code: info.exit_code,
            oom_killed: info.oom_killed,
            killed: info.exit_code == Some(137) || info.oom_killed,
            ..StopEvidence::default()
        };
        let postgres = rs
            .stateful
            .as_ref()
            .is_some_and(|s| s.kind == ServiceKind::Postgres);
        let reason = if info.oom_killed {
            "OOM-killed".to_string()
        } else if ev.killed {
            "exit 137: killed after the grace period".to_string()
        } else {
            format!("exit {}", info.exit_code.unwrap_or(-1))
        };
        if postgres {
            match self.engine.logs(&info.id, SHUTDOWN_LOG_LINES).await {
                Ok(logs) => {
                    let (clean, line) = postgres_shutdown(&logs);
                    ev.clean_shutdown = Some(clean);
                    ev.log_line = line;
                }
                Err(e) => self
                    .ui
                    .warn(format!("cannot read the log of {}: {e}", info.name)),
            }
            if ev.killed || ev.clean_shutdown == Some(false) {
                let why = if ev.killed {
                    reason
                } else {
                    format!("{reason}, and its log does not say \"{POSTGRES_SHUTDOWN}\"")
                };
                self.ui.warn(format!(
                    "postgres in {} did not shut down cleanly ({why}); it will run crash recovery on next start; committed data is safe, UNLOGGED tables will be emptied",
                    info.name
                ));
            }
        } else if ev.killed {
            self.ui.warn(format!(
                "{} ({}) did not stop within its grace period or was killed ({reason}); a larger stop_grace_period may be needed",
                rs.service, info.name
            ));
        }
        Ok((info, ev))
    }

    /// Containers in stop order: orphans first, then the stack's services in reverse dependency
    /// order.
    fn in_stop_order(
        &self,
        containers: Vec<ContainerInfo>,
        order: &[String],
    ) -> Vec<(String, ContainerInfo)> {
        let mut by = by_service(containers);
        let mut out: Vec<(String, ContainerInfo)> = Vec::new();
        let orphans: Vec<String> = by
            .keys()
            .filter(|s| !self.compose().services.contains_key(*s))
            .cloned()
            .collect();
        for s in orphans {
            if let Some(c) = by.remove(&s) {
                self.ui.status(format!(
                    "container {} belongs to service {s}, which is no longer in the stack (orphan); removing it too",
                    c.name
                ));
                out.push((s, c));
            }
        }
        for s in order {
            if let Some(c) = by.remove(s) {
                out.push((s.clone(), c));
            }
        }
        out
    }

    pub async fn down(
        &self,
        opts: &DownOptions,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        let mut report = Report::default();
        let order = plan::stop_order(self.compose(), &[])?;
        let containers = self.project_containers().await?;
        let targets = self.in_stop_order(containers, &order);
        self.stop_services(
            &targets,
            opts.timeout,
            Transition::Down,
            hooks,
            true,
            &mut report,
        )
        .await?;
        let width = self.width(&targets.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>());
        let declared: Vec<String> = spec::stack_volumes(self.project, self.compose())
            .into_iter()
            .map(|v| v.name)
            .collect();
        let mut anonymous = Vec::new();
        for (service, c) in &targets {
            self.engine.remove_container(&c.id, false).await?;
            self.ui
                .success(format!("{service:<width$}  removed ({})", c.name));
            report.removed.push(service.clone());
            // Anonymous volumes outlive their container and are never mounted again: say so, and
            // remove them with --volumes (as `docker compose down -v` does).
            for m in &c.mounts {
                if m.kind != MountKind::Volume || declared.contains(&m.name_or_source) {
                    continue;
                }
                let Some(info) = self.engine.inspect_volume(&m.name_or_source).await? else {
                    continue;
                };
                if !info.labels.is_empty() {
                    continue;
                }
                if opts.remove_volumes {
                    anonymous.push(info.name);
                } else if self.hardened.stateful_service(service).is_some_and(|st| {
                    st.data_dir.trim_end_matches('/') == m.target.trim_end_matches('/')
                }) {
                    self.ui.warn(format!(
                        "{service}: its data dir {} was on anonymous volume {}, which no container will mount again: the next `up` starts with an EMPTY data dir. Put it on a named volume (remove `harden: false`) and copy the data over.",
                        m.target, info.name
                    ));
                }
            }
        }
        for v in anonymous {
            self.engine.remove_volume(&v).await?;
            self.ui.success(format!("removed anonymous volume {v}"));
            report.volumes_removed.push(v);
        }
        for n in self
            .engine
            .list_networks(&labels::project_filter(self.project))
            .await?
        {
            match self.engine.remove_network(&n.name).await {
                Ok(()) => self.ui.detail(format!("removed network {}", n.name)),
                // Something else is still attached: leave the network, the stack is down.
                Err(e @ EngineError::Api { .. }) => self
                    .ui
                    .warn(format!("network {} was left in place: {e}", n.name)),
                Err(e) => return Err(e.into()),
            }
        }
        if opts.remove_volumes {
            for v in self.removable_volumes().await? {
                self.engine.remove_volume(&v).await?;
                self.ui.success(format!("removed volume {v}"));
                report.volumes_removed.push(v);
            }
        }
        Ok(report)
    }

    /// The stack's volumes `down --volumes` removes: declared, not external, existing, and
    /// carrying the project's label. Others are left alone (with a warning for foreign ones).
    pub async fn removable_volumes(&self) -> Result<Vec<String>, LifecycleError> {
        let mut out = Vec::new();
        for v in spec::stack_volumes(self.project, self.compose()) {
            if v.external {
                continue;
            }
            match self.engine.inspect_volume(&v.name).await? {
                Some(info)
                    if info.labels.get(labels::PROJECT).map(String::as_str)
                        == Some(self.project) =>
                {
                    out.push(v.name)
                }
                Some(_) => self.ui.warn(format!(
                    "volume {} does not carry the labels of project {}; not removing it",
                    v.name, self.project
                )),
                None => {}
            }
        }
        Ok(out)
    }

    pub async fn stop(
        &self,
        services: &[String],
        timeout: Option<Duration>,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        let mut report = Report::default();
        let order = plan::stop_order(self.compose(), services)?;
        let mut by = by_service(self.project_containers().await?);
        let targets: Vec<(String, ContainerInfo)> = order
            .iter()
            .filter_map(|s| by.remove(s).map(|c| (s.clone(), c)))
            .collect();
        let stopped = self
            .stop_services(
                &targets,
                timeout,
                Transition::Stop,
                hooks,
                true,
                &mut report,
            )
            .await?;
        if stopped.is_empty() {
            self.ui.status("nothing to stop: no service is running");
        }
        Ok(report)
    }

    pub async fn start(
        &self,
        opts: &UpOptions,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        self.bring_up(opts, Transition::Start, Mode::StartOnly, hooks)
            .await
    }

    pub async fn restart(
        &self,
        opts: &UpOptions,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        let compose = self.compose();
        let start = plan::start_order(compose, &opts.services)?;
        let stop = plan::stop_order(compose, &opts.services)?;
        let mut by = by_service(self.project_containers().await?);
        if let Some(missing) = start.iter().find(|s| !by.contains_key(*s)) {
            return Err(LifecycleError::NoContainer {
                service: missing.clone(),
            });
        }
        let targets: Vec<(String, ContainerInfo)> = stop
            .iter()
            .filter_map(|s| by.remove(s).map(|c| (s.clone(), c)))
            .collect();
        let mut report = Report::default();
        self.stop_services(
            &targets,
            None,
            Transition::Restart,
            hooks,
            true,
            &mut report,
        )
        .await?;
        let started = self
            .bring_up(opts, Transition::Restart, Mode::StartOnly, hooks)
            .await?;
        report.started = started.started;
        report.unchanged = started.unchanged;
        Ok(report)
    }

    pub async fn status(&self) -> Result<Vec<ServiceStatus>, LifecycleError> {
        let mut by = by_service(self.project_containers().await?);
        let mut out = Vec::new();
        for (name, svc) in &self.compose().services {
            match by.remove(name) {
                Some(c) => out.push(self.status_of(name, &c, false)),
                None => out.push(ServiceStatus {
                    service: name.clone(),
                    container: None,
                    state: "not created".into(),
                    health: "none".into(),
                    image: svc.image.clone().unwrap_or_default(),
                    volumes: spec::stack_volumes(self.project, self.compose())
                        .into_iter()
                        .filter(|v| spec::service_volume_keys(svc).contains(&v.key))
                        .map(|v| v.name)
                        .collect(),
                    ports: Vec::new(),
                    orphan: false,
                }),
            }
        }
        for (name, c) in by {
            out.push(self.status_of(&name, &c, true));
        }
        Ok(out)
    }

    fn status_of(&self, service: &str, c: &ContainerInfo, orphan: bool) -> ServiceStatus {
        let state = match (c.state, c.exit_code) {
            (RunState::Exited, Some(code)) => format!("exited ({code})"),
            (s, _) => state_str(s).to_string(),
        };
        ServiceStatus {
            service: service.to_string(),
            container: Some(c.name.clone()),
            state,
            // The engine keeps the last health of a stopped container; it means nothing then.
            health: if is_running(c) {
                health_str(c.health).to_string()
            } else {
                "none".to_string()
            },
            image: c.image.clone(),
            volumes: c
                .mounts
                .iter()
                .filter(|m| m.kind == MountKind::Volume)
                .map(|m| m.name_or_source.clone())
                .collect(),
            ports: c.ports.iter().map(format_port).collect(),
            orphan,
        }
    }

    /// Running container of a service, if any (used by census, snapshots, backups).
    pub async fn container_of(
        &self,
        service: &str,
    ) -> Result<Option<ContainerInfo>, LifecycleError> {
        Ok(self.any_container_of(service).await?.filter(is_running))
    }

    /// The container of a service in any state (stopped ones too), freshly inspected.
    pub async fn any_container_of(
        &self,
        service: &str,
    ) -> Result<Option<ContainerInfo>, LifecycleError> {
        let mut filter = labels::project_filter(self.project);
        filter.insert(labels::SERVICE.to_string(), service.to_string());
        let found = self.engine.list_containers(&filter).await?;
        let found: Vec<ContainerInfo> = found
            .into_iter()
            .filter(|c| {
                !c.labels.contains_key(labels::HELPER)
                    && c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
            })
            .collect();
        match by_service(found).remove(service) {
            Some(c) => Ok(Some(self.engine.inspect_container(&c.id).await?)),
            None => Ok(None),
        }
    }
}
