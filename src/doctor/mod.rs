//! `nodus doctor`: names the known persistence hazards of a stack before they bite, and explains a
//! loss after it happened.
//!
//! - `checks.rs` static checks, pure functions over the merged compose model *as the user wrote
//!   it* (not nodus' hardened output), with file:line evidence; `dsn.rs` database URLs and
//!   destructive schema syncs;
//! - `live.rs` checks through the [`crate::engine::Engine`] when the engine is reachable and the
//!   project has containers/volumes (`probe.rs` looks inside volumes with a short-lived, labelled,
//!   read-only helper container);
//! - `last_loss.rs` `--last-loss`: the ledger entries around the most recent loss, and `DROP`s from
//!   the DDL log attributed to containers;
//! - `sarif.rs` SARIF 2.1.0 output.
//!
//! Every finding has a stable id (see [`ids`]), a severity, the service, the evidence and the fix.

pub mod checks;
pub mod dsn;
pub mod last_loss;
pub mod live;
pub mod probe;
pub mod sarif;

use serde::Serialize;

use crate::stack::locate::Location;

/// The stable finding ids (documented in the README; never renamed).
pub mod ids {
    pub const PGDATA_ANONYMOUS: &str = "pgdata-anonymous";
    pub const PGDATA_CONTAINER_LAYER: &str = "pgdata-container-layer";
    pub const PGDATA_PARENT_MOUNT: &str = "pgdata-parent-mount";
    pub const PG18_LAYOUT: &str = "pg18-layout";
    pub const FLOATING_DB_TAG: &str = "floating-db-tag";
    pub const TMPFS_DATA: &str = "tmpfs-data";
    pub const UNSAFE_DURABILITY: &str = "unsafe-durability";
    pub const STOP_GRACE_SHORT: &str = "stop-grace-short";
    pub const STOP_SIGNAL: &str = "stop-signal";
    pub const BIND_MOUNT_DATA: &str = "bind-mount-data";
    pub const SHARED_DB_SCHEMA_SYNC: &str = "shared-db-schema-sync";
    pub const DB_NAME_DRIFT: &str = "db-name-drift";
    pub const INIT_SCRIPTS_SKIPPED: &str = "init-scripts-skipped";
    pub const PROJECT_RENAME: &str = "project-rename";
    pub const DANGLING_PGDATA_VOLUME: &str = "dangling-pgdata-volume";
    pub const UNCLEAN_SHUTDOWN: &str = "unclean-shutdown";
    pub const IDLE_IN_TRANSACTION: &str = "idle-in-transaction";
    pub const UNLOGGED_TABLES: &str = "unlogged-tables";
    pub const PORT_SHADOW: &str = "port-shadow";

    /// Every id with a one-line description (SARIF rules, README).
    pub const ALL: &[(&str, &str)] = &[
        (PGDATA_ANONYMOUS, "PGDATA is on the image's anonymous VOLUME: a new, empty one after every down/up"),
        (PGDATA_CONTAINER_LAYER, "PGDATA is outside every mount and outside the image's VOLUME: data lives in the container layer"),
        (PGDATA_PARENT_MOUNT, "a volume at a parent of PGDATA leaves PGDATA on the image's anonymous VOLUME"),
        (PG18_LAYOUT, "PostgreSQL 18+ keeps data under /var/lib/postgresql/18/docker, not /var/lib/postgresql/data"),
        (FLOATING_DB_TAG, "database image tag without a major version: the next pull can change the data layout"),
        (TMPFS_DATA, "a tmpfs mount over a data directory: everything is lost at every stop"),
        (UNSAFE_DURABILITY, "fsync, synchronous_commit or full_page_writes switched off"),
        (STOP_GRACE_SHORT, "postgres stop grace period below 30 s: killed mid-shutdown"),
        (STOP_SIGNAL, "postgres stop signal other than SIGINT/SIGTERM"),
        (BIND_MOUNT_DATA, "data directory on a bind mount"),
        (SHARED_DB_SCHEMA_SYNC, "two services share a database and one runs a destructive schema sync"),
        (DB_NAME_DRIFT, "a configured database name does not exist while a similar one does"),
        (INIT_SCRIPTS_SKIPPED, "init scripts mounted on an initialised data dir do not run again"),
        (PROJECT_RENAME, "a volume with the same key under another project name holds data"),
        (DANGLING_PGDATA_VOLUME, "a volume no container uses holds a PostgreSQL data directory"),
        (UNCLEAN_SHUTDOWN, "postgres was not shut down cleanly (killed, OOM, crash recovery)"),
        (IDLE_IN_TRANSACTION, "sessions idle in a transaction (hold locks, block DDL, lose work on kill)"),
        (UNLOGGED_TABLES, "unlogged tables are emptied by crash recovery"),
        (PORT_SHADOW, "the published postgres port is answered by another server"),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    /// The service it concerns ("" for the stack as a whole).
    pub service: String,
    /// The exact key, mount, env var or log line (with file:line when it comes from the file).
    pub evidence: String,
    pub fix: String,
    /// Where in the stack files, when it comes from them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

impl Finding {
    pub fn new(
        id: &'static str,
        severity: Severity,
        service: &str,
        evidence: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            id,
            severity,
            service: service.to_string(),
            evidence: evidence.into(),
            fix: fix.into(),
            location: None,
        }
    }

    /// Adds the file position, also in front of the evidence.
    pub fn at(mut self, loc: Option<Location>) -> Finding {
        if let Some(l) = &loc {
            self.evidence = format!("{l}: {}", self.evidence);
        }
        self.location = loc;
        self
    }
}

/// What `doctor` found, in a stable order (service, severity, id).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

/// Finding ids that nodus' hardening (`x-nodus.harden: true`, the default) fixes in the generated
/// compose file it runs.
pub const FIXED_BY_HARDENING: &[&str] = &[
    "pgdata-anonymous",
    "pgdata-container-layer",
    "pgdata-parent-mount",
    "stop-grace-short",
    "stop-signal",
];

impl Report {
    pub fn push_all(&mut self, f: impl IntoIterator<Item = Finding>) {
        self.findings.extend(f);
    }

