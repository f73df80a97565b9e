//! `nodus start [SERVICE...] [--timeout 120s]`

use super::hooks::SessionOptions;
use super::{parse_duration_arg, Ctx};
use crate::lifecycle::{Lifecycle, Transition, UpOptions};

pub async fn run(ctx: &Ctx, args: crate::cli::UpArgs) -> anyhow::Result<()> {
    let timeout = parse_duration_arg("--timeout", &args.timeout)?;
    let project = ctx.project()?;
    let mut g = ctx
        .guarded(
            project,
            &args.services,
            Transition::Start,
            SessionOptions::default(),
        )
        .await?;
    let lc = Lifecycle::for_project(&*g.engine, &g.project, &ctx.ui);
    let opts = UpOptions {
        services: super::up::selection(&g.project, args.services),
        timeout,
    };
    let report = lc.start(&opts, &mut g.session.chain).await?;
    super::up::summary(ctx, &g.project, "start", &report);
    g.session
        .finish_offering_restore(ctx, &report, g.lock)
        .await
}
