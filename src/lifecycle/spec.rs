//! Turns a (hardened) compose service into the [`ContainerSpec`] the engine creates. Pure: the
//! only outside input is an environment lookup for `KEY` entries without a value.

use std::path::{Component, Path, PathBuf};

use indexmap::IndexMap;
use serde_yaml::Value;

use crate::engine::{
    ContainerSpec, HealthSpec, Labels, MountKind, MountSpec, NetworkAttachment, PortSpec,
};
use crate::labels;
use crate::stack::duration::parse_duration;
use crate::stack::model::{Healthcheck, Port, PortLong, StringOrList, VolumeType};
use crate::stack::{ComposeFile, Hardened, Service};

/// The compose version nodus' containers claim. `docker-compose` 1.29 lists containers carrying
/// the project and `oneoff=False` labels; this value keeps it from complaining.
pub const COMPOSE_VERSION: &str = "1.29.2";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("service {service} has neither an `image:` nor a `build:` section")]
    NoImage { service: String },
    #[error("service {service}: {field}: {message}")]
    Invalid {
        service: String,
        field: String,
        message: String,
    },
}

fn invalid(service: &str, field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        service: service.to_string(),
        field: field.into(),
        message: message.into(),
    }
}

/// A container spec plus what could not be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltSpec {
    pub spec: ContainerSpec,
    /// The `config-hash` label value.
    pub config_hash: String,
    /// "service X: `deploy` is not applied by nodus; ..." (print once).
    pub warnings: Vec<String>,
}

/// The container name of a service: `container_name:` or `<project>-<service>-1`.
pub fn container_name(project: &str, service_name: &str, service: &Service) -> String {
    service
        .container_name
        .clone()
        .unwrap_or_else(|| format!("{project}-{service_name}-1"))
}

/// A top-level volume as the engine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackVolume {
    pub key: String,
    /// Engine name: `name:`, else `<project>_<key>` (external: `name:` or the key itself).
    pub name: String,
    pub external: bool,
}

/// A network as the engine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackNetwork {
    pub key: String,
    pub name: String,
    pub external: bool,
}

/// Every top-level volume of the stack with its engine name.
pub fn stack_volumes(project: &str, compose: &ComposeFile) -> Vec<StackVolume> {
    compose
        .volumes
        .iter()
        .map(|(key, def)| {
            let external = def.is_external();
            let name = match (&def.name, external) {
                (Some(n), _) => n.clone(),
                (None, true) => external_name(&def.external).unwrap_or_else(|| key.clone()),
                (None, false) => format!("{project}_{key}"),
            };
            StackVolume {
                key: key.clone(),
                name,
                external,
            }
        })
        .collect()
}