    pub fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            (a.service.as_str(), a.severity, a.id).cmp(&(b.service.as_str(), b.severity, b.id))
        });
        self.findings.dedup();
    }

    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    pub fn has(&self, id: &str) -> bool {
        self.findings.iter().any(|f| f.id == id)
    }

    /// The text report, grouped by service.
    pub fn render_text(&self, paint: &dyn Fn(Severity, &str) -> String) -> String {
        let mut out = String::new();
        if self.findings.is_empty() {
            out.push_str("no persistence hazards found\n");
            return out;
        }
        let mut current: Option<&str> = None;
        for f in &self.findings {
            if current != Some(f.service.as_str()) {
                if current.is_some() {
                    out.push('\n');
                }
                let title = if f.service.is_empty() {
                    "(stack)".to_string()
                } else {
                    f.service.clone()
                };
                out.push_str(&format!("{title}\n"));
                current = Some(f.service.as_str());
            }
            out.push_str(&format!(
                "  {} {}\n      evidence: {}\n      fix: {}\n",
                paint(f.severity, f.severity.as_str()),
                f.id,
                f.evidence,
                f.fix
            ));
        }
        out.push_str(&format!(
            "\n{} error(s), {} warning(s), {} info\n",
            self.errors(),
            self.count(Severity::Warning),
            self.count(Severity::Info)
        ));
        out
    }

    /// Drops the findings nodus' own hardening fixes in what it runs (a named volume at the data
    /// directory, SIGINT and a 60 s grace for postgres): `nodus up` on a hardened stack only needs
    /// to hear about the hazards it cannot fix. `nodus doctor` still reports them all (the file as
    /// written has them, and plain `docker compose` would meet them). Returns how many were dropped.
    pub fn without_hardened(&mut self, hardened: impl Fn(&str) -> bool) -> usize {
        let before = self.findings.len();
        self.findings
            .retain(|f| !(FIXED_BY_HARDENING.contains(&f.id) && hardened(&f.service)));
        before - self.findings.len()
    }

    /// The short block `nodus up` prints: errors and warnings, one line each.
    pub fn short_block(&self) -> Vec<String> {
        self.findings
            .iter()
            .filter(|f| f.severity != Severity::Info)
            .map(|f| {
                let svc = if f.service.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", f.service)
                };
                let at = f
                    .location
                    .as_ref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                format!("{:<7} {svc}{}{at}", f.severity.as_str(), f.id)
            })
            .collect()
    }
}

/// Image configs for the stack's images, when an engine is at hand (images not present locally
/// are left out: their official layout is assumed).
pub async fn image_infos(
    engine: Option<&dyn crate::engine::Engine>,
    stack: &crate::stack::Stack,
) -> std::collections::BTreeMap<String, crate::engine::ImageInfo> {
    let mut out = std::collections::BTreeMap::new();
    let Some(engine) = engine else {
        return out;
    };
    for svc in stack.compose.services.values() {
        let Some(img) = svc.image.as_deref() else {
            continue;
        };
        if out.contains_key(img) {
            continue;
        }
        if let Ok(Some(info)) = engine.inspect_image(img).await {
            out.insert(img.to_string(), info);
        }
    }
    out
}

/// Texts of small files bind-mounted into postgres services (config files the durability check
/// reads), by host path.
pub fn mounted_configs(stack: &crate::stack::Stack) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for (name, svc) in &stack.compose.services {
        if checks::kind_of(stack, name, svc) != Some(crate::stack::ServiceKind::Postgres) {
            continue;
        }
        for v in &svc.volumes {
            let Some(src) = v.source.as_deref() else {
                continue;
            };
            if v.kind != crate::stack::model::VolumeType::Bind || !v.target.ends_with(".conf") {
                continue;
            }
            let p = std::path::Path::new(src);
            if p.metadata().is_ok_and(|m| m.is_file() && m.len() < 1 << 20) {
                if let Ok(t) = std::fs::read_to_string(p) {
                    out.insert(src.to_string(), t);
                }
            }
        }
    }
    out
}

/// The static checks of a loaded stack (what `nodus up` prints before starting).
pub async fn static_report(
    engine: Option<&dyn crate::engine::Engine>,
    stack: &crate::stack::Stack,
    sources: &[crate::stack::SourceFile],
) -> Report {
    let images = image_infos(engine, stack).await;
    let configs = mounted_configs(stack);
    let mut r = Report::default();
    r.push_all(checks::run(&checks::StaticInput {
        stack,
        sources,
        images: &images,
        configs: &configs,
    }));
    r.sort();
    r
}

#[cfg(test)]
mod tests;
