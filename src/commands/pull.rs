//! `nodus pull [SERVICE...] [--ignore-pull-failures]`

use super::Ctx;
use crate::cli::PullArgs;
use crate::session::pull;

pub async fn run(ctx: &Ctx, a: PullArgs) -> anyhow::Result<()> {
    let project = ctx.project()?;
    project.stack.check_services(&a.services)?;
    let mut images: Vec<String> = Vec::new();
    for (name, svc) in &project.hardened.compose.services {
        if !a.services.is_empty() && !a.services.contains(name) {
            continue;
        }
        match &svc.image {
            Some(i) if !images.contains(i) => images.push(i.clone()),
            Some(_) => {}
            None => ctx
                .ui
                .detail(format!("{name}: no image (build-only service); skipped")),
        }
    }
    let engine = ctx.engine().await?;
    let failed = pull::pull_all(&*engine, &images, &ctx.ui, a.ignore_pull_failures).await?;
    if ctx.ui.json {
        ctx.ui.json_out(&serde_json::json!({
            "pulled": images.iter().filter(|i| !failed.contains(i)).collect::<Vec<_>>(),
            "failed": failed,
        }));
    }
    Ok(())
}
