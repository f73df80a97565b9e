//! The Docker Engine, behind a trait.
//!
//! This module is the only place that imports `bollard` (in `docker/`). Everything above talks to
//! [`Engine`] with the plain data types defined here, so lifecycle logic can be unit-tested over the
//! in-memory fake (`fake.rs`, test builds only).

pub mod docker;
#[cfg(test)]
pub mod fake;
pub mod resolve;
pub mod ssh;

use std::collections::BTreeMap;
use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

pub use docker::DockerEngine;

/// A stream of raw bytes (tar archives, exec output). `Bytes`, so the engine's buffers pass
/// through without a copy (a snapshot reads every byte of a volume).
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<bytes::Bytes, EngineError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be reached at all.
    #[error("cannot reach the Docker engine at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("volume {0} not found")]
    VolumeNotFound(String),
    #[error("network {0} not found")]
    NetworkNotFound(String),
    #[error("image {image} is not present locally and could not be pulled: {reason}")]
    ImageUnavailable { image: String, reason: String },
    /// A build ran and failed (a step's command failed, the Dockerfile is invalid...).
    #[error("building image {image} failed: {message}")]
    BuildFailed { image: String, message: String },
    #[error("{op} on {object} failed: {reason}")]
    Api {
        op: &'static str,
        object: String,
        reason: String,
    },
}

impl EngineError {
    pub fn api(op: &'static str, object: impl Into<String>, reason: impl ToString) -> Self {
        EngineError::Api {
            op,
            object: object.into(),
            reason: reason.to_string(),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// What the engine says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineInfo {
    /// The daemon's ID (`docker info` → ID): identifies the engine in the ledger.
    pub id: String,
    pub server_version: String,
    pub api_version: String,
    pub endpoint: String,
    /// e.g. "linux"; "Docker Desktop" shows up in `operating_system`.
    pub operating_system: String,
}

/// A label filter: containers/volumes/networks carrying all of these labels.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub kind: MountKind,
    /// Volume name or host path; empty for an anonymous volume or tmpfs.
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// Container port, e.g. 5432.
    pub container_port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
    /// Host IP to bind; empty = all interfaces.
    pub host_ip: String,
    /// Host port; None = ephemeral (the engine picks one).
    pub host_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// As in the Engine API: ["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"].
    pub test: Vec<String>,
    pub interval_ns: i64,
    pub timeout_ns: i64,
    pub retries: i64,
    pub start_period_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network: String,
    pub aliases: Vec<String>,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub hostname: Option<String>,
    /// KEY=VALUE
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: Labels,
    pub mounts: Vec<MountSpec>,
    pub ports: Vec<PortSpec>,
    /// The first one is given at create time, the rest are connected before start.
    pub networks: Vec<NetworkAttachment>,
    pub healthcheck: Option<HealthSpec>,
    pub stop_signal: Option<String>,
    pub stop_timeout_secs: Option<i64>,
    /// "no", "always", "unless-stopped", "on-failure[:N]"
    pub restart: Option<String>,
    pub extra_hosts: Vec<String>,
    pub tmpfs: Vec<String>,
    pub shm_size: Option<i64>,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub init: Option<bool>,
    pub tty: bool,
    pub stdin_open: bool,
    /// Close the process' stdin when the first attached client closes its stdin (`docker run -i`).
    pub stdin_once: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    None,
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub container_port: u16,
    pub protocol: String,
    pub host_ip: String,
    pub host_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    pub kind: MountKind,
    /// Volume name (for volumes, including anonymous ones) or host path.
    pub name_or_source: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    /// Without the leading '/'.
    pub name: String,
    pub image: String,
    pub labels: Labels,
    pub state: RunState,
    pub health: Health,
    pub exit_code: Option<i64>,
    /// True when the engine OOM-killed it.
    pub oom_killed: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub ports: Vec<PublishedPort>,
    pub mounts: Vec<MountInfo>,
    /// Environment as KEY=VALUE (needed to learn PGDATA, POSTGRES_USER...). Never print it.
    pub env: Vec<String>,
    pub stop_signal: Option<String>,
    pub stop_timeout_secs: Option<i64>,
    /// Networks the container is attached to.
    pub networks: Vec<String>,
    /// The ID of each attached network (by name) as the container holds it, where the engine
    /// reports one. A network removed (and maybe created again under the same name) since has
    /// another ID or none: the engine refuses to start the container.
    #[serde(default)]
    pub network_ids: BTreeMap<String, String>,
}

impl ContainerInfo {
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env.iter().find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then_some(v)
        })
    }
    pub fn published(&self, container_port: u16) -> Option<&PublishedPort> {
        self.ports
            .iter()
            .find(|p| p.container_port == container_port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub labels: Labels,
    /// RFC 3339 as reported by the engine.
    pub created_at: Option<String>,
    pub mountpoint: String,
    pub driver: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// What an image declares (`docker image inspect` → `Config`): where its data goes by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub id: String,
    /// `Config.Env` as KEY=VALUE (PGDATA of the image).
    pub env: Vec<String>,
    /// `Config.Volumes`: paths that get an anonymous volume when nothing is mounted there.
    pub volumes: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `Config.Labels` (nodus' build hash label among them).
    pub labels: Labels,
}

impl ImageInfo {
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env.iter().find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}

/// Progress of an image pull, for a progress line.
#[derive(Debug, Clone)]
pub struct PullProgress {
    pub status: String,
    pub current: Option<u64>,
    pub total: Option<u64>,
}

/// The build context as sent to the engine: a tar stream (uncompressed).
pub type ContextStream =
    Pin<Box<dyn Stream<Item = std::result::Result<bytes::Bytes, std::io::Error>> + Send>>;

/// Options of an image build (`POST /build`, classic builder).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// The tag given to the result (`t`).
    pub tag: String,
    /// Path of the Dockerfile inside the context.
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub labels: Labels,
    /// `networkmode` for RUN steps.
    pub network: Option<String>,
    /// `host:ip` entries.
    pub extra_hosts: Vec<String>,
    pub shm_size: Option<i64>,
    pub cache_from: Vec<String>,
    pub no_cache: bool,
    /// Pull newer versions of the base images.
    pub pull: bool,
}

/// What a build reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A new step begins: "Step 2/5 : RUN make".
    Step(String),
    /// A line of output of the current step.
    Output(String),
}

