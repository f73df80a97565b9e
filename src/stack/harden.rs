//! Hardening rules for stateful services, and rendering of the generated compose file.
//!
//! A service is stateful when its image is a known database and it runs the image's server (see
//! `detect.rs`: a `postgres` image running `psql` is a client), or `x-nodus.services.<name>.stateful`
//! says so. For each stateful service, unless hardening is switched off:
//! - its data directory must be on a named volume: a missing mount gets one (`<service>_data`), an
//!   anonymous volume is replaced by a named one, a mount at a parent of the image's own `VOLUME`
//!   (which an anonymous volume would shadow) gets a named volume at the data directory; a bind
//!   mount is kept, with a warning saying how to migrate;
//! - postgres stops with SIGINT (fast shutdown); every stateful service gets 60 s to stop;
//! - a health check when there is none (postgres, redis, qdrant);
//! - its port is published on 127.0.0.1 at an ephemeral host port so nodus can take its census.
//!
//! Everything else passes through unchanged.

use std::time::Duration;

use indexmap::IndexMap;
use serde::Serialize;
use serde_yaml::Value;

use super::detect::{self, Runs};
use super::duration::parse_duration;
use super::interpolate::escape;
use super::model::{
    Healthcheck, Port, Service, ServiceVolume, StringOrList, VolumeDef, VolumeType,
};
use super::xnodus::ServiceKind;
use super::{ComposeFile, Stack, StatefulService};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingLevel {
    /// Something nodus changed in the generated file.
    Fixed,
    /// Something nodus left alone but the user should act on (e.g. a bind mount).
    Warning,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub level: FindingLevel,
    pub service: String,
    pub message: String,
}

/// The generated model.
#[derive(Debug, Clone)]
pub struct Hardened {
    pub compose: ComposeFile,
    pub stateful: Vec<StatefulService>,
    pub findings: Vec<Finding>,
}

impl Hardened {
    pub fn fixes(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.level == FindingLevel::Fixed)
            .count()
    }
    pub fn warnings(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.level == FindingLevel::Warning)
            .count()
    }
    /// The stateful service called `name`, if it is one.
    pub fn stateful_service(&self, name: &str) -> Option<&StatefulService> {
        self.stateful.iter().find(|s| s.service == name)
    }
}

/// The minimum stop grace period for a stateful service.
pub const MIN_GRACE: Duration = Duration::from_secs(60);

pub use super::detect::guess_kind;

