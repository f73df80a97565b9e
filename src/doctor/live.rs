//! Live checks through the Engine API: containers, logs, volumes and the postgres server itself.
//! Each check is skipped (not failed) when what it needs is not there; a failing query is logged
//! at debug level and the check skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::checks::kind_of;
use super::ids::*;
use super::probe::{self, human_size, VolumeContent};
use super::{dsn, Finding, Severity};
use crate::engine::{ContainerInfo, Engine, EngineError, Labels, MountKind, RunState};
use crate::guard::identity::looks_anonymous;
use crate::guard::pg::{self, PgEndpoint, PgSession};
use crate::labels;
use crate::project::Project;
use crate::stack::ServiceKind;

pub struct LiveInput<'a> {
    pub engine: &'a dyn Engine,
    pub project: &'a Project,
    /// The project name this stack had before (state dir memory), when it differs.
    pub previous_project: Option<String>,
}

/// The project's service containers (nodus' or compose's: only the compose project label is
/// required), by service.
pub async fn project_containers(
    engine: &dyn Engine,
    project: &str,
) -> Result<BTreeMap<String, ContainerInfo>, EngineError> {
    let mut filter = Labels::new();
    filter.insert(labels::PROJECT.to_string(), project.to_string());
    let mut out: BTreeMap<String, ContainerInfo> = BTreeMap::new();
    for c in engine.list_containers(&filter).await? {
        if c.labels.contains_key(labels::HELPER)
            || c.labels
                .get(labels::ONEOFF)
                .map(|v| v.eq_ignore_ascii_case("true"))
                == Some(true)
        {
            continue;
        }
        let Some(svc) = c.labels.get(labels::SERVICE).cloned() else {
            continue;
        };
        // Prefer a running one.
        let better = match out.get(&svc) {
            None => true,
            Some(old) => old.state != RunState::Running && c.state == RunState::Running,
        };
        if better {
            out.insert(svc, c);
        }
    }
    Ok(out)
}

pub async fn run(input: &LiveInput<'_>) -> Result<Vec<Finding>, EngineError> {
    let engine = input.engine;
    let project = input.project;
    let stack = &project.stack;
    let mut out = Vec::new();
    let containers = project_containers(engine, project.name()).await?;
    for (name, svc) in &stack.compose.services {
        if kind_of(stack, name, svc) != Some(ServiceKind::Postgres) {
            continue;
        }
        let Some(c) = containers.get(name) else {
            continue;
        };
        out.extend(unclean_shutdown(engine, name, c).await);
        if c.state == RunState::Running {
            out.extend(server_checks(input, name, c).await);
        }
        out.extend(init_scripts(input, name, c).await);
    }
    out.extend(volume_checks(input, &containers).await?);
    Ok(out)
}

// ---- container state and logs --------------------------------------------------------------------

const UNCLEAN_MARKERS: &[&str] = &[
    "not properly shut down",
    "automatic recovery in progress",
    "database system was interrupted",
    "was terminated by signal 9",
];

async fn unclean_shutdown(engine: &dyn Engine, name: &str, c: &ContainerInfo) -> Vec<Finding> {
    let mut out = Vec::new();
    let fix = "give postgres time to stop (`stop_grace_period: 60s`, `stop_signal: SIGINT`; `nodus up` sets both), stop the stack with `nodus down`/`nodus stop` (checkpoint first), and raise the memory limit if it was OOM-killed";
    if c.oom_killed {
        out.push(Finding::new(
            UNCLEAN_SHUTDOWN,
            Severity::Warning,
            name,
            format!(
                "container {}: OOMKilled=true (the kernel killed postgres for memory)",
                c.name
            ),
            fix,
        ));
    } else if c.state == RunState::Exited && c.exit_code == Some(137) {
        out.push(Finding::new(
            UNCLEAN_SHUTDOWN,
            Severity::Warning,
            name,
            format!("container {}: exited with code 137 (SIGKILL: killed at the end of the stop grace period or by hand)", c.name),
            fix,
        ));
    }
    if let Ok(logs) = engine.logs(&c.id, 2000).await {
        if let Some(line) = logs
            .lines()
            .rev()
            .find(|l| UNCLEAN_MARKERS.iter().any(|m| l.contains(m)))
        {
            out.push(Finding::new(
                UNCLEAN_SHUTDOWN,
                Severity::Warning,
                name,
                format!("log of {}: {}", c.name, line.trim()),
                fix,
            ));
        }
    }
    out
}

