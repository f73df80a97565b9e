//! `nodus stop [SERVICE...] [--timeout 30s] [--no-snapshot]`

use super::hooks::{Session, SessionOptions};
use super::{parse_duration_arg, Ctx};
use crate::lifecycle::{resolve_environment, Lifecycle, Transition};

pub async fn run(ctx: &Ctx, args: crate::cli::StopArgs) -> anyhow::Result<()> {
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| parse_duration_arg("--timeout", t))
        .transpose()?;
    let mut project = ctx.project()?;
    project.stack.check_services(&args.services)?;
    let _lock = ctx.lock(&project)?;
    resolve_environment(&mut project.hardened.compose, &project.env);
    let engine = ctx.engine().await?;
    let mut session = Session::new(
        ctx,
        &project,
        engine.clone(),
        Transition::Stop,
        SessionOptions {
            no_snapshot: args.no_snapshot,
        },
    )?;
    let lc = Lifecycle::for_project(&*engine, &project, &ctx.ui);
    let report = lc.stop(&args.services, timeout, &mut session.chain).await?;
    super::up::summary(ctx, &project, "stop", &report);
    session.finish(ctx, &report)
}
