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

use super::detect::{self, Runs};
use super::duration::parse_duration;
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

pub use super::render::{render_plain, render_stack_file, render_yaml, render_yaml_for};

#[cfg(test)]
mod tests;