/// Which stream a piece of container output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Stdout,
    Stderr,
    /// A TTY's combined output.
    Console,
}

/// A piece of container output (logs, an attached exec or container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub kind: OutputKind,
    pub bytes: Vec<u8>,
}

/// A stream of container output.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<OutputChunk, EngineError>> + Send>>;

/// What `log_stream` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new output until the container stops (or the stream is dropped).
    pub follow: bool,
    /// Last N lines; None = all.
    pub tail: Option<u64>,
    /// Unix seconds; only output since then.
    pub since: Option<i64>,
    /// Unix seconds; only output until then.
    pub until: Option<i64>,
    /// Prefix every line with the engine's RFC 3339 timestamp.
    pub timestamps: bool,
}

/// A command to run attached in a container (`exec`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    /// KEY=VALUE
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// Allocate a pseudo-TTY (output comes as `Console`).
    pub tty: bool,
    /// Attach stdin (the session's `input` writes to it; dropping it closes stdin).
    pub stdin: bool,
}

/// An attached session: the command's output and, when stdin is attached, its input.
pub struct Attached {
    /// The exec's ID (for `exec_exit_code` / `resize_exec`), or the container's for `attach_container`.
    pub id: String,
    pub output: OutputStream,
    /// Writes go to the process' stdin; shutting it down closes stdin.
    pub input: Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// Processes in a container (`docker top`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopInfo {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

/// The Docker Engine operations nodus needs. Implemented by [`DockerEngine`] (bollard) and, in
/// tests, by `fake::FakeEngine`.
#[async_trait]
pub trait Engine: Send + Sync {
    async fn info(&self) -> Result<EngineInfo>;

    // Images
    async fn image_exists(&self, image: &str) -> Result<bool>;
    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<()>;

