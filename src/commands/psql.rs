//! `nodus psql [SERVICE] [-d DB] [-U ROLE] [-c SQL] [-- ARGS]` and `nodus redis-cli [SERVICE] [-- ARGS]`:
//! a client session in the database container as its configured user.

use super::Ctx;
use crate::cli::{PsqlArgs, RedisCliArgs};
use crate::engine::ExecSpec;
use crate::error::UsageError;
use crate::project::Project;
use crate::session::{self, tty, SessionError};
use crate::stack::ServiceKind;

/// The named service, which must be of `kind`, or the first such service of the stack.
fn pick(project: &Project, named: Option<String>, kind: ServiceKind) -> anyhow::Result<String> {
    let of_kind = session::services_of_kind(&project.hardened, kind);
    let label = format!("{kind:?}").to_lowercase();
    match named {
        Some(s) => {
            project.stack.check_services(std::slice::from_ref(&s))?;
            if !of_kind.contains(&s) {
                return Err(UsageError(format!(
                    "service {s} is not a {label} service{}",
                    if of_kind.is_empty() {
                        String::new()
                    } else {
                        format!(" ({label} services: {})", of_kind.join(", "))
                    }
                ))
                .into());
            }
            Ok(s)
        }
        None => of_kind
            .into_iter()
            .next()
            .ok_or_else(|| SessionError::NoServiceOfKind { kind: label }.into()),
    }
}

pub async fn psql(ctx: &Ctx, a: PsqlArgs) -> anyhow::Result<()> {
    super::exec::refuse_json(ctx, "psql")?;
    let project = ctx.project()?;
    let service = pick(&project, a.service, ServiceKind::Postgres)?;
    let engine = ctx.engine().await?;
    let c = session::running_container(&*engine, project.name(), &service).await?;
    let (user, mut env) = crate::snapshot::backup::pg_credentials(&c);
    // psql's default pager (`pager`) is missing from many images: page with what there is.
    env.push(
        "PSQL_PAGER=if command -v less >/dev/null; then less -SRFX; elif command -v more >/dev/null; then more; else cat; fi"
            .to_string(),
    );
    let user = a.username.unwrap_or(user);
    let db = a
        .dbname
        .or_else(|| {
            c.env_var("POSTGRES_DB")
                .filter(|d| !d.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| user.clone());
    let mut cmd = vec!["psql".to_string(), "-U".into(), user, "-d".into(), db];
    if let Some(sql) = a.command {
        cmd.push("-c".into());
        cmd.push(sql);
    }
    cmd.extend(a.args);
    let spec = ExecSpec {
        cmd,
        env,
        tty: tty::want_tty(a.no_tty),
        stdin: true,
        ..ExecSpec::default()
    };
    super::exec::exit_with(session::exec(&*engine, &c.id, &spec).await?)
}

pub async fn redis_cli(ctx: &Ctx, a: RedisCliArgs) -> anyhow::Result<()> {
    super::exec::refuse_json(ctx, "redis-cli")?;
    let project = ctx.project()?;
    let service = pick(&project, a.service, ServiceKind::Redis)?;
    let engine = ctx.engine().await?;
    let c = session::running_container(&*engine, project.name(), &service).await?;
    let mut env = Vec::new();
    if let Some(pw) = c.env_var("REDIS_PASSWORD").filter(|p| !p.is_empty()) {
        // redis-cli reads the password from REDISCLI_AUTH (never on the command line).
        env.push(format!("REDISCLI_AUTH={pw}"));
    }
    let mut cmd = vec!["redis-cli".to_string()];
    cmd.extend(a.args);
    let spec = ExecSpec {
        cmd,
        env,
        tty: tty::want_tty(a.no_tty),
        stdin: true,
        ..ExecSpec::default()
    };
    super::exec::exit_with(session::exec(&*engine, &c.id, &spec).await?)
}