/// PostgreSQL major version from an image tag (`15-alpine`, `16.2`, `pg16`, `latest-pg16`).
pub fn postgres_major(image: &str) -> Option<u32> {
    let repo = image.split('@').next().unwrap_or(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let tag = last.split_once(':').map(|(_, t)| t)?;
    let leading: String = tag.chars().take_while(char::is_ascii_digit).collect();
    if !leading.is_empty() {
        return leading.parse().ok();
    }
    let i = tag.find("pg")?;
    let digits: String = tag[i + 2..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Image families whose data layout differs from the official images'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Official,
    /// `bitnami/*`: data under `/bitnami/<name>`, no `VOLUME` declared.
    Bitnami,
    /// `timescale/timescaledb-ha`: `PGDATA=/home/postgres/pgdata/data`, `VOLUME /home/postgres/pgdata`.
    TimescaleHa,
}

fn family(svc: &Service) -> Family {
    let image = svc.image.as_deref().unwrap_or_default();
    let repo = image.split('@').next().unwrap_or(image);
    let repo = repo.strip_prefix("docker.io/").unwrap_or(repo);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let name = last.split(':').next().unwrap_or(last);
    if repo.starts_with("bitnami/") {
        Family::Bitnami
    } else if name == "timescaledb-ha" {
        Family::TimescaleHa
    } else {
        Family::Official
    }
}

/// The default data directory of a kind (postgres: `PGDATA` when set).
pub fn default_data_dir(kind: ServiceKind, svc: &Service) -> Option<String> {
    let fam = family(svc);
    if fam == Family::Bitnami {
        return match kind {
            ServiceKind::Postgres => Some("/bitnami/postgresql".into()),
            ServiceKind::Redis => Some("/bitnami/redis/data".into()),
            ServiceKind::Mysql => Some("/bitnami/mysql".into()),
            ServiceKind::Mariadb => Some("/bitnami/mariadb".into()),
            ServiceKind::Mongo => Some("/bitnami/mongodb".into()),
            ServiceKind::Qdrant => Some("/qdrant/storage".into()),
            ServiceKind::Other => None,
        };
    }
    match kind {
        ServiceKind::Postgres => {
            if let Some(Some(pgdata)) = svc.environment.get("PGDATA") {
                if !pgdata.trim().is_empty() {
                    return Some(pgdata.trim().to_string());
                }
            }
            if fam == Family::TimescaleHa {
                return Some("/home/postgres/pgdata/data".into());
            }
            match svc.image.as_deref().and_then(postgres_major) {
                Some(major) if major >= 18 => Some(format!("/var/lib/postgresql/{major}/docker")),
                _ => Some("/var/lib/postgresql/data".into()),
            }
        }
        ServiceKind::Redis => Some("/data".into()),
        ServiceKind::Qdrant => Some("/qdrant/storage".into()),
        ServiceKind::Mysql | ServiceKind::Mariadb => Some("/var/lib/mysql".into()),
        ServiceKind::Mongo => Some("/data/db".into()),
        ServiceKind::Other => None,
    }
}

/// The `VOLUME` the image declares for its data (an anonymous volume appears there whenever no
/// mount is exactly at that path).
pub fn image_volume(kind: ServiceKind, svc: &Service) -> Option<&'static str> {
    match (family(svc), kind) {
        (Family::Bitnami, _) => None,
        (Family::TimescaleHa, ServiceKind::Postgres) => Some("/home/postgres/pgdata"),
        (_, ServiceKind::Postgres) => match svc.image.as_deref().and_then(postgres_major) {
            Some(major) if major >= 18 => Some("/var/lib/postgresql"),
            _ => Some("/var/lib/postgresql/data"),
        },
        (_, ServiceKind::Redis) => Some("/data"),
        (_, ServiceKind::Mysql | ServiceKind::Mariadb) => Some("/var/lib/mysql"),
        (_, ServiceKind::Mongo) => Some("/data/db"),
        (_, ServiceKind::Qdrant | ServiceKind::Other) => None,
    }
}

/// The container port nodus's census talks to.
pub fn census_port(kind: ServiceKind) -> Option<u16> {
    match kind {
        ServiceKind::Postgres => Some(5432),
        ServiceKind::Redis => Some(6379),
        ServiceKind::Qdrant => Some(6333),
        _ => None,
    }
}

pub fn trim_slash(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// `path` is `dir` or below it.
pub fn is_under(path: &str, dir: &str) -> bool {
    let (path, dir) = (trim_slash(path), trim_slash(dir));
    dir == "/"
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `ports` already publishes `container_port`.
pub fn publishes(ports: &[Port], container_port: u16) -> bool {
    ports.iter().any(|p| match p {
        Port::Long(l) => l.target == container_port,
        Port::Short(s) => {
            let no_proto = s.split('/').next().unwrap_or(s);
            let container = no_proto.rsplit(':').next().unwrap_or(no_proto);
            match container.split_once('-') {
                Some((a, b)) => match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                    (Ok(a), Ok(b)) => (a..=b).contains(&container_port),
                    _ => false,
                },
                None => container.trim().parse::<u16>() == Ok(container_port),
            }
        }
    })
}

pub fn signal_name(s: &str) -> String {
    let up = s.trim().to_ascii_uppercase();
    if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    }
}

fn default_healthcheck(kind: ServiceKind) -> Option<Healthcheck> {
    let test = match kind {
        ServiceKind::Postgres => vec![
            "CMD-SHELL".to_string(),
            // `$` is for the container's shell; render_yaml writes it as `$$` for compose.
            "pg_isready -U \"${POSTGRES_USER:-postgres}\" -d \"${POSTGRES_DB:-${POSTGRES_USER:-postgres}}\" -h 127.0.0.1"
                .to_string(),
        ],
        ServiceKind::Redis => vec!["CMD".into(), "redis-cli".into(), "ping".into()],
        ServiceKind::Qdrant => vec![
            "CMD-SHELL".into(),
            "bash -c ':> /dev/tcp/127.0.0.1/6333' || exit 1".into(),
        ],
        _ => return None,
    };
    Some(Healthcheck {
        test: Some(StringOrList::List(test)),
        interval: Some("2s".into()),
        timeout: Some("5s".into()),
        retries: Some(30),
        start_period: Some("5s".into()),
        disable: None,
        extra: IndexMap::new(),
    })
}

/// A volume key for `service` not used or declared yet.
fn fresh_volume_key(compose: &ComposeFile, service: &str) -> String {
    let used = |k: &str| {
        compose.volumes.contains_key(k)
            || compose
                .services
                .values()
                .any(|s| s.volumes.iter().any(|v| v.source.as_deref() == Some(k)))
    };
    let base = format!("{service}_data");
    if !used(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}_{i}"))
        .find(|k| !used(k))
        .unwrap_or(base)
}

/// Engine-level name of the volume `key`.
fn volume_name(compose: &ComposeFile, project: &str, key: &str) -> String {
    match compose.volumes.get(key) {
        Some(VolumeDef { name: Some(n), .. }) => n.clone(),
        Some(def) if def.is_external() => key.to_string(),
        _ => format!("{project}_{key}"),
    }
}

fn named_mount(key: &str, target: &str) -> ServiceVolume {
    ServiceVolume {
        kind: VolumeType::Volume,
        source: Some(key.to_string()),
        target: target.to_string(),
        read_only: false,
        extra: IndexMap::new(),
    }
}

pub fn harden(stack: &Stack) -> Hardened {
    let mut compose = stack.compose.clone();
    let mut stateful = Vec::new();
    let mut findings = Vec::new();
    let names: Vec<String> = compose.services.keys().cloned().collect();
    for name in names {
        let opts = stack.nodus.services.get(&name).cloned().unwrap_or_default();
        let svc = &compose.services[&name];
        let guessed = svc.image.as_deref().and_then(guess_kind);
        let kind = opts.kind.or(guessed);
        let is_stateful = opts
            .stateful
            .unwrap_or(matches!(kind, Some(k) if k != ServiceKind::Other));
        if !is_stateful {
            continue;
        }
        // A database image running something else (psql, a migration script) is no database,
        // unless x-nodus says so (`stateful`, or `kind` naming it).
        if let (None, None, Some(k)) = (opts.stateful, opts.kind, guessed) {
            match detect::runs(k, svc) {
                Runs::Server => {}
                Runs::Client(_) => continue,
                Runs::Other(what) => {
                    findings.push(Finding {
                        level: FindingLevel::Warning,
                        service: name.clone(),
                        message: format!(
                            "image {} runs `{what}`, not its database server, so nodus treats it as an ordinary service (no data volume, health check or census); if it is the database, set x-nodus.services.{name}.stateful: true",
                            svc.image.as_deref().unwrap_or_default()
                        ),
                    });
                    continue;
                }
            }
        }
        let kind = kind.unwrap_or(ServiceKind::Other);
        let harden_on = opts.harden.unwrap_or(stack.nodus.harden);
        let mut find = |level: FindingLevel, message: String| {
            findings.push(Finding {
                level,
                service: name.clone(),
                message,
            })
        };

        let data_dir = match opts
            .data_dir
            .clone()
            .or_else(|| default_data_dir(kind, svc))
        {
            Some(d) => d,
            None => {
                // An unknown kind marked stateful: its only volume mount, if there is exactly one.
                let mounts: Vec<&ServiceVolume> = svc
                    .volumes
                    .iter()
                    .filter(|v| v.kind == VolumeType::Volume)
                    .collect();
                match mounts.as_slice() {
                    [only] => only.target.clone(),
                    _ => {
                        if harden_on {
                            find(
                                FindingLevel::Warning,
                                format!(
                                    "marked stateful, but nodus does not know where it keeps its data; set x-nodus.services.{name}.data_dir"
                                ),
                            );
                        }
                        continue;
                    }
                }
            }
        };
        let data_dir = trim_slash(&data_dir).to_string();

        // The mount that holds the data dir is the deepest one covering it.
        let covering = svc
            .volumes
            .iter()
            .enumerate()
            .filter(|(_, v)| is_under(&data_dir, &v.target))
            .max_by_key(|(_, v)| trim_slash(&v.target).len())
            .map(|(i, v)| (i, v.clone()));
        // A mount above the image's own VOLUME leaves that VOLUME to an anonymous volume.
        let shadowed_by = image_volume(kind, svc).filter(|iv| {
            is_under(&data_dir, iv)
                && match &covering {
                    Some((_, m)) => {
                        is_under(iv, &m.target) && trim_slash(&m.target) != trim_slash(iv)
                    }
                    None => false,
                }
        });

        let mut volume_key: Option<String> = None;
        if !harden_on {
            if let Some((_, m)) = &covering {
                if m.kind == VolumeType::Volume && shadowed_by.is_none() {
                    volume_key = m.source.clone();
                }
            }
        } else if let (Some(iv), Some((_, m))) = (shadowed_by, &covering) {
            let key = fresh_volume_key(&compose, &name);
            let what = match (&m.kind, &m.source) {
                (VolumeType::Volume, Some(s)) => format!("named volume {s}"),
                (VolumeType::Volume, None) => "an anonymous volume".to_string(),
                (VolumeType::Bind, Some(s)) => format!("bind mount {s}"),
                _ => "a mount".to_string(),
            };
            find(
                FindingLevel::Fixed,
                format!(
                    "{what} is mounted at {}, a parent of {data_dir}; the image declares VOLUME {iv}, so the data really went to an anonymous volume there. Mounted named volume {key} at {data_dir} (data already in that anonymous volume is not copied)",
                    m.target
                ),
            );
            compose.volumes.insert(key.clone(), VolumeDef::default());
            if let Some(s) = compose.services.get_mut(&name) {
                s.volumes.push(named_mount(&key, &data_dir));
            }
            volume_key = Some(key);
        } else {
            match covering {
                None => {
                    let key = fresh_volume_key(&compose, &name);
                    find(
                        FindingLevel::Fixed,
                        format!(
                            "{data_dir} was not on a named volume, so its data would not survive removing the container; mounted named volume {key} there"
                        ),
                    );
                    compose.volumes.insert(key.clone(), VolumeDef::default());
                    if let Some(s) = compose.services.get_mut(&name) {
                        s.volumes.push(named_mount(&key, &data_dir));
                    }
                    volume_key = Some(key);
                }
                Some((i, m)) => match (&m.kind, &m.source) {
                    (VolumeType::Volume, Some(src)) => volume_key = Some(src.clone()),
                    (VolumeType::Volume, None) => {
                        let key = fresh_volume_key(&compose, &name);
                        find(
                            FindingLevel::Fixed,
                            format!(
                                "the anonymous volume at {} is replaced by named volume {key}: anonymous volumes are orphaned when the container is removed (data of an earlier run in the old anonymous volume is not copied)",
                                m.target
                            ),
                        );
                        compose.volumes.insert(key.clone(), VolumeDef::default());
                        if let Some(s) = compose.services.get_mut(&name) {
                            if let Some(v) = s.volumes.get_mut(i) {
                                v.source = Some(key.clone());
                            }
                        }
                        volume_key = Some(key);
                    }
                    (VolumeType::Bind, src) => {
                        let src = src.clone().unwrap_or_default();
                        let key = format!("{name}_data");
                        find(
                            FindingLevel::Warning,
                            format!(
                                "{data_dir} is on bind mount {src}; nodus keeps it as it is and does not snapshot it. To move it to a named volume: `nodus stop {name}`, then `docker volume create {project}_{key}` and `docker run --rm -v {src}:/from -v {project}_{key}:/to {image} sh -c 'cp -a /from/. /to/'`, then mount `{key}:{target}` instead (and declare `volumes: {{{key}: {{}}}}`)",
                                project = stack.project,
                                image = svc.image.as_deref().unwrap_or("alpine"),
                                target = m.target,
                            ),
                        );
                    }
                    (VolumeType::Tmpfs, _) => find(
                        FindingLevel::Warning,
                        format!(
                            "{data_dir} is on a tmpfs mount at {}: everything in it is lost at every stop. nodus keeps it; remove the tmpfs mount to keep data",
                            m.target
                        ),
                    ),
                    (VolumeType::Npipe, _) => find(
                        FindingLevel::Warning,
                        format!("{data_dir} is on a named pipe mount at {}; nodus keeps it as it is", m.target),
                    ),
                },
            }
        }

        if harden_on {
            let Some(svc) = compose.services.get_mut(&name) else {
                continue;
            };
            if kind == ServiceKind::Postgres {
                match svc.stop_signal.as_deref() {
                    None => {
                        svc.stop_signal = Some("SIGINT".into());
                        find(
                            FindingLevel::Fixed,
                            "stop_signal SIGINT: postgres' fast shutdown (checkpoint, then exit) instead of waiting for every client to disconnect".into(),
                        );
                    }
                    Some(sig) => {
                        let norm = signal_name(sig);
                        if norm != "SIGINT" && norm != "SIGTERM" {
                            find(
                                FindingLevel::Warning,
                                format!(
                                    "stop_signal {sig} kept as given, but postgres only shuts down cleanly on SIGINT (fast) or SIGTERM (smart); anything else means crash recovery on the next start"
                                ),
                            );
                        }
                    }
                }
            }
            let current = svc
                .stop_grace_period
                .as_deref()
                .map(|g| (g, parse_duration(g)));
            match current {
                Some((_, Ok(d))) if d >= MIN_GRACE => {}
                other => {
                    let was = match other {
                        Some((g, _)) => format!(" (was {g})"),
                        None => String::new(),
                    };
                    svc.stop_grace_period = Some("60s".into());
                    find(
                        FindingLevel::Fixed,
                        format!(
                            "stop_grace_period 60s{was}: the engine kills the container when the grace period ends, and a database killed while shutting down needs recovery"
                        ),
                    );
                }
            }
            if svc.healthcheck.is_none() {
                if let Some(hc) = default_healthcheck(kind) {
                    let how = match &hc.test {
                        Some(StringOrList::List(l)) => {
                            l.get(1..).map(|r| r.join(" ")).unwrap_or_default()
                        }
                        _ => String::new(),
                    };
                    svc.healthcheck = Some(hc);
                    find(
                        FindingLevel::Fixed,
                        format!("health check added ({how}) so nodus knows when it is ready"),
                    );
                }
            }
        }
        if kind == ServiceKind::Postgres && opts.ddl_log == Some(true) {
            if let Some(svc) = compose.services.get_mut(&name) {
                add_ddl_log(svc);
                find(
                    FindingLevel::Fixed,
                    format!(
                        "DDL logging on (x-nodus ddl_log, dev only): log_statement=ddl with log_line_prefix '{DDL_LOG_PREFIX}', so `nodus doctor --last-loss` can name the container that dropped a table"
                    ),
                );
            }
        }
        // Not hardening but observation: the guard must reach the database from the host (Linux and
        // Docker Desktop alike), so the census port is published on loopback even with
        // `harden: false`. It changes nothing about where data lives.
        if let (Some(port), Some(svc)) = (census_port(kind), compose.services.get_mut(&name)) {
            if !publishes(&svc.ports, port) {
                svc.ports.push(Port::Short(format!("127.0.0.1::{port}")));
                find(
                    FindingLevel::Fixed,
                    format!(
                        "port {port} published on 127.0.0.1 at an ephemeral host port, so nodus can take the census from the host"
                    ),
                );
            }
        }

        let volume_name = volume_key
            .as_deref()
            .map(|k| volume_name(&compose, &stack.project, k));
        stateful.push(StatefulService {
            service: name.clone(),
            kind,
            data_dir,
            volume_key,
            volume_name,
        });
    }
    Hardened {
        compose,
        stateful,
        findings,
    }
}

/// The `log_line_prefix` of `ddl_log`: time, pid, client address, application, database.
pub const DDL_LOG_PREFIX: &str = "%m [%p] client=%h app=%a db=%d ";

/// Appends `-c log_statement=ddl -c log_line_prefix=...` to a postgres service's command (the
/// image's default command `postgres` when it has none).
fn add_ddl_log(svc: &mut Service) {
    let flags = [
        "-c".to_string(),
        "log_statement=ddl".to_string(),
        "-c".to_string(),
        format!("log_line_prefix={DDL_LOG_PREFIX}"),
    ];
    svc.command = Some(match svc.command.take() {
        None => StringOrList::List(
            std::iter::once("postgres".to_string())
                .chain(flags)
                .collect(),
        ),
        Some(StringOrList::List(mut l)) => {
            if l.is_empty() {
                l.push("postgres".into());
            }
            l.extend(flags);
            StringOrList::List(l)
        }
        Some(StringOrList::String(s)) => StringOrList::String(format!(
            "{s} -c log_statement=ddl -c 'log_line_prefix={DDL_LOG_PREFIX}'"
        )),
    });
}

// ---- rendering ------------------------------------------------------------------------------------

/// Serialises the generated model as YAML (with a header comment saying it is generated).
pub fn render_yaml(compose: &ComposeFile) -> Result<String, serde_yaml::Error> {
    render_with_header(
        compose,
        "# Generated by nodus. Do not edit: edit the stack files and run `nodus render`.\n",
    )
}

/// Like [`render_yaml`], naming the stack files and the project in the header.
pub fn render_yaml_for(stack: &Stack, compose: &ComposeFile) -> Result<String, serde_yaml::Error> {
    let files: Vec<String> = stack
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let header = format!(
        "# Generated by nodus from {} (project {}). Do not edit: edit the stack files and run `nodus render`.\n\
         # Plain compose reads it too: docker compose -p {} -f <this file> ...\n",
        files.join(", "),
        stack.project,
        stack.project
    );
    render_with_header(compose, &header)
}

/// The model as YAML without a header (`nodus config`).
pub fn render_plain(compose: &ComposeFile) -> Result<String, serde_yaml::Error> {
    render_with_header(compose, "")
}

/// A stack file for people (`nodus import`): `name:` kept, `$` not escaped (variables stay
/// variables), `header` (comments) first.
pub fn render_stack_file(compose: &ComposeFile, header: &str) -> Result<String, serde_yaml::Error> {
    let mut value = serde_yaml::to_value(compose)?;
    if let Value::Mapping(m) = &mut value {
        m.shift_remove("version");
    }
    let mut out = String::from(header);
    emit_block(&value, 0, &mut out);
    Ok(out)
}

fn render_with_header(compose: &ComposeFile, header: &str) -> Result<String, serde_yaml::Error> {
    let mut value = serde_yaml::to_value(compose)?;
    if let Value::Mapping(m) = &mut value {
        // `name:` is rejected by docker-compose 1.x, and `version:` is obsolete (and would make
        // compose check the file against an old schema).
        m.shift_remove("name");
        m.shift_remove("version");
    }
    escape_dollars(&mut value);
    let mut out = String::from(header);
    emit_block(&value, 0, &mut out);
    Ok(out)
}

/// Every `$` in a string value becomes `$$`, so compose does not interpolate it again.
fn escape_dollars(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('$') => *s = escape(s),
        Value::Sequence(items) => items.iter_mut().for_each(escape_dollars),
        Value::Mapping(m) => m.values_mut().for_each(escape_dollars),
        Value::Tagged(t) => escape_dollars(&mut t.value),
        _ => {}
    }
}

