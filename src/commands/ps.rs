//! `nodus ps [-a] [--format table|json] [--services] [SERVICE...]`: the stack's containers with
//! compose's columns; the global `-q` prints only their IDs.

use serde_json::json;

use super::Ctx;
use crate::cli::{PsArgs, PsFormat};
use crate::engine::{Health, RunState};
use crate::lifecycle::format_port;
use crate::session;

pub async fn run(ctx: &Ctx, a: PsArgs) -> anyhow::Result<()> {
    let project = ctx.project()?;
    project.stack.check_services(&a.services)?;
    if a.print_services {
        for s in project.hardened.compose.services.keys() {
            if a.services.is_empty() || a.services.contains(s) {
                ctx.ui.data(s);
            }
        }
        return Ok(());
    }
    let engine = ctx.engine().await?;
    let found: Vec<_> = session::containers(&*engine, project.name(), &a.services, false)
        .await?
        .into_iter()
        .filter(|c| a.all || c.container.state == RunState::Running)
        .collect();
    if ctx.ui.json || a.format == PsFormat::Json {
        let doc: Vec<_> = found
            .iter()
            .map(|c| {
                let i = &c.container;
                json!({
                    "ID": i.id,
                    "Name": i.name,
                    "Image": i.image,
                    "Service": c.service,
                    "Project": project.name(),
                    "State": format!("{:?}", i.state).to_lowercase(),
                    "Health": health(i.health),
                    "ExitCode": i.exit_code,
                    "Status": status(i),
                    "Publishers": i.ports.iter().map(|p| json!({
                        "URL": p.host_ip,
                        "TargetPort": p.container_port,
                        "PublishedPort": p.host_port,
                        "Protocol": p.protocol,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        ctx.ui.json_out(&doc);
        return Ok(());
    }
    if ctx.global.quiet {
        for c in &found {
            ctx.ui.data(&c.container.id);
        }
        return Ok(());
    }
    let mut rows = vec![[
        "NAME".to_string(),
        "IMAGE".into(),
        "SERVICE".into(),
        "STATUS".into(),
        "PORTS".into(),
    ]];
    for c in &found {
        let i = &c.container;
        rows.push([
            i.name.clone(),
            i.image.clone(),
            c.service.clone(),
            status(i),
            i.ports
                .iter()
                .map(format_port)
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    for line in crate::table::align(&rows) {
        ctx.ui.data(line);
    }
    Ok(())
}

fn health(h: Health) -> &'static str {
    match h {
        Health::None => "",
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    }
}

/// compose's STATUS column: `running (healthy)`, `exited (1)`.
fn status(i: &crate::engine::ContainerInfo) -> String {
    match (i.state, i.exit_code) {
        (RunState::Exited, Some(code)) => format!("exited ({code})"),
        (RunState::Running, _) if i.health != Health::None => {
            format!("running ({})", health(i.health))
        }
        (s, _) => format!("{s:?}").to_lowercase(),
    }
}
