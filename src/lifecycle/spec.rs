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
mod tests {
    use super::*;

    fn hardened(yaml: &str) -> Hardened {
        Hardened {
            compose: serde_yaml::from_str(yaml).unwrap(),
            stateful: Vec::new(),
            findings: Vec::new(),
        }
    }

    fn env(k: &str) -> Option<String> {
        match k {
            "FROM_SHELL" => Some("shell-value".into()),
            "HOME" => Some("/home/dev".into()),
            _ => None,
        }
    }

    fn build(yaml: &str, svc: &str) -> Result<BuiltSpec, SpecError> {
        let h = hardened(yaml);
        let s = h.compose.services[svc].clone();
        container_spec(
            "proj",
            svc,
            &s,
            &h,
            Path::new("/work/app"),
            &["/work/app/compose.yaml".to_string()],
            &env,
        )
    }

    const FULL: &str = r#"
services:
  db:
    image: postgres:16
    labels: { team: data, com.docker.compose.project: evil }
    environment:
      POSTGRES_PASSWORD: secret
      FROM_SHELL:
      UNSET_VAR:
    command: postgres -c 'shared_buffers=256MB' -c "log_line_prefix=%m [%p] "
    volumes:
      - pgdata:/var/lib/postgresql/data
      - ./init:/docker-entrypoint-initdb.d:ro
      - ../shared:/shared
      - ~/cache:/cache
      - /anon
      - type: tmpfs
        target: /tmp/x
    ports:
      - "5432"
      - "127.0.0.1:15432:5432"
      - "127.0.0.1::5433"
      - "8080:80/udp"
      - "9000-9001:7000-7001"
      - target: 6000
        published: "16000"
        host_ip: 0.0.0.0
    networks:
      back:
        aliases: [database]
    healthcheck:
      test: pg_isready -U postgres
      interval: 2s
      timeout: 1500ms
      retries: 30
      start_period: 1m
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    restart: unless-stopped
    user: "999"
    working_dir: /var/lib/postgresql
    hostname: dbhost
    extra_hosts: ["host.docker.internal:host-gateway", "other=10.0.0.1"]
    tmpfs: /run
    shm_size: 256m
    privileged: true
    cap_add: [SYS_PTRACE]
    init: true
    tty: true
    stdin_open: true
    deploy: { resources: { limits: { memory: 1g } } }
    x-custom: ignored
  app:
    image: app
    container_name: my-app
    entrypoint: ["/bin/sh", "-c"]
    command: ["echo hi"]
    healthcheck: { disable: true }
volumes:
  pgdata:
  named: { name: exact-name }
  ext: { external: true }
networks:
  back: {}
"#;

