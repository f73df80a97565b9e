//! `nodus backup [SERVICE] [-o FILE]`, `nodus backup restore FILE`, `nodus backup list`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
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
    let _lock = ctx.lock_async(&project).await?;
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
    let _lock = ctx.lock_async(&project).await?;

    // Verify before touching anything.
    let sql_bytes = ops::verify(file, manifest.as_ref(), &ctx.ui).await?;
    let container = ops::running_container(&*engine, &project, &st.service).await?;
    let rerun = format!(
        "{} backup restore {} --service {} --yes",
        nodus_cmd(ctx, &project),
        shell_word(&file.display().to_string()),
        st.service
    );
    // Loading into databases that hold tables would add the backup's rows to theirs.
    let dbs = ops::backup_databases(file, manifest.as_ref()).await?;
    let occupied = ops::occupied(&*engine, &st, &container, &dbs).await?;
    let _critical;
    if occupied.is_empty() {
        ctx.ui.confirm(
            &format!(
                "Load {} into {} with psql? (the backup's databases hold no tables there)",
                file.display(),
                st.service
            ),
            &rerun,
        )?;
    } else {
        let list: Vec<String> = occupied
            .iter()
            .map(|o| format!("{} ({} tables, {} rows)", o.database, o.tables, o.rows))
            .collect();
        ctx.ui.warn(format!(
            "{} already holds data in the backup's databases: {}. Loading on top would duplicate rows, so they are replaced: a safety backup of {} is taken first, then they are dropped and the load re-creates them.",
            st.service,
            list.join(", "),
            st.service
        ));
        ctx.ui.confirm(
            &format!(
                "Replace databases {} of {} with the backup's contents?",
                occupied
                    .iter()
                    .map(|o| o.database.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                st.service
            ),
            &rerun,
        )?;
        let dir = project.state.backups_dir(project.name());
        let safety_path = dir.join(format!(
            "{}-{}-before-restore.sql.gz",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            st.service
        ));
        let (safety, _) = ops::create(&*engine, &project, &st, Some(safety_path), &ctx.ui)
            .await
            .context("safety backup before replacing the databases failed; nothing was changed")?;
        ctx.ui.success(format!(
            "safety backup of {}: {} (restore it with `{} backup restore {} --yes`)",
            st.service,
            safety.display(),
            nodus_cmd(ctx, &project),
            shell_word(&safety.display().to_string())
        ));
        crate::interrupt::note_safety_copy(format!("backup {}", safety.display()));
        _critical = crate::interrupt::critical(format!("the restore of {}", st.service));
        crate::interrupt::set_step(format!("the restore of {}", st.service));
        let names: Vec<String> = occupied.iter().map(|o| o.database.clone()).collect();
        ops::empty_databases(&*engine, &st, &container, &names, &ctx.ui)
            .await
            .with_context(|| {
                format!(
                    "emptying the databases failed; the safety backup {} holds what was there",
                    safety.display()
                )
            })?;
    }
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
