//! Talking to a postgres service: over TCP to its published port (tokio-postgres), or, when the
//! port is not published or not reachable from here, by running `psql` inside the container.
//!
//! Both paths use the simple-query (text) protocol, so every query answers rows of optional
//! strings and the census/provisioning code is the same for both.

pub mod route;

use std::fmt;
use std::time::{Duration, Instant};

use crate::engine::{ContainerInfo, Engine};

/// Postgres' container port.
pub const PG_PORT: u16 = 5432;

/// How long the published port may fail at the network level (refused, closed, reset, timeout)
/// before psql in the container is used instead. A postgres that is up answers a loopback
/// connection at once; one that listens only inside its container never does (docker's proxy
/// accepts, then closes), and waiting the whole connect retry for it cost ~10 s per census.
pub const TCP_ATTEMPT: Duration = Duration::from_secs(1);

/// Options every nodus session sets: never wait long behind a lock (a migration holding an
/// ACCESS EXCLUSIVE lock must not hang `nodus down`).
const SESSION_OPTIONS: &str = "-c lock_timeout=10000";

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PgError {
    pub message: String,
    /// SQLSTATE, when the server answered with an error.
    pub code: Option<String>,
    /// Worth retrying (connection refused/reset, "the database system is starting up").
    pub transient: bool,
}

impl PgError {
    pub fn new(message: impl Into<String>) -> PgError {
        PgError {
            message: message.into(),
            code: None,
            transient: false,
        }
    }

    fn from_pg(e: &tokio_postgres::Error) -> PgError {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code().to_string();
            return PgError {
                message: format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), code),
                transient: code == "57P03",
                code: Some(code),
            };
        }
        let mut message = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            let t = s.to_string();
            if !message.contains(&t) {
                message.push_str(": ");
                message.push_str(&t);
            }
            src = s.source();
        }
        PgError {
            message,
            code: None,
            // I/O errors and closed connections: the server may not accept yet.
            transient: true,
        }
    }

    /// The database named in the connection does not exist.
    pub fn is_missing_database(&self) -> bool {
        self.code.as_deref() == Some("3D000")
    }
}

/// Credentials of the superuser the official image creates. `Debug` never shows the password.
#[derive(Clone)]
pub struct PgAuth {
    pub user: String,
    pub password: Option<String>,
    /// `POSTGRES_DB` (default: the user name).
    pub default_db: String,
}

impl fmt::Debug for PgAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgAuth")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("default_db", &self.default_db)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgEndpoint {
    /// The published port on the engine's host.
    Tcp { host: String, port: u16 },
    /// `psql` inside the container over its local socket.
    Exec,
}

/// How to reach one postgres container.
#[derive(Debug, Clone)]
pub struct PgTarget {
    pub service: String,
    /// Container name (for messages).
    pub container: String,
    pub container_id: String,
    pub endpoint: PgEndpoint,
    pub auth: PgAuth,
}

/// The host to dial for a published port bound to `host_ip`.
pub fn dial_host(host_ip: &str) -> String {
    match host_ip {
        "" | "0.0.0.0" | "127.0.0.1" | "::" | "::1" | "localhost" => "127.0.0.1".to_string(),
        other => other.to_string(),
    }
}

/// The engine's host when `docker_host` names another machine (tcp/https/ssh to a non-loopback
/// host): ports it publishes on its 127.0.0.1 cannot be reached from here.
pub fn remote_engine_host(docker_host: Option<&str>) -> Option<String> {
    crate::engine::resolve::remote_host_of(docker_host?)
}

