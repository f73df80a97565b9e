//! `nodus backup [SERVICE] [-o FILE]`, `nodus backup restore FILE`, `nodus backup list`.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{nodus_cmd, shell_word, Ctx};
use crate::cli::{BackupArgs, BackupCommand};
use crate::snapshot::backup as files;
use crate::snapshot::human_bytes;
use crate::snapshot::ops::backup as ops;

pub async fn run(ctx: &Ctx, args: BackupArgs) -> anyhow::Result<()> {
    match args.command {
        Some(BackupCommand::Restore { file, service }) => restore(ctx, &file, service).await,
        Some(BackupCommand::List) => list(ctx),
        None => create(ctx, args.service, args.output).await,
    }
}

async fn create(ctx: &Ctx, service: Option<String>, output: Option<PathBuf>) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let st = ops::postgres_service(&project, service.as_deref())?;
    let engine = ctx.engine().await?;
    let _lock = ctx.lock(&project)?;
    let (out, m) = ops::create(&*engine, &project, &st, output, &ctx.ui).await?;
    if ctx.ui.json {
        ctx.ui.json_out(&json!({ "path": out, "manifest": m }));
    } else {
        ctx.ui.success(format!(
            "backup of {}: {} ({} of SQL → {}, sha256 {})",
            st.service,
            out.display(),
            human_bytes(m.raw_bytes),
            human_bytes(m.compressed_bytes),
            &m.sha256[..12]
        ));
    }
    Ok(())
}

fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let dir = project.state.backups_dir(project.name());
    let entries = files::list(&dir)?;
    if ctx.ui.json {
        ctx.ui.json_out(&entries);
    } else if entries.is_empty() {
        ctx.ui.status(format!("no backups in {}", dir.display()));
    } else {
        for line in ops::list_lines(&entries) {
            ctx.ui.data(line);
        }
    }
    Ok(())
}

async fn restore(ctx: &Ctx, file: &Path, service: Option<String>) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let manifest = files::read_manifest(file)?;
    let wanted = service
        .as_deref()
        .or(manifest.as_ref().map(|m| m.service.as_str()));
    let st = ops::postgres_service(&project, wanted)?;
    let engine = ctx.engine().await?;
    let _lock = ctx.lock(&project)?;

    // Verify before touching anything.
    let sql_bytes = ops::verify(file, manifest.as_ref(), &ctx.ui).await?;
    let container = ops::running_container(&*engine, &project, &st.service).await?;
    ctx.ui.confirm(
        &format!(
            "Load {} into {} with psql? Objects that already exist are kept (their errors are counted, not fatal)",
            file.display(),
            st.service
        ),
        &format!(
            "{} backup restore {} --service {} --yes",
            nodus_cmd(ctx, &project),
            shell_word(&file.display().to_string()),
            st.service
        ),
    )?;
    let loaded = ops::load(
        &*engine,
        &st,
        &container,
        file,
        sql_bytes,
        manifest.as_ref(),
        &ctx.ui,
    )
    .await?;
    if ctx.ui.json {
        ctx.ui.json_out(&loaded);
    }
    loaded.conclude(&ctx.ui)
}
