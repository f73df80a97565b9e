//! `nodus logs [-f] [--tail N] [--since T] [--until T] [-t] [SERVICE...]`

use std::io::IsTerminal;

use super::Ctx;
use crate::cli::LogsArgs;
use crate::engine::LogOptions;
use crate::error::UsageError;
use crate::session::{self, logs};

pub async fn run(ctx: &Ctx, a: LogsArgs) -> anyhow::Result<()> {
    super::exec::refuse_json(ctx, "logs")?;
    let project = ctx.project()?;
    project.stack.check_services(&a.services)?;
    let now = chrono::Utc::now();
    let time = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| logs::parse_time(v, now).map_err(|e| UsageError(format!("{flag}: {e}"))))
            .transpose()
    };
    let opts = LogOptions {
        follow: a.follow,
        tail: logs::parse_tail(&a.tail).map_err(|e| UsageError(format!("--tail: {e}")))?,
        since: time("--since", &a.since)?,
        until: time("--until", &a.until)?,
        timestamps: a.timestamps,
    };
    let engine = ctx.engine().await?;
    let found = session::containers(&*engine, project.name(), &a.services, false).await?;
    if found.is_empty() {
        ctx.ui.status(format!(
            "no containers of project {} yet; `nodus up` creates them",
            project.name()
        ));
        return Ok(());
    }
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let view = logs::View {
        prefix: !a.no_log_prefix,
        colour: !a.no_color && !no_color && std::io::stdout().is_terminal(),
    };
    let follow = a.follow.then(|| logs::Follow {
        services: a.services.clone(),
        every: std::time::Duration::from_secs(1),
    });
    logs::stream(&*engine, project.name(), &found, &opts, view, follow).await
}
