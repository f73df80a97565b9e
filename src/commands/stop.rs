//! `nodus stop [SERVICE...] [--timeout 30s] [--no-snapshot]`

use super::hooks::SessionOptions;
use super::{parse_duration_arg, Ctx, Guarded};
use crate::lifecycle::{Lifecycle, Transition};

pub async fn run(ctx: &Ctx, args: crate::cli::StopArgs) -> anyhow::Result<()> {
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| parse_duration_arg("--timeout", t))
        .transpose()?;
    let project = ctx.project()?;
    let opts = SessionOptions {
        no_snapshot: args.no_snapshot,
    };
    let Guarded {
        project,
        engine,
        mut session,
        lock: _lock,
    } = ctx
        .guarded(project, &args.services, Transition::Stop, opts)
        .await?;
    let lc = Lifecycle::for_project(&*engine, &project, &ctx.ui);
    let report = lc.stop(&args.services, timeout, &mut session.chain).await?;
    super::up::summary(ctx, &project, "stop", &report);
    session.finish(ctx, &report)
}
