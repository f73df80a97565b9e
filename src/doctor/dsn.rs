//! Database URLs in service environments, the server they resolve to, and the destructive
//! schema syncs some tools run at start (`shared-db-schema-sync`).

use std::collections::BTreeMap;

use super::checks::{kind_of, StaticInput};
use super::ids::SHARED_DB_SCHEMA_SYNC;
use super::{Finding, Severity};
use crate::stack::locate::locate;
use crate::stack::model::{Port, Service, StringOrList};
use crate::stack::{ServiceKind, Stack};

/// A postgres connection URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// The environment variable holding it.
    pub var: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub schema: String,
}

/// Parses `postgres://`, `postgresql://`, `postgresql+driver://` and `jdbc:postgresql://` URLs.
pub fn parse_dsn(var: &str, value: &str) -> Option<Dsn> {
    let v = value.trim();
    let v = v.strip_prefix("jdbc:").unwrap_or(v);
    let (scheme, rest) = v.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !(scheme == "postgres" || scheme == "postgresql" || scheme.starts_with("postgresql+")) {
        return None;
    }
    let (authority_path, query) = match rest.split_once('?') {
        Some((a, q)) => (a, q),
        None => (rest, ""),
    };
    let (authority, path) = match authority_path.split_once('/') {
        Some((a, p)) => (a, p),
        None => (authority_path, ""),
    };
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    // several hosts (`h1,h2`): the first
    let hostport = hostport.split(',').next().unwrap_or(hostport);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            (h.to_string(), p.parse().unwrap_or(5432))
        }
        _ => (hostport.to_string(), 5432),
    };
    let mut schema = "public".to_string();
    for pair in query.split('&') {
        let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
        match k.to_ascii_lowercase().as_str() {
            "schema" | "currentschema" | "search_path" if !val.is_empty() => {
                schema = val.split(',').next().unwrap_or(val).to_string()
            }
            "options" => {
                let decoded = val
                    .replace("%3D", "=")
                    .replace("%3d", "=")
                    .replace("%20", " ");
                if let Some(i) = decoded.find("search_path=") {
                    let s: String = decoded[i + 12..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !s.is_empty() {
                        schema = s;
                    }
                }
            }
            _ => {}
        }
    }
    let database = path.trim_end_matches('/').to_string();
    Some(Dsn {
        var: var.to_string(),
        host: host.trim_matches(['[', ']']).to_string(),
        port,
        database,
        schema,
    })
}

/// Every database URL in a service's environment (`environment:` and `env_file:`, merged).
pub fn dsns_of(svc: &Service) -> Vec<Dsn> {
    svc.environment
        .iter()
        .filter_map(|(k, v)| parse_dsn(k, v.as_deref()?))
        .collect()
}

fn text_of(c: &Option<StringOrList>) -> String {
    match c {
        None => String::new(),
        Some(StringOrList::String(s)) => s.clone(),
        Some(StringOrList::List(l)) => l.join(" "),
    }
}

fn truthy(v: Option<&Option<String>>) -> bool {
    matches!(
        v.and_then(|v| v.as_deref()).map(|s| s.trim().to_ascii_lowercase()),
        Some(s) if s == "true" || s == "1" || s == "yes"
    )
}

