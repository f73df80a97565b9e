//! The sentinels `nodus test-persistence` writes and looks for: a nodus-owned table
//! `_nodus_sentinel` with known rows in every database of every postgres service, and a known key
//! in every redis. Written through the guard's connections (published port, or psql in the
//! container); redis through `redis-cli` in the container.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::engine::{ContainerInfo, Engine};
use crate::guard::census::running_stateful;
use crate::guard::pg::{self, quote_literal};
use crate::stack::{ServiceKind, StatefulService};

/// The table (in schema `public`) and the redis key.
pub const NAME: &str = "_nodus_sentinel";
/// Rows in every sentinel table.
pub const ROWS: i64 = 3;
const CONNECT_RETRY: Duration = Duration::from_secs(30);

/// Where a sentinel lives: `service` plus the database (postgres) or `db0` (redis).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Place {
    pub service: String,
    pub kind: &'static str,
    /// Database name (postgres) or `db0` (redis).
    pub database: String,
}

impl Place {
    pub fn label(&self) -> String {
        format!("{}/{}", self.service, self.database)
    }
}

/// What a check found at one place: None = the sentinel is intact, Some(problem) otherwise.
pub type Checked = BTreeMap<Place, Option<String>>;

/// A unique value for this run (time + pid): a sentinel left by an earlier run never passes.
pub fn new_token() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    )
}

fn countable(stateful: &[StatefulService]) -> Vec<StatefulService> {
    stateful
        .iter()
        .filter(|s| matches!(s.kind, ServiceKind::Postgres | ServiceKind::Redis))
        .cloned()
        .collect()
}

/// The running container of every postgres and redis service, or an error naming the one that
/// is not running.
async fn containers(
    engine: &dyn Engine,
    project: &str,
    stateful: &[StatefulService],
) -> anyhow::Result<Vec<(StatefulService, ContainerInfo)>> {
    let wanted = countable(stateful);
    let running = running_stateful(engine, project, &wanted).await?;
    let mut out = Vec::new();
    for s in wanted {
        match running.get(&s.service).cloned().flatten() {
            Some(rs) => out.push((s, rs.container)),
            None => anyhow::bail!(
                "service {} is not running: cannot reach its sentinel",
                s.service
            ),
        }
    }
    Ok(out)
}

/// Writes the sentinels; returns the places written.
pub async fn write(
    engine: &dyn Engine,
    project: &str,
    stateful: &[StatefulService],
    token: &str,
) -> anyhow::Result<Vec<Place>> {
    let mut places = Vec::new();
    for (s, c) in containers(engine, project, stateful).await? {
        match s.kind {
            ServiceKind::Postgres => {
                for db in pg_databases(engine, &s.service, &c).await? {
                    let sql = format!(
                        "CREATE TABLE IF NOT EXISTS public.{NAME} (id int PRIMARY KEY, token text NOT NULL, written_at timestamptz NOT NULL DEFAULT now()); \
                         DELETE FROM public.{NAME}; \
                         INSERT INTO public.{NAME} (id, token) SELECT g, {} FROM generate_series(1, {ROWS}) g",
                        quote_literal(token)
                    );
                    pg_exec(engine, &s.service, &c, &db, &sql).await?;
                    places.push(Place {
                        service: s.service.clone(),
                        kind: "postgres",
                        database: db,
                    });
                }
            }
            ServiceKind::Redis => {
                redis(engine, &c, &["SET", NAME, token]).await?;
                places.push(Place {
                    service: s.service.clone(),
                    kind: "redis",
                    database: "db0".into(),
                });
            }
            _ => {}
        }
    }
    Ok(places)
}

/// Looks for every sentinel in `places`; each place gets None (intact) or what is wrong.
pub async fn check(
    engine: &dyn Engine,
    project: &str,
    stateful: &[StatefulService],
    places: &[Place],
    token: &str,
) -> Checked {
    let mut out = Checked::new();
    let wanted = countable(stateful);
    let running = match running_stateful(engine, project, &wanted).await {
        Ok(r) => r,
        Err(e) => {
            for p in places {
                out.insert(p.clone(), Some(format!("cannot list containers: {e}")));
            }
            return out;
        }
    };
    for p in places {
        let Some(rs) = running.get(&p.service).cloned().flatten() else {
            out.insert(
                p.clone(),
                Some(format!("service {} is not running", p.service)),
            );
            continue;
        };
        let problem = if p.kind == "postgres" {
            let sql = format!(
                "SELECT count(*) FROM public.{NAME} WHERE token = {}",
                quote_literal(token)
            );
            match pg_query(engine, &p.service, &rs.container, &p.database, &sql).await {
                Ok(rows) => {
                    let n: i64 = rows
                        .first()
                        .and_then(|r| r.first().cloned().flatten())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(-1);
                    (n != ROWS)
                        .then(|| format!("sentinel table {NAME} holds {n} of its {ROWS} rows"))
                }
                Err(e) if e.contains("does not exist") => {
                    Some(format!("sentinel table {NAME} is missing ({e})"))
                }
                Err(e) => Some(format!("cannot read sentinel table {NAME}: {e}")),
            }
        } else {
            match redis(engine, &rs.container, &["GET", NAME]).await {
                Ok(v) if v.trim() == token => None,
                Ok(v) if v.trim().is_empty() => Some(format!("sentinel key {NAME} is missing")),
                Ok(v) => Some(format!(
                    "sentinel key {NAME} holds {:?}, not this run's value",
                    v.trim()
                )),
                Err(e) => Some(format!("cannot read sentinel key {NAME}: {e}")),
            }
        };
        out.insert(p.clone(), problem);
    }
    out
}