/// `external: {name: x}` (compose v2 legacy syntax).
fn external_name(external: &Option<Value>) -> Option<String> {
    match external {
        Some(Value::Mapping(m)) => m
            .get(Value::String("name".into()))
            .and_then(|v| v.as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// The engine name of network `key` (`default` included, even when not declared).
pub fn network(project: &str, compose: &ComposeFile, key: &str) -> Option<StackNetwork> {
    match compose.networks.get(key) {
        Some(def) => {
            let external = match &def.external {
                Some(Value::Bool(b)) => *b,
                Some(Value::Mapping(_)) => true,
                _ => false,
            };
            let name = match (&def.name, external) {
                (Some(n), _) => n.clone(),
                (None, true) => external_name(&def.external).unwrap_or_else(|| key.to_string()),
                (None, false) => format!("{project}_{key}"),
            };
            Some(StackNetwork {
                key: key.to_string(),
                name,
                external,
            })
        }
        None if key == "default" => Some(StackNetwork {
            key: key.to_string(),
            name: format!("{project}_default"),
            external: false,
        }),
        None => None,
    }
}

/// The network keys a service is attached to (`default` when it names none).
pub fn service_network_keys(service: &Service) -> Vec<String> {
    if service.extra.contains_key("network_mode") {
        return Vec::new();
    }
    if service.networks.is_empty() {
        vec!["default".to_string()]
    } else {
        service.networks.keys().cloned().collect()
    }
}

/// The volume keys (top-level `volumes:`) a service mounts.
pub fn service_volume_keys(service: &Service) -> Vec<String> {
    service
        .volumes
        .iter()
        .filter(|v| v.kind == VolumeType::Volume)
        .filter_map(|v| v.source.clone())
        .collect()
}

/// Builds the container spec of `service_name`. `lookup_env` resolves `KEY` entries without a
/// value (nodus' own environment) and `~` in bind sources (`HOME`).
pub fn container_spec(
    project: &str,
    service_name: &str,
    service: &Service,
    hardened: &Hardened,
    working_dir: &Path,
    config_files: &[String],
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<BuiltSpec, SpecError> {
    let compose = &hardened.compose;
    let name = service_name;
    let mut warnings = Vec::new();
    let not_applied = |key: &str| {
        format!("service {name}: `{key}` is not applied by nodus; use docker compose -f .nodus/compose.yaml if you need it")
    };

    let image = crate::stack::build::image_name(project, name, service).ok_or_else(|| {
        SpecError::NoImage {
            service: name.to_string(),
        }
    })?;
    if let Some(b) = &service.build {
        for key in crate::stack::build::unapplied_keys(b) {
            warnings.push(format!(
                "service {name}: `build.{key}` is not applied by nodus' builder; use docker compose -f .nodus/compose.yaml build {name} if you need it"
            ));
        }
    }
    crate::stack::build::pull_policy(service).map_err(|e| invalid(name, "pull_policy", e))?;
    // `env_file:` is read by project loading into `environment` (the key stays for the rendered
    // file), so it is applied.
    for key in service.extra.keys() {
        if key.starts_with("x-") || key == "expose" || key == "pull_policy" {
            continue;
        }
        warnings.push(not_applied(key));
    }

    // Environment, resolved: `KEY` without value comes from nodus' environment (dropped when unset).
    let mut resolved = service.clone();
    resolved.environment = service
        .environment
        .iter()
        .filter_map(|(k, v)| match v {
            Some(v) => Some((k.clone(), Some(v.clone()))),
            None => lookup_env(k).map(|v| (k.clone(), Some(v))),
        })
        .collect();
    let env: Vec<String> = resolved
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("")))
        .collect();
    let config_hash = crate::stack::plan::config_hash(&resolved);

    // Labels: the service's own, then ours (ours win: they decide ownership).
    let mut labels: Labels = service
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(labels::base(project));
    labels.insert(labels::SERVICE.into(), name.to_string());
    labels.insert(labels::CONTAINER_NUMBER.into(), "1".into());
    labels.insert(labels::ONEOFF.into(), "False".into());
    labels.insert(labels::CONFIG_HASH.into(), config_hash.clone());
    labels.insert(
        labels::WORKING_DIR.into(),
        working_dir.to_string_lossy().into_owned(),
    );
    labels.insert(labels::CONFIG_FILES.into(), config_files.join(","));
    labels.insert(labels::COMPOSE_VERSION.into(), COMPOSE_VERSION.into());

    let cmd = service
        .command
        .as_ref()
        .map(|c| string_or_list_argv(c).map_err(|e| invalid(name, "command", e)))
        .transpose()?;
    let entrypoint = service
        .entrypoint
        .as_ref()
        .map(|c| string_or_list_argv(c).map_err(|e| invalid(name, "entrypoint", e)))
        .transpose()?;

    // Mounts.
    let mut mounts = Vec::new();
    for v in &service.volumes {
        let mount = match v.kind {
            VolumeType::Volume => match &v.source {
                None => MountSpec {
                    kind: MountKind::Volume,
                    source: String::new(),
                    target: v.target.clone(),
                    read_only: v.read_only,
                },
                Some(key) => {
                    let vol = stack_volumes(project, compose)
                        .into_iter()
                        .find(|sv| &sv.key == key)
                        .ok_or_else(|| {
                            invalid(
                                name,
                                "volumes",
                                format!("refers to volume `{key}`, which is not declared under the top-level `volumes:`"),
                            )
                        })?;
                    MountSpec {
                        kind: MountKind::Volume,
                        source: vol.name,
                        target: v.target.clone(),
                        read_only: v.read_only,
                    }
                }
            },
            VolumeType::Bind => {
                let src = v.source.as_deref().ok_or_else(|| {
                    invalid(
                        name,
                        "volumes",
                        format!("bind mount on {} has no source", v.target),
                    )
                })?;
                MountSpec {
                    kind: MountKind::Bind,
                    source: absolutise(src, working_dir, lookup_env)
                        .map_err(|e| invalid(name, "volumes", e))?
                        .to_string_lossy()
                        .into_owned(),
                    target: v.target.clone(),
                    read_only: v.read_only,
                }
            }
            VolumeType::Tmpfs => MountSpec {
                kind: MountKind::Tmpfs,
                source: String::new(),
                target: v.target.clone(),
                read_only: v.read_only,
            },
            VolumeType::Npipe => {
                return Err(invalid(
                    name,
                    "volumes",
                    "npipe mounts exist only on Windows engines",
                ));
            }
        };
        if !v.extra.is_empty() {
            let keys: Vec<&str> = v.extra.keys().map(String::as_str).collect();
            warnings.push(format!(
                "service {name}: volume options {} on {} are not applied by nodus",
                keys.join(", "),
                v.target
            ));
        }
        mounts.push(mount);
    }

    // Ports.
    let mut ports = Vec::new();
    for p in &service.ports {
        let parsed = match p {
            Port::Short(s) => parse_port(s),
            Port::Long(l) => parse_long_port(l),
        }
        .map_err(|e| invalid(name, "ports", e))?;
        ports.extend(parsed);
    }

    // Networks.
    let mut networks = Vec::new();
    if service.extra.contains_key("network_mode") && !service.networks.is_empty() {
        return Err(invalid(
            name,
            "networks",
            "`network_mode` and `networks` cannot be combined",
        ));
    }
    for key in service_network_keys(service) {
        let net = network(project, compose, &key).ok_or_else(|| {
            invalid(
                name,
                "networks",
                format!("refers to network `{key}`, which is not declared under the top-level `networks:`"),
            )
        })?;
        let mut aliases = vec![name.to_string()];
        if let Some(sn) = service.networks.get(&key) {
            for a in &sn.aliases {
                if !aliases.contains(a) {
                    aliases.push(a.clone());
                }
            }
            for k in sn.extra.keys() {
                warnings.push(format!(
                    "service {name}: network option `{k}` on {key} is not applied by nodus"
                ));
            }
        }
        networks.push(NetworkAttachment {
            network: net.name,
            aliases,
        });
    }

    let healthcheck = service
        .healthcheck
        .as_ref()
        .map(|h| health_spec(h).map_err(|e| invalid(name, "healthcheck", e)))
        .transpose()?;
    let stop_timeout_secs = service
        .stop_grace_period
        .as_deref()
        .map(|g| {
            parse_duration(g)
                .map(|d| d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0))
                .map_err(|e| invalid(name, "stop_grace_period", e))
        })
        .transpose()?;
    let shm_size = service
        .shm_size
        .as_ref()
        .map(|v| parse_bytes_value(v).map_err(|e| invalid(name, "shm_size", e)))
        .transpose()?;
    let tmpfs = match &service.tmpfs {
        None => Vec::new(),
        Some(StringOrList::String(s)) => vec![s.clone()],
        Some(StringOrList::List(l)) => l.clone(),
    };
    let extra_hosts = service
        .extra_hosts
        .iter()
        .map(|h| match h.split_once('=') {
            // compose also accepts HOST=IP; the engine wants HOST:IP.
            Some((host, ip)) if !h.contains(':') || ip.contains(':') => format!("{host}:{ip}"),
            _ => h.clone(),
        })
        .collect();

    let spec = ContainerSpec {
        name: container_name(project, name, service),
        image,
        hostname: service.hostname.clone(),
        env,
        cmd,
        entrypoint,
        working_dir: service.working_dir.clone(),
        user: service.user.clone(),
        labels,
        mounts,
        ports,
        networks,
        healthcheck,
        stop_signal: service.stop_signal.clone(),
        stop_timeout_secs,
        restart: service.restart.clone(),
        extra_hosts,
        tmpfs,
        shm_size,
        privileged: service.privileged.unwrap_or(false),
        cap_add: service.cap_add.clone(),
        init: service.init,
        tty: service.tty.unwrap_or(false),
        stdin_open: service.stdin_open.unwrap_or(false),
        stdin_once: false,
    };
    Ok(BuiltSpec {
        spec,
        config_hash,
        warnings,
    })
}

fn string_or_list_argv(v: &StringOrList) -> Result<Vec<String>, String> {
    match v {
        StringOrList::List(l) => Ok(l.clone()),
        StringOrList::String(s) => split_command(s),
    }
}

/// Splits a command line like a POSIX shell would (quotes and backslashes; no expansion).
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_token {
                    out.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            '\'' => {
                in_token = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated single quote in {s:?}")),
                    }
                }
            }
            '"' => {
                in_token = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(n @ ('"' | '\\' | '$' | '`')) => cur.push(n),
                            Some('\n') => {}
                            Some(n) => {
                                cur.push('\\');
                                cur.push(n);
                            }
                            None => return Err(format!("unterminated double quote in {s:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated double quote in {s:?}")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(n) => {
                    in_token = true;
                    cur.push(n);
                }
                None => return Err(format!("trailing backslash in {s:?}")),
            },
            c => {
                in_token = true;
                cur.push(c);
            }
        }
    }
    if in_token {
        out.push(cur);
    }
    Ok(out)
}