/// The destructive schema sync a service runs at start, if it is one nodus knows, with the key
/// that shows it (for file:line).
pub fn destructive_sync(svc: &Service) -> Option<(String, &'static str, String)> {
    let cmd = format!("{} {}", text_of(&svc.entrypoint), text_of(&svc.command));
    let lower = cmd.to_ascii_lowercase();
    let compact: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    let image = svc.image.as_deref().unwrap_or("").to_ascii_lowercase();
    let from_cmd = |what: &str, needle: &str| {
        let field = if text_of(&svc.command).to_ascii_lowercase().contains(needle) {
            "command"
        } else {
            "entrypoint"
        };
        Some((what.to_string(), field, needle.to_string()))
    };
    if lower.contains("db push") && lower.contains("--accept-data-loss") {
        return from_cmd("prisma db push --accept-data-loss", "--accept-data-loss");
    }
    if lower.contains("--force-reset") {
        return from_cmd("prisma db push --force-reset", "--force-reset");
    }
    if lower.contains("migrate reset") {
        return from_cmd("prisma migrate reset", "migrate reset");
    }
    if lower.contains("--use_prisma_db_push") {
        return from_cmd("LiteLLM --use_prisma_db_push", "--use_prisma_db_push");
    }
    if compact.contains("sync({force:true})") {
        return from_cmd("Sequelize sync({force: true})", "force");
    }
    if lower.contains("manage.py flush") || lower.contains("django-admin flush") {
        return from_cmd("Django flush", "flush");
    }
    for (k, v) in &svc.environment {
        let Some(v) = v.as_deref() else { continue };
        let ku = k.to_ascii_uppercase();
        let vl = v.trim().to_ascii_lowercase();
        if (ku.contains("DDL_AUTO") || ku.contains("HBM2DDL"))
            && (vl == "create" || vl == "create-drop")
        {
            return Some((format!("Hibernate ddl-auto={vl}"), "environment", k.clone()));
        }
        let vc: String = vl.chars().filter(|c| !c.is_whitespace()).collect();
        for key in ["ddl-auto=", "hbm2ddl.auto="] {
            if let Some(i) = vc.find(key) {
                let val: String = vc[i + key.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if val == "create" || val == "create-drop" {
                    return Some((format!("Hibernate {key}{val}"), "environment", k.clone()));
                }
            }
        }
    }
    for key in ["ddl-auto=", "hbm2ddl.auto="] {
        if let Some(i) = compact.find(key) {
            let val: String = compact[i + key.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if val == "create" || val == "create-drop" {
                return from_cmd("Hibernate ddl-auto=create", key);
            }
        }
    }
    let litellm = image.contains("litellm") || lower.contains("litellm");
    if litellm && !truthy(svc.environment.get("DISABLE_SCHEMA_UPDATE")) {
        return Some((
            "LiteLLM (syncs its Prisma schema at start; DISABLE_SCHEMA_UPDATE is not set)".into(),
            "image",
            String::new(),
        ));
    }
    None
}

/// The server a DSN's host names: a service of the stack (by name, container_name, hostname or
/// network alias; `localhost` by published port) or the host itself.
pub fn resolve_server(stack: &Stack, dsn: &Dsn) -> (String, u16) {
    let h = dsn.host.to_ascii_lowercase();
    for (name, svc) in &stack.compose.services {
        let names = std::iter::once(name.as_str())
            .chain(svc.container_name.as_deref())
            .chain(svc.hostname.as_deref())
            .chain(
                svc.networks
                    .values()
                    .flat_map(|n| n.aliases.iter().map(String::as_str)),
            );
        if names.into_iter().any(|n| n.eq_ignore_ascii_case(&h)) {
            return (name.clone(), dsn.port);
        }
    }
    if matches!(
        h.as_str(),
        "localhost" | "127.0.0.1" | "::1" | "host.docker.internal" | "0.0.0.0"
    ) {
        for (name, svc) in &stack.compose.services {
            if let Some(target) = published_target(&svc.ports, dsn.port) {
                return (name.clone(), target);
            }
        }
    }
    (dsn.host.clone(), dsn.port)
}

/// The container port published at host port `host_port`.
fn published_target(ports: &[Port], host_port: u16) -> Option<u16> {
    ports.iter().find_map(|p| match p {
        Port::Long(l) => {
            let published = match &l.published {
                Some(serde_yaml::Value::Number(n)) => n.as_u64().map(|n| n as u16),
                Some(serde_yaml::Value::String(s)) => s.parse().ok(),
                _ => None,
            };
            (published == Some(host_port)).then_some(l.target)
        }
        Port::Short(s) => {
            let no_proto = s.split('/').next().unwrap_or(s);
            let parts: Vec<&str> = no_proto.rsplitn(3, ':').collect();
            match parts.as_slice() {
                [container, host, ..] => (host.parse::<u16>().ok() == Some(host_port))
                    .then(|| container.parse().ok())
                    .flatten(),
                _ => None,
            }
        }
    })
}

/// (server, port, database, schema) a DSN resolves to.
type ServerDb = (String, u16, String, String);

/// `shared-db-schema-sync`: a service running a destructive schema sync on a database another
/// service uses too.
pub fn shared_schema_sync(input: &StaticInput) -> Vec<Finding> {
    let stack = input.stack;
    // (server, port, database, schema) → [(service, var)]
    let mut users: BTreeMap<ServerDb, Vec<(String, String)>> = BTreeMap::new();
    for (name, svc) in &stack.compose.services {
        for d in dsns_of(svc) {
            let (server, port) = resolve_server(stack, &d);
            let db = if d.database.is_empty() {
                "(default)".to_string()
            } else {
                d.database.clone()
            };
            let e = users
                .entry((server, port, db, d.schema.clone()))
                .or_default();
            if !e.iter().any(|(s, _)| s == name) {
                e.push((name.clone(), d.var.clone()));
            }
        }
    }
    let mut out = Vec::new();
    for ((server, port, db, schema), svcs) in &users {
        if svcs.len() < 2 {
            continue;
        }
        for (name, var) in svcs {
            let svc = &stack.compose.services[name];
            if kind_of(stack, name, svc).is_some_and(|k| k != ServiceKind::Other) {
                continue;
            }
            let Some((what, field, needle)) = destructive_sync(svc) else {
                continue;
            };
            let others: Vec<String> = svcs
                .iter()
                .filter(|(s, _)| s != name)
                .map(|(s, v)| format!("{s} ({v})"))
                .collect();
            let loc = if needle.is_empty() {
                locate(input.sources, &["services", name, field], None)
            } else {
                locate(input.sources, &["services", name, field], Some(&needle))
            }
            .or_else(|| locate(input.sources, &["services", name, "environment"], Some(var)));
            out.push(
                Finding::new(
                    SHARED_DB_SCHEMA_SYNC,
                    Severity::Error,
                    name,
                    format!(
                        "{name} runs {what} on database {db} (schema {schema}) of {server}:{port} via {var}, which {} also use{}: the sync drops or rewrites their tables to match {name}'s schema",
                        others.join(", "),
                        if others.len() == 1 { "s" } else { "" }
                    ),
                    format!(
                        "give {name} its own database (e.g. `{db}_{name}`) or schema, or switch the destructive sync off (LiteLLM: DISABLE_SCHEMA_UPDATE=true; Prisma: `migrate deploy` instead of `db push --accept-data-loss`; Hibernate: ddl-auto=validate/update)"
                    ),
                )
                .at(loc),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let d = parse_dsn("DATABASE_URL", "postgresql://u:p@db:5433/app?schema=s1").unwrap();
        assert_eq!(
            (
                d.host.as_str(),
                d.port,
                d.database.as_str(),
                d.schema.as_str()
            ),
            ("db", 5433, "app", "s1")
        );
        let d = parse_dsn("X", "postgresql+asyncpg://u@postgres/app").unwrap();
        assert_eq!(
            (
                d.host.as_str(),
                d.port,
                d.database.as_str(),
                d.schema.as_str()
            ),
            ("postgres", 5432, "app", "public")
        );
        let d = parse_dsn("X", "jdbc:postgresql://db:5432/shop?currentSchema=sales").unwrap();
        assert_eq!((d.database.as_str(), d.schema.as_str()), ("shop", "sales"));
        assert!(parse_dsn("X", "redis://cache:6379/0").is_none());
        assert!(parse_dsn("X", "just text").is_none());
    }
}
