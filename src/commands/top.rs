//! `nodus top [SERVICE...]`: processes in each running container.

use super::Ctx;
use crate::cli::TopArgs;
use crate::engine::RunState;
use crate::session;

pub async fn run(ctx: &Ctx, a: TopArgs) -> anyhow::Result<()> {
    let project = ctx.project()?;
    project.stack.check_services(&a.services)?;
    let engine = ctx.engine().await?;
    let found: Vec<_> = session::containers(&*engine, project.name(), &a.services, false)
        .await?
        .into_iter()
        .filter(|c| c.container.state == RunState::Running)
        .collect();
    let mut docs = Vec::new();
    for (n, c) in found.iter().enumerate() {
        let top = engine.top(&c.container.id).await?;
        if ctx.ui.json {
            docs.push(serde_json::json!({
                "service": c.service,
                "container": c.container.name,
                "titles": top.titles,
                "processes": top.processes,
            }));
            continue;
        }
        if n > 0 {
            ctx.ui.data("");
        }
        ctx.ui.data(&c.container.name);
        let mut rows: Vec<Vec<String>> = vec![top.titles.clone()];
        rows.extend(top.processes.iter().cloned());
        let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; cols];
        for r in &rows {
            for (i, cell) in r.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
                .collect();
            ctx.ui.data(line.join("  ").trim_end());
        }
    }
    if ctx.ui.json {
        ctx.ui.json_out(&docs);
    } else if found.is_empty() {
        ctx.ui.status("no running containers");
    }
    Ok(())
}
