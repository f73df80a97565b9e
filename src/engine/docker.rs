//! [`Engine`] over the Docker Engine API with bollard.
//!
//! Notes for callers:
//! - Every request has a 120 s timeout until the response headers arrive, except `stop_container`
//!   (the stop timeout plus 120 s) and `upload_archive` (no practical limit: the response only comes
//!   once the whole archive has been sent). Streams (archives, exec output, pulls) are not limited
//!   once they started.
//! - Anonymous volumes: a [`MountSpec`] of kind `Volume` with an empty `source` creates one (the
//!   Engine API accepts a `volume` mount without a source). Removing a container never removes its
//!   anonymous volumes (`v=false`).
//! - `create_volume` refuses to adopt an existing volume that lacks the requested labels.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings,
    HealthConfig, HealthStatusEnum, HostConfig, Mount, MountType, NetworkConnectRequest,
    NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
    Volume, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    InspectContainerOptions, InspectNetworkOptions, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions, StartContainerOptions,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::{stream, StreamExt};

use super::*;

/// Timeout (until response headers) for ordinary API calls.
const API_TIMEOUT_SECS: u64 = 120;
/// Time allowed for reaching the engine and negotiating the API version.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Uploads only get their response once the whole body is sent: allow a day.
const UPLOAD_TIMEOUT_SECS: u64 = 24 * 3600;
/// How much of an exec's stderr is kept for error messages.
const STDERR_TAIL: usize = 8 * 1024;

pub struct DockerEngine {
    docker: Docker,
    endpoint: String,
}

/// What a DOCKER_HOST value means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Unix(String),
    Http(String),
    Https { addr: String, cert_dir: PathBuf },
}

fn parse_endpoint(
    host: Option<&str>,
    tls_verify: bool,
    cert_path: Option<PathBuf>,
) -> Result<Endpoint, String> {
    let host = host.map(str::trim).filter(|h| !h.is_empty());
    let Some(host) = host else {
        return Ok(Endpoint::Unix("/var/run/docker.sock".to_string()));
    };
    let cert_dir = || {
        cert_path.clone().unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".docker")
        })
    };
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() {
            return Err("empty socket path".into());
        }
        return Ok(Endpoint::Unix(path.to_string()));
    }
    if let Some(rest) = host.strip_prefix("https://") {
        return Ok(Endpoint::Https {
            addr: format!("tcp://{}", rest.trim_end_matches('/')),
            cert_dir: cert_dir(),
        });
    }
    if let Some(rest) = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
    {
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err("no host in the address".into());
        }
        let addr = if rest.contains(':') {
            rest.to_string()
        } else {
            // Docker's defaults: 2376 with TLS, 2375 without.
            format!("{rest}:{}", if tls_verify { 2376 } else { 2375 })
        };
        return Ok(if tls_verify {
            Endpoint::Https {
                addr: format!("tcp://{addr}"),
                cert_dir: cert_dir(),
            }
        } else {
            Endpoint::Http(format!("tcp://{addr}"))
        });
    }
    if host.starts_with("ssh://") {
        return Err("ssh:// endpoints are not supported; forward the socket (ssh -L) and use unix:// or tcp://".into());
    }
    if host.starts_with('/') {
        return Ok(Endpoint::Unix(host.to_string()));
    }
    Err(
        "unsupported DOCKER_HOST (expected unix://PATH, tcp://HOST:PORT or https://HOST:PORT)"
            .into(),
    )
}

impl DockerEngine {
    /// Connects using DOCKER_HOST (unix, tcp, https/tls with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH)
    /// or the default socket, and negotiates the API version.
    pub async fn connect() -> Result<DockerEngine> {
        let host = std::env::var("DOCKER_HOST").ok();
        DockerEngine::connect_to(host.as_deref()).await
    }

    /// Like [`DockerEngine::connect`] with an explicit DOCKER_HOST value (`None` = the default
    /// socket). TLS still follows DOCKER_TLS_VERIFY / DOCKER_CERT_PATH.
    pub async fn connect_to(host: Option<&str>) -> Result<DockerEngine> {
        let tls_verify =
            std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty() && v != "0");
        let cert_path = std::env::var_os("DOCKER_CERT_PATH")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let shown = host
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .unwrap_or("unix:///var/run/docker.sock")
            .to_string();
        let endpoint = parse_endpoint(host, tls_verify, cert_path).map_err(|reason| {
            EngineError::Unreachable {
                endpoint: shown.clone(),
                reason,
            }
        })?;
        let unreachable = |reason: String| EngineError::Unreachable {
            endpoint: shown.clone(),
            reason,
        };
        let docker = match &endpoint {
            Endpoint::Unix(path) => {
                Docker::connect_with_unix(path, API_TIMEOUT_SECS, API_DEFAULT_VERSION)
            }
            Endpoint::Http(addr) => {
                Docker::connect_with_http(addr, API_TIMEOUT_SECS, API_DEFAULT_VERSION)
            }
            Endpoint::Https { addr, cert_dir } => {
                for f in ["ca.pem", "cert.pem", "key.pem"] {
                    if !cert_dir.join(f).is_file() {
                        return Err(unreachable(format!(
                            "TLS is requested (DOCKER_TLS_VERIFY or https://) but {} is missing",
                            cert_dir.join(f).display()
                        )));
                    }
                }
                Docker::connect_with_ssl(
                    addr,
                    &cert_dir.join("key.pem"),
                    &cert_dir.join("cert.pem"),
                    &cert_dir.join("ca.pem"),
                    API_TIMEOUT_SECS,
                    API_DEFAULT_VERSION,
                )
            }
        }
        .map_err(|e| unreachable(describe(&e)))?;

