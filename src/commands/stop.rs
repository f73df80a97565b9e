//! `nodus stop [SERVICE...] [--timeout 30s] [--no-snapshot]`

use super::hooks::SessionOptions;
use super::{parse_duration_arg, Ctx};
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
        ..Default::default()
    };
    let mut g = ctx
        .guarded(project, &args.services, Transition::Stop, opts)
        .await?;
    let lc = Lifecycle::for_project(&*g.engine, &g.project, &ctx.ui);
    let report = lc
        .stop(&args.services, timeout, &mut g.session.chain)
        .await?;
    super::up::summary(ctx, &g.project, "stop", &report);
    g.session.finish(ctx, &report)
}
