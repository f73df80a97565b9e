//! Which engine to talk to, decided the way the docker CLI decides it.
//!
//! Precedence (docker CLI's `resolveContextName` plus its host rules):
//! 1. `--context NAME`
//! 2. `-H/--host` or a non-empty `DOCKER_HOST` (the "default" context with that host)
//! 3. `DOCKER_CONTEXT`
//! 4. `currentContext` in `$DOCKER_CONFIG/config.json` (default `~/.docker`)
//! 5. the default socket, and — only here, when nothing was configured — the well-known sockets of
//!    Docker Desktop, Colima, OrbStack, Rancher Desktop, rootless Docker and Podman, probed in order
//!    by the caller ([`probe_candidates`]).
//!
//! A named context is read from `contexts/meta/<sha256(name)>/meta.json` (`Endpoints.docker.Host`,
//! `SkipTLSVerify`), its TLS material from `contexts/tls/<sha256(name)>/docker/{ca,cert,key}.pem`.
//! This module reads those files but opens no connection; everything it depends on from the
//! process environment comes in through [`EnvView`], so it is tested over temporary directories.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The engine's default socket on Linux (and Docker Desktop's compatibility symlink on macOS).
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--context NAME`
    pub context: Option<String>,
    /// `-H/--host URL`
    pub host: Option<String>,
}

/// The parts of the process environment the resolution reads.
#[derive(Debug, Clone, Default)]
pub struct EnvView {
    pub docker_host: Option<String>,
    pub docker_context: Option<String>,
    /// `DOCKER_CONFIG`; `None` means `$HOME/.docker`.
    pub docker_config: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `DOCKER_TLS_VERIFY` set to a non-empty value other than 0.
    pub tls_verify: bool,
    /// `DOCKER_CERT_PATH`
    pub cert_path: Option<PathBuf>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl EnvView {
    pub fn from_process() -> EnvView {
        let var = |k: &str| non_empty(std::env::var(k).ok());
        EnvView {
            docker_host: var("DOCKER_HOST"),
            docker_context: var("DOCKER_CONTEXT"),
            docker_config: var("DOCKER_CONFIG").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR").map(PathBuf::from),
            tls_verify: var("DOCKER_TLS_VERIFY").is_some_and(|v| v != "0"),
            cert_path: var("DOCKER_CERT_PATH").map(PathBuf::from),
        }
    }

    /// `$DOCKER_CONFIG`, else `~/.docker`.
    pub fn config_dir(&self) -> PathBuf {
        self.docker_config.clone().unwrap_or_else(|| {
            self.home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".docker")
        })
    }
}

/// Where the chosen endpoint came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--context`
    ContextFlag,
    /// `-H/--host`
    HostFlag,
    /// `DOCKER_HOST`
    DockerHost,
    /// `DOCKER_CONTEXT`
    DockerContext,
    /// `currentContext` in this config file
    CurrentContext(PathBuf),
    /// nothing configured: the default socket
    Default,
    /// nothing configured, the default socket did not answer: a well-known socket that did
    Probed(&'static str),
}

/// TLS material for an endpoint: a directory holding `ca.pem`, `cert.pem`, `key.pem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub dir: PathBuf,
    pub skip_verify: bool,
}

/// The engine endpoint to use, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `unix:///path`, `tcp://host:port`, `https://…` or `ssh://[user@]host[:port]`.
    pub host: String,
    /// The context's name, when a named context (not "default") was used.
    pub context: Option<String>,
    pub source: Source,
    /// TLS: from the context's TLS store, or from DOCKER_TLS_VERIFY/DOCKER_CERT_PATH.
    pub tls: Option<Tls>,
}

impl Resolved {
    /// Whether well-known sockets may be probed when this endpoint does not answer: only when the
    /// user configured nothing.
    pub fn may_probe(&self) -> bool {
        self.source == Source::Default
    }