/// Removes the sentinels that can be reached; returns what could not be removed.
pub async fn remove(
    engine: &dyn Engine,
    project: &str,
    stateful: &[StatefulService],
    places: &[Place],
) -> Vec<String> {
    let mut failed = Vec::new();
    let wanted = countable(stateful);
    let running = match running_stateful(engine, project, &wanted).await {
        Ok(r) => r,
        Err(e) => return vec![format!("cannot list containers: {e}")],
    };
    for p in places {
        let Some(rs) = running.get(&p.service).cloned().flatten() else {
            failed.push(format!("{}: not running", p.label()));
            continue;
        };
        let r = if p.kind == "postgres" {
            pg_exec(
                engine,
                &p.service,
                &rs.container,
                &p.database,
                &format!("DROP TABLE IF EXISTS public.{NAME}"),
            )
            .await
            .map_err(|e| e.to_string())
        } else {
            redis(engine, &rs.container, &["DEL", NAME])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        if let Err(e) = r {
            failed.push(format!("{}: {e}", p.label()));
        }
    }
    failed
}

async fn pg_databases(
    engine: &dyn Engine,
    service: &str,
    c: &ContainerInfo,
) -> anyhow::Result<Vec<String>> {
    let mut target = pg::target_for(engine, service, c)
        .await
        .map_err(|e| anyhow::anyhow!("{service}: {}", e.message))?;
    let (s, _) = pg::connect_maintenance(engine, &mut target, CONNECT_RETRY)
        .await
        .map_err(|e| anyhow::anyhow!("{service}: {}", e.message))?;
    let rows = s
        .query(pg::DATABASES_QUERY)
        .await
        .map_err(|e| anyhow::anyhow!("{service}: {}", e.message))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.get(1).cloned().flatten())
        .collect())
}

async fn pg_query(
    engine: &dyn Engine,
    service: &str,
    c: &ContainerInfo,
    db: &str,
    sql: &str,
) -> Result<pg::Rows, String> {
    let mut target = pg::target_for(engine, service, c)
        .await
        .map_err(|e| e.message)?;
    let session = match pg::connect(engine, &target, db, CONNECT_RETRY).await {
        Ok(s) => s,
        Err(e) if e.transient && target.endpoint != pg::PgEndpoint::Exec => {
            // The published port is not reachable from here: psql in the container.
            target.endpoint = pg::PgEndpoint::Exec;
            pg::connect(engine, &target, db, CONNECT_RETRY)
                .await
                .map_err(|e| e.message)?
        }
        Err(e) => return Err(e.message),
    };
    session.query(sql).await.map_err(|e| e.message)
}

async fn pg_exec(
    engine: &dyn Engine,
    service: &str,
    c: &ContainerInfo,
    db: &str,
    sql: &str,
) -> anyhow::Result<()> {
    pg_query(engine, service, c, db, sql)
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{service} database {db}: {e}"))
}

/// `redis-cli` in the container (REDIS_PASSWORD from its environment, never on the command line).
async fn redis(engine: &dyn Engine, c: &ContainerInfo, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd: Vec<String> = vec!["redis-cli".into(), "--no-auth-warning".into()];
    cmd.extend(args.iter().map(|s| s.to_string()));
    let mut env = Vec::new();
    if let Some(p) = c.env_var("REDIS_PASSWORD").filter(|p| !p.is_empty()) {
        env.push(format!("REDISCLI_AUTH={p}"));
    }
    let out = engine.exec(&c.id, &cmd, &env, None).await?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.exit_code != 0 || stdout.starts_with("ERR") || stdout.starts_with("NOAUTH") {
        anyhow::bail!(
            "redis-cli {} in {} exited with {}: {} {}",
            args[0],
            c.name,
            out.exit_code,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}