// ---- SQL ------------------------------------------------------------------------------------------

const RETRY: Duration = Duration::from_secs(3);

async fn query(s: &PgSession<'_>, sql: &str) -> Option<pg::Rows> {
    match s.query(sql).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::debug!("doctor query failed: {sql}: {}", e.message);
            None
        }
    }
}

fn first(rows: &Option<pg::Rows>) -> Option<String> {
    rows.as_ref()?.first()?.first()?.clone()
}

async fn server_checks(input: &LiveInput<'_>, name: &str, c: &ContainerInfo) -> Vec<Finding> {
    let engine = input.engine;
    let mut out = Vec::new();
    let Ok(mut target) = pg::target_for(engine, name, c).await else {
        return out;
    };
    let published = match &target.endpoint {
        PgEndpoint::Tcp { host, port } => Some((host.clone(), *port)),
        PgEndpoint::Exec => None,
    };
    let Ok((session, _db)) = pg::connect_maintenance(engine, &mut target, RETRY).await else {
        return out;
    };
    let sysid = first(
        &query(
            &session,
            "SELECT system_identifier::text FROM pg_control_system()",
        )
        .await,
    );
    let dbs: Vec<String> = query(
        &session,
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
    )
    .await
    .unwrap_or_default()
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();

    // db-name-drift: POSTGRES_DB and every DSN pointing at this service.
    if !dbs.is_empty() {
        let mut wanted: Vec<(String, String)> = Vec::new();
        if let Some(d) = c.env_var("POSTGRES_DB").filter(|d| !d.is_empty()) {
            wanted.push((d.to_string(), format!("POSTGRES_DB={d} of {name}")));
        }
        let stack = &input.project.stack;
        for (other, svc) in &stack.compose.services {
            for d in dsn::dsns_of(svc) {
                if d.database.is_empty() || dsn::resolve_server(stack, &d).0 != *name {
                    continue;
                }
                wanted.push((
                    d.database.clone(),
                    format!("{} of {other} names database {}", d.var, d.database),
                ));
            }
        }
        for (db, why) in wanted {
            if dbs.contains(&db) {
                continue;
            }
            if let Some(similar) = dbs.iter().find(|x| similar_names(&db, x)) {
                out.push(Finding::new(
                    DB_NAME_DRIFT,
                    Severity::Error,
                    name,
                    format!("{why}, but the cluster has no database {db}; it has {similar} (databases: {})", dbs.join(", ")),
                    format!("the data is probably in {similar}: point the configuration at {similar}, or rename it (`ALTER DATABASE {} RENAME TO {}`); POSTGRES_DB only takes effect when the data dir is first initialised", pg::quote_ident(similar), pg::quote_ident(&db)),
                ));
            }
        }
    }

    // idle-in-transaction
    if let Some(rows) = query(
        &session,
        "SELECT coalesce(datname,''), coalesce(usename,''), coalesce(application_name,''), coalesce(host(client_addr),'local'), extract(epoch from now()-state_change)::bigint::text FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND now()-state_change > interval '30 seconds' ORDER BY state_change",
    )
    .await
    {
        for r in rows {
            let f = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            out.push(Finding::new(
                IDLE_IN_TRANSACTION,
                Severity::Warning,
                name,
                format!("session of {} on {} from {} (application {:?}) idle in a transaction for {}s", f(1), f(0), f(3), f(2), f(4)),
                "commit or roll back in that client (it holds locks and blocks DDL and VACUUM; its work is lost when the container stops); set idle_in_transaction_session_timeout",
            ));
        }
    }

    // unlogged-tables, per database
    drop(session);
    for db in &dbs {
        let Ok(s) = pg::connect(engine, &target, db, RETRY).await else {
            continue;
        };
        if let Some(rows) = query(
            &s,
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relpersistence = 'u' AND c.relkind IN ('r','p') ORDER BY 1",
        )
        .await
        {
            let names: Vec<String> = rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect();
            if !names.is_empty() {
                out.push(Finding::new(
                    UNLOGGED_TABLES,
                    Severity::Warning,
                    name,
                    format!("database {db}: unlogged table(s) {}", names.join(", ")),
                    "unlogged tables are emptied by crash recovery (a kill, an OOM, a short stop grace); `ALTER TABLE ... SET LOGGED` unless losing their rows is fine",
                ));
            }
        }
    }

    // port-shadow: the published port must reach this very server.
    if let (Some((_, port)), Some(sysid)) = (published, sysid.as_ref()) {
        let mut via_host = target.clone();
        via_host.endpoint = PgEndpoint::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let mut via_exec = target.clone();
        via_exec.endpoint = PgEndpoint::Exec;
        let inside = match pg::connect_maintenance(engine, &mut via_exec, RETRY).await {
            Ok((s, _)) => first(
                &query(
                    &s,
                    "SELECT system_identifier::text FROM pg_control_system()",
                )
                .await,
            ),
            Err(_) => None,
        };
        let outside = match pg::connect(engine, &via_host, "postgres", RETRY).await {
            Ok(s) => first(
                &query(
                    &s,
                    "SELECT system_identifier::text FROM pg_control_system()",
                )
                .await,
            ),
            Err(_) => None,
        };
        if let (Some(i), Some(o)) = (inside.or(Some(sysid.clone())), outside) {
            if i != o {
                out.push(Finding::new(
                    PORT_SHADOW,
                    Severity::Error,
                    name,
                    format!("127.0.0.1:{port} (published for {}) answers with system_identifier {o}, but the container's server is {i}: another postgres on the host takes the connections", c.name),
                    "stop the host's postgres or publish the container on another port; clients on the host have been talking to the other server",
                ));
            }
        }
    }
    out
}

