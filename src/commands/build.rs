//! `nodus build [SERVICE...] [--no-cache] [--pull] [--dry-run]`

use super::Ctx;
use crate::build::{Builder, Options, Outcome, Policy};
use crate::cli::BuildArgs;

pub async fn run(ctx: &Ctx, a: BuildArgs) -> anyhow::Result<()> {
    let project = ctx.project()?;
    project.stack.check_services(&a.services)?;
    let compose = &project.hardened.compose;
    let services: Vec<String> = if a.services.is_empty() {
        compose.services.keys().cloned().collect()
    } else {
        a.services.clone()
    };
    let engine = ctx.engine().await?;
    let builder = Builder {
        engine: &*engine,
        project: project.name(),
        compose,
        env: &project.env,
        ui: &ctx.ui,
    };
    let opts = Options {
        policy: Policy::Force,
        no_cache: a.no_cache,
        pull: a.pull,
    };
    let outcomes: Vec<Outcome> = if a.dry_run {
        // What `up` would do: build when missing or changed.
        let auto = Options {
            policy: Policy::Auto,
            ..opts
        };
        builder
            .plan(&services, auto)
            .await?
            .into_iter()
            .map(|(_, o)| o)
            .collect()
    } else {
        let _lock = ctx.lock_async(&project).await?;
        builder.run(&services, opts).await?
    };
    if outcomes.is_empty() && !ctx.ui.json {
        ctx.ui
            .status("no service with `build:` among the selected services");
    }
    if ctx.ui.json {
        ctx.ui.json_out(&serde_json::json!({
            "dry_run": a.dry_run,
            "images": outcomes,
        }));
    } else if a.dry_run {
        let mut rows = vec![[
            "IMAGE".to_string(),
            "SERVICES".into(),
            "CONTEXT".into(),
            "FILES".into(),
            "BYTES".into(),
            "HASH".into(),
            "BUILD".into(),
        ]];
        for o in &outcomes {
            rows.push([
                o.image.clone(),
                o.services.join(","),
                o.context.clone(),
                o.files.to_string(),
                o.bytes.to_string(),
                o.hash.clone(),
                if o.needed {
                    format!("yes ({})", o.decision.describe())
                } else {
                    format!("no ({})", o.decision.describe())
                },
            ]);
        }
        for line in crate::table::align(&rows) {
            ctx.ui.data(line);
        }
    }
    Ok(())
}