/// Absolute, lexically normalised host path for a bind source.
fn absolutise(
    src: &str,
    working_dir: &Path,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, String> {
    let path = if src == "~" || src.starts_with("~/") {
        let home =
            lookup_env("HOME").ok_or_else(|| format!("cannot expand {src}: HOME is not set"))?;
        PathBuf::from(home).join(src.trim_start_matches('~').trim_start_matches('/'))
    } else if Path::new(src).is_absolute() {
        PathBuf::from(src)
    } else {
        working_dir.join(src)
    };
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c.as_os_str()),
        }
    }
    Ok(out)
}

fn port_num(s: &str, what: &str, full: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid {what} {s:?} in {full:?}"))
}

/// "80" or "8000-8002" → inclusive range.
fn port_range(s: &str, what: &str, full: &str) -> Result<(u16, u16), String> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port_num(a, what, full)?, port_num(b, what, full)?);
            if b < a {
                return Err(format!("invalid {what} range {s:?} in {full:?}"));
            }
            Ok((a, b))
        }
        None => {
            let p = port_num(s, what, full)?;
            Ok((p, p))
        }
    }
}

fn expand_ports(
    host_ip: &str,
    host: Option<(u16, u16)>,
    container: (u16, u16),
    protocol: &str,
    full: &str,
) -> Result<Vec<PortSpec>, String> {
    let count = container.1 - container.0;
    if let Some((h0, h1)) = host {
        if h1 - h0 != count {
            return Err(format!(
                "{full:?}: the host and container port ranges must have the same length"
            ));
        }
    }
    Ok((0..=count)
        .map(|i| PortSpec {
            container_port: container.0 + i,
            protocol: protocol.to_string(),
            host_ip: host_ip.to_string(),
            host_port: host.map(|(h0, _)| h0 + i),
        })
        .collect())
}