/// `nodus` vs `nodus_db`, `app` vs `app-db`, `shop` vs `shop1`: one contains the other or they
/// differ by at most two edits.
pub fn similar_names(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        s.to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect()
    };
    let (x, y) = (norm(a), norm(b));
    if x.is_empty() || y.is_empty() || x == y {
        return x == y && a != b;
    }
    if x.len() >= 3 && y.len() >= 3 && (x.contains(&y) || y.contains(&x)) {
        return true;
    }
    levenshtein(&x, &y) <= 2
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---- init scripts ---------------------------------------------------------------------------------

const INITDB: &str = "/docker-entrypoint-initdb.d";

/// Objects an init script creates: (kind, name).
pub fn created_objects(sql: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let lower = sql.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .filter(|w| !w.is_empty())
        .collect();
    let mut i = 0;
    while i + 2 < words.len() {
        if words[i] == "create" {
            let mut j = i + 1;
            if words[j] == "or" && words.get(j + 1) == Some(&"replace") {
                j += 2;
            }
            if words.get(j) == Some(&"unlogged") {
                j += 1;
            }
            let kind = match words.get(j).copied() {
                Some("table") => Some("table"),
                Some("database") => Some("database"),
                Some("role") | Some("user") => Some("role"),
                Some("schema") => Some("schema"),
                Some("extension") => Some("extension"),
                _ => None,
            };
            if let Some(kind) = kind {
                let mut k = j + 1;
                if words.get(k) == Some(&"if") {
                    k += 3;
                }
                if let Some(n) = words.get(k) {
                    let n = n.trim_matches('"').trim_end_matches([',', ')']);
                    if !n.is_empty() {
                        out.push((kind, n.to_string()));
                    }
                }
            }
        }
        i += 1;
    }
    out
}