/// A scalar that YAML 1.1 (docker-compose 1.x) and 1.2 both read back as the same string.
fn scalar_str(s: &str) -> String {
    const RESERVED: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
    ];
    let plain = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '_')
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | ':' | '@' | '+' | '=')
        })
        && !s.ends_with(':')
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("'{}'", s.replace('\'', "''")))
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_str(s),
        Value::Sequence(items) => format!(
            "[{}]",
            items.iter().map(inline).collect::<Vec<_>>().join(", ")
        ),
        Value::Mapping(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", inline(k), inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Tagged(t) => format!("{} {}", t.tag, inline(&t.value)),
    }
}

fn emit_block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            for (k, val) in m {
                out.push_str(&pad);
                out.push_str(&inline(k));
                out.push(':');
                match val {
                    Value::Mapping(inner) if !inner.is_empty() => {
                        out.push('\n');
                        emit_block(val, indent + 2, out);
                    }
                    Value::Sequence(inner) if !inner.is_empty() => {
                        out.push('\n');
                        emit_block(val, indent + 2, out);
                    }
                    _ => {
                        out.push(' ');
                        out.push_str(&inline(val));
                        out.push('\n');
                    }
                }
            }
        }
        Value::Sequence(items) if !items.is_empty() => {
            for item in items {
                let nested = match item {
                    Value::Mapping(m) => !m.is_empty(),
                    Value::Sequence(s) => !s.is_empty(),
                    _ => false,
                };
                if nested {
                    let mut sub = String::new();
                    emit_block(item, indent + 2, &mut sub);
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&sub[indent + 2..]);
                } else {
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&inline(item));
                    out.push('\n');
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::{Env, SourceFile};

    #[test]
    fn ddl_log_adds_statement_logging_with_the_client_address() {
        let h = stack("services:\n  db:\n    image: postgres:16\n  other:\n    image: postgres:16\n    command: [\"postgres\", \"-c\", \"max_connections=50\"]\nx-nodus:\n  services:\n    db:\n      ddl_log: true\n    other:\n      ddl_log: true\n")
            .harden();
        let cmd = |s: &str| match &h.compose.services[s].command {
            Some(StringOrList::List(l)) => l.join(" "),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            cmd("db"),
            format!("postgres -c log_statement=ddl -c log_line_prefix={DDL_LOG_PREFIX}")
        );
        assert!(cmd("other").starts_with("postgres -c max_connections=50 -c log_statement=ddl"));
        assert!(DDL_LOG_PREFIX.contains("%h"));
        // Off by default.
        let plain = stack("services:\n  db:\n    image: postgres:16\n").harden();
        assert!(plain.compose.services["db"].command.is_none());
    }

    fn stack(text: &str) -> Stack {
        Stack::load(
            &[SourceFile {
                path: "stack.yaml".into(),
                text: text.into(),
            }],
            &Env::new(),
            Some(("proj", crate::stack::ProjectSource::Flag)),
            "d",
        )
        .unwrap()
    }

    fn fixes(h: &Hardened, needle: &str) -> bool {
        h.findings
            .iter()
            .any(|f| f.level == FindingLevel::Fixed && f.message.contains(needle))
    }

    fn warns(h: &Hardened, needle: &str) -> bool {
        h.findings
            .iter()
            .any(|f| f.level == FindingLevel::Warning && f.message.contains(needle))
    }

    fn mount<'a>(h: &'a Hardened, svc: &str, target: &str) -> Option<&'a ServiceVolume> {
        h.compose.services[svc]
            .volumes
            .iter()
            .find(|v| v.target == target)
    }

    #[test]
    fn kinds_from_images() {
        use ServiceKind::*;
        for (img, kind) in [
            ("postgres:15-alpine", Some(Postgres)),
            ("docker.io/library/postgres@sha256:abc", Some(Postgres)),
            ("pgvector/pgvector:pg16", Some(Postgres)),
            ("timescale/timescaledb-ha:pg16", Some(Postgres)),
            ("postgis/postgis:16-3.4", Some(Postgres)),
            ("bitnami/postgresql:16", Some(Postgres)),
            ("nodus/postgres-standin:15", Some(Postgres)),
            ("redis:7.2", Some(Redis)),
            ("redis/redis-stack-server:latest", Some(Redis)),
            ("valkey/valkey:8", Some(Redis)),
            ("nodus/redis-standin:7", Some(Redis)),
            ("qdrant/qdrant", Some(Qdrant)),
            ("mariadb:11", Some(Mariadb)),
            ("mysql:8", Some(Mysql)),
            ("mongo:7", Some(Mongo)),
            ("edoburu/pgbouncer", None),
            ("ghcr.io/berriai/litellm:main", None),
            ("redisinsight/redisinsight", None),
            ("localhost:5000/app", None),
        ] {
            assert_eq!(guess_kind(img), kind, "{img}");
        }
    }

    #[test]
    fn missing_volume_is_added() {
        let h = stack("services:\n  db:\n    image: postgres:15\n").harden();
        let m = mount(&h, "db", "/var/lib/postgresql/data").expect("named volume added");
        assert_eq!(m.source.as_deref(), Some("db_data"));
        assert!(h.compose.volumes.contains_key("db_data"));
        assert!(fixes(&h, "mounted named volume db_data"));
        let s = h.stateful_service("db").unwrap();
        assert_eq!(s.kind, ServiceKind::Postgres);
        assert_eq!(s.data_dir, "/var/lib/postgresql/data");
        assert_eq!(s.volume_key.as_deref(), Some("db_data"));
        assert_eq!(s.volume_name.as_deref(), Some("proj_db_data"));
    }

    #[test]
    fn anonymous_volume_becomes_named() {
        let h = stack(
            "services:\n  db:\n    image: postgres:15\n    volumes: [/var/lib/postgresql/data]\n",
        )
        .harden();
        assert_eq!(h.compose.services["db"].volumes.len(), 1);
        let m = mount(&h, "db", "/var/lib/postgresql/data").unwrap();
        assert_eq!(m.kind, VolumeType::Volume);
        assert_eq!(m.source.as_deref(), Some("db_data"));
        assert!(fixes(
            &h,
            "anonymous volume at /var/lib/postgresql/data is replaced by named volume db_data"
        ));
    }

    #[test]
    fn named_volume_at_data_dir_is_fine() {
        let h = stack(
            "services:\n  db:\n    image: postgres:15\n    volumes: ['pg:/var/lib/postgresql/data']\nvolumes:\n  pg:\n    name: shared_pg\n",
        )
        .harden();
        assert_eq!(h.compose.services["db"].volumes.len(), 1);
        assert!(
            !h.findings.iter().any(|f| f.message.contains("volume")),
            "{:?}",
            h.findings
        );
        let s = h.stateful_service("db").unwrap();
        assert_eq!(s.volume_key.as_deref(), Some("pg"));
        assert_eq!(
            s.volume_name.as_deref(),
            Some("shared_pg"),
            "the volume's name: wins"
        );
    }

    #[test]
    fn external_volume_name_is_kept() {
        let h = stack("services:\n  r:\n    image: redis:7\n    volumes: ['cache:/data']\nvolumes:\n  cache:\n    external: true\n").harden();
        assert_eq!(
            h.stateful_service("r").unwrap().volume_name.as_deref(),
            Some("cache")
        );
    }

    #[test]
    fn bind_mount_is_kept_with_a_warning() {
        let h = stack("services:\n  db:\n    image: postgres:15\n    volumes: ['./pgdata:/var/lib/postgresql/data']\n").harden();
        let m = mount(&h, "db", "/var/lib/postgresql/data").unwrap();
        assert_eq!(m.kind, VolumeType::Bind);
        assert_eq!(m.source.as_deref(), Some("./pgdata"));
        assert_eq!(h.compose.services["db"].volumes.len(), 1);
        assert!(warns(&h, "bind mount ./pgdata"));
        assert!(warns(&h, "cp -a"), "the warning explains how to migrate");
        assert!(
            !h.compose.volumes.contains_key("db_data"),
            "nothing moved silently"
        );
        assert_eq!(h.stateful_service("db").unwrap().volume_key, None);
    }

    #[test]
    fn parent_of_pgdata_is_fixed() {
        let h = stack(
            "services:\n  db:\n    image: postgres:15\n    volumes: ['pg:/var/lib/postgresql']\nvolumes:\n  pg: {}\n",
        )
        .harden();
        let m = mount(&h, "db", "/var/lib/postgresql/data").expect("named volume at PGDATA");
        assert_eq!(m.source.as_deref(), Some("db_data"));
        assert!(
            mount(&h, "db", "/var/lib/postgresql").is_some(),
            "the user's mount stays"
        );
        assert!(fixes(&h, "a parent of /var/lib/postgresql/data"));
        assert!(fixes(&h, "VOLUME /var/lib/postgresql/data"));
        assert_eq!(
            h.stateful_service("db").unwrap().volume_key.as_deref(),
            Some("db_data")
        );
    }

    #[test]
    fn pgdata_below_a_mounted_volume_is_fine() {
        // The common PGDATA=/var/lib/postgresql/data/pgdata pattern: the mount is at the image's VOLUME.
        let h = stack(
            "services:\n  db:\n    image: postgres:16\n    environment: {PGDATA: /var/lib/postgresql/data/pgdata}\n    volumes: ['pg:/var/lib/postgresql/data']\nvolumes:\n  pg: {}\n",
        )
        .harden();
        assert_eq!(h.compose.services["db"].volumes.len(), 1);
        let s = h.stateful_service("db").unwrap();
        assert_eq!(s.data_dir, "/var/lib/postgresql/data/pgdata");
        assert_eq!(s.volume_key.as_deref(), Some("pg"));
    }

    #[test]
    fn pgdata_env_sets_the_data_dir() {
        let h = stack("services:\n  db:\n    image: postgres:15\n    environment: [PGDATA=/pg]\n")
            .harden();
        assert!(mount(&h, "db", "/pg").is_some());
        assert_eq!(h.stateful_service("db").unwrap().data_dir, "/pg");
    }

    #[test]
    fn postgres_18_layout() {
        let h = stack("services:\n  db:\n    image: postgres:18\n    volumes: ['pg:/var/lib/postgresql']\nvolumes:\n  pg: {}\n").harden();
        assert_eq!(
            h.compose.services["db"].volumes.len(),
            1,
            "{:?}",
            h.findings
        );
        assert_eq!(
            h.stateful_service("db").unwrap().data_dir,
            "/var/lib/postgresql/18/docker"
        );
    }

    #[test]
    fn image_families_have_their_own_layout() {
        let h = stack("services:\n  db:\n    image: bitnami/postgresql:16\n    volumes: ['pg:/bitnami/postgresql']\n  r:\n    image: docker.io/bitnami/redis:7.2\nvolumes:\n  pg: {}\n").harden();
        assert_eq!(
            h.compose.services["db"].volumes.len(),
            1,
            "{:?}",
            h.findings
        );
        assert_eq!(
            h.stateful_service("db").unwrap().volume_key.as_deref(),
            Some("pg")
        );
        assert!(mount(&h, "r", "/bitnami/redis/data").is_some());
        let h = stack("services:\n  ts:\n    image: timescale/timescaledb-ha:pg16\n").harden();
        assert!(mount(&h, "ts", "/home/postgres/pgdata/data").is_some());
        let h = stack("services:\n  ts:\n    image: timescale/timescaledb-ha:pg16\n    volumes: ['t:/home/postgres']\nvolumes:\n  t: {}\n").harden();
        assert!(
            fixes(&h, "VOLUME /home/postgres/pgdata"),
            "{:?}",
            h.findings
        );
    }

    #[test]
    fn parent_mount_is_fine_for_other_kinds() {
        let h = stack(
            "services:\n  q:\n    image: qdrant/qdrant\n    volumes: ['q:/qdrant']\nvolumes:\n  q: {}\n",
        )
        .harden();
        assert_eq!(h.compose.services["q"].volumes.len(), 1);
        assert_eq!(
            h.stateful_service("q").unwrap().volume_key.as_deref(),
            Some("q")
        );
    }

    #[test]
    fn stop_signal_and_grace() {
        let h =
            stack("services:\n  db:\n    image: postgres:15\n  r:\n    image: redis:7\n").harden();
        assert_eq!(
            h.compose.services["db"].stop_signal.as_deref(),
            Some("SIGINT")
        );
        assert_eq!(
            h.compose.services["r"].stop_signal, None,
            "only postgres gets a stop signal"
        );
        assert_eq!(
            h.compose.services["db"].stop_grace_period.as_deref(),
            Some("60s")
        );
        assert_eq!(
            h.compose.services["r"].stop_grace_period.as_deref(),
            Some("60s")
        );

        let h = stack("services:\n  db:\n    image: postgres:15\n    stop_signal: SIGTERM\n    stop_grace_period: 2m\n").harden();
        assert_eq!(
            h.compose.services["db"].stop_signal.as_deref(),
            Some("SIGTERM")
        );
        assert_eq!(
            h.compose.services["db"].stop_grace_period.as_deref(),
            Some("2m"),
            "longer grace kept"
        );
        assert!(
            h.findings.iter().all(|f| !f.message.contains("stop_")),
            "{:?}",
            h.findings
        );

        let h = stack("services:\n  db:\n    image: postgres:15\n    stop_signal: SIGKILL\n    stop_grace_period: 10s\n").harden();
        assert_eq!(
            h.compose.services["db"].stop_signal.as_deref(),
            Some("SIGKILL"),
            "kept"
        );
        assert!(warns(&h, "stop_signal SIGKILL kept"));
        assert_eq!(
            h.compose.services["db"].stop_grace_period.as_deref(),
            Some("60s")
        );
        assert!(fixes(&h, "stop_grace_period 60s (was 10s)"));
    }

    #[test]
    fn healthchecks_added_not_replaced() {
        let h = stack("services:\n  db:\n    image: postgres:15\n  r:\n    image: redis:7\n  q:\n    image: qdrant/qdrant:v1.9.0\n").harden();
        let pg = h.compose.services["db"].healthcheck.as_ref().unwrap();
        assert_eq!(
            pg.test,
            Some(StringOrList::List(vec![
                "CMD-SHELL".into(),
                "pg_isready -U \"${POSTGRES_USER:-postgres}\" -d \"${POSTGRES_DB:-${POSTGRES_USER:-postgres}}\" -h 127.0.0.1".into()
            ]))
        );
        assert_eq!(pg.interval.as_deref(), Some("2s"));
        assert_eq!(pg.timeout.as_deref(), Some("5s"));
        assert_eq!(pg.retries, Some(30));
        assert_eq!(pg.start_period.as_deref(), Some("5s"));
        assert_eq!(
            h.compose.services["r"].healthcheck.as_ref().unwrap().test,
            Some(StringOrList::List(vec![
                "CMD".into(),
                "redis-cli".into(),
                "ping".into()
            ]))
        );
        assert!(h.compose.services["q"].healthcheck.is_some());

        let h = stack("services:\n  db:\n    image: postgres:15\n    healthcheck:\n      test: [CMD, pg_isready]\n      interval: 10s\n").harden();
        let hc = h.compose.services["db"].healthcheck.as_ref().unwrap();
        assert_eq!(
            hc.test,
            Some(StringOrList::List(vec!["CMD".into(), "pg_isready".into()]))
        );
        assert_eq!(hc.interval.as_deref(), Some("10s"));
        assert!(!fixes(&h, "health check"));
    }

    #[test]
    fn census_port_published_on_loopback_unless_already() {
        let h = stack("services:\n  db:\n    image: postgres:15\n  r:\n    image: redis:7\n    ports: ['6379:6379']\n  q:\n    image: qdrant/qdrant\n    ports: [{target: 6333, published: 6333}]\n").harden();
        assert_eq!(
            h.compose.services["db"].ports,
            vec![Port::Short("127.0.0.1::5432".into())]
        );
        assert!(fixes(&h, "port 5432 published on 127.0.0.1"));
        assert_eq!(
            h.compose.services["r"].ports,
            vec![Port::Short("6379:6379".into())]
        );
        assert_eq!(h.compose.services["q"].ports.len(), 1);
        assert!(publishes(
            &[Port::Short("127.0.0.1:5000-5500:5000-5500/tcp".into())],
            5432
        ));
        assert!(publishes(&[Port::Short("[::1]:15432:5432".into())], 5432));
        assert!(!publishes(&[Port::Short("5432:5433".into())], 5432));
    }

    #[test]
    fn hardening_opt_out() {
        let text = "services:\n  db:\n    image: postgres:15\n    volumes: [/var/lib/postgresql/data]\n  r:\n    image: redis:7\n";
        let s = stack(&format!("{text}x-nodus:\n  harden: false\n"));
        let h = s.harden();
        // Everything passes through unchanged except the loopback census ports.
        let mut expected = s.compose.clone();
        expected.services["db"]
            .ports
            .push(Port::Short("127.0.0.1::5432".into()));
        expected.services["r"]
            .ports
            .push(Port::Short("127.0.0.1::6379".into()));
        assert_eq!(
            h.compose, expected,
            "passed through unchanged but for census ports"
        );
        assert!(h.findings.iter().all(|f| f.message.contains("census")));
        assert_eq!(h.stateful.len(), 2, "still known as stateful");
        assert_eq!(h.stateful_service("db").unwrap().volume_key, None);

        let s = stack(&format!(
            "{text}x-nodus:\n  services:\n    db:\n      harden: false\n"
        ));
        let h = s.harden();
        assert_eq!(
            h.compose.services["db"].volumes,
            s.compose.services["db"].volumes
        );
        assert_eq!(h.compose.services["db"].stop_signal, None);
        assert_ne!(
            h.compose.services["r"], s.compose.services["r"],
            "only db opted out"
        );
    }

    #[test]
    fn xnodus_overrides_kind_stateful_and_data_dir() {
        let h = stack(
            "services:\n  cache:\n    image: redis:7\n  store:\n    image: minio/minio\n    volumes: ['m:/srv']\n  kv:\n    image: example/kv\n  db:\n    image: postgres:15\nvolumes:\n  m: {}\nx-nodus:\n  services:\n    cache:\n      stateful: false\n    store:\n      stateful: true\n    kv:\n      kind: redis\n      data_dir: /kvdata\n    db:\n      data_dir: /pg/data\n",
        )
        .harden();
        assert!(h.stateful_service("cache").is_none());
        assert_eq!(h.compose.services["cache"].healthcheck, None);
        let store = h.stateful_service("store").unwrap();
        assert_eq!(store.kind, ServiceKind::Other);
        assert_eq!(store.data_dir, "/srv");
        assert_eq!(store.volume_key.as_deref(), Some("m"));
        let kv = h.stateful_service("kv").unwrap();
        assert_eq!(kv.kind, ServiceKind::Redis);
        assert!(mount(&h, "kv", "/kvdata").is_some());
        assert!(mount(&h, "db", "/pg/data").is_some());
    }

    #[test]
    fn stateful_other_without_data_dir_warns() {
        let h = stack("services:\n  x:\n    image: example/x\nx-nodus:\n  services:\n    x:\n      stateful: true\n").harden();
        assert!(warns(&h, "data_dir"));
        assert!(h.stateful.is_empty());
    }

    #[test]
    fn volume_key_does_not_clash() {
        let h = stack("services:\n  db:\n    image: postgres:15\n  other:\n    image: x\n    volumes: ['db_data:/x']\nvolumes:\n  db_data: {}\n").harden();
        assert_eq!(
            h.stateful_service("db").unwrap().volume_key.as_deref(),
            Some("db_data_2")
        );
    }

    #[test]
    fn unknown_keys_pass_through() {
        let s = stack(
            "services:\n  db:\n    image: postgres:15\n    deploy:\n      resources:\n        limits: {memory: 1g}\n    logging:\n      driver: json-file\n    x-team: data\n  web:\n    image: nginx\n    ports: ['8080:80']\nx-anchors:\n  a: 1\nconfigs:\n  c:\n    file: /etc/c\n",
        );
        let h = s.harden();
        let db = &h.compose.services["db"];
        assert_eq!(db.extra["deploy"], s.compose.services["db"].extra["deploy"]);
        assert!(db.extra.contains_key("logging") && db.extra.contains_key("x-team"));
        assert_eq!(
            h.compose.services["web"], s.compose.services["web"],
            "stateless services unchanged"
        );
        assert!(
            h.compose.extra.contains_key("x-anchors") && h.compose.extra.contains_key("configs")
        );
        let yaml = render_yaml(&h.compose).unwrap();
        assert!(yaml.contains("x-team: data"), "{yaml}");
        assert!(yaml.contains("memory: \"1g\""), "{yaml}");
    }

    #[test]
    fn render_escapes_dollars_and_quotes_ambiguous_scalars() {
        let s = stack(
            "name: proj\nversion: '3.8'\nservices:\n  db:\n    image: postgres:15\n    environment:\n      PW: 'a$$b'\n      FLAG: 'yes'\n      NUM: '0755'\n      EMPTY: ''\n      MULTI: \"l1\\nl2\"\n      UNSET:\n    ports: ['22:22']\n    command: [postgres, -c, 'max_connections=200']\n",
        );
        let h = s.harden();
        let yaml = render_yaml_for(&s, &h.compose).unwrap();
        assert!(
            yaml.starts_with("# Generated by nodus from stack.yaml (project proj)"),
            "{yaml}"
        );
        assert!(
            !yaml.contains("\nname:") && !yaml.contains("\nversion:"),
            "{yaml}"
        );
        assert!(yaml.contains("PW: \"a$$b\""), "{yaml}");
        assert!(yaml.contains("$${POSTGRES_USER:-postgres}"), "{yaml}");
        assert!(yaml.contains("FLAG: \"yes\""), "{yaml}");
        assert!(yaml.contains("\"22:22\""), "{yaml}");
        assert!(yaml.contains("\"127.0.0.1::5432\""), "{yaml}");
        // round trip: what compose reads (after un-escaping `$$`) is the hardened model
        let back: ComposeFile = serde_yaml::from_str(&yaml.replace("$$", "$")).unwrap();
        let mut expected = h.compose.clone();
        expected.name = None;
        expected.version = None;
        assert_eq!(back, expected);
    }

    #[test]
    fn emitter_round_trips_odd_values() {
        let v: Value = serde_yaml::from_str(
            "a: [[1, 2], [], {}, {b: [x]}, null, true, -3, 1.5, '', ' s ', 'on', '#x', '- y', 'k: v', \"q'\\\"\"]\nb:\n  - - n1\n    - n2\n  - c: 1\n    d:\n      - e\n'weird key': {}\n'1': x\n",
        )
        .unwrap();
        let mut out = String::new();
        emit_block(&v, 0, &mut out);
        let back: Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(back, v, "{out}");
    }
}
