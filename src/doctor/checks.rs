//! Static checks: pure functions over the merged compose model as the user wrote it.

use std::collections::BTreeMap;

use super::dsn;
use super::ids::*;
use super::{Finding, Severity};
use crate::engine::ImageInfo;
use crate::stack::duration::parse_duration;
use crate::stack::harden::{
    default_data_dir, guess_kind, image_volume, is_under, postgres_major, signal_name, trim_slash,
};
use crate::stack::locate::{locate, Location};
use crate::stack::model::{Service, StringOrList, VolumeType};
use crate::stack::{ServiceKind, SourceFile, Stack};

/// What the static checks look at.
pub struct StaticInput<'a> {
    pub stack: &'a Stack,
    /// The stack files' texts, for file:line evidence.
    pub sources: &'a [SourceFile],
    /// Image configs (by image reference) when the engine is reachable; official defaults otherwise.
    pub images: &'a BTreeMap<String, ImageInfo>,
    /// Texts of postgres config files bind-mounted into services (host path → text).
    pub configs: &'a BTreeMap<String, String>,
}

/// A mount as the service declares it (`volumes:` entries and `tmpfs:`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredMount {
    pub kind: VolumeType,
    /// Volume key or host path; None = anonymous volume (or tmpfs).
    pub source: Option<String>,
    pub target: String,
}

impl DeclaredMount {
    pub fn describe(&self) -> String {
        match (&self.kind, &self.source) {
            (VolumeType::Volume, Some(s)) => format!("named volume {s} at {}", self.target),
            (VolumeType::Volume, None) => format!("anonymous volume at {}", self.target),
            (VolumeType::Bind, Some(s)) => format!("bind mount {s} at {}", self.target),
            (VolumeType::Tmpfs, _) => format!("tmpfs at {}", self.target),
            _ => format!("mount at {}", self.target),
        }
    }
}

pub fn mounts_of(svc: &Service) -> Vec<DeclaredMount> {
    let mut out: Vec<DeclaredMount> = svc
        .volumes
        .iter()
        .map(|v| DeclaredMount {
            kind: v.kind.clone(),
            source: v.source.clone().filter(|s| !s.is_empty()),
            target: trim_slash(&v.target).to_string(),
        })
        .collect();
    let tmpfs = match &svc.tmpfs {
        None => vec![],
        Some(StringOrList::String(s)) => vec![s.clone()],
        Some(StringOrList::List(l)) => l.clone(),
    };
    for t in tmpfs {
        let target = t.split(':').next().unwrap_or(&t).trim();
        out.push(DeclaredMount {
            kind: VolumeType::Tmpfs,
            source: None,
            target: trim_slash(target).to_string(),
        });
    }
    out
}

/// The deepest mount holding `dir`.
pub fn covering<'m>(mounts: &'m [DeclaredMount], dir: &str) -> Option<&'m DeclaredMount> {
    mounts
        .iter()
        .filter(|m| is_under(dir, &m.target))
        .max_by_key(|m| m.target.len())
}

/// The kind of a service: `x-nodus` over the image name.
pub fn kind_of(stack: &Stack, name: &str, svc: &Service) -> Option<ServiceKind> {
    let opts = stack.nodus.services.get(name);
    opts.and_then(|o| o.kind)
        .or_else(|| svc.image.as_deref().and_then(guess_kind))
}

/// PGDATA and where it came from: the service environment, the image's `Config.Env`, or the
/// official default for the image's layout.
pub fn pgdata(svc: &Service, image: Option<&ImageInfo>) -> (String, &'static str) {
    if let Some(Some(v)) = svc.environment.get("PGDATA") {
        if !v.trim().is_empty() {
            return (trim_slash(v.trim()).to_string(), "service environment");
        }
    }
    if let Some(v) = image
        .and_then(|i| i.env_var("PGDATA"))
        .filter(|v| !v.trim().is_empty())
    {
        return (trim_slash(v.trim()).to_string(), "image Config.Env");
    }
    let d = default_data_dir(ServiceKind::Postgres, svc)
        .unwrap_or_else(|| "/var/lib/postgresql/data".into());
    (trim_slash(&d).to_string(), "official default")
}