async fn init_scripts(input: &LiveInput<'_>, name: &str, c: &ContainerInfo) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(svc) = input.project.stack.compose.services.get(name) else {
        return out;
    };
    let Some(m) = svc
        .volumes
        .iter()
        .find(|v| crate::stack::harden::is_under(&v.target, INITDB))
    else {
        return out;
    };
    // Initialised: the container has run before (or the log says the entrypoint skipped init).
    let logs = input.engine.logs(&c.id, 5000).await.unwrap_or_default();
    let skipped = logs.contains("Skipping initialization");
    let ran_before = c
        .started_at
        .as_deref()
        .is_some_and(|s| !s.starts_with("0001-"));
    if !(skipped || ran_before) {
        return out;
    }
    // Objects the scripts create (bind-mounted directory or file on this host).
    let mut objects: Vec<(&'static str, String)> = Vec::new();
    if let Some(src) = m
        .source
        .as_deref()
        .filter(|_| m.kind == crate::stack::model::VolumeType::Bind)
    {
        let p = std::path::Path::new(src);
        let files: Vec<std::path::PathBuf> = if p.is_dir() {
            let mut v: Vec<_> = std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            v.sort();
            v
        } else {
            vec![p.to_path_buf()]
        };
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "sql"))
        {
            if let Ok(t) = std::fs::read_to_string(f) {
                objects.extend(created_objects(&t));
            }
        }
    }
    let mut missing = Vec::new();
    if c.state == RunState::Running && !objects.is_empty() {
        if let Ok(mut target) = pg::target_for(input.engine, name, c).await {
            if let Ok((s, _)) = pg::connect_maintenance(input.engine, &mut target, RETRY).await {
                let db = target.auth.default_db.clone();
                let in_db = pg::connect(input.engine, &target, &db, RETRY).await.ok();
                for (kind, obj) in &objects {
                    let lit = pg::quote_literal(obj.rsplit('.').next().unwrap_or(obj));
                    let (sql, sess) = match *kind {
                        "database" => (format!("SELECT 1 FROM pg_database WHERE datname = {lit}"), Some(&s)),
                        "role" => (format!("SELECT 1 FROM pg_roles WHERE rolname = {lit}"), Some(&s)),
                        "schema" => (format!("SELECT 1 FROM pg_namespace WHERE nspname = {lit}"), in_db.as_ref()),
                        "extension" => (format!("SELECT 1 FROM pg_extension WHERE extname = {lit}"), in_db.as_ref()),
                        _ => (format!("SELECT 1 FROM pg_class WHERE relname = {lit} AND relkind IN ('r','p')"), in_db.as_ref()),
                    };
                    let Some(sess) = sess else { continue };
                    if let Some(rows) = query(sess, &sql).await {
                        if rows.is_empty() {
                            missing.push(format!("{kind} {obj}"));
                        }
                    }
                }
            }
        }
    }
    let src = m.source.clone().unwrap_or_else(|| "(anonymous)".into());
    let (sev, evidence) = if missing.is_empty() {
        (
            Severity::Info,
            format!("{src} is mounted at {}, but the data dir of {} is already initialised: the scripts do not run again", m.target, c.name),
        )
    } else {
        (
            Severity::Warning,
            format!("{src} is mounted at {}, the data dir of {} is already initialised, and what the scripts create is missing: {}", m.target, c.name, missing.join(", ")),
        )
    };
    out.push(Finding::new(
        INIT_SCRIPTS_SKIPPED,
        sev,
        name,
        evidence,
        "run the scripts by hand (`docker exec -i <container> psql -U postgres < script.sql`) or declare the databases/roles under x-nodus.services.<name> (nodus provisions them on every up); init scripts run only on an empty data dir",
    ));
    out
}

// ---- volumes --------------------------------------------------------------------------------------

fn age(created: Option<&str>) -> String {
    let Some(c) = created else {
        return "age unknown".into();
    };
    match chrono::DateTime::parse_from_rfc3339(c) {
        Ok(t) => {
            let d = chrono::Utc::now().signed_duration_since(t);
            let h = d.num_hours();
            let when = if h >= 48 {
                format!("{} days ago", h / 24)
            } else if h >= 1 {
                format!("{h} h ago")
            } else {
                format!("{} min ago", d.num_minutes().max(0))
            };
            format!("created {c} ({when})")
        }
        Err(_) => format!("created {c}"),
    }
}

fn describe(content: &VolumeContent) -> String {
    let size = content
        .size_kib
        .map(human_size)
        .unwrap_or_else(|| "size unknown".into());
    match (&content.pg_version, content.pg_subdir.as_deref()) {
        (Some(v), Some("")) | (Some(v), None) => format!("a PostgreSQL {v} data directory, {size}"),
        (Some(v), Some(sub)) => format!("a PostgreSQL {v} data directory in {sub}/, {size}"),
        _ => size,
    }
}

