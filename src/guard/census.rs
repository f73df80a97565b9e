//! What every database holds: postgres tables with exact row counts, redis keys per db, qdrant
//! collections and points.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use super::pg::{self, PgSession};
use crate::engine::{ContainerInfo, Engine, EngineError, RunState};
use crate::lifecycle::RunningService;
use crate::stack::{ServiceKind, StatefulService};

#[derive(Debug, thiserror::Error)]
pub enum CensusError {
    #[error("service {service} (container {container}): {message}")]
    Failed {
        service: String,
        container: String,
        message: String,
    },
}

/// A census of several services at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Census {
    /// RFC 3339.
    pub taken_at: String,
    pub services: BTreeMap<String, ServiceCensus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ServiceCensus {
    Postgres(PgCensus),
    Redis(RedisCensus),
    Qdrant(QdrantCensus),
    /// The service could not be counted (not running, port unreachable...).
    Unavailable {
        reason: String,
    },
}

impl ServiceCensus {
    pub fn is_available(&self) -> bool {
        !matches!(self, ServiceCensus::Unavailable { .. })
    }
    pub fn kind_name(&self) -> &'static str {
        match self {
            ServiceCensus::Postgres(_) => "postgres",
            ServiceCensus::Redis(_) => "redis",
            ServiceCensus::Qdrant(_) => "qdrant",
            ServiceCensus::Unavailable { .. } => "unavailable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PgCensus {
    /// `pg_control_system().system_identifier`: changes only when a new cluster is initialised.
    pub system_identifier: String,
    /// Databases that accept connections (templates excluded).
    pub databases: BTreeMap<String, DbCensus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DbCensus {
    /// Keyed by `schema.table`.
    pub tables: BTreeMap<String, TableCensus>,
    /// Partitioned tables (relkind `p`) among `tables`: their rows are those of their partitions,
    /// which are tables too; totals skip them so rows are not counted twice.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub partitioned: std::collections::BTreeSet<String>,
}

impl DbCensus {
    /// Rows of the database (partitioned parents not counted twice).
    pub fn rows(&self) -> i64 {
        self.tables
            .iter()
            .filter(|(k, _)| !self.partitioned.contains(*k))
            .map(|(_, t)| t.rows)
            .sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    Permanent,
    Unlogged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableCensus {
    pub persistence: Persistence,
    pub rows: i64,
    /// True when `rows` is a planner estimate (`--fast`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RedisCensus {
    /// Keys per logical database (db index → key count).
    #[serde(with = "db_index_keys")]
    pub keys: BTreeMap<u32, u64>,
    /// Keys with a TTL per logical database (they may legitimately vanish).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "db_index_keys"
    )]
    pub expires: BTreeMap<u32, u64>,
}

/// Integer map keys inside the internally tagged [`ServiceCensus`]: serde buffers the content and
/// then cannot parse `"0"` as a u32, so the keys go through strings explicitly.
mod db_index_keys {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(m: &BTreeMap<u32, u64>, s: S) -> Result<S::Ok, S::Error> {
        m.iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<BTreeMap<String, u64>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, u64>, D::Error> {
        let m = BTreeMap::<String, u64>::deserialize(d)?;
        m.into_iter()
            .map(|(k, v)| {
                k.parse::<u32>()
                    .map(|k| (k, v))
                    .map_err(|_| serde::de::Error::custom(format!("bad redis db index {k:?}")))
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QdrantCensus {
    /// Collection → points.
    pub collections: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CensusOptions {
    /// Planner estimates instead of `count(*)`.
    pub fast: bool,
    /// How long to retry connecting (the healthcheck may pass before the published port accepts
    /// connections). Zero = the default of 10s.
    pub connect_retry: Duration,
}

impl CensusOptions {
    fn retry(&self) -> Duration {
        if self.connect_retry.is_zero() {
            Duration::from_secs(10)
        } else {
            self.connect_retry
        }
    }
}

/// Kinds nodus can count.
pub fn supports(kind: ServiceKind) -> bool {
    matches!(
        kind,
        ServiceKind::Postgres | ServiceKind::Redis | ServiceKind::Qdrant
    )
}

/// Census of one running stateful service.
pub async fn take_service(
    engine: &dyn Engine,
    svc: &RunningService,
    opts: &CensusOptions,
) -> Result<ServiceCensus, CensusError> {
    let fail = |message: String| CensusError::Failed {
        service: svc.service.clone(),
        container: svc.container.name.clone(),
        message,
    };
    let Some(st) = &svc.stateful else {
        return Ok(ServiceCensus::Unavailable {
            reason: "not a stateful service".into(),
        });
    };
    if svc.container.state != RunState::Running {
        return Ok(ServiceCensus::Unavailable {
            reason: format!("container {} is not running", svc.container.name),
        });
    }
    match st.kind {
        ServiceKind::Postgres => pg_census(engine, &svc.service, &svc.container, opts)
            .await
            .map(ServiceCensus::Postgres)
            .map_err(fail),
        ServiceKind::Redis => redis_census(engine, &svc.container)
            .await
            .map(ServiceCensus::Redis)
            .map_err(fail),
        ServiceKind::Qdrant => qdrant_census(engine, &svc.container).await.map_err(fail),
        other => Ok(ServiceCensus::Unavailable {
            reason: format!("nodus cannot count {} services yet", kind_str(other)),
        }),
    }
}

pub fn kind_str(k: ServiceKind) -> &'static str {
    match k {
        ServiceKind::Postgres => "postgres",
        ServiceKind::Redis => "redis",
        ServiceKind::Qdrant => "qdrant",
        ServiceKind::Mysql => "mysql",
        ServiceKind::Mariadb => "mariadb",
        ServiceKind::Mongo => "mongo",
        ServiceKind::Other => "other",
    }
}

/// Census of several running services at once (concurrently). A service that cannot be counted is
/// recorded as `Unavailable` with the reason; services of kinds nodus cannot count are left out.
pub async fn take_many(
    engine: &dyn Engine,
    services: &[RunningService],
    opts: &CensusOptions,
) -> Census {
    let countable: Vec<&RunningService> = services
        .iter()
        .filter(|s| s.stateful.as_ref().is_some_and(|st| supports(st.kind)))
        .collect();
    let results = join_all(countable.iter().map(|s| take_service(engine, s, opts))).await;
    let mut census = Census {
        taken_at: now_rfc3339(),
        services: BTreeMap::new(),
    };
    for (svc, r) in countable.into_iter().zip(results) {
        let c = r.unwrap_or_else(|e| ServiceCensus::Unavailable {
            reason: e.to_string(),
        });
        census.services.insert(svc.service.clone(), c);
    }
    census
}

/// The stack's stateful services and their running container (None when not running). Only
/// containers carrying the project's labels are considered.
pub async fn running_stateful(
    engine: &dyn Engine,
    project: &str,
    stateful: &[StatefulService],
) -> Result<BTreeMap<String, Option<RunningService>>, EngineError> {
    let containers = engine
        .list_containers(&crate::labels::project_filter(project))
        .await?;
    let mut out = BTreeMap::new();
    for st in stateful {
        let found = containers.iter().find(|c| {
            c.state == RunState::Running
                && crate::labels::owned_by(&c.labels, project)
                && c.labels.get(crate::labels::SERVICE) == Some(&st.service)
                && !c.labels.contains_key(crate::labels::HELPER)
                && c.labels
                    .get(crate::labels::ONEOFF)
                    .map(|v| v.eq_ignore_ascii_case("true"))
                    != Some(true)
        });
        let rs = match found {
            // The listing may not carry env/ports/mounts: inspect for the full picture.
            Some(c) => Some(RunningService {
                service: st.service.clone(),
                container: engine.inspect_container(&c.id).await?,
                stateful: Some(st.clone()),
            }),
            None => None,
        };
        out.insert(st.service.clone(), rs);
    }
    Ok(out)
}

/// Census of the whole stack (or of `only` these services): every countable stateful service,
/// `Unavailable` for those not running.
pub async fn take(
    engine: &dyn Engine,
    project: &str,
    stateful: &[StatefulService],
    only: &[String],
    opts: &CensusOptions,
) -> Result<Census, EngineError> {
    let selected: Vec<StatefulService> = stateful
        .iter()
        .filter(|s| supports(s.kind) && (only.is_empty() || only.contains(&s.service)))
        .cloned()
        .collect();
    let running = running_stateful(engine, project, &selected).await?;
    let live: Vec<RunningService> = running.values().flatten().cloned().collect();
    let mut census = take_many(engine, &live, opts).await;
    for (name, rs) in &running {
        if rs.is_none() {
            census.services.insert(
                name.clone(),
                ServiceCensus::Unavailable {
                    reason: "not running".into(),
                },
            );
        }
    }
    Ok(census)
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------------------------
// postgres

async fn pg_census(
    engine: &dyn Engine,
    service: &str,
    container: &ContainerInfo,
    opts: &CensusOptions,
) -> Result<PgCensus, String> {
    let mut target = pg::target_for(engine, service, container)
        .await
        .map_err(|e| e.message)?;
    let (maint, maint_db) = pg::connect_maintenance(engine, &mut target, opts.retry())
        .await
        .map_err(|e| e.message)?;
    let rows = match maint.query(pg::CLUSTER_QUERY).await {
        Ok(rows) => rows,
        // pg_control_system() not allowed for this role: count without the cluster identity.
        Err(e) if e.code.as_deref() == Some("42501") => {
            tracing::debug!("{service}: {}", e.message);
            maint
                .query(pg::DATABASES_QUERY)
                .await
                .map_err(|e| e.message)?
        }
        Err(e) => return Err(e.message),
    };
    let system_identifier = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    let dbs: Vec<String> = rows
        .into_iter()
        .filter_map(|r| r.get(1).cloned().flatten())
        .collect();

    let target = &target;
    let maint = &maint;
    let maint_db = maint_db.as_str();
    let per_db = dbs.iter().map(|db| async move {
        let t0 = std::time::Instant::now();
        let r = if db == maint_db {
            census_db(maint, opts.fast).await
        } else {
            match pg::connect(engine, target, db, opts.retry()).await {
                Ok(s) => {
                    let t1 = t0.elapsed();
                    let r = census_db(&s, opts.fast).await;
                    tracing::debug!(
                        "census {service}/{db}: connect {t1:?}, total {:?}",
                        t0.elapsed()
                    );
                    r
                }
                Err(e) => Err(e),
            }
        };
        (db.clone(), r)
    });
    let mut databases = BTreeMap::new();
    for (db, r) in join_all(per_db).await {
        match r {
            Ok(c) => {
                databases.insert(db, c);
            }
            // Dropped between listing and connecting: it is gone, the census says so.
            Err(e) if e.is_missing_database() => {}
            Err(e) => return Err(format!("database {db}: {}", e.message)),
        }
    }
    Ok(PgCensus {
        system_identifier,
        databases,
    })
}

/// How many tables one count statement covers.
const COUNT_BATCH: usize = 400;

struct TableRow {
    schema: String,
    name: String,
    persistence: Persistence,
    partitioned: bool,
    estimate: i64,
}

fn parse_table_rows(rows: pg::Rows) -> Result<Vec<TableRow>, pg::PgError> {
    rows.into_iter()
        .map(|r| {
            let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            Ok(TableRow {
                schema: get(0),
                name: get(1),
                persistence: if get(2) == "u" {
                    Persistence::Unlogged
                } else {
                    Persistence::Permanent
                },
                partitioned: get(3) == "p",
                estimate: get(4)
                    .parse()
                    .map_err(|_| pg::PgError::new(format!("bad row estimate {:?}", get(4))))?,
            })
        })
        .collect()
}

async fn census_db(s: &PgSession<'_>, fast: bool) -> Result<DbCensus, pg::PgError> {
    if !fast && matches!(s, PgSession::Tcp(_)) {
        // JIT-compiling dozens of count(*) aggregates costs more than it saves (and `jit` does
        // not exist before PostgreSQL 11: ignore the error). Over exec every statement is its own
        // session, so there it would only cost time.
        let _ = s.execute("SET jit = off").await;
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tables = parse_table_rows(s.query(pg::TABLES_QUERY).await?)?;
        let counts = if fast {
            Ok(tables.iter().map(|t| t.estimate.max(0)).collect::<Vec<_>>())
        } else {
            exact_counts(s, &tables).await
        };
        match counts {
            Ok(counts) => {
                let mut db = DbCensus::default();
                for (t, rows) in tables.into_iter().zip(counts) {
                    let key = format!("{}.{}", t.schema, t.name);
                    if t.partitioned {
                        db.partitioned.insert(key.clone());
                    }
                    db.tables.insert(
                        key,
                        TableCensus {
                            persistence: t.persistence,
                            rows,
                            estimated: fast,
                        },
                    );
                }
                return Ok(db);
            }
            // A table was dropped between listing and counting: list again.
            Err(e) if e.code.as_deref() == Some("42P01") && attempt < 3 => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn exact_counts(s: &PgSession<'_>, tables: &[TableRow]) -> Result<Vec<i64>, pg::PgError> {
    let mut counts = vec![0i64; tables.len()];
    for (chunk_no, chunk) in tables.chunks(COUNT_BATCH).enumerate() {
        let names: Vec<(String, String)> = chunk
            .iter()
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect();
        let Some(sql) = pg::count_query(&names) else {
            continue;
        };
        for row in s.query(&sql).await? {
            let idx: usize = row
                .first()
                .cloned()
                .flatten()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| pg::PgError::new("bad count row"))?;
            let n: i64 = row
                .get(1)
                .cloned()
                .flatten()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| pg::PgError::new("bad count value"))?;
            if let Some(slot) = counts.get_mut(chunk_no * COUNT_BATCH + idx) {
                *slot = n;
            }
        }
    }
    Ok(counts)
}

// ---------------------------------------------------------------------------------------------
// redis

async fn redis_census(engine: &dyn Engine, c: &ContainerInfo) -> Result<RedisCensus, String> {
    // Over the published port when it answers as redis: one round trip, no exec.
    if let Some((host, port)) = super::redis::endpoint(engine, c) {
        let password = super::redis::password(c);
        match super::redis::run(&host, port, password, &[&["INFO", "keyspace"]]).await {
            Ok(replies) => match replies.last() {
                Some(super::redis::Reply::Bulk(Some(text))) => return parse_redis_keyspace(text),
                other => tracing::debug!(
                    "redis {}: INFO keyspace over TCP answered {other:?}; using redis-cli in the container",
                    c.name
                ),
            },
            Err(e) => tracing::debug!(
                "redis {}: {}; using redis-cli in the container",
                c.name,
                e.0
            ),
        }
    }
    let cmd: Vec<String> = ["redis-cli", "--no-auth-warning", "INFO", "keyspace"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut env = Vec::new();
    if let Some(p) = c.env_var("REDIS_PASSWORD").filter(|p| !p.is_empty()) {
        env.push(format!("REDISCLI_AUTH={p}"));
    }
    let out = engine
        .exec(&c.id, &cmd, &env, None)
        .await
        .map_err(|e| format!("redis-cli INFO keyspace: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.exit_code != 0 {
        return Err(format!(
            "redis-cli INFO keyspace exited with {}: {} {}",
            out.exit_code,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_redis_keyspace(&stdout)
}

/// Parses `INFO keyspace`: `db0:keys=3,expires=0,avg_ttl=0`.
pub fn parse_redis_keyspace(text: &str) -> Result<RedisCensus, String> {
    let mut c = RedisCensus::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((db, fields)) = line.split_once(':') else {
            return Err(format!("unexpected redis-cli output: {line}"));
        };
        let Some(idx) = db.strip_prefix("db").and_then(|n| n.parse::<u32>().ok()) else {
            return Err(format!("unexpected redis-cli output: {line}"));
        };
        let mut keys = None;
        let mut expires = 0;
        for kv in fields.split(',') {
            match kv.split_once('=') {
                Some(("keys", v)) => keys = v.parse::<u64>().ok(),
                Some(("expires", v)) => expires = v.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
        let keys = keys.ok_or_else(|| format!("no key count in redis-cli output: {line}"))?;
        c.keys.insert(idx, keys);
        if expires > 0 {
            c.expires.insert(idx, expires);
        }
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------------------
// qdrant

pub const QDRANT_HTTP_PORT: u16 = 6333;

async fn qdrant_census(engine: &dyn Engine, c: &ContainerInfo) -> Result<ServiceCensus, String> {
    if let Some(host) = engine.remote_host() {
        return Ok(ServiceCensus::Unavailable {
            reason: format!("qdrant's HTTP port is published on the engine host {host}, not reachable from here"),
        });
    }
    let Some(p) = c.published(QDRANT_HTTP_PORT).filter(|p| p.host_port != 0) else {
        return Ok(ServiceCensus::Unavailable {
            reason: format!("qdrant's HTTP port {QDRANT_HTTP_PORT} is not published"),
        });
    };
    let host = pg::dial_host(&p.host_ip);
    let key = c
        .env_var("QDRANT__SERVICE__API_KEY")
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    let headers: Vec<(&str, &str)> = key
        .as_deref()
        .map(|k| vec![("api-key", k)])
        .unwrap_or_default();
    let timeout = Duration::from_secs(10);
    let list = super::http::get_json(&host, p.host_port, "/collections", &headers, timeout).await?;
    let names = parse_qdrant_collections(&list)?;
    let mut out = QdrantCensus::default();
    for name in names {
        let path = format!("/collections/{}", percent_encode(&name));
        let info = super::http::get_json(&host, p.host_port, &path, &headers, timeout).await?;
        out.collections.insert(name, parse_qdrant_points(&info)?);
    }
    Ok(ServiceCensus::Qdrant(out))
}

/// Names from `GET /collections`.
pub fn parse_qdrant_collections(v: &serde_json::Value) -> Result<Vec<String>, String> {
    let arr = v["result"]["collections"]
        .as_array()
        .ok_or_else(|| format!("unexpected qdrant answer to /collections: {v}"))?;
    Ok(arr
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect())
}

/// Points from `GET /collections/{name}` (`points_count`; older versions: `vectors_count`).
pub fn parse_qdrant_points(v: &serde_json::Value) -> Result<u64, String> {
    let r = &v["result"];
    r["points_count"]
        .as_u64()
        .or_else(|| r["vectors_count"].as_u64())
        .ok_or_else(|| format!("no points_count in qdrant answer: {v}"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// totals

/// Sums over a census, for one-line summaries and `--json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub databases: usize,
    pub tables: usize,
    pub rows: i64,
    /// True when some row counts are estimates.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
    pub redis_keys: u64,
    pub qdrant_collections: usize,
    pub qdrant_points: u64,
    /// Services that could not be counted.
    pub unavailable: Vec<String>,
}

impl Totals {
    pub fn add_service(&mut self, name: &str, c: &ServiceCensus) {
        match c {
            ServiceCensus::Postgres(p) => {
                self.databases += p.databases.len();
                for db in p.databases.values() {
                    self.tables += db.tables.len();
                    self.estimated |= db.tables.values().any(|t| t.estimated);
                    self.rows += db.rows();
                }
            }
            ServiceCensus::Redis(r) => self.redis_keys += r.keys.values().sum::<u64>(),
            ServiceCensus::Qdrant(q) => {
                self.qdrant_collections += q.collections.len();
                self.qdrant_points += q.collections.values().sum::<u64>();
            }
            ServiceCensus::Unavailable { .. } => self.unavailable.push(name.to_string()),
        }
    }

    /// "5 databases, 60 tables, 12345 rows; 12 redis keys; 2 qdrant collections (900 points)".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.databases > 0 {
            parts.push(format!(
                "{} {}, {} {}, {}{} {}",
                self.databases,
                plural(self.databases, "database", "databases"),
                self.tables,
                plural(self.tables, "table", "tables"),
                if self.estimated { "~" } else { "" },
                self.rows,
                plural(self.rows as usize, "row", "rows")
            ));
        }
        if self.redis_keys > 0 {
            parts.push(format!(
                "{} redis {}",
                self.redis_keys,
                plural(self.redis_keys as usize, "key", "keys")
            ));
        }
        if self.qdrant_collections > 0 {
            parts.push(format!(
                "{} qdrant {} ({} points)",
                self.qdrant_collections,
                plural(self.qdrant_collections, "collection", "collections"),
                self.qdrant_points
            ));
        }
        if parts.is_empty() {
            parts.push("no data yet".into());
        }
        parts.join("; ")
    }
}

pub fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

impl Census {
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for (name, c) in &self.services {
            t.add_service(name, c);
        }
        t
    }
}

#[cfg(test)]
mod tests;
