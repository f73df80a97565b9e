use crate::error::UsageError;
use crate::guard::verdict::Status;
use crate::guard::GuardConfig;

use super::Ctx;

pub async fn run(ctx: &Ctx, args: crate::cli::VerifyArgs) -> anyhow::Result<()> {
    if args.accept && args.fast {
        return Err(UsageError("--accept records exact row counts; drop --fast".into()).into());
    }
    let project = ctx.project()?;
    // A transition running at the same time would make the census meaningless.
    let lock = ctx.lock_async(&project).await?;
    let engine = ctx.engine().await?;
    let cfg = GuardConfig::from_project(&project);
    let mut v =
        crate::guard::verify(engine.as_ref(), &cfg, &ctx.ui, args.accept, args.fast).await?;
    v.fill_restore(super::hooks::restore_lookup(ctx, &project));
    if ctx.ui.json {
        ctx.ui.json_out(&v);
    } else {
        v.print(&ctx.ui);
    }
    match v.verdict {
        Status::Loss => super::hooks::offer_restore(ctx, &project, &v, lock).await,
        Status::Unverified => {
            let which: Vec<String> = v
                .services
                .iter()
                .filter(|(_, s)| s.status == Status::Unverified)
                .map(|(n, _)| n.clone())
                .collect();
            anyhow::bail!(
                "could not verify {}: {} not be counted (see the warnings above)",
                which.join(", "),
                if which.len() == 1 { "it could" } else { "they could" }
            )
        }
        Status::Baseline => anyhow::bail!(
            "nothing to verify against: no census of project {} was recorded yet (run `nodus verify --accept`, or `nodus up`, to record one)",
            project.name()
        ),
        _ => Ok(()),
    }
}