/// The image's declared VOLUMEs: from inspect when known, else the official layout.
pub fn image_volumes(kind: ServiceKind, svc: &Service, image: Option<&ImageInfo>) -> Vec<String> {
    match image {
        Some(i) => i
            .volumes
            .iter()
            .map(|v| trim_slash(v).to_string())
            .collect(),
        None => image_volume(kind, svc)
            .map(|v| vec![v.to_string()])
            .unwrap_or_default(),
    }
}

fn mount_location(sources: &[SourceFile], name: &str, m: &DeclaredMount) -> Option<Location> {
    let key = if m.kind == VolumeType::Tmpfs && !sources_have_volume(sources, name, &m.target) {
        "tmpfs"
    } else {
        "volumes"
    };
    locate(sources, &["services", name, key], Some(&m.target))
        .or_else(|| locate(sources, &["services", name, key], None))
}

fn sources_have_volume(sources: &[SourceFile], name: &str, target: &str) -> bool {
    locate(sources, &["services", name, "volumes"], Some(target)).is_some()
}

/// Runs every static check.
pub fn run(input: &StaticInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let stack = input.stack;
    for (name, svc) in &stack.compose.services {
        let Some(kind) = kind_of(stack, name, svc) else {
            continue;
        };
        let opts = stack.nodus.services.get(name);
        if opts.and_then(|o| o.stateful) == Some(false) || kind == ServiceKind::Other {
            continue;
        }
        let image = svc.image.as_deref().and_then(|i| input.images.get(i));
        floating_tag(input, name, svc, kind, &mut out);
        let data_dir = match kind {
            ServiceKind::Postgres => opts
                .and_then(|o| o.data_dir.clone())
                .map(|d| trim_slash(&d).to_string())
                .unwrap_or_else(|| pgdata(svc, image).0),
            _ => match opts
                .and_then(|o| o.data_dir.clone())
                .or_else(|| default_data_dir(kind, svc))
            {
                Some(d) => trim_slash(&d).to_string(),
                None => continue,
            },
        };
        let mounts = mounts_of(svc);
        if kind == ServiceKind::Postgres {
            pgdata_checks(input, name, svc, image, &data_dir, &mounts, &mut out);
            durability(input, name, svc, &mounts, &mut out);
            stop_checks(input, name, svc, &mut out);
        } else {
            match covering(&mounts, &data_dir) {
                Some(m) if m.kind == VolumeType::Tmpfs => {
                    out.push(tmpfs_finding(input, name, &data_dir, m))
                }
                Some(m) if m.kind == VolumeType::Bind => {
                    out.push(bind_finding(input, name, &data_dir, m))
                }
                _ => {}
            }
        }
    }
    out.extend(dsn::shared_schema_sync(input));
    out
}

fn floating_tag(
    input: &StaticInput,
    name: &str,
    svc: &Service,
    kind: ServiceKind,
    out: &mut Vec<Finding>,
) {
    let Some(image) = svc.image.as_deref() else {
        return;
    };
    if let Some(why) = floating_reason(image) {
        let what = crate::guard::census::kind_str(kind);
        out.push(
            Finding::new(
                FLOATING_DB_TAG,
                Severity::Warning,
                name,
                format!("image: {image} ({why})"),
                format!(
                    "pin the major version, e.g. `{}:{}`: a {what} major upgrade changes the on-disk format and the new server refuses (or, for some images, silently re-initialises) the old data",
                    repo_of(image),
                    example_tag(kind)
                ),
            )
            .at(locate(input.sources, &["services", name, "image"], None)),
        );
    }
}

/// The repository part of an image reference (no tag, no digest).
pub fn repo_of(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let slash = no_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match no_digest[slash..].find(':') {
        Some(i) => &no_digest[..slash + i],
        None => no_digest,
    }
}

fn example_tag(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::Postgres => "16",
        ServiceKind::Redis => "7",
        ServiceKind::Qdrant => "v1.12.5",
        ServiceKind::Mysql => "8.4",
        ServiceKind::Mariadb => "11",
        ServiceKind::Mongo => "7",
        ServiceKind::Other => "1",
    }
}

