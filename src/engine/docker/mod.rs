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

mod api;
mod build;
mod convert;
mod pooled;
mod session;

use std::path::PathBuf;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::{Docker, API_DEFAULT_VERSION};

use super::resolve::{
    probe_candidates, remote_host_of, resolve, EnvView, Request, ResolveError, Resolved, Source,
    SshUrl, DEFAULT_SOCKET,
};
use super::ssh::SshBridge;
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
    /// The engine's address as configured (`ssh://…` for ssh engines, not the local bridge).
    endpoint: String,
    /// How it was found (see [`Resolved::describe`]).
    origin: String,
    remote_host: Option<String>,
    /// Keeps the local socket of an ssh engine served while the engine is in use.
    _ssh: Option<SshBridge>,
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
        // DockerEngine::open bridges ssh engines to a local socket before parsing.
        return Err("ssh:// addresses go through the ssh bridge".into());
    }
    if host.starts_with('/') {
        return Ok(Endpoint::Unix(host.to_string()));
    }
    Err(
        "unsupported DOCKER_HOST (expected unix://PATH, tcp://HOST:PORT or https://HOST:PORT)"
            .into(),
    )
}

/// How long a well-known socket may take to answer while probing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl DockerEngine {
    /// Connects to the engine the docker CLI would use (DOCKER_HOST, DOCKER_CONTEXT, the current
    /// context, the default socket, then the well-known sockets) and negotiates the API version.
    pub async fn connect() -> Result<DockerEngine> {
        DockerEngine::connect_with(&Request::default()).await
    }

    /// Like [`DockerEngine::connect`] with the command line's `--context` / `--host`.
    pub async fn connect_with(req: &Request) -> Result<DockerEngine> {
        let env = EnvView::from_process();
        let resolved = resolve(req, &env).map_err(|e| EngineError::Unreachable {
            endpoint: match &e {
                ResolveError::ContextNotFound { name, .. }
                | ResolveError::ContextUnreadable { name, .. }
                | ResolveError::NoDockerEndpoint { name, .. } => format!("context {name}"),
                ResolveError::Conflict => "--host/--context".to_string(),
                ResolveError::ConfigUnreadable { path, .. } => path.display().to_string(),
            },
            reason: e.to_string(),
        })?;
        let home = env.home.clone();
        let first = match DockerEngine::open(&resolved, home.as_deref()).await {
            Ok(engine) => return Ok(engine),
            Err(e) => e,
        };
        if !resolved.may_probe() {
            return Err(first);
        }
        // Nothing configured and the default socket is missing or dead: try the sockets of
        // Docker Desktop, Colima, OrbStack, Rancher Desktop, rootless Docker and Podman.
        let reason_of = |e: &EngineError| match e {
            EngineError::Unreachable { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        let mut tried = vec![format!(
            "{DEFAULT_SOCKET} (default socket): {}",
            reason_of(&first)
        )];
        for c in probe_candidates(&env) {
            let r = Resolved {
                host: format!("unix://{}", c.path.display()),
                context: None,
                source: Source::Probed(c.what),
                tls: None,
            };
            match tokio::time::timeout(PROBE_TIMEOUT, DockerEngine::open(&r, home.as_deref())).await
            {
                Ok(Ok(engine)) => return Ok(engine),
                Ok(Err(e)) => tried.push(format!("{c}: {}", reason_of(&e))),
                Err(_) => tried.push(format!(
                    "{c}: no answer within {} s",
                    PROBE_TIMEOUT.as_secs()
                )),
            }
        }
        Err(EngineError::Unreachable {
            endpoint: format!("unix://{DEFAULT_SOCKET}"),
            reason: if tried.len() == 1 {
                tried.remove(0)
            } else {
                format!(
                    "nothing answered; tried, in order:\n  - {}",
                    tried.join("\n  - ")
                )
            },
        })
    }

    /// Like [`DockerEngine::connect`] with an explicit DOCKER_HOST value (`None` = the default
    /// socket, without probing). TLS still follows DOCKER_TLS_VERIFY / DOCKER_CERT_PATH.
    pub async fn connect_to(host: Option<&str>) -> Result<DockerEngine> {
        let env = EnvView::from_process();
        let req = Request {
            context: None,
            host: Some(
                host.map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}")),
            ),
        };
        let resolved = resolve(&req, &env).map_err(|e| EngineError::Unreachable {
            endpoint: req.host.clone().unwrap_or_default(),
            reason: e.to_string(),
        })?;
        DockerEngine::open(&resolved, env.home.as_deref()).await
    }

    /// Connects to one resolved endpoint: ssh bridge if needed, TLS, version negotiation, ping.
    async fn open(r: &Resolved, home: Option<&std::path::Path>) -> Result<DockerEngine> {
        let shown = r.host.clone();
        let origin = r.describe(home);
        let unreachable = |reason: String| EngineError::Unreachable {
            // A context or a probed socket is named with how it was found; a plain address as is.
            endpoint: if r.context.is_some() || matches!(r.source, Source::Probed(_)) {
                origin.clone()
            } else {
                shown.clone()
            },
            reason,
        };
        let mut ssh: Option<SshBridge> = None;
        let endpoint = if shown.starts_with("ssh://") {
            let url = SshUrl::parse(&shown).map_err(unreachable)?;
            let bridge = SshBridge::start(&url)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let path = bridge.socket().display().to_string();
            ssh = Some(bridge);
            Endpoint::Unix(path)
        } else {
            let (tls_verify, cert_path) = match &r.tls {
                Some(t) => {
                    if t.skip_verify {
                        tracing::warn!(
                            "the context asks to skip TLS verification; nodus verifies the engine's certificate anyway"
                        );
                    }
                    (true, Some(t.dir.clone()))
                }
                None => (false, None),
            };
            parse_endpoint(Some(&shown), tls_verify, cert_path).map_err(unreachable)?
        };
        let docker = match &endpoint {
            // Every new connection to an ssh engine starts a process on the remote host: keep them.
            Endpoint::Unix(path) if ssh.is_some() => {
                pooled::connect(std::path::Path::new(path), API_TIMEOUT_SECS)
            }
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
                            "TLS is requested (DOCKER_TLS_VERIFY, https:// or the context's TLS material) but {} is missing",
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
        // ssh says why it failed on its stderr; that beats "connection closed".
        let ssh_reason = |fallback: String| {
            ssh.as_ref()
                .and_then(|b| b.last_error())
                .map(|e| format!("ssh: {e}"))
                .unwrap_or(fallback)
        };
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Err(unreachable(ssh_reason(describe(&e)))),
            Err(_) => {
                return Err(unreachable(ssh_reason(format!(
                    "no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))))
            }
        };
        tracing::debug!(endpoint = %origin, api = %docker.client_version(), "connected to the Docker engine");
        Ok(DockerEngine {
            docker,
            endpoint: shown.clone(),
            origin,
            remote_host: remote_host_of(&shown),
            _ssh: ssh,
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

    /// Maps an archive endpoint's error: "No such container" (404) → ContainerNotFound (a 404 for
    /// a missing path stays an Api error naming `object`), connection failures → Unreachable.
    fn archive_err(
        &self,
        op: &'static str,
        id: &str,
        object: &str,
        e: BollardError,
    ) -> EngineError {
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
            EngineError::api(op, object, describe(&e))
        }
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

/// The network an engine message says is missing: "network 7193ab… not found" (a container's
/// start after one of its networks was removed).
fn missing_network(message: &str) -> Option<String> {
    let rest = message.strip_prefix("network ")?;
    let (name, tail) = rest.split_once(' ')?;
    (tail.starts_with("not found") && !name.is_empty()).then(|| name.to_string())
}

fn is_connection_error(e: &BollardError) -> bool {
    match e {
        BollardError::SocketNotFoundError(_) | BollardError::RequestTimeoutError => true,
        // The engine went away in the middle of a request (socket closed, daemon stopped):
        // as unreachable as a refused connection.
        BollardError::HyperLegacyError { err } => err.is_connect() || connection_lost(err),
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

/// A hyper error in `e`'s sources saying the connection closed before the answer was complete,
/// or an I/O error of a broken connection.
fn connection_lost(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = src {
        if let Some(h) = cause.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        src = cause.source();
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_refused_for_a_removed_network_names_it() {
        assert_eq!(
            missing_network("network 719398615db3 not found").as_deref(),
            Some("719398615db3")
        );
        assert_eq!(missing_network("No such container: abc"), None);
        assert_eq!(missing_network("network  not found"), None);
        assert_eq!(missing_network("network x is in use"), None);
    }

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
}