    /// Builds an image from a context tar stream; `progress` gets every step and output line.
    /// Returns the image's ID. A failing step is `Err(EngineError::BuildFailed)`.
    async fn build_image(
        &self,
        opts: &BuildOptions,
        context: ContextStream,
        progress: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> Result<String>;

    // Containers. `list_containers` returns stopped ones too.
    async fn list_containers(&self, labels: &Labels) -> Result<Vec<ContainerInfo>>;
    async fn inspect_container(&self, id_or_name: &str) -> Result<ContainerInfo>;
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String>;
    async fn start_container(&self, id: &str) -> Result<()>;
    /// Stops with the container's own stop signal; waits `timeout_secs` before SIGKILL.
    async fn stop_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()>;
    async fn remove_container(&self, id: &str, force: bool) -> Result<()>;
    /// Last `tail` lines of stdout+stderr.
    async fn logs(&self, id: &str, tail: usize) -> Result<String>;
    /// Runs a command in a running container and collects its output.
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        env: &[String],
        user: Option<&str>,
    ) -> Result<ExecOutput>;
    /// Runs a command and streams its stdout (for dumps). The exit code is checked by the caller
    /// with [`Engine::exec_exit_code`] after the stream ended; returns (exec id, stream).
    async fn exec_stream(
        &self,
        id: &str,
        cmd: &[String],
        env: &[String],
        user: Option<&str>,
    ) -> Result<(String, ByteStream)>;
    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>>;

    // Archives (work on stopped containers too).
    /// A tar stream of `path` inside the container (GET /containers/{id}/archive).
    async fn download_archive(&self, id: &str, path: &str) -> Result<ByteStream>;
    /// Extracts a tar stream into `path` inside the container (PUT /containers/{id}/archive).
    async fn upload_archive(&self, id: &str, path: &str, tar: ByteStream) -> Result<()>;

    // Volumes
    async fn list_volumes(&self, labels: &Labels) -> Result<Vec<VolumeInfo>>;
    async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>>;
    async fn create_volume(&self, name: &str, labels: &Labels) -> Result<VolumeInfo>;
    async fn remove_volume(&self, name: &str) -> Result<()>;

    // Networks
    async fn list_networks(&self, labels: &Labels) -> Result<Vec<NetworkInfo>>;
    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>>;
    async fn create_network(&self, name: &str, labels: &Labels) -> Result<String>;
    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> Result<()>;
    async fn remove_network(&self, name: &str) -> Result<()>;

    // Where the engine is
    /// How the engine was found, for people: "context colima (currentContext in
    /// ~/.docker/config.json) → unix:///…". Empty when there is nothing to say.
    fn origin(&self) -> String {
        String::new()
    }
    /// The engine's host when it is another machine (tcp/https/ssh to a non-loopback host):
    /// ports it publishes on its 127.0.0.1 cannot be reached from here.
    fn remote_host(&self) -> Option<String> {
        None
    }
    // Sessions (compose habits: logs, exec, run, top).
    /// A container's output as a stream (follows new output with `opts.follow`).
    async fn log_stream(&self, id: &str, opts: &LogOptions) -> Result<OutputStream>;
    /// Starts a command in a running container with its stdio attached.
    async fn exec_attach(&self, id: &str, spec: &ExecSpec) -> Result<Attached>;
    /// Resizes the TTY of an exec started with `tty`.
    async fn resize_exec(&self, exec_id: &str, rows: u16, cols: u16) -> Result<()>;
    /// Attaches to a created (not yet started) container's stdio (`run`).
    async fn attach_container(&self, id: &str) -> Result<Attached>;
    /// Resizes a container's TTY.
    async fn resize_container(&self, id: &str, rows: u16, cols: u16) -> Result<()>;
    /// Waits until the container stops; its exit code.
    async fn wait_container(&self, id: &str) -> Result<i64>;
    /// Processes running in a container.
    async fn top(&self, id: &str) -> Result<TopInfo>;
    // Inspection for `nodus doctor` / `nodus import`
    /// The image's config, None when the image is not present locally.
    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>>;
    /// The container's IP addresses on its networks (network name, address); empty when it is
    /// not running.
    async fn container_addresses(&self, id: &str) -> Result<Vec<(String, String)>>;
    /// Sends `signal` (e.g. `SIGKILL`) to a running container. Only `test-persistence
    /// --restart-kind kill` uses it (the lifecycle always stops with the stop signal).
    /// (Default: unsupported, for test engines that do not need it.)
    async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        Err(EngineError::api(
            "kill",
            id,
            format!("{signal}: not supported by this engine"),
        ))
    }
}
