//! Provisioning: creates the roles, databases and extensions `x-nodus.services.<svc>` declares,
//! every time the postgres service becomes ready — not only on an empty data dir like the image's
//! init scripts. Idempotent: what exists is left as it is (an existing role's password and
//! attributes and an existing database's owner are never changed).

use std::time::Duration;

use super::pg::{self, quote_ident, quote_literal, PgSession};
use crate::engine::Engine;
use crate::lifecycle::RunningService;
use crate::stack::xnodus::{RoleSpec, ServiceOptions};
use crate::stack::Env;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("service {service}: role {role} needs its password from the environment variable {variable}, which is not set (export it or put it in .env)")]
    MissingPassword {
        service: String,
        role: String,
        variable: String,
    },
    #[error("service {service} (container {container}): {what}: {message}")]
    Sql {
        service: String,
        container: String,
        what: String,
        message: String,
    },
}

/// The password of a role: `password`, else the variable `password_env` (the stack's environment:
/// the process environment over `.env`). `Ok(None)` when neither is given.
pub fn role_password(
    service: &str,
    role: &RoleSpec,
    env: &Env,
) -> Result<Option<String>, ProvisionError> {
    if let Some(p) = role.password.as_ref().filter(|p| !p.is_empty()) {
        return Ok(Some(p.clone()));
    }
    let Some(var) = role.password_env.as_ref().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    env.get(var)
        .cloned()
        .or_else(|| std::env::var(var).ok())
        .filter(|v| !v.is_empty())
        .map(Some)
        .ok_or_else(|| ProvisionError::MissingPassword {
            service: service.to_string(),
            role: role.name.clone(),
            variable: var.clone(),
        })
}

/// Every role password the stack needs from the environment that is not set, for the services
/// `services` (none = all), as messages. Checked before anything is created or started, so a
/// missing variable is not found only after volumes and containers exist.
pub fn missing_passwords(
    nodus: &crate::stack::XNodus,
    env: &Env,
    services: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    for (service, spec) in &nodus.services {
        if !services.is_empty() && !services.contains(service) {
            continue;
        }
        for role in &spec.roles {
            if let Err(e) = role_password(service, role, env) {
                out.push(e.to_string());
            }
        }
    }
    out
}

/// `CREATE ROLE` for a missing role. The password is inside: never print or log this.
pub fn create_role_sql(role: &RoleSpec, password: Option<&str>) -> String {
    let mut sql = format!(
        "CREATE ROLE {} {}",
        quote_ident(&role.name),
        if role.login { "LOGIN" } else { "NOLOGIN" }
    );
    if let Some(p) = password {
        sql.push_str(" PASSWORD ");
        sql.push_str(&quote_literal(p));
    }
    sql
}

pub fn create_database_sql(name: &str, owner: Option<&str>) -> String {
    match owner {
        Some(o) => format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(name),
            quote_ident(o)
        ),
        None => format!("CREATE DATABASE {}", quote_ident(name)),
    }
}

pub fn create_extension_sql(name: &str) -> String {
    format!("CREATE EXTENSION IF NOT EXISTS {}", quote_ident(name))
}