    /// "context colima (currentContext in ~/.docker/config.json) → unix:///…"
    pub fn describe(&self, home: Option<&Path>) -> String {
        let how = self.source.describe(home);
        match &self.context {
            Some(name) => format!("context {name} ({how}) → {}", self.host),
            None => format!("{how} → {}", self.host),
        }
    }
}

/// Shortens a path under the home directory to `~/…`.
pub fn tilde(p: &Path, home: Option<&Path>) -> String {
    if let Some(h) = home {
        if let Ok(rest) = p.strip_prefix(h) {
            return format!("~/{}", rest.display());
        }
    }
    p.display().to_string()
}

impl Source {
    pub fn describe(&self, home: Option<&Path>) -> String {
        match self {
            Source::ContextFlag => "--context".into(),
            Source::HostFlag => "--host".into(),
            Source::DockerHost => "DOCKER_HOST".into(),
            Source::DockerContext => "DOCKER_CONTEXT".into(),
            Source::CurrentContext(p) => format!("currentContext in {}", tilde(p, home)),
            Source::Default => "default socket".into(),
            Source::Probed(what) => format!("found {what}"),
        }
    }
}

/// Why no endpoint could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("either --host or --context, not both")]
    Conflict,
    #[error("context {name} ({how}) does not exist; contexts here: {}", list_or_none(.available))]
    ContextNotFound {
        name: String,
        how: String,
        available: Vec<String>,
    },
    #[error("context {name}: cannot read {path}: {reason}")]
    ContextUnreadable {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("context {name} has no docker endpoint ({path})")]
    NoDockerEndpoint { name: String, path: PathBuf },
    #[error("cannot read {path}: {reason}")]
    ConfigUnreadable { path: PathBuf, reason: String },
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "only default".into()
    } else {
        format!("default, {}", v.join(", "))
    }
}

/// The directory name the docker CLI stores a context under: hex SHA-256 of its name.
pub fn context_dir_name(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

/// Decides the endpoint (see the module docs for the precedence).
pub fn resolve(req: &Request, env: &EnvView) -> Result<Resolved, ResolveError> {
    let req_host = non_empty(req.host.clone());
    let req_context = non_empty(req.context.clone());
    if req_host.is_some() && req_context.is_some() {
        return Err(ResolveError::Conflict);
    }
    if let Some(name) = req_context {
        return context(&name, Source::ContextFlag, env);
    }
    if let Some(h) = req_host {
        return Ok(default_context(h, Source::HostFlag, env));
    }
    if let Some(h) = env.docker_host.clone() {
        return Ok(default_context(h, Source::DockerHost, env));
    }
    if let Some(name) = env.docker_context.clone() {
        return context(&name, Source::DockerContext, env);
    }
    let config = env.config_dir().join("config.json");
    if let Some(name) = current_context(&config)? {
        return context(&name, Source::CurrentContext(config), env);
    }
    Ok(default_context(
        format!("unix://{DEFAULT_SOCKET}"),
        Source::Default,
        env,
    ))
}

/// The "default" context: a host with TLS from DOCKER_TLS_VERIFY / DOCKER_CERT_PATH.
fn default_context(host: String, source: Source, env: &EnvView) -> Resolved {
    let tls = (env.tls_verify || host.starts_with("https://")).then(|| Tls {
        dir: env
            .cert_path
            .clone()
            .unwrap_or_else(|| env.config_dir().clone()),
        skip_verify: false,
    });
    Resolved {
        host,
        context: None,
        source,
        tls,
    }
}

fn current_context(config: &Path) -> Result<Option<String>, ResolveError> {
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ResolveError::ConfigUnreadable {
                path: config.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ResolveError::ConfigUnreadable {
            path: config.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(v.get("currentContext")
        .and_then(|c| c.as_str())
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string))
}

/// Reads a named context ("default" is the default context, as in the docker CLI).
fn context(name: &str, source: Source, env: &EnvView) -> Result<Resolved, ResolveError> {
    if name == "default" {
        let host = env
            .docker_host
            .clone()
            .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"));
        let mut r = default_context(host, source, env);
        r.context = Some("default".into());
        return Ok(r);
    }
    let dir = env.config_dir().join("contexts");
    let hash = context_dir_name(name);
    let meta = dir.join("meta").join(&hash).join("meta.json");
    let text = match std::fs::read_to_string(&meta) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ResolveError::ContextNotFound {
                name: name.to_string(),
                how: source.describe(env.home.as_deref()),
                available: list_contexts(&dir),
            })
        }
        Err(e) => {
            return Err(ResolveError::ContextUnreadable {
                name: name.to_string(),
                path: meta,
                reason: e.to_string(),
            })
        }
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ResolveError::ContextUnreadable {
            name: name.to_string(),
            path: meta.clone(),
            reason: e.to_string(),
        })?;
    let docker = v.pointer("/Endpoints/docker");
    let Some(host) = docker
        .and_then(|d| d.get("Host"))
        .and_then(|h| h.as_str())
        .map(str::trim)
        .filter(|h| !h.is_empty())
    else {
        return Err(ResolveError::NoDockerEndpoint {
            name: name.to_string(),
            path: meta,
        });
    };
    let skip_verify = docker
        .and_then(|d| d.get("SkipTLSVerify"))
        .and_then(|s| s.as_bool())
        .unwrap_or(false);
    let tls_dir = dir.join("tls").join(&hash).join("docker");
    let tls = (tls_dir.join("ca.pem").is_file()
        || tls_dir.join("cert.pem").is_file()
        || host.starts_with("https://"))
    .then_some(Tls {
        dir: tls_dir,
        skip_verify,
    });
    Ok(Resolved {
        host: host.to_string(),
        context: Some(name.to_string()),
        source,
        tls,
    })
}

