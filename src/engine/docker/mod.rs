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
mod convert;

use std::path::PathBuf;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::{Docker, API_DEFAULT_VERSION};

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