/// Endpoint and credentials from the container: its published 5432 and the official image's
/// environment (`POSTGRES_USER` default postgres, `POSTGRES_PASSWORD` or `POSTGRES_PASSWORD_FILE`,
/// `POSTGRES_DB` default = user).
pub async fn target_for(
    engine: &dyn Engine,
    service: &str,
    c: &ContainerInfo,
) -> Result<PgTarget, PgError> {
    let user = c
        .env_var("POSTGRES_USER")
        .filter(|s| !s.is_empty())
        .unwrap_or("postgres")
        .to_string();
    let mut password = c
        .env_var("POSTGRES_PASSWORD")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if password.is_none() {
        if let Some(file) = c
            .env_var("POSTGRES_PASSWORD_FILE")
            .filter(|s| !s.is_empty())
        {
            let out = engine
                .exec(&c.id, &["cat".to_string(), file.to_string()], &[], None)
                .await
                .map_err(|e| PgError::new(format!("reading POSTGRES_PASSWORD_FILE {file}: {e}")))?;
            if out.exit_code != 0 {
                return Err(PgError::new(format!(
                    "reading POSTGRES_PASSWORD_FILE {file} in the container failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let s = String::from_utf8_lossy(&out.stdout)
                .trim_end_matches(['\n', '\r'])
                .to_string();
            password = Some(s);
        }
    }
    let default_db = c
        .env_var("POSTGRES_DB")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| user.clone());
    let endpoint = match c.published(PG_PORT) {
        // The port is published on the engine's host, which is not this one.
        _ if engine.remote_host().is_some() => PgEndpoint::Exec,
        // Found not to answer from here before (remembered per container).
        _ if route::exec_only(&c.id) => PgEndpoint::Exec,
        Some(p) if p.host_port != 0 => PgEndpoint::Tcp {
            host: dial_host(&p.host_ip),
            port: p.host_port,
        },
        _ => PgEndpoint::Exec,
    };
    Ok(PgTarget {
        service: service.to_string(),
        container: c.name.clone(),
        container_id: c.id.clone(),
        endpoint,
        auth: PgAuth {
            user,
            password,
            default_db,
        },
    })
}

/// One session on one database.
pub enum PgSession<'a> {
    Tcp(tokio_postgres::Client),
    Exec {
        engine: &'a dyn Engine,
        container_id: String,
        user: String,
        password: Option<String>,
        db: String,
    },
}

/// Rows of a simple query: every value as text (None = SQL NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// What `psql` prints for NULL in exec mode (cannot appear in names or numbers).
const EXEC_NULL: &str = "\u{1}";
const EXEC_FIELD_SEP: &str = "\u{1f}";
const EXEC_RECORD_SEP: &str = "\u{1e}";

impl PgSession<'_> {
    /// Runs one statement, returning its rows.
    pub async fn query(&self, sql: &str) -> Result<Rows, PgError> {
        match self {
            PgSession::Tcp(client) => {
                let msgs = client
                    .simple_query(sql)
                    .await
                    .map_err(|e| PgError::from_pg(&e))?;
                let mut rows = Vec::new();
                for m in msgs {
                    if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                        rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
                    }
                }
                Ok(rows)
            }
            PgSession::Exec {
                engine,
                container_id,
                user,
                password,
                db,
            } => {
                // The SQL travels in an environment variable, not on the command line (it may carry
                // a role's password, and exec command lines show up in `ps`).
                let cmd: Vec<String> = [
                    "sh",
                    "-c",
                    "exec psql -X -q -A -t -v ON_ERROR_STOP=1 -F \"$NODUS_FS\" -R \"$NODUS_RS\" -P \"null=$NODUS_NULL\" -U \"$NODUS_USER\" -d \"$NODUS_DB\" -c \"$NODUS_SQL\"",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let mut env = vec![
                    format!("NODUS_SQL={sql}"),
                    format!("NODUS_USER={user}"),
                    format!("NODUS_DB={db}"),
                    format!("NODUS_FS={EXEC_FIELD_SEP}"),
                    format!("NODUS_RS={EXEC_RECORD_SEP}"),
                    format!("NODUS_NULL={EXEC_NULL}"),
                    format!("PGOPTIONS={SESSION_OPTIONS}"),
                    "PGAPPNAME=nodus".to_string(),
                ];
                if let Some(p) = password {
                    env.push(format!("PGPASSWORD={p}"));
                }
                let out = engine
                    .exec(container_id, &cmd, &env, None)
                    .await
                    .map_err(|e| PgError::new(format!("psql in the container: {e}")))?;
                if out.exit_code != 0 {
                    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    let code = if err.contains("does not exist") && err.contains("database") {
                        Some("3D000".to_string())
                    } else {
                        None
                    };
                    return Err(PgError {
                        transient: exec_error_is_transient(&err),
                        message: format!(
                            "psql in the container exited with {}: {err}",
                            out.exit_code
                        ),
                        code,
                    });
                }
                Ok(parse_exec_rows(&String::from_utf8_lossy(&out.stdout)))
            }
        }
    }

    /// Runs one statement and ignores its rows.
    pub async fn execute(&self, sql: &str) -> Result<(), PgError> {
        self.query(sql).await.map(|_| ())
    }
}

/// psql could not reach the server yet (not started, or still starting): worth retrying.
pub fn exec_error_is_transient(stderr: &str) -> bool {
    [
        "starting up",
        "could not connect",
        "Connection refused",
        "No such file or directory",
        "shutting down",
        "not yet accepting connections",
    ]
    .iter()
    .any(|p| stderr.contains(p))
}

/// Parses `psql -A -t` output with our separators.
pub fn parse_exec_rows(out: &str) -> Rows {
    let out = out.strip_suffix('\n').unwrap_or(out);
    if out.is_empty() {
        return Vec::new();
    }
    out.split(EXEC_RECORD_SEP)
        .map(|r| r.trim_start_matches('\n'))
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.split(EXEC_FIELD_SEP)
                .map(|f| {
                    if f == EXEC_NULL {
                        None
                    } else {
                        Some(f.to_string())
                    }
                })
                .collect()
        })
        .collect()
}