/// The names of the contexts stored under `contexts_dir` (sorted).
pub fn list_contexts(contexts_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(contexts_dir.join("meta"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("meta.json")).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter_map(|v| v.get("Name").and_then(|n| n.as_str()).map(str::to_string))
        .collect();
    names.sort();
    names
}

/// A well-known socket to probe when nothing is configured and the default socket is dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub what: &'static str,
    pub path: PathBuf,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.what)
    }
}

/// The sockets Docker Desktop, Colima (every profile, `default` first), OrbStack, Rancher Desktop,
/// rootless Docker and Podman create, in the order they are probed. Only paths that exist are
/// returned (a dangling symlink is left out: it cannot answer).
pub fn probe_candidates(env: &EnvView) -> Vec<Candidate> {
    let mut all = Vec::new();
    if let Some(home) = &env.home {
        all.push(("Docker Desktop", home.join(".docker/run/docker.sock")));
        all.push(("Docker Desktop", home.join(".docker/desktop/docker.sock")));
        let colima = home.join(".colima");
        all.push(("Colima", colima.join("default/docker.sock")));
        let mut profiles: Vec<PathBuf> = std::fs::read_dir(&colima)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n != "default"))
            .map(|p| p.join("docker.sock"))
            .collect();
        profiles.sort();
        all.extend(profiles.into_iter().map(|p| ("Colima", p)));
        all.push(("OrbStack", home.join(".orbstack/run/docker.sock")));
        all.push(("Rancher Desktop", home.join(".rd/docker.sock")));
    }
    if let Some(xdg) = &env.xdg_runtime_dir {
        all.push(("rootless Docker", xdg.join("docker.sock")));
        all.push(("Podman", xdg.join("podman/podman.sock")));
    }
    all.push(("Podman", PathBuf::from("/run/podman/podman.sock")));
    all.into_iter()
        // `exists` follows symlinks: a dangling one is skipped.
        .filter(|(_, p)| p.exists())
        .map(|(what, path)| Candidate { what, path })
        .collect()
}