/// Short port syntax: "5432", "8080:80", "127.0.0.1:8080:80", "127.0.0.1::5432", "8080:80/udp",
/// "[::1]:8080:80", "8000-8002:9000-9002".
pub fn parse_port(s: &str) -> Result<Vec<PortSpec>, String> {
    let (body, protocol) = match s.rsplit_once('/') {
        Some((b, p)) => (b, p),
        None => (s, "tcp"),
    };
    if protocol != "tcp" && protocol != "udp" && protocol != "sctp" {
        return Err(format!("invalid protocol {protocol:?} in {s:?}"));
    }
    let (host_part, container) = match body.rsplit_once(':') {
        Some((h, c)) => (Some(h), c),
        None => (None, body),
    };
    let container = port_range(container, "container port", s)?;
    let (host_ip, host) = match host_part {
        None => (String::new(), None),
        Some(h) => {
            let (ip, port) = if let Some(rest) = h.strip_prefix('[') {
                let (ip, after) = rest
                    .split_once(']')
                    .ok_or_else(|| format!("invalid host address in {s:?}"))?;
                let port = after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("invalid port mapping {s:?}"))?;
                (ip.to_string(), port)
            } else {
                match h.rsplit_once(':') {
                    Some((ip, port)) => (ip.to_string(), port),
                    None => (String::new(), h),
                }
            };
            let host = if port.is_empty() {
                None
            } else {
                Some(port_range(port, "host port", s)?)
            };
            (ip, host)
        }
    };
    expand_ports(&host_ip, host, container, protocol, s)
}

