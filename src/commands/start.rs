//! `nodus start [SERVICE...] [--timeout 120s]`

use super::hooks::SessionOptions;
use super::{parse_duration_arg, Ctx, Guarded};
use crate::lifecycle::{Lifecycle, Transition, UpOptions};

pub async fn run(ctx: &Ctx, args: crate::cli::UpArgs) -> anyhow::Result<()> {
    let timeout = parse_duration_arg("--timeout", &args.timeout)?;
    let project = ctx.project()?;
    let Guarded {
        project,
        engine,
        mut session,
        lock,
    } = ctx
        .guarded(
            project,
            &args.services,
            Transition::Start,
            SessionOptions::default(),
        )
        .await?;
    let lc = Lifecycle::for_project(&*engine, &project, &ctx.ui);
    let opts = UpOptions {
        services: super::up::selection(&project, args.services),
        timeout,
    };
    let report = lc.start(&opts, &mut session.chain).await?;
    super::up::summary(ctx, &project, "start", &report);
    session.finish_offering_restore(ctx, &report, lock).await
}
