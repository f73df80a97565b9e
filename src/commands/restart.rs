//! `nodus restart [SERVICE...] [--timeout 120s] [--no-snapshot]`

use super::hooks::SessionOptions;
use super::{parse_duration_arg, Ctx, Guarded};
use crate::lifecycle::{Lifecycle, Transition, UpOptions};

pub async fn run(ctx: &Ctx, args: crate::cli::RestartArgs) -> anyhow::Result<()> {
    let timeout = parse_duration_arg("--timeout", &args.timeout)?;
    let project = ctx.project()?;
    let opts = SessionOptions {
        no_snapshot: args.no_snapshot,
    };
    let Guarded {
        project,
        engine,
        mut session,
        lock,
    } = ctx
        .guarded(project, &args.services, Transition::Restart, opts)
        .await?;
    let lc = Lifecycle::for_project(&*engine, &project, &ctx.ui);
    let opts = UpOptions {
        services: super::up::selection(&project, args.services),
        timeout,
    };
    let report = lc.restart(&opts, &mut session.chain).await?;
    super::up::summary(ctx, &project, "restart", &report);
    session.finish_offering_restore(ctx, &report, lock).await
}