/// The host of an engine address when it is another machine (tcp/https/ssh to a non-loopback
/// host); `None` for unix sockets and loopback.
pub fn remote_host_of(url: &str) -> Option<String> {
    let h = url.trim();
    let rest = ["tcp://", "https://", "http://", "ssh://"]
        .iter()
        .find_map(|p| h.strip_prefix(p))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let hostport = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        hostport.split(':').next().unwrap_or_default()
    };
    match host {
        "" | "localhost" | "127.0.0.1" | "::1" => None,
        h => Some(h.to_string()),
    }
}

/// An `ssh://[user@]host[:port]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshUrl {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl SshUrl {
    pub fn parse(url: &str) -> Result<SshUrl, String> {
        let rest = url
            .strip_prefix("ssh://")
            .ok_or_else(|| format!("{url}: not an ssh:// address"))?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if rest.len() > authority.len() && !rest[authority.len()..].trim_matches('/').is_empty() {
            return Err(format!(
                "{url}: a path is not supported in ssh:// addresses (as in the docker CLI)"
            ));
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()).filter(|u| !u.is_empty()), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url}: unclosed [ in the host"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let port = match port {
            None | Some("") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("{url}: port {p} is not a number from 1 to 65535"))?,
            ),
        };
        Ok(SshUrl { user, host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(dir: &Path) -> EnvView {
        EnvView {
            docker_config: Some(dir.join("docker")),
            home: Some(dir.to_path_buf()),
            ..Default::default()
        }
    }

    /// Writes a context the way `docker context create` stores it.
    fn write_context(env: &EnvView, name: &str, host: &str, tls: bool) {
        let hash = context_dir_name(name);
        let meta = env.config_dir().join("contexts/meta").join(&hash);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            serde_json::json!({
                "Name": name,
                "Metadata": {},
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}}
            })
            .to_string(),
        )
        .unwrap();
        if tls {
            let t = env
                .config_dir()
                .join("contexts/tls")
                .join(&hash)
                .join("docker");
            std::fs::create_dir_all(&t).unwrap();
            for f in ["ca.pem", "cert.pem", "key.pem"] {
                std::fs::write(t.join(f), "x").unwrap();
            }
        }
    }

    fn set_current(env: &EnvView, name: &str) {
        std::fs::create_dir_all(env.config_dir()).unwrap();
        std::fs::write(
            env.config_dir().join("config.json"),
            serde_json::json!({"auths": {}, "currentContext": name}).to_string(),
        )
        .unwrap();
    }

    #[test]
    fn context_dir_is_the_sha256_of_the_name() {
        // `docker context create colima …` stores it under this directory (digest.FromString).
        assert_eq!(
            context_dir_name("colima"),
            hex::encode(Sha256::digest(b"colima"))
        );
        assert_eq!(context_dir_name("default").len(), 64);
        assert_ne!(context_dir_name("a"), context_dir_name("b"));
    }

    #[test]
    fn nothing_configured_is_the_default_socket_and_may_probe() {
        let d = tempfile::tempdir().unwrap();
        let r = resolve(&Request::default(), &env(d.path())).unwrap();
        assert_eq!(r.host, "unix:///var/run/docker.sock");
        assert_eq!(r.source, Source::Default);
        assert!(r.may_probe());
        assert_eq!(r.tls, None);
    }

    #[test]
    fn current_context_is_followed() {
        let d = tempfile::tempdir().unwrap();
        let e = env(d.path());
        write_context(&e, "colima", "unix:///u/.colima/default/docker.sock", false);
        set_current(&e, "colima");
        let r = resolve(&Request::default(), &e).unwrap();
        assert_eq!(r.host, "unix:///u/.colima/default/docker.sock");
        assert_eq!(r.context.as_deref(), Some("colima"));
        assert_eq!(
            r.source,
            Source::CurrentContext(e.config_dir().join("config.json"))
        );
        assert!(!r.may_probe());
        assert_eq!(
            r.describe(e.home.as_deref()),
            "context colima (currentContext in ~/docker/config.json) → unix:///u/.colima/default/docker.sock"
        );
    }

    #[test]
    fn docker_context_env_beats_current_context() {
        let d = tempfile::tempdir().unwrap();
        let mut e = env(d.path());
        write_context(&e, "a", "unix:///a.sock", false);
        write_context(&e, "b", "unix:///b.sock", false);
        set_current(&e, "a");
        e.docker_context = Some("b".into());
        let r = resolve(&Request::default(), &e).unwrap();
        assert_eq!(
            (r.host.as_str(), r.source),
            ("unix:///b.sock", Source::DockerContext)
        );
    }

    #[test]
    fn docker_host_beats_docker_context_and_current_context() {
        let d = tempfile::tempdir().unwrap();
        let mut e = env(d.path());
        write_context(&e, "a", "unix:///a.sock", false);
        set_current(&e, "a");
        e.docker_context = Some("a".into());
        e.docker_host = Some("tcp://10.0.0.1:2375".into());
        let r = resolve(&Request::default(), &e).unwrap();
        assert_eq!(r.host, "tcp://10.0.0.1:2375");
        assert_eq!(r.source, Source::DockerHost);
        assert_eq!(r.context, None);
    }

    #[test]
    fn flags_beat_the_environment() {
        let d = tempfile::tempdir().unwrap();
        let mut e = env(d.path());
        write_context(&e, "a", "unix:///a.sock", false);
        write_context(&e, "b", "unix:///b.sock", false);
        e.docker_host = Some("tcp://10.0.0.1:2375".into());
        e.docker_context = Some("a".into());
        let by_context = resolve(
            &Request {
                context: Some("b".into()),
                host: None,
            },
            &e,
        )
        .unwrap();
        assert_eq!(
            (by_context.host.as_str(), by_context.source),
            ("unix:///b.sock", Source::ContextFlag)
        );
        let by_host = resolve(
            &Request {
                context: None,
                host: Some("unix:///h.sock".into()),
            },
            &e,
        )
        .unwrap();
        assert_eq!(
            (by_host.host.as_str(), by_host.source),
            ("unix:///h.sock", Source::HostFlag)
        );
        assert_eq!(
            resolve(
                &Request {
                    context: Some("b".into()),
                    host: Some("unix:///h.sock".into())
                },
                &e
            ),
            Err(ResolveError::Conflict)
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        let d = tempfile::tempdir().unwrap();
        let mut e = env(d.path());
        write_context(&e, "a", "unix:///a.sock", false);
        set_current(&e, "a");
        e.docker_host = non_empty(Some("  ".into()));
        let r = resolve(
            &Request {
                context: Some(String::new()),
                host: None,
            },
            &e,
        )
        .unwrap();
        assert_eq!(r.host, "unix:///a.sock");
    }

    #[test]
    fn default_context_by_name_uses_docker_host_or_the_socket() {
        let d = tempfile::tempdir().unwrap();
        let e = env(d.path());
        set_current(&e, "default");
        let r = resolve(&Request::default(), &e).unwrap();
        assert_eq!(r.host, "unix:///var/run/docker.sock");
        assert!(!r.may_probe(), "a configured default context is not probed");
    }

    #[test]
    fn missing_context_lists_the_ones_that_exist() {
        let d = tempfile::tempdir().unwrap();
        let e = env(d.path());
        write_context(&e, "colima", "unix:///c.sock", false);
        write_context(&e, "orbstack", "unix:///o.sock", false);
        let err = resolve(
            &Request {
                context: Some("nope".into()),
                host: None,
            },
            &e,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ResolveError::ContextNotFound {
                name: "nope".into(),
                how: "--context".into(),
                available: vec!["colima".into(), "orbstack".into()],
            }
        );
        assert_eq!(
            err.to_string(),
            "context nope (--context) does not exist; contexts here: default, colima, orbstack"
        );
    }

    #[test]
    fn current_context_that_does_not_exist_is_an_error_not_a_fallback() {
        let d = tempfile::tempdir().unwrap();
        let e = env(d.path());
        set_current(&e, "gone");
        let err = resolve(&Request::default(), &e).unwrap_err();
        assert!(
            matches!(&err, ResolveError::ContextNotFound { name, how, .. }
                if name == "gone" && how.starts_with("currentContext in ")),
            "{err:?}"
        );
    }

    #[test]
    fn context_tls_material_is_found_by_hash() {
        let d = tempfile::tempdir().unwrap();
        let e = env(d.path());
        write_context(&e, "prod", "tcp://prod.example:2376", true);
        let r = resolve(
            &Request {
                context: Some("prod".into()),
                host: None,
            },
            &e,
        )
        .unwrap();
        let tls = r.tls.expect("tls");
        assert_eq!(
            tls.dir,
            e.config_dir()
                .join("contexts/tls")
                .join(context_dir_name("prod"))
                .join("docker")
        );
        assert!(!tls.skip_verify);
    }

    #[test]
    fn docker_tls_verify_applies_to_the_default_context() {
        let d = tempfile::tempdir().unwrap();
        let mut e = env(d.path());
        e.docker_host = Some("tcp://h:2376".into());
        e.tls_verify = true;
        e.cert_path = Some(d.path().join("certs"));
        let r = resolve(&Request::default(), &e).unwrap();
        assert_eq!(r.tls.unwrap().dir, d.path().join("certs"));
    }

    #[test]
    fn unreadable_config_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let e = env(d.path());
        std::fs::create_dir_all(e.config_dir()).unwrap();
        std::fs::write(e.config_dir().join("config.json"), "{not json").unwrap();
        assert!(matches!(
            resolve(&Request::default(), &e),
            Err(ResolveError::ConfigUnreadable { .. })
        ));
    }

    #[test]
    fn probe_candidates_in_order_existing_only_dangling_skipped() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        let xdg = d.path().join("xdg");
        let e = EnvView {
            home: Some(home.clone()),
            xdg_runtime_dir: Some(xdg.clone()),
            ..Default::default()
        };
        let touch = |p: &Path| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        };
        touch(&home.join(".orbstack/run/docker.sock"));
        touch(&home.join(".colima/work/docker.sock"));
        touch(&home.join(".colima/default/docker.sock"));
        touch(&xdg.join("podman/podman.sock"));
        // Docker Desktop's socket is a dangling symlink (Desktop not running).
        std::fs::create_dir_all(home.join(".docker/run")).unwrap();
        std::os::unix::fs::symlink(
            d.path().join("nowhere.sock"),
            home.join(".docker/run/docker.sock"),
        )
        .unwrap();
        let got: Vec<(&str, PathBuf)> = probe_candidates(&e)
            .into_iter()
            .filter(|c| !c.path.starts_with("/run"))
            .map(|c| (c.what, c.path))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Colima", home.join(".colima/default/docker.sock")),
                ("Colima", home.join(".colima/work/docker.sock")),
                ("OrbStack", home.join(".orbstack/run/docker.sock")),
                ("Podman", xdg.join("podman/podman.sock")),
            ]
        );
    }

    #[test]
    fn ssh_urls() {
        assert_eq!(
            SshUrl::parse("ssh://root@127.0.0.1:2222").unwrap(),
            SshUrl {
                user: Some("root".into()),
                host: "127.0.0.1".into(),
                port: Some(2222)
            }
        );
        assert_eq!(
            SshUrl::parse("ssh://build-box").unwrap(),
            SshUrl {
                user: None,
                host: "build-box".into(),
                port: None
            }
        );
        assert_eq!(
            SshUrl::parse("ssh://me@[::1]:22").unwrap(),
            SshUrl {
                user: Some("me".into()),
                host: "::1".into(),
                port: Some(22)
            }
        );
        assert!(SshUrl::parse("ssh://me@host:notaport").is_err());
        assert!(SshUrl::parse("ssh://me@").is_err());
        assert!(SshUrl::parse("ssh://host/some/path").is_err());
        assert!(SshUrl::parse("ssh://host/").is_ok());
    }
}
