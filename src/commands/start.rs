//! `nodus start [SERVICE...] [--timeout 120s]`

use super::hooks::{Session, SessionOptions};
use super::{parse_duration_arg, Ctx};
use crate::lifecycle::{resolve_environment, Lifecycle, Transition, UpOptions};

pub async fn run(ctx: &Ctx, args: crate::cli::UpArgs) -> anyhow::Result<()> {
    let timeout = parse_duration_arg("--timeout", &args.timeout)?;
    let mut project = ctx.project()?;
    project.stack.check_services(&args.services)?;
    let lock = ctx.lock(&project)?;
    resolve_environment(&mut project.hardened.compose, &project.env);
    let engine = ctx.engine().await?;
    let mut session = Session::new(
        ctx,
        &project,
        engine.clone(),
        Transition::Start,
        SessionOptions::default(),
    )?;
    let lc = Lifecycle::for_project(&*engine, &project, &ctx.ui);
    let opts = UpOptions {
        services: super::up::selection(&project, args.services),
        timeout,
    };
    let report = lc.start(&opts, &mut session.chain).await?;
    super::up::summary(ctx, &project, "start", &report);
    session.finish_offering_restore(ctx, &report, lock).await
}
