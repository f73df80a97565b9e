//! `nodus doctor [--sarif FILE] [--last-loss]`: persistence hazards of the stack (static checks,
//! then live checks when the engine is reachable), or the explanation of the last loss.

use std::sync::Arc;

use anyhow::Context as _;

use super::Ctx;
use crate::doctor::{self, live, Report, Severity};
use crate::engine::{DockerEngine, Engine};

/// Returned when doctor found errors (exit 1; the report was already printed).
#[derive(Debug, thiserror::Error)]
#[error("doctor found {0} error(s)")]
pub struct DoctorErrors(pub usize);

pub async fn run(ctx: &Ctx, args: crate::cli::DoctorArgs) -> anyhow::Result<()> {
    let (project, sources) = crate::project::read_only(&ctx.global)?;
    let engine: Option<Arc<dyn Engine>> = match DockerEngine::connect().await {
        Ok(e) => Some(Arc::new(e)),
        Err(e) => {
            ctx.ui.warn(format!("{e}; only the static checks run"));
            None
        }
    };
    let eng = engine.as_deref();

    if args.last_loss {
        return last_loss(ctx, &project, eng).await;
    }

    let mut report: Report = doctor::static_report(eng, &project.stack, &sources).await;
    if let Some(engine) = eng {
        if !args.no_live {
            let previous = project
                .state
                .remembered_project()
                .ok()
                .flatten()
                .filter(|p| p != project.name());
            let spinner = ctx.ui.spinner("live checks (containers, volumes, servers)");
            let res = live::run(&live::LiveInput {
                engine,
                project: &project,
                previous_project: previous,
            })
            .await;
            spinner.finish_and_clear();
            match res {
                Ok(f) => report.push_all(f),
                Err(e) => ctx.ui.warn(format!("live checks incomplete: {e}")),
            }
            report.sort();
        }
    }

    if let Some(path) = &args.sarif {
        let sarif = doctor::sarif::to_sarif(&report, &project.dir);
        let text = serde_json::to_string_pretty(&sarif).context("serialising SARIF")?;
        crate::state::atomic_write(path, text.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
        ctx.ui
            .detail(format!("SARIF written to {}", path.display()));
    }
    if ctx.ui.json {
        ctx.ui.json_out(&report);
    } else {
        let ui = ctx.ui.clone();
        let paint = move |s: Severity, t: &str| match s {
            Severity::Error => ui.red(t),
            Severity::Warning => ui.bold(t),
            Severity::Info => t.to_string(),
        };
        ctx.ui.data(report.render_text(&paint).trim_end());
    }
    match report.errors() {
        0 => Ok(()),
        n => Err(DoctorErrors(n).into()),
    }
}

async fn last_loss(
    ctx: &Ctx,
    project: &crate::project::Project,
    engine: Option<&dyn Engine>,
) -> anyhow::Result<()> {
    let path = project.state.ledger_path(project.name());
    let ledger = crate::guard::ledger::Ledger::peek(&path);
    let explained = match &ledger {
        Some(l) => doctor::last_loss::explain(engine, project, l).await,
        None => None,
    };
    if ctx.ui.json {
        ctx.ui.json_out(&serde_json::json!({
            "ledger": path.display().to_string(),
            "last_loss": explained,
        }));
    } else {
        match &explained {
            Some(l) => ctx.ui.data(l.render_text().trim_end()),
            None => ctx
                .ui
                .data(format!("no loss recorded in {}", path.display())),
        }
    }
    Ok(())
}