async fn volume_checks(
    input: &LiveInput<'_>,
    containers: &BTreeMap<String, ContainerInfo>,
) -> Result<Vec<Finding>, EngineError> {
    let engine = input.engine;
    let project = input.project;
    let stack = &project.stack;
    let name = project.name();
    let mut out = Vec::new();
    // An image to probe with: the stack's postgres image, else any of its images present here.
    let mut probe_image = None;
    let mut pg_services: Vec<&String> = Vec::new();
    for (svc_name, svc) in &stack.compose.services {
        let kind = kind_of(stack, svc_name, svc);
        if kind == Some(ServiceKind::Postgres) {
            pg_services.push(svc_name);
        }
        if let Some(img) = svc.image.as_deref() {
            let wanted = probe_image.is_none() || kind == Some(ServiceKind::Postgres);
            if wanted && engine.inspect_image(img).await?.is_some() {
                probe_image = Some(img.to_string());
            }
        }
    }
    if pg_services.is_empty() {
        return Ok(out);
    }
    let Some(image) = probe_image.or_else(|| containers.values().next().map(|c| c.image.clone()))
    else {
        return Ok(out);
    };

    let volumes = engine.list_volumes(&Labels::new()).await?;
    let all = engine.list_containers(&Labels::new()).await?;
    let used: BTreeSet<String> = all
        .iter()
        .flat_map(|c| c.mounts.iter())
        .filter(|m| m.kind == MountKind::Volume)
        .map(|m| m.name_or_source.clone())
        .collect();
    // The keys this stack mounts (as written and as hardened).
    let mut keys: BTreeSet<String> = stack.compose.volumes.keys().cloned().collect();
    keys.extend(project.hardened.compose.volumes.keys().cloned());
    let ours = |v: &crate::engine::VolumeInfo| {
        v.labels.get(labels::PROJECT).map(String::as_str) == Some(name)
    };

    // project-rename candidates: same volume key, another project.
    let renamed: Vec<&crate::engine::VolumeInfo> = volumes
        .iter()
        .filter(|v| {
            v.labels
                .get(labels::VOLUME)
                .is_some_and(|k| keys.contains(k))
                && v.labels.get(labels::PROJECT).is_some_and(|p| p != name)
        })
        .collect();
    // Candidates this stack is known to have used (its previous project name, volumes in its
    // ledger) beat volumes of unrelated projects that happen to use the same key.
    let known: BTreeSet<String> =
        crate::guard::ledger::Ledger::peek(&project.state.ledger_path(name))
            .map(|l| {
                l.entries()
                    .iter()
                    .flat_map(|e| e.services.values())
                    .filter_map(|i| i.volume.as_ref().map(|v| v.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
    let related = |v: &crate::engine::VolumeInfo| {
        known.contains(&v.name)
            || input
                .previous_project
                .as_deref()
                .is_some_and(|p| v.labels.get(labels::PROJECT).map(String::as_str) == Some(p))
    };
    let renamed: Vec<&crate::engine::VolumeInfo> = if renamed.iter().any(|v| related(v)) {
        renamed.into_iter().filter(|v| related(v)).collect()
    } else {
        renamed
    };
    // dangling: no container uses it; not this project's declared volume.
    let dangling: Vec<&crate::engine::VolumeInfo> = volumes
        .iter()
        .filter(|v| !used.contains(&v.name))
        .filter(|v| {
            !(ours(v)
                && v.labels
                    .get(labels::VOLUME)
                    .is_some_and(|k| keys.contains(k)))
        })
        .filter(|v| {
            ours(v)
                || looks_anonymous(&v.name)
                || input
                    .previous_project
                    .as_deref()
                    .is_some_and(|p| v.labels.get(labels::PROJECT).map(String::as_str) == Some(p))
        })
        .filter(|v| !renamed.iter().any(|r| r.name == v.name))
        .take(400)
        .collect();
    let mut to_probe: Vec<String> = renamed
        .iter()
        .chain(dangling.iter())
        .map(|v| v.name.clone())
        .collect();
    to_probe.dedup();
    if to_probe.is_empty() {
        return Ok(out);
    }
    let contents = probe::probe(engine, name, &image, &to_probe).await?;

    let pg_target = pg_services.first().map(|s| s.as_str()).unwrap_or("");
    for v in renamed {
        let Some(c) = contents.get(&v.name).filter(|c| c.pg_version.is_some()) else {
            continue;
        };
        let other = v.labels.get(labels::PROJECT).cloned().unwrap_or_default();
        let key = v.labels.get(labels::VOLUME).cloned().unwrap_or_default();
        let ours_name = project
            .hardened
            .compose
            .volumes
            .get(&key)
            .and_then(|d| d.name.clone())
            .unwrap_or_else(|| format!("{name}_{key}"));
        let svc = project
            .hardened
            .stateful
            .iter()
            .find(|s| s.volume_key.as_deref() == Some(key.as_str()))
            .map(|s| s.service.as_str())
            .unwrap_or(pg_target);
        out.push(Finding::new(
            PROJECT_RENAME,
            Severity::Warning,
            svc,
            format!(
                "volume {} (project {other}, key {key}) holds {}, {}; under project {name} this stack uses {ours_name} instead",
                v.name,
                describe(c),
                age(v.created_at.as_deref())
            ),
            format!(
                "the \"lost\" data is probably in {}: run with `-p {other}` (or set `name: {other}` in the stack file) to use it again, or copy it over with the stack stopped: `docker run --rm -v {}:/from:ro -v {ours_name}:/to {image} sh -c 'cp -a /from/. /to/'`",
                v.name, v.name
            ),
        ));
    }
    for v in dangling {
        let Some(c) = contents.get(&v.name).filter(|c| c.pg_version.is_some()) else {
            continue;
        };
        let whose = match v.labels.get(labels::PROJECT) {
            Some(p) if p == name => format!(
                "this project's volume{}",
                v.labels
                    .get(labels::VOLUME)
                    .map(|k| format!(" (key {k}, not mounted by the stack now)"))
                    .unwrap_or_default()
            ),
            Some(p) => format!("volume of project {p}"),
            None => "unlabelled (anonymous) volume: could be any project's".into(),
        };
        out.push(Finding::new(
            DANGLING_PGDATA_VOLUME,
            Severity::Warning,
            pg_target,
            format!(
                "volume {} is used by no container and holds {}, {}; {whose}",
                v.name,
                describe(c),
                age(v.created_at.as_deref())
            ),
            format!(
                "recoverable data: look at it with `docker run --rm -v {}:/var/lib/postgresql/data {image}` (or copy it into the service's named volume with the stack stopped: `docker run --rm -v {}:/from:ro -v <volume>:/to {image} sh -c 'cp -a /from/. /to/'`); do not prune volumes until you know",
                v.name, v.name
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeEngine;

    #[test]
    fn similar_database_names() {
        assert!(similar_names("nodus", "nodus_db"));
        assert!(similar_names("app", "app-db"));
        assert!(similar_names("shop", "shop1"));
        assert!(!similar_names("app", "langfuse_db"));
        assert!(!similar_names("app", "app"));
    }

    #[test]
    fn objects_created_by_init_scripts() {
        let sql = "CREATE DATABASE langfuse;\ncreate table if not exists public.items (id int);\nCREATE UNLOGGED TABLE cache(k text);\nCREATE ROLE app LOGIN;\nCREATE EXTENSION IF NOT EXISTS pg_trgm;\nCREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql;";
        let got = created_objects(sql);
        assert_eq!(
            got,
            vec![
                ("database", "langfuse".to_string()),
                ("table", "public.items".to_string()),
                ("table", "cache".to_string()),
                ("role", "app".to_string()),
                ("extension", "pg_trgm".to_string()),
            ]
        );
    }

    #[tokio::test]
    async fn unclean_shutdown_from_exit_code_and_log() {
        let e = FakeEngine::new();
        e.add_container("p-db-1", "postgres:16", &Labels::new(), RunState::Running);
        e.set_state("p-db-1", RunState::Exited, Some(137));
        e.push_log(
            "p-db-1",
            "LOG:  database system was not properly shut down; automatic recovery in progress",
        );
        let c = e.inspect_container("p-db-1").await.unwrap();
        let f = unclean_shutdown(&e, "db", &c).await;
        assert_eq!(f.len(), 2, "{f:#?}");
        assert!(f.iter().all(|f| f.id == UNCLEAN_SHUTDOWN));
        assert!(f[0].evidence.contains("137"));
        assert!(f[1].evidence.contains("not properly shut down"));
        // A clean stop: nothing.
        let e = FakeEngine::new();
        e.add_container("p-db-1", "postgres:16", &Labels::new(), RunState::Exited);
        e.push_log("p-db-1", "LOG:  database system is shut down");
        let c = e.inspect_container("p-db-1").await.unwrap();
        assert!(unclean_shutdown(&e, "db", &c).await.is_empty());
    }
}