        let handshake = async {
            let docker = docker.negotiate_version().await?;
            docker.ping().await?;
            Ok::<_, BollardError>(docker)
        };
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Err(unreachable(describe(&e))),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
        };
        tracing::debug!(endpoint = %shown, api = %docker.client_version(), "connected to the Docker engine");
        Ok(DockerEngine {
            docker,
            endpoint: shown,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Maps a bollard error: 404 → the matching NotFound variant, connection failures →
    /// Unreachable, anything else → Api naming the operation and object.
    fn err(&self, op: &'static str, object: Obj<'_>, e: BollardError) -> EngineError {
        if is_connection_error(&e) {
            return EngineError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: describe(&e),
            };
        }
        if status(&e) == Some(404) {
            match object {
                Obj::Container(c) => return EngineError::ContainerNotFound(c.to_string()),
                Obj::Volume(v) => return EngineError::VolumeNotFound(v.to_string()),
                Obj::Network(n) => return EngineError::NetworkNotFound(n.to_string()),
                Obj::Image(i) => {
                    return EngineError::ImageUnavailable {
                        image: i.to_string(),
                        reason: describe(&e),
                    }
                }
                Obj::Other(_) => {}
            }
        }
        EngineError::api(op, object.name(), describe(&e))
    }

    /// The same client with another request timeout (shares the negotiated version).
    fn with_timeout(&self, secs: u64) -> Docker {
        self.docker.clone().with_timeout(Duration::from_secs(secs))
    }

    async fn start_exec(
        &self,
        id: &str,
        cmd: &[String],
        env: &[String],
        user: Option<&str>,
    ) -> Result<(
        String,
        Pin<Box<dyn Stream<Item = Result<LogOutput, BollardError>> + Send>>,
    )> {
        let opts = CreateExecOptions::<String> {
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: (!env.is_empty()).then(|| env.to_vec()),
            cmd: Some(cmd.to_vec()),
            user: user.map(str::to_string),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(id, opts)
            .await
            .map_err(|e| self.err("exec", Obj::Container(id), e))?;
        match self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| self.err("exec", Obj::Container(id), e))?
        {
            StartExecResults::Attached { output, input } => {
                drop(input);
                Ok((created.id, output))
            }
            StartExecResults::Detached => Err(EngineError::api(
                "exec",
                id,
                "the engine started the command detached; no output to read",
            )),
        }
    }

    /// The exit code of a finished exec; waits up to ~3 s for the engine to notice the end.
    async fn exit_code_of(
        docker: &Docker,
        exec_id: &str,
    ) -> std::result::Result<Option<i64>, BollardError> {
        let mut delay = Duration::from_millis(10);
        for _ in 0..12 {
            let inspect = docker.inspect_exec(exec_id).await?;
            if inspect.running != Some(true) {
                return Ok(inspect.exit_code);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
        Ok(None)
    }
}

/// Which object an operation is about (for NotFound mapping and messages).
#[derive(Clone, Copy)]
enum Obj<'a> {
    Container(&'a str),
    Volume(&'a str),
    Network(&'a str),
    Image(&'a str),
    Other(&'a str),
}

impl Obj<'_> {
    fn name(&self) -> String {
        match self {
            Obj::Container(s) => format!("container {s}"),
            Obj::Volume(s) => format!("volume {s}"),
            Obj::Network(s) => format!("network {s}"),
            Obj::Image(s) => format!("image {s}"),
            Obj::Other(s) => s.to_string(),
        }
    }
}

fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn server_message(e: &BollardError) -> Option<&str> {
    match e {
        BollardError::DockerResponseServerError { message, .. } => Some(message),
        _ => None,
    }
}

fn is_connection_error(e: &BollardError) -> bool {
    match e {
        BollardError::SocketNotFoundError(_) | BollardError::RequestTimeoutError => true,
        BollardError::HyperLegacyError { err } => err.is_connect(),
        BollardError::IOError { err } => matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::NotFound
                | std::io::ErrorKind::PermissionDenied
        ),
        _ => false,
    }
}

/// A readable description of a bollard error, including its sources.
fn describe(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => {
            format!("{} (HTTP {status_code})", message.trim())
        }
        BollardError::SocketNotFoundError(path) => format!("socket {path} does not exist"),
        BollardError::RequestTimeoutError => "the engine did not answer in time".to_string(),
        _ => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(cause) = src {
                let c = cause.to_string();
                if !s.contains(&c) {
                    s.push_str(": ");
                    s.push_str(&c);
                }
                src = cause.source();
            }
            s
        }
    }
}

fn label_filters(labels: &Labels) -> HashMap<String, Vec<String>> {
    let mut filters = HashMap::new();
    if !labels.is_empty() {
        filters.insert(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
    }
    filters
}

fn to_hash(labels: &Labels) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn to_labels(labels: Option<HashMap<String, String>>) -> Labels {
    labels.unwrap_or_default().into_iter().collect()
}

/// Docker reports "0001-01-01T00:00:00Z" for "never".
fn timestamp(s: Option<String>) -> Option<String> {
    s.filter(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
}

fn run_state(s: Option<ContainerStateStatusEnum>) -> RunState {
    match s {
        Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
        Some(ContainerStateStatusEnum::RUNNING) | Some(ContainerStateStatusEnum::STOPPING) => {
            RunState::Running
        }
        Some(ContainerStateStatusEnum::PAUSED) => RunState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => RunState::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => RunState::Removing,
        Some(ContainerStateStatusEnum::EXITED) => RunState::Exited,
        Some(ContainerStateStatusEnum::DEAD) => RunState::Dead,
        _ => RunState::Unknown,
    }
}

fn health(s: Option<HealthStatusEnum>) -> Health {
    match s {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    }
}

fn container_info(r: ContainerInspectResponse) -> ContainerInfo {
    let config = r.config.unwrap_or_default();
    let state = r.state.unwrap_or_default();
    let settings = r.network_settings.unwrap_or_default();
    let run = run_state(state.status);

    let mut ports = Vec::new();
    for (key, bindings) in settings.ports.unwrap_or_default() {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse::<u16>() else {
            continue;
        };
        for b in bindings.unwrap_or_default() {
            let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            ports.push(PublishedPort {
                container_port,
                protocol: proto.to_string(),
                host_ip: b.host_ip.unwrap_or_default(),
                host_port,
            });
        }
    }
    // Stable order: by port, IPv4 before IPv6 (so `published()` gives the IPv4 binding).
    ports.sort_by(|a, b| {
        (
            a.container_port,
            &a.protocol,
            a.host_ip.contains(':'),
            &a.host_ip,
            a.host_port,
        )
            .cmp(&(
                b.container_port,
                &b.protocol,
                b.host_ip.contains(':'),
                &b.host_ip,
                b.host_port,
            ))
    });

    let mounts = r
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let target = m.destination.unwrap_or_default();
            match m.typ.as_deref() {
                Some("volume") => Some(MountInfo {
                    kind: MountKind::Volume,
                    name_or_source: m.name.unwrap_or_default(),
                    target,
                }),
                Some("bind") => Some(MountInfo {
                    kind: MountKind::Bind,
                    name_or_source: m.source.unwrap_or_default(),
                    target,
                }),
                Some("tmpfs") => Some(MountInfo {
                    kind: MountKind::Tmpfs,
                    name_or_source: String::new(),
                    target,
                }),
                _ => None,
            }
        })
        .collect();

    let mut networks: Vec<String> = settings.networks.unwrap_or_default().into_keys().collect();
    networks.sort();

    ContainerInfo {
        id: r.id.unwrap_or_default(),
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.or(r.image).unwrap_or_default(),
        labels: to_labels(config.labels),
        state: run,
        health: health(state.health.and_then(|h| h.status)),
        exit_code: matches!(run, RunState::Exited | RunState::Dead)
            .then_some(state.exit_code)
            .flatten(),
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at: timestamp(state.started_at),
        finished_at: timestamp(state.finished_at),
        ports,
        mounts,
        env: config.env.unwrap_or_default(),
        stop_signal: config.stop_signal.filter(|s| !s.is_empty()),
        stop_timeout_secs: config.stop_timeout,
        networks,
    }
}

fn volume_info(v: Volume) -> VolumeInfo {
    VolumeInfo {
        name: v.name,
        labels: v.labels.into_iter().collect(),
        created_at: v.created_at.filter(|t| !t.is_empty()),
        mountpoint: v.mountpoint,
        driver: v.driver,
    }
}

fn restart_policy(s: &str) -> Result<RestartPolicy, String> {
    let (name, count) = match s.split_once(':') {
        Some((n, c)) => (n, Some(c)),
        None => (s, None),
    };
    let name = match name {
        "" | "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        other => return Err(format!("unknown restart policy {other:?}")),
    };
    let maximum_retry_count = match count {
        Some(c) if name == RestartPolicyNameEnum::ON_FAILURE => Some(
            c.parse::<i64>()
                .map_err(|_| format!("bad retry count in restart policy {s:?}"))?,
        ),
        Some(_) => return Err(format!("only on-failure takes a retry count: {s:?}")),
        None => None,
    };
    Ok(RestartPolicy {
        name: Some(name),
        maximum_retry_count,
    })
}

/// The create body for a [`ContainerSpec`].
fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, String> {
    let mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: match m.kind {
                MountKind::Tmpfs => None,
                _ => Some(m.source.clone()).filter(|s| !s.is_empty()),
            },
            typ: Some(match m.kind {
                MountKind::Volume => MountType::VOLUME,
                MountKind::Bind => MountType::BIND,
                MountKind::Tmpfs => MountType::TMPFS,
            }),
            read_only: m.read_only.then_some(true),
            ..Default::default()
        })
        .collect();
    if let Some(m) = spec
        .mounts
        .iter()
        .find(|m| m.kind == MountKind::Bind && m.source.is_empty())
    {
        return Err(format!("bind mount on {} has no source path", m.target));
    }

    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed: Vec<String> = Vec::new();
    for p in &spec.ports {
        let proto = if p.protocol.is_empty() {
            "tcp"
        } else {
            p.protocol.as_str()
        };
        let key = format!("{}/{}", p.container_port, proto);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.clone()).filter(|s| !s.is_empty()),
                host_port: Some(p.host_port.map(|p| p.to_string()).unwrap_or_default()),
            });
    }

    let tmpfs: HashMap<String, String> = spec
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((path, opts)) => (path.to_string(), opts.to_string()),
            None => (t.clone(), String::new()),
        })
        .collect();

    let restart = spec.restart.as_deref().map(restart_policy).transpose()?;

    let healthcheck = spec.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()).filter(|t| !t.is_empty()),
        interval: (h.interval_ns > 0).then_some(h.interval_ns),
        timeout: (h.timeout_ns > 0).then_some(h.timeout_ns),
        retries: (h.retries > 0).then_some(h.retries),
        start_period: (h.start_period_ns > 0).then_some(h.start_period_ns),
        start_interval: None,
    });

    let first_network = spec.networks.first();
    let networking_config = first_network.map(|n| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            n.network.clone(),
            EndpointSettings {
                aliases: Some(n.aliases.clone()).filter(|a| !a.is_empty()),
                ..Default::default()
            },
        )])),
    });

    let host_config = HostConfig {
        mounts: Some(mounts).filter(|m| !m.is_empty()),
        port_bindings: Some(port_bindings).filter(|p| !p.is_empty()),
        restart_policy: restart,
        extra_hosts: Some(spec.extra_hosts.clone()).filter(|h| !h.is_empty()),
        tmpfs: Some(tmpfs).filter(|t| !t.is_empty()),
        shm_size: spec.shm_size,
        privileged: spec.privileged.then_some(true),
        cap_add: Some(spec.cap_add.clone()).filter(|c| !c.is_empty()),
        init: spec.init,
        network_mode: first_network.map(|n| n.network.clone()),
        ..Default::default()
    };

    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        hostname: spec.hostname.clone(),
        env: Some(spec.env.clone()).filter(|e| !e.is_empty()),
        cmd: spec.cmd.clone(),
        entrypoint: spec.entrypoint.clone(),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        labels: Some(to_hash(&spec.labels)).filter(|l| !l.is_empty()),
        exposed_ports: Some(exposed).filter(|e| !e.is_empty()),
        healthcheck,
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: spec.stop_timeout_secs,
        tty: spec.tty.then_some(true),
        open_stdin: spec.stdin_open.then_some(true),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    })
}