    #[test]
    fn full_service() {
        let b = build(FULL, "db").unwrap();
        let s = &b.spec;
        assert_eq!(s.name, "proj-db-1");
        assert_eq!(s.image, "postgres:16");
        // labels
        assert_eq!(
            s.labels[labels::PROJECT],
            "proj",
            "our labels win over the service's"
        );
        assert_eq!(s.labels["team"], "data");
        assert_eq!(s.labels[labels::SERVICE], "db");
        assert_eq!(s.labels[labels::CONTAINER_NUMBER], "1");
        assert_eq!(s.labels[labels::ONEOFF], "False");
        assert_eq!(s.labels[labels::COMPOSE_VERSION], COMPOSE_VERSION);
        assert_eq!(s.labels[labels::WORKING_DIR], "/work/app");
        assert_eq!(s.labels[labels::CONFIG_FILES], "/work/app/compose.yaml");
        assert_eq!(s.labels[labels::CONFIG_HASH], b.config_hash);
        assert!(labels::owned_by(&s.labels, "proj"));
        assert_eq!(s.labels[labels::NODUS_PROJECT], "proj");
        // env
        assert_eq!(
            s.env,
            ["POSTGRES_PASSWORD=secret", "FROM_SHELL=shell-value"]
        );
        // command
        assert_eq!(
            s.cmd.as_ref().unwrap(),
            &[
                "postgres",
                "-c",
                "shared_buffers=256MB",
                "-c",
                "log_line_prefix=%m [%p] "
            ]
        );
        assert_eq!(s.entrypoint, None);
        // mounts
        let m = |k: MountKind, src: &str, t: &str, ro: bool| MountSpec {
            kind: k,
            source: src.into(),
            target: t.into(),
            read_only: ro,
        };
        assert_eq!(
            s.mounts,
            vec![
                m(
                    MountKind::Volume,
                    "proj_pgdata",
                    "/var/lib/postgresql/data",
                    false
                ),
                m(
                    MountKind::Bind,
                    "/work/app/init",
                    "/docker-entrypoint-initdb.d",
                    true
                ),
                m(MountKind::Bind, "/work/shared", "/shared", false),
                m(MountKind::Bind, "/home/dev/cache", "/cache", false),
                m(MountKind::Volume, "", "/anon", false),
                m(MountKind::Tmpfs, "", "/tmp/x", false),
            ]
        );
        // ports
        let p = |c: u16, proto: &str, ip: &str, h: Option<u16>| PortSpec {
            container_port: c,
            protocol: proto.into(),
            host_ip: ip.into(),
            host_port: h,
        };
        assert_eq!(
            s.ports,
            vec![
                p(5432, "tcp", "", None),
                p(5432, "tcp", "127.0.0.1", Some(15432)),
                p(5433, "tcp", "127.0.0.1", None),
                p(80, "udp", "", Some(8080)),
                p(7000, "tcp", "", Some(9000)),
                p(7001, "tcp", "", Some(9001)),
                p(6000, "tcp", "0.0.0.0", Some(16000)),
            ]
        );
        // networks
        assert_eq!(
            s.networks,
            vec![NetworkAttachment {
                network: "proj_back".into(),
                aliases: vec!["db".into(), "database".into()]
            }]
        );
        // health
        let h = s.healthcheck.as_ref().unwrap();
        assert_eq!(h.test, ["CMD-SHELL", "pg_isready -U postgres"]);
        assert_eq!(h.interval_ns, 2_000_000_000);
        assert_eq!(h.timeout_ns, 1_500_000_000);
        assert_eq!(h.retries, 30);
        assert_eq!(h.start_period_ns, 60_000_000_000);
        // the rest
        assert_eq!(s.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(s.stop_timeout_secs, Some(90));
        assert_eq!(s.restart.as_deref(), Some("unless-stopped"));
        assert_eq!(s.user.as_deref(), Some("999"));
        assert_eq!(s.working_dir.as_deref(), Some("/var/lib/postgresql"));
        assert_eq!(s.hostname.as_deref(), Some("dbhost"));
        assert_eq!(
            s.extra_hosts,
            ["host.docker.internal:host-gateway", "other:10.0.0.1"]
        );
        assert_eq!(s.tmpfs, ["/run"]);
        assert_eq!(s.shm_size, Some(256 * 1024 * 1024));
        assert!(s.privileged && s.tty && s.stdin_open);
        assert_eq!(s.cap_add, ["SYS_PTRACE"]);
        assert_eq!(s.init, Some(true));
        // warnings: deploy, not x-custom
        assert_eq!(b.warnings.len(), 1, "{:?}", b.warnings);
        assert!(b.warnings[0].contains("service db: `deploy` is not applied by nodus"));
        assert!(b.warnings[0].contains("docker compose -f .nodus/compose.yaml"));
    }

    #[test]
    fn container_name_entrypoint_disable_and_default_network() {
        let b = build(FULL, "app").unwrap();
        assert_eq!(b.spec.name, "my-app");
        assert_eq!(b.spec.entrypoint.as_ref().unwrap(), &["/bin/sh", "-c"]);
        assert_eq!(b.spec.cmd.as_ref().unwrap(), &["echo hi"]);
        assert_eq!(b.spec.healthcheck.as_ref().unwrap().test, ["NONE"]);
        assert_eq!(
            b.spec.networks,
            vec![NetworkAttachment {
                network: "proj_default".into(),
                aliases: vec!["app".into()]
            }]
        );
        assert!(b.warnings.is_empty());
    }

    #[test]
    fn volume_names() {
        let h = hardened(FULL);
        assert_eq!(
            stack_volumes("proj", &h.compose),
            vec![
                StackVolume {
                    key: "pgdata".into(),
                    name: "proj_pgdata".into(),
                    external: false
                },
                StackVolume {
                    key: "named".into(),
                    name: "exact-name".into(),
                    external: false
                },
                StackVolume {
                    key: "ext".into(),
                    name: "ext".into(),
                    external: true
                },
            ]
        );
        let y = "services:\n  a:\n    image: x\n    volumes: [named:/n, ext:/e]\nvolumes:\n  named: {name: exact-name}\n  ext: {external: true}\n";
        let b = build(y, "a").unwrap();
        assert_eq!(b.spec.mounts[0].source, "exact-name");
        assert_eq!(b.spec.mounts[1].source, "ext");
    }

    #[test]
    fn errors() {
        // A service with `build:` and no `image:` runs compose v2's `<project>-<service>`.
        assert_eq!(
            build("services:\n  a: {build: .}\n", "a")
                .unwrap()
                .spec
                .image,
            "proj-a"
        );
        let e = build("services:\n  a: {image: x, pull_policy: often}\n", "a").unwrap_err();
        assert!(e.to_string().contains("pull_policy"), "{e}");
        let e = build("services:\n  a: {image: x, volumes: ['nope:/data']}\n", "a").unwrap_err();
        assert!(e.to_string().contains("volume `nope`"), "{e}");
        let e = build("services:\n  a: {image: x, networks: [nope]}\n", "a").unwrap_err();
        assert!(e.to_string().contains("network `nope`"), "{e}");
        let e = build("services:\n  a: {image: x, ports: ['abc']}\n", "a").unwrap_err();
        assert!(e.to_string().contains("service a: ports:"), "{e}");
        let e = build("services:\n  a: {image: x, command: \"echo 'oops\"}\n", "a").unwrap_err();
        assert!(e.to_string().contains("unterminated"), "{e}");
        let e = build("services:\n  a: {image: x, stop_grace_period: 10}\n", "a").unwrap_err();
        assert!(e.to_string().contains("stop_grace_period"), "{e}");
    }

    #[test]
    fn build_keys_nodus_does_not_apply_warn() {
        let y = "services:\n  a: {image: x, build: {context: ., ssh: [default]}, pull_policy: build, secrets: [s]}\n";
        let b = build(y, "a").unwrap();
        assert_eq!(b.warnings.len(), 2, "{:?}", b.warnings);
        assert!(b.warnings[0].contains("`build.ssh` is not applied"));
        assert!(b.warnings[1].contains("`secrets` is not applied"));
    }

    #[test]
    fn config_hash_follows_resolved_env() {
        let y = "services:\n  a: {image: x, environment: [FROM_SHELL]}\n";
        let h = hardened(y);
        let s = &h.compose.services["a"];
        let dir = Path::new("/d");
        let one = container_spec("p", "a", s, &h, dir, &[], &|_| Some("1".into())).unwrap();
        let two = container_spec("p", "a", s, &h, dir, &[], &|_| Some("2".into())).unwrap();
        let again = container_spec("p", "a", s, &h, dir, &[], &|_| Some("1".into())).unwrap();
        assert_ne!(one.config_hash, two.config_hash);
        assert_eq!(one.config_hash, again.config_hash);
    }

    #[test]
    fn shell_split() {
        assert_eq!(split_command("a b  c").unwrap(), ["a", "b", "c"]);
        assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
        assert_eq!(
            split_command(r#"sh -c "echo \"hi\" \$HOME""#).unwrap(),
            ["sh", "-c", r#"echo "hi" $HOME"#]
        );
        assert_eq!(
            split_command(r"a\ b 'c d' e''f").unwrap(),
            ["a b", "c d", "ef"]
        );
        assert_eq!(split_command("''").unwrap(), [""]);
        assert_eq!(split_command(r#""a\nb""#).unwrap(), [r"a\nb"]);
        assert!(split_command("'x").is_err());
        assert!(split_command("\"x").is_err());
        assert!(split_command("x\\").is_err());
    }

    #[test]
    fn ports() {
        let one = |s: &str| {
            let v = parse_port(s).unwrap();
            assert_eq!(v.len(), 1, "{s}");
            let p = &v[0];
            (
                p.host_ip.clone(),
                p.host_port,
                p.container_port,
                p.protocol.clone(),
            )
        };
        assert_eq!(one("5432"), ("".into(), None, 5432, "tcp".into()));
        assert_eq!(
            one("[::1]:8080:80"),
            ("::1".into(), Some(8080), 80, "tcp".into())
        );
        assert_eq!(
            one("0.0.0.0:53:53/udp"),
            ("0.0.0.0".into(), Some(53), 53, "udp".into())
        );
        assert_eq!(parse_port("7000-7002").unwrap().len(), 3);
        assert!(parse_port("8000-8001:80").is_err());
        assert!(parse_port("0").is_err());
        assert!(parse_port("70000").is_err());
        assert!(parse_port("80/xyz").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1.5GB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("512k").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("1x").is_err());
    }
}