/// Opens a session on `db`, retrying transient failures for up to `retry_for` (the healthcheck may
/// pass before the published port accepts connections).
pub async fn connect<'a>(
    engine: &'a dyn Engine,
    target: &PgTarget,
    db: &str,
    retry_for: Duration,
) -> Result<PgSession<'a>, PgError> {
    match &target.endpoint {
        PgEndpoint::Tcp { host, port } => {
            let mut cfg = tokio_postgres::Config::new();
            cfg.host(host)
                .port(*port)
                .user(&target.auth.user)
                .dbname(db)
                .application_name("nodus")
                .options(SESSION_OPTIONS)
                .connect_timeout(TCP_ATTEMPT);
            if let Some(p) = &target.auth.password {
                cfg.password(p);
            }
            let start = Instant::now();
            let mut delay = Duration::from_millis(50);
            let mut probed = false;
            loop {
                match cfg.connect(tokio_postgres::NoTls).await {
                    Ok((client, conn)) => {
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        return Ok(PgSession::Tcp(client));
                    }
                    Err(e) => {
                        let err = PgError::from_pg(&e);
                        // The server answered (e.g. "starting up"): worth the whole retry.
                        // Only the network failed: give it TCP_ATTEMPT, then let the caller
                        // fall back to psql in the container.
                        // Only when postgres answers on TCP inside its container: during the
                        // image's init it listens on no TCP address at all (not ready yet).
                        let mut window = retry_for;
                        // With no retry at all (a readiness probe: its poll loop retries)
                        // the answer cannot change what is returned: no exec for it.
                        if err.code.is_none()
                            && !probed
                            && !retry_for.is_zero()
                            && start.elapsed() >= TCP_ATTEMPT.min(retry_for)
                        {
                            probed = true;
                            if answers_inside(engine, &target.container_id).await {
                                window = Duration::ZERO;
                            }
                        }
                        if !err.transient || start.elapsed() >= window {
                            return Err(PgError {
                                message: format!(
                                    "connecting to {host}:{port} as {}: {}",
                                    target.auth.user, err.message
                                ),
                                ..err
                            });
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_millis(250));
                    }
                }
            }
        }
        PgEndpoint::Exec => {
            let s = PgSession::Exec {
                engine,
                container_id: target.container_id.clone(),
                user: target.auth.user.clone(),
                password: target.auth.password.clone(),
                db: db.to_string(),
            };
            // Check the connection now, so errors (missing database...) surface here as with TCP.
            let start = Instant::now();
            let mut delay = Duration::from_millis(50);
            loop {
                match s.execute("SELECT 1").await {
                    Ok(()) => return Ok(s),
                    Err(e) if e.transient && start.elapsed() < retry_for => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_millis(300));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Whether postgres accepts TCP connections inside the container (`pg_isready -h 127.0.0.1`).
async fn answers_inside(engine: &dyn Engine, container_id: &str) -> bool {
    let cmd: Vec<String> = ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    matches!(engine.exec(container_id, &cmd, &[], None).await, Ok(o) if o.exit_code == 0)
}

/// Connects to the maintenance database: `POSTGRES_DB`, else `postgres`, else `template1` (the
/// configured database may be the one that went missing). Returns the session and its database.
pub async fn connect_maintenance<'a>(
    engine: &'a dyn Engine,
    target: &mut PgTarget,
    retry_for: Duration,
) -> Result<(PgSession<'a>, String), PgError> {
    let mut candidates = vec![target.auth.default_db.clone()];
    for d in ["postgres", "template1"] {
        if !candidates.iter().any(|c| c == d) {
            candidates.push(d.to_string());
        }
    }
    let mut last = None;
    for db in candidates {
        match connect(engine, target, &db, retry_for).await {
            Ok(s) => return Ok((s, db)),
            Err(e) if e.is_missing_database() => last = Some(e),
            Err(e) if e.transient && target.endpoint != PgEndpoint::Exec => {
                // The published port is not reachable from here (remote engine, firewall...):
                // fall back to psql inside the container.
                tracing::debug!(
                    "{}: TCP failed ({}), using psql in the container",
                    target.service,
                    e.message
                );
                let tried = match &target.endpoint {
                    PgEndpoint::Tcp { host, port } => format!("{host}:{port}"),
                    PgEndpoint::Exec => String::new(),
                };
                target.endpoint = PgEndpoint::Exec;
                let res = Box::pin(connect_maintenance(engine, target, retry_for)).await;
                if res.is_ok() {
                    // psql in the container reached the server that TCP could not.
                    let why = e.message.rsplit(": ").next().unwrap_or(&e.message);
                    route::remember(&target.container_id, &target.service, &tried, why);
                }
                return res;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| PgError::new("no database to connect to")))
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal that is correct whatever `standard_conforming_strings` says.
pub fn quote_literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// One statement counting every table exactly: `SELECT 0, count(*) FROM "s"."t" UNION ALL ...`.
/// Rows come back as (index into `tables`, count). None for no tables.
pub fn count_query(tables: &[(String, String)]) -> Option<String> {
    if tables.is_empty() {
        return None;
    }
    let parts: Vec<String> = tables
        .iter()
        .enumerate()
        .map(|(i, (s, t))| format!("SELECT {i}, count(*) FROM {}", qualified(s, t)))
        .collect();
    Some(parts.join(" UNION ALL "))
}

/// Tables of the current database that the census counts.
pub const TABLES_QUERY: &str = "SELECT n.nspname, c.relname, c.relpersistence, c.relkind, \
CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint ELSE coalesce(s.n_live_tup, 0) END \
FROM pg_catalog.pg_class c \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = c.oid \
WHERE c.relkind IN ('r', 'p') AND c.relpersistence IN ('p', 'u') \
AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_' \
ORDER BY 1, 2";

/// Cluster identity and the databases that accept connections.
pub const CLUSTER_QUERY: &str =
    "SELECT (SELECT system_identifier::text FROM pg_catalog.pg_control_system()), datname \
FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname";

/// [`CLUSTER_QUERY`] without the cluster identity (an empty identifier is never compared).
pub const DATABASES_QUERY: &str = "SELECT '', datname \
FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname";

/// Sessions sitting in an open transaction (their work is rolled back by the stop).
pub const IDLE_IN_TX_QUERY: &str = "SELECT coalesce(datname, ''), coalesce(usename, ''), coalesce(application_name, ''), \
coalesce(client_addr::text, 'local'), coalesce(to_char(state_change, 'YYYY-MM-DD HH24:MI:SS'), ''), \
coalesce(left(regexp_replace(query, '\\s+', ' ', 'g'), 120), '') \
FROM pg_catalog.pg_stat_activity \
WHERE state IN ('idle in transaction', 'idle in transaction (aborted)') AND pid <> pg_backend_pid() \
ORDER BY state_change";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("users"), "\"users\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_ident("Mixed Case"), "\"Mixed Case\"");
        assert_eq!(qualified("my schema", "t\"x"), "\"my schema\".\"t\"\"x\"");
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("abc"), "'abc'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'c"), "E'a\\\\b''c'");
    }

    #[test]
    fn count_query_batches_every_table() {
        assert_eq!(count_query(&[]), None);
        let q = count_query(&[
            ("public".into(), "users".into()),
            ("odd\"schema".into(), "Events".into()),
        ])
        .unwrap();
        assert_eq!(
            q,
            "SELECT 0, count(*) FROM \"public\".\"users\" UNION ALL SELECT 1, count(*) FROM \"odd\"\"schema\".\"Events\""
        );
    }

    #[test]
    fn exec_rows_parse() {
        let out = format!("a{EXEC_FIELD_SEP}1{EXEC_RECORD_SEP}b{EXEC_FIELD_SEP}{EXEC_NULL}\n");
        assert_eq!(
            parse_exec_rows(&out),
            vec![
                vec![Some("a".to_string()), Some("1".to_string())],
                vec![Some("b".to_string()), None]
            ]
        );
        assert!(parse_exec_rows("").is_empty());
        assert!(parse_exec_rows("\n").is_empty());
    }

    #[test]
    fn psql_connection_failures_are_retried_others_not() {
        assert!(exec_error_is_transient(
            "psql: error: connection to server on socket \"/var/run/postgresql/.s.PGSQL.5432\" failed: No such file or directory"
        ));
        assert!(exec_error_is_transient(
            "FATAL:  the database system is starting up"
        ));
        assert!(!exec_error_is_transient(
            "FATAL:  password authentication failed for user \"postgres\""
        ));
        assert!(!exec_error_is_transient(
            "FATAL:  database \"x\" does not exist"
        ));
    }

    #[test]
    fn remote_engines_are_recognised() {
        assert_eq!(remote_engine_host(None), None);
        assert_eq!(
            remote_engine_host(Some("unix:///var/run/docker.sock")),
            None
        );
        assert_eq!(remote_engine_host(Some("tcp://127.0.0.1:2375")), None);
        assert_eq!(remote_engine_host(Some("tcp://localhost:2375")), None);
        assert_eq!(
            remote_engine_host(Some("tcp://10.1.2.3:2376")).as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(
            remote_engine_host(Some("ssh://me@build-box")).as_deref(),
            Some("build-box")
        );
        assert_eq!(remote_engine_host(Some("tcp://[::1]:2375")), None);
    }

    #[test]
    fn dial_host_maps_wildcards_to_loopback() {
        assert_eq!(dial_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(dial_host(""), "127.0.0.1");
        assert_eq!(dial_host("10.0.0.5"), "10.0.0.5");
    }

    #[test]
    fn auth_debug_hides_password() {
        let a = PgAuth {
            user: "u".into(),
            password: Some("s3cret".into()),
            default_db: "d".into(),
        };
        assert!(!format!("{a:?}").contains("s3cret"));
    }
}
