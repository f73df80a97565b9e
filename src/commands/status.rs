//! `nodus status [--json]`: every service of the stack (and orphans), on stdout.

use super::Ctx;
use crate::lifecycle::{Lifecycle, ServiceStatus};

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let engine = ctx.engine().await?;
    let lc = Lifecycle::for_project(&*engine, &project, &ctx.ui);
    let services = lc.status().await?;
    let info = engine.info().await?;
    let unfinished =
        crate::state::journal::read(&project.state.journal_path())?.filter(|r| !r.writer_alive());
    if ctx.ui.json {
        ctx.ui.json_out(&serde_json::json!({
            "project": project.name(),
            "engine": {
                "endpoint": info.endpoint,
                "found": engine.origin(),
                "server_version": info.server_version,
                "api_version": info.api_version,
                "operating_system": info.operating_system,
            },
            "services": services,
            "unfinished": unfinished,
        }));
        return Ok(());
    }
    ctx.ui.status(engine_line(&engine.origin(), &info));
    if let Some(r) = &unfinished {
        ctx.ui.warn(format!(
            "the last {}; run `{}` to finish it",
            r.describe(),
            r.command
        ));
    }
    for line in table(&services) {
        ctx.ui.data(line);
    }
    Ok(())
}

/// "engine: context colima (…) → unix:///… — Docker Engine 24.0.7 (API 1.43, Ubuntu 22.04)"
pub fn engine_line(origin: &str, info: &crate::engine::EngineInfo) -> String {
    let mut extra = vec![format!("API {}", info.api_version)];
    if !info.operating_system.is_empty() {
        extra.push(info.operating_system.clone());
    }
    format!(
        "engine: {} — Docker Engine {} ({})",
        if origin.is_empty() {
            &info.endpoint
        } else {
            origin
        },
        info.server_version,
        extra.join(", ")
    )
}

/// The status table, one line per row (header first).
pub fn table(services: &[ServiceStatus]) -> Vec<String> {
    let dash = |s: &str| {
        if s.is_empty() || s == "none" {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut rows: Vec<[String; 7]> = vec![[
        "SERVICE".into(),
        "CONTAINER".into(),
        "STATE".into(),
        "HEALTH".into(),
        "IMAGE".into(),
        "VOLUMES".into(),
        "PORTS".into(),
    ]];
    for s in services {
        rows.push([
            if s.orphan {
                format!("{} (orphan)", s.service)
            } else {
                s.service.clone()
            },
            dash(s.container.as_deref().unwrap_or("")),
            s.state.clone(),
            dash(&s.health),
            dash(&s.image),
            dash(&s.volumes.join(",")),
            dash(&s.ports.join(",")),
        ]);
    }
    let mut widths = [0usize; 7];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(widths.iter())
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_line_names_how_and_version() {
        let info = crate::engine::EngineInfo {
            id: "x".into(),
            server_version: "20.10.24".into(),
            api_version: "1.41".into(),
            endpoint: "unix:///c.sock".into(),
            operating_system: "Debian GNU/Linux 12".into(),
        };
        assert_eq!(
            engine_line("context c (--context) → unix:///c.sock", &info),
            "engine: context c (--context) → unix:///c.sock — Docker Engine 20.10.24 (API 1.41, Debian GNU/Linux 12)"
        );
        assert_eq!(
            engine_line("", &info),
            "engine: unix:///c.sock — Docker Engine 20.10.24 (API 1.41, Debian GNU/Linux 12)"
        );
    }

    #[test]
    fn table_aligns_and_dashes() {
        let rows = table(&[
            ServiceStatus {
                service: "db".into(),
                container: Some("nt-db-1".into()),
                state: "running".into(),
                health: "healthy".into(),
                image: "postgres:16".into(),
                volumes: vec!["nt_data".into()],
                ports: vec!["127.0.0.1:49153->5432/tcp".into()],
                orphan: false,
            },
            ServiceStatus {
                service: "old".into(),
                container: None,
                state: "not created".into(),
                health: "none".into(),
                image: "x".into(),
                volumes: vec![],
                ports: vec![],
                orphan: true,
            },
        ]);
        assert_eq!(rows.len(), 3);
        assert!(
            rows[0].starts_with("SERVICE       CONTAINER  STATE"),
            "{}",
            rows[0]
        );
        assert_eq!(
            rows[1],
            "db            nt-db-1    running      healthy  postgres:16  nt_data  127.0.0.1:49153->5432/tcp"
        );
        assert_eq!(
            rows[2],
            "old (orphan)  -          not created  -        x            -        -"
        );
    }
}