fn parse_long_port(p: &PortLong) -> Result<Vec<PortSpec>, String> {
    let full = format!("target {}", p.target);
    let protocol = p.protocol.clone().unwrap_or_else(|| "tcp".into());
    let host = match &p.published {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(port_range(&n.to_string(), "published port", &full)?),
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(port_range(s, "published port", &full)?),
        Some(other) => return Err(format!("invalid published port {other:?}")),
    };
    if p.target == 0 {
        return Err("invalid target port 0".into());
    }
    expand_ports(
        p.host_ip.as_deref().unwrap_or(""),
        host,
        (p.target, p.target),
        &protocol,
        &full,
    )
}

fn duration_ns(field: &str, v: &Option<String>) -> Result<i64, String> {
    match v {
        None => Ok(0),
        Some(s) => parse_duration(s)
            .map(|d| d.as_nanos() as i64)
            .map_err(|e| format!("{field}: {e}")),
    }
}

pub(super) fn health_spec(h: &Healthcheck) -> Result<HealthSpec, String> {
    if h.disable == Some(true) {
        return Ok(HealthSpec {
            test: vec!["NONE".into()],
            interval_ns: 0,
            timeout_ns: 0,
            retries: 0,
            start_period_ns: 0,
        });
    }
    let test = match &h.test {
        None => Vec::new(), // inherit the image's test, with these timings
        Some(StringOrList::String(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
        Some(StringOrList::List(l)) => match l.first().map(String::as_str) {
            Some("CMD") | Some("CMD-SHELL") | Some("NONE") => l.clone(),
            Some(_) => {
                return Err(format!(
                    "test must start with CMD, CMD-SHELL or NONE, found {l:?}"
                ))
            }
            None => Vec::new(),
        },
    };
    Ok(HealthSpec {
        test,
        interval_ns: duration_ns("interval", &h.interval)?,
        timeout_ns: duration_ns("timeout", &h.timeout)?,
        retries: i64::from(h.retries.unwrap_or(0)),
        start_period_ns: duration_ns("start_period", &h.start_period)?,
    })
}

/// A byte size: a number, or "64m", "1g", "512k", "1.5gb", "100b" (binary units, as the engine).
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024f64.powi(4),
        u => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {u:?} (use b, k, m, g)"
            ))
        }
    };
    Ok((n * mult) as i64)
}

fn parse_bytes_value(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("invalid size {n}")),
        Value::String(s) => parse_bytes(s),
        other => Err(format!("invalid size {other:?}")),
    }
}

/// Labels for a network nodus creates.
pub fn network_labels(project: &str, key: &str, declared: &IndexMap<String, String>) -> Labels {
    let mut l: Labels = declared
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.extend(labels::base(project));
    l.insert(labels::NETWORK.into(), key.to_string());
    l
}

/// Labels for a volume nodus creates.
pub fn volume_labels(project: &str, key: &str, declared: &IndexMap<String, String>) -> Labels {
    let mut l: Labels = declared
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.extend(labels::base(project));
    l.insert(labels::VOLUME.into(), key.to_string());
    l
}

#[cfg(test)]
mod tests;
