//! `nodus port SERVICE PRIVATE_PORT [--protocol tcp|udp]`: the published host address.

use super::Ctx;
use crate::cli::PortArgs;
use crate::session::{self, SessionError};

pub async fn run(ctx: &Ctx, a: PortArgs) -> anyhow::Result<()> {
    let project = ctx.project()?;
    project
        .stack
        .check_services(std::slice::from_ref(&a.service))?;
    let engine = ctx.engine().await?;
    let c = session::running_container(&*engine, project.name(), &a.service).await?;
    let Some(p) = c
        .ports
        .iter()
        .find(|p| p.container_port == a.private_port && p.protocol == a.protocol)
    else {
        return Err(SessionError::NotPublished {
            service: a.service,
            port: a.private_port,
            protocol: a.protocol,
        }
        .into());
    };
    if ctx.ui.json {
        ctx.ui.json_out(&serde_json::json!({
            "service": c.name,
            "host_ip": p.host_ip,
            "host_port": p.host_port,
        }));
    } else {
        ctx.ui.data(format!("{}:{}", p.host_ip, p.host_port));
    }
    Ok(())
}