/// Why an image reference does not pin a major version (None: it does, or it is a digest).
pub fn floating_reason(image: &str) -> Option<String> {
    if image.contains('@') {
        return None;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    let Some((_, tag)) = last.split_once(':') else {
        return Some("no tag: that is `latest`".into());
    };
    let t = tag.to_ascii_lowercase();
    let mut chars = t.chars();
    let first = chars.next();
    let pinned = first.is_some_and(|c| c.is_ascii_digit())
        || (first == Some('v') && chars.next().is_some_and(|c| c.is_ascii_digit()))
        || t.match_indices("pg")
            .any(|(i, _)| t[i + 2..].starts_with(|c: char| c.is_ascii_digit()));
    (!pinned).then(|| format!("tag `{tag}` does not name a major version"))
}

#[allow(clippy::too_many_arguments)]
fn pgdata_checks(
    input: &StaticInput,
    name: &str,
    svc: &Service,
    image: Option<&ImageInfo>,
    pgdata_dir: &str,
    mounts: &[DeclaredMount],
    out: &mut Vec<Finding>,
) {
    let sources = input.sources;
    let (_, from) = pgdata(svc, image);
    let pgdata_loc = if from == "service environment" {
        locate(sources, &["services", name, "environment"], Some("PGDATA"))
    } else {
        None
    };
    let pgdata_desc = format!("PGDATA={pgdata_dir} ({from})");
    let vols = image_volumes(ServiceKind::Postgres, svc, image);
    let image_name = svc.image.as_deref().unwrap_or("(build)");

    // PostgreSQL 18+: the data moved to /var/lib/postgresql/<major>/docker.
    let major = svc.image.as_deref().and_then(postgres_major);
    if let Some(major) = major.filter(|m| *m >= 18) {
        if from != "service environment" {
            if let Some(m) = mounts
                .iter()
                .find(|m| m.target == "/var/lib/postgresql/data")
            {
                out.push(
                    Finding::new(
                        PG18_LAYOUT,
                        Severity::Error,
                        name,
                        format!(
                            "{} with image {image_name}: PostgreSQL {major} images keep data in {pgdata_dir}, so nothing is written to that mount and the data lands on the anonymous VOLUME /var/lib/postgresql",
                            m.describe()
                        ),
                        format!(
                            "mount the volume at /var/lib/postgresql (the 18+ layout) instead of /var/lib/postgresql/data, or pin the image to the major the data was created with; `nodus up` mounts a named volume at {pgdata_dir}"
                        ),
                    )
                    .at(mount_location(sources, name, m)),
                );
                return;
            }
        }
    }

    match covering(mounts, pgdata_dir) {
        None => {
            let on_volume = vols.iter().find(|v| is_under(pgdata_dir, v));
            match on_volume {
                Some(v) => out.push(
                    Finding::new(
                        PGDATA_ANONYMOUS,
                        Severity::Error,
                        name,
                        format!(
                            "{pgdata_desc} is under no declared mount; image {image_name} declares VOLUME {v}, so the data lands on an anonymous volume that `down`/`up` (or any recreate) replaces with a new, empty one"
                        ),
                        format!(
                            "mount a named volume at {pgdata_dir}: `volumes: [\"{name}_data:{pgdata_dir}\"]` and declare `{name}_data:` under top-level `volumes:` (`nodus up` does this; `nodus import --migrate-data` moves existing data)"
                        ),
                    )
                    .at(pgdata_loc.clone().or_else(|| locate(sources, &["services", name], None))),
                ),
                None => out.push(
                    Finding::new(
                        PGDATA_CONTAINER_LAYER,
                        Severity::Error,
                        name,
                        format!(
                            "{pgdata_desc} is under no mount and under none of the image's VOLUMEs ({}): the data lives in the container's own layer and is gone when the container is recreated",
                            if vols.is_empty() { "none".to_string() } else { vols.join(", ") }
                        ),
                        format!(
                            "mount a named volume at {pgdata_dir} (`nodus up` does this; `nodus import --migrate-data` moves existing data)"
                        ),
                    )
                    .at(pgdata_loc.clone().or_else(|| locate(sources, &["services", name], None))),
                ),
            }
        }
        Some(m) => {
            // A mount at a parent of the image's VOLUME: the VOLUME path below it gets an
            // anonymous volume, which shadows the mount exactly where PGDATA is.
            let shadow = vols.iter().find(|iv| {
                is_under(pgdata_dir, iv) && is_under(iv, &m.target) && iv.as_str() != m.target
            });
            if let (Some(iv), VolumeType::Volume | VolumeType::Bind) = (shadow, &m.kind) {
                out.push(
                    Finding::new(
                        PGDATA_PARENT_MOUNT,
                        Severity::Error,
                        name,
                        format!(
                            "{} is a parent of {pgdata_desc}; image {image_name} declares VOLUME {iv}, so an anonymous volume is mounted over {iv} and the data never reaches the {}",
                            m.describe(),
                            if m.kind == VolumeType::Bind { "bind mount" } else { "named volume" }
                        ),
                        format!(
                            "mount the volume at {iv} itself (e.g. `{}:{iv}`); `nodus up` adds a named volume at {pgdata_dir}; `nodus import --migrate-data` moves the data out of the anonymous volume",
                            m.source.as_deref().unwrap_or("pgdata")
                        ),
                    )
                    .at(mount_location(sources, name, m)),
                );
                return;
            }
            match m.kind {
                VolumeType::Tmpfs => out.push(tmpfs_finding(input, name, pgdata_dir, m)),
                VolumeType::Bind => out.push(bind_finding(input, name, pgdata_dir, m)),
                VolumeType::Volume if m.source.is_none() => out.push(
                    Finding::new(
                        PGDATA_ANONYMOUS,
                        Severity::Error,
                        name,
                        format!(
                            "{pgdata_desc} is on an anonymous volume (`- {}` without a name): `down`/`up` or any recreate gives a new, empty one and orphans the old",
                            m.target
                        ),
                        format!(
                            "name it: `{name}_data:{}` plus `{name}_data:` under top-level `volumes:` (`nodus up` does this; `nodus import --migrate-data` copies the existing data into it)",
                            m.target
                        ),
                    )
                    .at(mount_location(sources, name, m)),
                ),
                _ => {}
            }
        }
    }
}

fn tmpfs_finding(input: &StaticInput, name: &str, dir: &str, m: &DeclaredMount) -> Finding {
    Finding::new(
        TMPFS_DATA,
        Severity::Error,
        name,
        format!(
            "{} holds the data directory {dir}: tmpfs lives in memory and is empty after every stop",
            m.describe()
        ),
        format!("remove the tmpfs mount at {} and mount a named volume at {dir}", m.target),
    )
    .at(mount_location(input.sources, name, m))
}

fn bind_finding(input: &StaticInput, name: &str, dir: &str, m: &DeclaredMount) -> Finding {
    let src = m.source.clone().unwrap_or_default();
    let mac = ["/Users/", "/Volumes/", "/private/"]
        .iter()
        .any(|p| src.starts_with(p));
    let why = if mac {
        " on a macOS host path: Docker Desktop serves it through a file-sharing layer (virtiofs/gRPC FUSE) whose fsync, ownership and locking semantics differ from a real disk; postgres data there is slow and can be corrupted by a crash or a sleeping laptop"
    } else {
        ": nodus does not snapshot bind mounts, ownership follows the host, and deleting or moving the host directory loses the data"
    };
    Finding::new(
        BIND_MOUNT_DATA,
        Severity::Warning,
        name,
        format!("data directory {dir} is on bind mount {src}{why}"),
        format!(
            "move it to a named volume: `nodus import <compose file> --migrate-data` copies {src} into one (service stopped, census before and after) and writes a stack file using it"
        ),
    )
    .at(mount_location(input.sources, name, m))
}

/// Durability settings that trade data for speed.
pub fn unsafe_settings(text: &str) -> Vec<(String, Severity)> {
    let mut out = Vec::new();
    let lower = text.to_ascii_lowercase();
    for (setting, sev) in [
        ("fsync", Severity::Error),
        ("full_page_writes", Severity::Error),
        ("synchronous_commit", Severity::Warning),
    ] {
        for (i, _) in lower.match_indices(setting) {
            let before = lower[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            let rest = lower[i + setting.len()..].trim_start();
            let Some(rest) = rest.strip_prefix('=').or_else(|| {
                // postgresql.conf also allows `fsync off`
                rest.starts_with(['o', 'f', 'n', '0', '\'']).then_some(rest)
            }) else {
                continue;
            };
            let value: String = rest
                .trim_start()
                .trim_start_matches(['\'', '"'])
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if matches!(value.as_str(), "off" | "false" | "0" | "no") {
                out.push((format!("{setting}={value}"), sev));
            }
        }
    }
    out
}

fn join_cmd(c: &Option<StringOrList>) -> String {
    match c {
        None => String::new(),
        Some(StringOrList::String(s)) => s.clone(),
        Some(StringOrList::List(l)) => l.join(" "),
    }
}

fn durability(
    input: &StaticInput,
    name: &str,
    svc: &Service,
    mounts: &[DeclaredMount],
    out: &mut Vec<Finding>,
) {
    let fix = "remove it: with fsync/full_page_writes off a crash or a kill of the container can corrupt the whole cluster, with synchronous_commit off the last transactions are lost; for faster tests use a throwaway database, not the one holding your data";
    for (field, text) in [
        ("command", join_cmd(&svc.command)),
        ("entrypoint", join_cmd(&svc.entrypoint)),
    ] {
        for (setting, sev) in unsafe_settings(&text) {
            let needle = setting.split('=').next().unwrap_or(&setting).to_string();
            out.push(
                Finding::new(
                    UNSAFE_DURABILITY,
                    sev,
                    name,
                    format!("{field}: {setting}"),
                    fix,
                )
                .at(locate(
                    input.sources,
                    &["services", name, field],
                    Some(&needle),
                )),
            );
        }
    }
    for m in mounts.iter().filter(|m| m.kind == VolumeType::Bind) {
        let Some(src) = &m.source else { continue };
        let Some(text) = input.configs.get(src) else {
            continue;
        };
        for (lineno, line) in text.lines().enumerate() {
            let code = line.split('#').next().unwrap_or("");
            for (setting, sev) in unsafe_settings(code) {
                out.push(
                    Finding::new(
                        UNSAFE_DURABILITY,
                        sev,
                        name,
                        format!(
                            "{setting} in mounted config {} (mounted at {})",
                            m.target, m.target
                        ),
                        fix,
                    )
                    .at(Some(Location {
                        file: src.clone(),
                        line: lineno + 1,
                    })),
                );
            }
        }
    }
}

fn stop_checks(input: &StaticInput, name: &str, svc: &Service, out: &mut Vec<Finding>) {
    let sources = input.sources;
    let grace = svc.stop_grace_period.as_deref();
    let secs = match grace {
        None => Some(10),
        Some(g) => parse_duration(g).ok().map(|d| d.as_secs()),
    };
    if let Some(s) = secs.filter(|s| *s < 30) {
        let evidence = match grace {
            None => {
                "no stop_grace_period: the engine kills postgres (SIGKILL) after the default 10s"
                    .to_string()
            }
            Some(g) => format!(
                "stop_grace_period: {g} ({s}s): the engine kills postgres (SIGKILL) after that"
            ),
        };
        out.push(
            Finding::new(
                STOP_GRACE_SHORT,
                Severity::Warning,
                name,
                format!("{evidence}; a checkpoint of a busy database can take longer, and a kill mid-shutdown means crash recovery (and lost unlogged tables) on the next start"),
                "set `stop_grace_period: 60s` (`nodus up` does)",
            )
            .at(locate(sources, &["services", name, "stop_grace_period"], None)
                .or_else(|| locate(sources, &["services", name], None))),
        );
    }
    if let Some(sig) = svc.stop_signal.as_deref() {
        let norm = signal_name(sig);
        if norm != "SIGINT" && norm != "SIGTERM" {
            let sev = if norm == "SIGKILL" || norm == "SIGQUIT" {
                Severity::Error
            } else {
                Severity::Warning
            };
            out.push(
                Finding::new(
                    STOP_SIGNAL,
                    sev,
                    name,
                    format!("stop_signal: {sig}: postgres shuts down cleanly only on SIGINT (fast) or SIGTERM (smart); {norm} means an immediate exit or a kill and crash recovery on the next start"),
                    "set `stop_signal: SIGINT` (`nodus up` does)",
                )
                .at(locate(sources, &["services", name, "stop_signal"], None)),
            );
        }
    }
}