/// Splits an image reference into (name, tag) for a pull, so that a reference without a tag pulls
/// `latest` instead of every tag. Digests stay in the name.
fn split_image_ref(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

fn keep_tail(buf: &mut Vec<u8>, more: &[u8]) {
    buf.extend_from_slice(more);
    if buf.len() > STDERR_TAIL {
        let cut = buf.len() - STDERR_TAIL;
        buf.drain(..cut);
    }
}

#[async_trait]
impl Engine for DockerEngine {
    async fn info(&self) -> Result<EngineInfo> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.err("info", Obj::Other("engine"), e))?;
        Ok(EngineInfo {
            id: info.id.unwrap_or_default(),
            server_version: info.server_version.unwrap_or_default(),
            api_version: self.docker.client_version().to_string(),
            endpoint: self.endpoint.clone(),
            operating_system: info.operating_system.unwrap_or_default(),
        })
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.err("inspect image", Obj::Other(image), e)),
        }
    }

    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<()> {
        let (name, tag) = split_image_ref(image);
        let mut opts = CreateImageOptionsBuilder::new().from_image(name);
        if !tag.is_empty() {
            opts = opts.tag(tag);
        }
        let mut pull = self.docker.create_image(Some(opts.build()), None, None);
        while let Some(item) = pull.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        return Err(EngineError::ImageUnavailable {
                            image: image.to_string(),
                            reason: detail,
                        });
                    }
                    let status = match (info.id, info.status) {
                        (Some(id), Some(s)) => format!("{id}: {s}"),
                        (None, Some(s)) => s,
                        (Some(id), None) => id,
                        (None, None) => continue,
                    };
                    let detail = info.progress_detail.unwrap_or_default();
                    progress(PullProgress {
                        status,
                        current: detail.current.and_then(|c| u64::try_from(c).ok()),
                        total: detail.total.and_then(|t| u64::try_from(t).ok()),
                    });
                }
                Err(e) if is_connection_error(&e) => {
                    return Err(self.err("pull", Obj::Image(image), e))
                }
                Err(e) => {
                    let reason = match &e {
                        BollardError::DockerStreamError { error } => error.clone(),
                        other => describe(other),
                    };
                    return Err(EngineError::ImageUnavailable {
                        image: image.to_string(),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    async fn list_containers(&self, labels: &Labels) -> Result<Vec<ContainerInfo>> {
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&label_filters(labels))
            .build();
        let summaries = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| self.err("list containers", Obj::Other("containers"), e))?;
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let Some(id) = s.id else { continue };
            match self.inspect_container(&id).await {
                Ok(info) => out.push(info),
                // Removed between list and inspect.
                Err(EngineError::ContainerNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn inspect_container(&self, id_or_name: &str) -> Result<ContainerInfo> {
        let r = self
            .docker
            .inspect_container(id_or_name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.err("inspect", Obj::Container(id_or_name), e))?;
        Ok(container_info(r))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let body = create_body(spec).map_err(|reason| {
            EngineError::api("create", format!("container {}", spec.name), reason)
        })?;
        let mut opts = CreateContainerOptionsBuilder::new();
        if !spec.name.is_empty() {
            opts = opts.name(&spec.name);
        }
        let object = if spec.name.is_empty() {
            spec.image.as_str()
        } else {
            spec.name.as_str()
        };
        match self.docker.create_container(Some(opts.build()), body).await {
            Ok(r) => {
                for w in r.warnings.iter().filter(|w| !w.is_empty()) {
                    tracing::warn!(container = %object, "engine warning on create: {w}");
                }
                Ok(r.id)
            }
            // A 404 on create means the image (or a network) is missing, not the container.
            Err(e) if status(&e) == Some(404) => {
                let msg = server_message(&e).unwrap_or_default().to_string();
                if msg.contains("network") {
                    let net = spec
                        .networks
                        .first()
                        .map(|n| n.network.clone())
                        .unwrap_or_default();
                    Err(EngineError::NetworkNotFound(net))
                } else {
                    Err(EngineError::ImageUnavailable {
                        image: spec.image.clone(),
                        reason: msg,
                    })
                }
            }
            Err(e) => Err(self.err("create", Obj::Container(object), e)),
        }
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        match self
            .docker
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            // Already running.
            Err(e) if status(&e) == Some(304) => Ok(()),
            Err(e) => Err(self.err("start", Obj::Container(id), e)),
        }
    }

    async fn stop_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()> {
        let mut opts = StopContainerOptionsBuilder::new();
        // Without `t`, the engine uses the container's StopTimeout (default 10 s).
        let wait = match timeout_secs {
            Some(t) => {
                let t = t.clamp(0, i64::from(i32::MAX));
                opts = opts.t(t as i32);
                t as u64
            }
            None => match self.inspect_container(id).await {
                Ok(info) => info.stop_timeout_secs.unwrap_or(10).max(0) as u64,
                Err(_) => 10,
            },
        };
        // The answer only comes once the container has stopped: allow the grace period and more.
        let docker = self.with_timeout(wait + API_TIMEOUT_SECS);
        match docker.stop_container(id, Some(opts.build())).await {
            Ok(()) => Ok(()),
            // Already stopped.
            Err(e) if status(&e) == Some(304) => Ok(()),
            Err(e) => Err(self.err("stop", Obj::Container(id), e)),
        }
    }

    async fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        // v=false: anonymous volumes are never removed implicitly.
        let opts = RemoveContainerOptionsBuilder::new()
            .force(force)
            .v(false)
            .build();
        self.docker
            .remove_container(id, Some(opts))
            .await
            .map_err(|e| self.err("remove", Obj::Container(id), e))
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<String> {
        let tail = if tail == usize::MAX {
            "all".to_string()
        } else {
            tail.to_string()
        };
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(false)
            .tail(&tail)
            .build();
        let mut logs = self.docker.logs(id, Some(opts));
        let mut out = Vec::new();
        while let Some(item) = logs.next().await {
            let item = item.map_err(|e| self.err("logs", Obj::Container(id), e))?;
            out.extend_from_slice(item.as_ref());
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        env: &[String],
        user: Option<&str>,
    ) -> Result<ExecOutput> {
        let (exec_id, mut output) = self.start_exec(id, cmd, env, user).await?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(item) = output.next().await {
            match item.map_err(|e| self.err("exec", Obj::Container(id), e))? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    stdout.extend_from_slice(&message)
                }
                LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                LogOutput::StdIn { .. } => {}
            }
        }
        let exit_code = Self::exit_code_of(&self.docker, &exec_id)
            .await
            .map_err(|e| self.err("exec", Obj::Container(id), e))?
            .ok_or_else(|| {
                EngineError::api(
                    "exec",
                    format!("container {id}"),
                    "the command's exit code is unknown",
                )
            })?;
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
        })
    }

    /// Streams stdout. stderr is logged (debug) and its tail kept: when the command ends with a
    /// non-zero exit code, the stream's last item is an error carrying that code and the stderr
    /// tail (so a failing dump never looks like a short, successful one). The exit code can still
    /// be read with `exec_exit_code` afterwards.
    async fn exec_stream(
        &self,
        id: &str,
        cmd: &[String],
        env: &[String],
        user: Option<&str>,
    ) -> Result<(String, ByteStream)> {
        let (exec_id, output) = self.start_exec(id, cmd, env, user).await?;
        let docker = self.docker.clone();
        let endpoint = self.endpoint.clone();
        let container = id.to_string();
        let exec_id2 = exec_id.clone();
        let program = cmd.first().cloned().unwrap_or_default();
        let stderr_tail = Arc::new(Mutex::new(Vec::<u8>::new()));
        let tail_in = stderr_tail.clone();
        let endpoint_in = endpoint.clone();
        let container_in = container.clone();

        let body = output.filter_map(move |item| {
            let tail = tail_in.clone();
            let endpoint = endpoint_in.clone();
            let container = container_in.clone();
            async move {
                match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => Some(Ok(Vec::from(message))),
                    Ok(LogOutput::StdErr { message }) => {
                        tracing::debug!(container = %container, "exec stderr: {}", String::from_utf8_lossy(&message).trim_end());
                        keep_tail(&mut tail.lock().unwrap_or_else(|p| p.into_inner()), &message);
                        None
                    }
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(e) if is_connection_error(&e) => Some(Err(EngineError::Unreachable {
                        endpoint,
                        reason: describe(&e),
                    })),
                    Err(e) => Some(Err(EngineError::api("exec", format!("container {container}"), describe(&e)))),
                }
            }
        });
        // After the output ended: a non-zero exit becomes a final error item.
        let end = stream::once(async move {
            match DockerEngine::exit_code_of(&docker, &exec_id2).await {
                Ok(Some(0)) | Ok(None) => None,
                Ok(Some(code)) => {
                    let tail = stderr_tail
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    let tail = String::from_utf8_lossy(&tail).trim().to_string();
                    Some(Err(EngineError::api(
                        "exec",
                        format!("container {container}"),
                        if tail.is_empty() {
                            format!("{program} exited with code {code}")
                        } else {
                            format!("{program} exited with code {code}: {tail}")
                        },
                    )))
                }
                Err(e) => Some(Err(EngineError::api(
                    "exec",
                    format!("container {container}"),
                    format!("cannot read the exit code: {}", describe(&e)),
                ))),
            }
        })
        .filter_map(|x| async move { x });
        Ok((exec_id, Box::pin(body.chain(end))))
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>> {
        Self::exit_code_of(&self.docker, exec_id)
            .await
            .map_err(|e| self.err("inspect exec", Obj::Other(exec_id), e))
    }

    async fn download_archive(&self, id: &str, path: &str) -> Result<ByteStream> {
        let opts = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut archive = Box::pin(self.docker.download_from_container(id, Some(opts)));
        // Poll the first chunk now, so a missing container or path fails here, not mid-stream.
        let object = format!("container {id}:{path}");
        let archive_err = |e: BollardError| -> EngineError {
            if status(&e) == Some(404)
                && server_message(&e).is_some_and(|m| m.contains("No such container"))
            {
                EngineError::ContainerNotFound(id.to_string())
            } else if is_connection_error(&e) {
                EngineError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    reason: describe(&e),
                }
            } else {
                EngineError::api("download archive", object.clone(), describe(&e))
            }
        };
        let first = match archive.next().await {
            None => None,
            Some(Ok(b)) => Some(Ok(Vec::from(b))),
            Some(Err(e)) => return Err(archive_err(e)),
        };
        let endpoint = self.endpoint.clone();
        let rest = archive.map(move |item| {
            item.map(Vec::from).map_err(|e| {
                if is_connection_error(&e) {
                    EngineError::Unreachable {
                        endpoint: endpoint.clone(),
                        reason: describe(&e),
                    }
                } else {
                    EngineError::api("download archive", object.clone(), describe(&e))
                }
            })
        });
        Ok(Box::pin(stream::iter(first).chain(rest)))
    }

    async fn upload_archive(&self, id: &str, path: &str, tar: ByteStream) -> Result<()> {
        let opts = UploadToContainerOptionsBuilder::new().path(path).build();
        // Keep the source's own error: hyper only reports "body error".
        let source_err: Arc<Mutex<Option<EngineError>>> = Arc::new(Mutex::new(None));
        let slot = source_err.clone();
        let body = tar.map(move |item| match item {
            Ok(chunk) => Ok(bytes::Bytes::from(chunk)),
            Err(e) => {
                let msg = e.to_string();
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Err(std::io::Error::other(msg))
            }
        });
        let docker = self.with_timeout(UPLOAD_TIMEOUT_SECS);
        let result = docker
            .upload_to_container(id, Some(opts), bollard::body_try_stream(body))
            .await;
        if let Some(e) = source_err.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        result.map_err(|e| {
            if status(&e) == Some(404)
                && server_message(&e).is_some_and(|m| m.contains("No such container"))
            {
                EngineError::ContainerNotFound(id.to_string())
            } else if is_connection_error(&e) {
                EngineError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    reason: describe(&e),
                }
            } else {
                EngineError::api(
                    "upload archive",
                    format!("container {id}:{path}"),
                    describe(&e),
                )
            }
        })
    }

    async fn list_volumes(&self, labels: &Labels) -> Result<Vec<VolumeInfo>> {
        let opts = ListVolumesOptionsBuilder::new()
            .filters(&label_filters(labels))
            .build();
        let r = self
            .docker
            .list_volumes(Some(opts))
            .await
            .map_err(|e| self.err("list volumes", Obj::Other("volumes"), e))?;
        let mut out: Vec<VolumeInfo> = r
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(volume_info)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(volume_info(v))),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err("inspect", Obj::Volume(name), e)),
        }
    }

    async fn create_volume(&self, name: &str, labels: &Labels) -> Result<VolumeInfo> {
        let req = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(to_hash(labels)),
            ..Default::default()
        };
        let v = self
            .docker
            .create_volume(req)
            .await
            .map_err(|e| self.err("create", Obj::Volume(name), e))?;
        // The engine returns an existing volume of that name as if it had created it.
        let info = volume_info(v);
        if let Some((k, want)) = labels.iter().find(|(k, v)| info.labels.get(*k) != Some(*v)) {
            return Err(EngineError::api(
                "create",
                format!("volume {name}"),
                format!(
                    "a volume of that name already exists without label {k}={want}; not adopting it (inspect it with `docker volume inspect {name}`)"
                ),
            ));
        }
        Ok(info)
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
            .map_err(|e| self.err("remove", Obj::Volume(name), e))
    }

    async fn list_networks(&self, labels: &Labels) -> Result<Vec<NetworkInfo>> {
        let opts = ListNetworksOptionsBuilder::new()
            .filters(&label_filters(labels))
            .build();
        let nets = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| self.err("list networks", Obj::Other("networks"), e))?;
        let mut out: Vec<NetworkInfo> = nets
            .into_iter()
            .map(|n| NetworkInfo {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                labels: to_labels(n.labels),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>> {
        match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(n) => Ok(Some(NetworkInfo {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                labels: to_labels(n.labels),
            })),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err("inspect", Obj::Network(name), e)),
        }
    }

    async fn create_network(&self, name: &str, labels: &Labels) -> Result<String> {
        // Older engines (API < 1.44) happily create a second network with the same name.
        if let Some(existing) = self.inspect_network(name).await? {
            if existing.name == name {
                if labels
                    .iter()
                    .all(|(k, v)| existing.labels.get(k) == Some(v))
                {
                    return Ok(existing.id);
                }
                return Err(EngineError::api(
                    "create",
                    format!("network {name}"),
                    "a network of that name already exists without our labels; not adopting it",
                ));
            }
        }
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".to_string()),
            labels: Some(to_hash(labels)),
            ..Default::default()
        };
        let r = self
            .docker
            .create_network(req)
            .await
            .map_err(|e| self.err("create", Obj::Other(&format!("network {name}")), e))?;
        if !r.warning.is_empty() {
            tracing::warn!(network = %name, "engine warning on create: {}", r.warning);
        }
        Ok(r.id)
    }

    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> Result<()> {
        let req = NetworkConnectRequest {
            container: container.to_string(),
            endpoint_config: Some(EndpointSettings {
                aliases: Some(aliases.to_vec()).filter(|a| !a.is_empty()),
                ..Default::default()
            }),
        };
        match self.docker.connect_network(network, req).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => {
                if server_message(&e).is_some_and(|m| m.contains("No such container")) {
                    Err(EngineError::ContainerNotFound(container.to_string()))
                } else {
                    Err(EngineError::NetworkNotFound(network.to_string()))
                }
            }
            // Already attached.
            Err(e)
                if server_message(&e).is_some_and(|m| m.contains("already exists in network")) =>
            {
                Ok(())
            }
            Err(e) => Err(self.err(
                "connect",
                Obj::Other(&format!("container {container} to network {network}")),
                e,
            )),
        }
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        self.docker
            .remove_network(name)
            .await
            .map_err(|e| self.err("remove", Obj::Network(name), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint(None, false, None).unwrap(),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            parse_endpoint(Some(""), false, None).unwrap(),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            parse_endpoint(Some("unix:///run/user/1000/docker.sock"), false, None).unwrap(),
            Endpoint::Unix("/run/user/1000/docker.sock".into())
        );
        assert_eq!(
            parse_endpoint(Some("tcp://10.0.0.2:2375"), false, None).unwrap(),
            Endpoint::Http("tcp://10.0.0.2:2375".into())
        );
        assert_eq!(
            parse_endpoint(Some("tcp://docker"), false, None).unwrap(),
            Endpoint::Http("tcp://docker:2375".into())
        );
        assert_eq!(
            parse_endpoint(Some("tcp://docker"), true, Some("/certs".into())).unwrap(),
            Endpoint::Https {
                addr: "tcp://docker:2376".into(),
                cert_dir: "/certs".into()
            }
        );
        assert_eq!(
            parse_endpoint(Some("https://docker:2376/"), false, Some("/c".into())).unwrap(),
            Endpoint::Https {
                addr: "tcp://docker:2376".into(),
                cert_dir: "/c".into()
            }
        );
        assert!(parse_endpoint(Some("ssh://me@host"), false, None).is_err());
        assert!(parse_endpoint(Some("npipe:////./pipe/docker_engine"), false, None).is_err());
    }

    #[test]
    fn image_refs() {
        assert_eq!(split_image_ref("postgres"), ("postgres", "latest"));
        assert_eq!(split_image_ref("postgres:15"), ("postgres", "15"));
        assert_eq!(
            split_image_ref("localhost:5000/pg"),
            ("localhost:5000/pg", "latest")
        );
        assert_eq!(
            split_image_ref("localhost:5000/pg:16-alpine"),
            ("localhost:5000/pg", "16-alpine")
        );
        assert_eq!(split_image_ref("pg@sha256:abcd"), ("pg@sha256:abcd", ""));
    }

    #[test]
    fn restart_policies() {
        assert_eq!(
            restart_policy("always").unwrap().name,
            Some(RestartPolicyNameEnum::ALWAYS)
        );
        assert_eq!(
            restart_policy("no").unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        let p = restart_policy("on-failure:3").unwrap();
        assert_eq!(p.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(p.maximum_retry_count, Some(3));
        assert!(restart_policy("always:3").is_err());
        assert!(restart_policy("sometimes").is_err());
    }

    #[test]
    fn create_body_maps_the_spec() {
        let spec = ContainerSpec {
            name: "p-db-1".into(),
            image: "nodus/postgres-standin:15".into(),
            env: vec!["POSTGRES_PASSWORD=x".into()],
            mounts: vec![
                MountSpec {
                    kind: MountKind::Volume,
                    source: "p_data".into(),
                    target: "/var/lib/postgresql/data".into(),
                    read_only: false,
                },
                MountSpec {
                    kind: MountKind::Volume,
                    source: String::new(),
                    target: "/anon".into(),
                    read_only: false,
                },
                MountSpec {
                    kind: MountKind::Bind,
                    source: "/host/init".into(),
                    target: "/docker-entrypoint-initdb.d".into(),
                    read_only: true,
                },
            ],
            ports: vec![
                PortSpec {
                    container_port: 5432,
                    protocol: "tcp".into(),
                    host_ip: "127.0.0.1".into(),
                    host_port: None,
                },
                PortSpec {
                    container_port: 5432,
                    protocol: String::new(),
                    host_ip: String::new(),
                    host_port: Some(15432),
                },
            ],
            networks: vec![NetworkAttachment {
                network: "p_default".into(),
                aliases: vec!["db".into()],
            }],
            stop_signal: Some("SIGINT".into()),
            stop_timeout_secs: Some(60),
            tmpfs: vec!["/run:size=64m".into()],
            restart: Some("unless-stopped".into()),
            ..Default::default()
        };
        let body = create_body(&spec).unwrap();
        assert_eq!(body.exposed_ports, Some(vec!["5432/tcp".to_string()]));
        assert_eq!(body.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(body.stop_timeout, Some(60));
        let hc = body.host_config.unwrap();
        let bindings = hc.port_bindings.unwrap()["5432/tcp"].clone().unwrap();
        assert_eq!(bindings.len(), 2);
        assert_eq!(bindings[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(bindings[0].host_port.as_deref(), Some(""));
        assert_eq!(bindings[1].host_port.as_deref(), Some("15432"));
        let mounts = hc.mounts.unwrap();
        assert_eq!(mounts[0].source.as_deref(), Some("p_data"));
        assert_eq!(mounts[1].source, None);
        assert_eq!(mounts[1].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[2].read_only, Some(true));
        assert_eq!(hc.network_mode.as_deref(), Some("p_default"));
        assert_eq!(hc.tmpfs.unwrap()["/run"], "size=64m");
        assert_eq!(
            hc.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let eps = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(eps["p_default"].aliases, Some(vec!["db".to_string()]));
    }

    #[test]
    fn bind_without_source_is_rejected() {
        let spec = ContainerSpec {
            mounts: vec![MountSpec {
                kind: MountKind::Bind,
                source: String::new(),
                target: "/x".into(),
                read_only: false,
            }],
            ..Default::default()
        };
        assert!(create_body(&spec).is_err());
    }

    #[test]
    fn stderr_tail_is_bounded() {
        let mut buf = Vec::new();
        keep_tail(&mut buf, &vec![b'a'; STDERR_TAIL]);
        keep_tail(&mut buf, b"end");
        assert_eq!(buf.len(), STDERR_TAIL);
        assert!(buf.ends_with(b"aend"));
    }
}
