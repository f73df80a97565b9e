//! `nodus exec [-T] [-u USER] [-w DIR] [-e K=V] SERVICE CMD...`: the command's exit code is
//! nodus' exit code.

use super::Ctx;
use crate::cli::ExecArgs;
use crate::engine::ExecSpec;
use crate::error::PassThroughExit;
use crate::session::{self, tty};

pub async fn run(ctx: &Ctx, a: ExecArgs) -> anyhow::Result<()> {
    refuse_json(ctx, "exec")?;
    let project = ctx.project()?;
    project
        .stack
        .check_services(std::slice::from_ref(&a.service))?;
    let engine = ctx.engine().await?;
    let c = session::running_container(&*engine, project.name(), &a.service).await?;
    let spec = ExecSpec {
        cmd: a.command,
        env: session::env_args(&a.env),
        user: a.user,
        working_dir: a.workdir,
        tty: tty::want_tty(a.no_tty),
        stdin: true,
    };
    exit_with(session::exec(&*engine, &c.id, &spec).await?)
}

/// Streams and sessions have no JSON form: `--json` is a usage error (reported as the one JSON
/// document on stdout by `error.rs`).
pub(super) fn refuse_json(ctx: &Ctx, command: &str) -> anyhow::Result<()> {
    if ctx.ui.json {
        return Err(crate::error::UsageError(format!(
            "`nodus {command}` has no JSON output; run it without --json"
        ))
        .into());
    }
    Ok(())
}

/// Ok for 0, else the code passed through.
pub(super) fn exit_with(code: i64) -> anyhow::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(PassThroughExit(code).into())
    }
}
