//! Stack lifecycle over the [`Engine`] trait: up, down, stop, start, restart, status.
//!
//! Plans come from `stack::plan` (pure); this module executes them and calls [`Hooks`] at the
//! points the guard and snapshots need. It never touches a resource without the stack's labels.

pub mod spec;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::engine::{ContainerInfo, Engine, EngineError};
use crate::output::Ui;
use crate::stack::{Hardened, StatefulService};

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
    #[error("{0}")]
    Hook(#[source] Box<dyn std::error::Error + Send + Sync>),
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
    async fn after_stop(&mut self, _transition: Transition, _stopped: &[StoppedService]) -> anyhow::Result<()> {
        Ok(())
    }
    /// A service became ready (healthy, or started when it has no healthcheck); services that
    /// depend on it have not been started yet (provisioning, first census).
    async fn service_ready(&mut self, _transition: Transition, _svc: &RunningService) -> anyhow::Result<()> {
        Ok(())
    }
    /// Every service of the transition is up and ready (settled census, comparison).
    async fn all_ready(&mut self, _transition: Transition, _started: &[RunningService]) -> anyhow::Result<()> {
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
    async fn after_stop(&mut self, t: Transition, stopped: &[StoppedService]) -> anyhow::Result<()> {
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
}

impl<'a> Lifecycle<'a> {
    pub async fn up(&self, opts: &UpOptions, hooks: &mut dyn Hooks) -> Result<Report, LifecycleError> {
        let _ = (opts, hooks);
        todo!("up")
    }
    pub async fn down(&self, opts: &DownOptions, hooks: &mut dyn Hooks) -> Result<Report, LifecycleError> {
        let _ = (opts, hooks);
        todo!("down")
    }
    pub async fn stop(&self, services: &[String], timeout: Option<Duration>, hooks: &mut dyn Hooks) -> Result<Report, LifecycleError> {
        let _ = (services, timeout, hooks);
        todo!("stop")
    }
    pub async fn start(&self, opts: &UpOptions, hooks: &mut dyn Hooks) -> Result<Report, LifecycleError> {
        let _ = (opts, hooks);
        todo!("start")
    }
    pub async fn restart(&self, opts: &UpOptions, hooks: &mut dyn Hooks) -> Result<Report, LifecycleError> {
        let _ = (opts, hooks);
        todo!("restart")
    }
    pub async fn status(&self) -> Result<Vec<ServiceStatus>, LifecycleError> {
        todo!("status")
    }
    /// Running container of a service, if any (used by census, snapshots, backups).
    pub async fn container_of(&self, service: &str) -> Result<Option<ContainerInfo>, LifecycleError> {
        let _ = service;
        todo!("container_of")
    }
}