/// Creates what is missing; returns one line per thing created ("created database langfuse_db").
pub async fn provision(
    engine: &dyn Engine,
    svc: &RunningService,
    spec: &ServiceOptions,
    env: &Env,
    connect_retry: Duration,
) -> Result<Vec<String>, ProvisionError> {
    if spec.roles.is_empty() && spec.databases.is_empty() {
        return Ok(Vec::new());
    }
    let sql_err = |what: String, e: pg::PgError| ProvisionError::Sql {
        service: svc.service.clone(),
        container: svc.container.name.clone(),
        what,
        message: e.message,
    };
    // Passwords first: a missing variable is an error before anything is changed.
    let mut passwords = Vec::new();
    for role in &spec.roles {
        passwords.push(role_password(&svc.service, role, env)?);
    }
    let mut target = pg::target_for(engine, &svc.service, &svc.container)
        .await
        .map_err(|e| sql_err("reading its credentials".into(), e))?;
    let (maint, _) = pg::connect_maintenance(engine, &mut target, connect_retry)
        .await
        .map_err(|e| sql_err("connecting".into(), e))?;
    let mut created = Vec::new();

    for (role, password) in spec.roles.iter().zip(&passwords) {
        if exists(&maint, "pg_catalog.pg_roles", "rolname", &role.name)
            .await
            .map_err(|e| sql_err(format!("looking up role {}", role.name), e))?
        {
            continue;
        }
        // Keep the statement (with its password) out of the server log if it fails.
        let sql = format!(
            "SET log_min_error_statement TO panic; SET log_statement TO 'none'; {}",
            create_role_sql(role, password.as_deref())
        );
        maint
            .execute(&sql)
            .await
            .map_err(|e| sql_err(format!("creating role {}", role.name), e))?;
        created.push(format!("created role {}", role.name));
    }

    for db in &spec.databases {
        if !exists(&maint, "pg_catalog.pg_database", "datname", &db.name)
            .await
            .map_err(|e| sql_err(format!("looking up database {}", db.name), e))?
        {
            // A single statement outside any transaction block (CREATE DATABASE requires it).
            maint
                .execute(&create_database_sql(&db.name, db.owner.as_deref()))
                .await
                .map_err(|e| sql_err(format!("creating database {}", db.name), e))?;
            created.push(match &db.owner {
                Some(o) => format!("created database {} (owner {o})", db.name),
                None => format!("created database {}", db.name),
            });
        }
        if db.extensions.is_empty() {
            continue;
        }
        let session = pg::connect(engine, &target, &db.name, connect_retry)
            .await
            .map_err(|e| sql_err(format!("connecting to database {}", db.name), e))?;
        for ext in &db.extensions {
            if exists(&session, "pg_catalog.pg_extension", "extname", ext)
                .await
                .map_err(|e| sql_err(format!("looking up extension {ext} in {}", db.name), e))?
            {
                continue;
            }
            if !exists(&session, "pg_catalog.pg_available_extensions", "name", ext)
                .await
                .map_err(|e| sql_err(format!("looking up extension {ext}"), e))?
            {
                return Err(ProvisionError::Sql {
                    service: svc.service.clone(),
                    container: svc.container.name.clone(),
                    what: format!("creating extension {ext} in {}", db.name),
                    message: format!(
                        "extension {ext} is not available in image {} (pg_available_extensions does not list it)",
                        svc.container.image
                    ),
                });
            }
            session
                .execute(&create_extension_sql(ext))
                .await
                .map_err(|e| sql_err(format!("creating extension {ext} in {}", db.name), e))?;
            created.push(format!("created extension {ext} in {}", db.name));
        }
    }
    Ok(created)
}

async fn exists(
    s: &PgSession<'_>,
    catalog: &str,
    column: &str,
    value: &str,
) -> Result<bool, pg::PgError> {
    let rows = s
        .query(&format!(
            "SELECT 1 FROM {catalog} WHERE {column} = {}",
            quote_literal(value)
        ))
        .await?;
    Ok(!rows.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> RoleSpec {
        RoleSpec {
            name: name.into(),
            password: None,
            password_env: None,
            login: true,
        }
    }

    #[test]
    fn role_sql_quotes_everything() {
        let r = role("lang\"fuse");
        assert_eq!(
            create_role_sql(&r, Some("pa'ss")),
            "CREATE ROLE \"lang\"\"fuse\" LOGIN PASSWORD 'pa''ss'"
        );
        let mut r = role("reader");
        r.login = false;
        assert_eq!(create_role_sql(&r, None), "CREATE ROLE \"reader\" NOLOGIN");
    }

    #[test]
    fn database_and_extension_sql() {
        assert_eq!(
            create_database_sql("langfuse_db", Some("langfuse")),
            "CREATE DATABASE \"langfuse_db\" OWNER \"langfuse\""
        );
        assert_eq!(
            create_database_sql("My DB", None),
            "CREATE DATABASE \"My DB\""
        );
        assert_eq!(
            create_extension_sql("uuid-ossp"),
            "CREATE EXTENSION IF NOT EXISTS \"uuid-ossp\""
        );
    }

    #[test]
    fn password_sources() {
        let mut env = Env::new();
        env.insert("LF_PW".into(), "from-env".into());
        let mut r = role("lf");
        assert_eq!(role_password("db", &r, &env).unwrap(), None);
        r.password_env = Some("LF_PW".into());
        assert_eq!(
            role_password("db", &r, &env).unwrap().as_deref(),
            Some("from-env")
        );
        r.password = Some("literal".into());
        assert_eq!(
            role_password("db", &r, &env).unwrap().as_deref(),
            Some("literal")
        );
        r.password = None;
        r.password_env = Some("NODUS_TEST_SURELY_UNSET_VAR".into());
        let mut x = crate::stack::XNodus::default();
        x.services.insert(
            "db".into(),
            ServiceOptions {
                roles: vec![r.clone(), r.clone()],
                ..Default::default()
            },
        );
        assert_eq!(missing_passwords(&x, &env, &[]).len(), 2);
        assert!(missing_passwords(&x, &env, &["web".into()]).is_empty());
        let err = role_password("db", &r, &env).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("NODUS_TEST_SURELY_UNSET_VAR") && msg.contains("role lf"),
            "{msg}"
        );
    }
}
